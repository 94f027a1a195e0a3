"""Split target records into the attacker's prior knowledge and the evaluation set.

Nasr, Shokri, Houmansadr (S&P 2019) parameterise the adversary by its *prior
knowledge*: the fraction of the target members (and as many non-members) it already
knows and trains its attack on. The remaining members and non-members — disjoint from
the known ones and balanced, so that accuracy 0.5 is chance, as in the Cronus
appendix Table 6 — are what the attack is evaluated on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from .views import Records, as_records

Tensor = torch.Tensor

__all__ = ["TargetSplit", "split_targets"]


@dataclass(frozen=True)
class TargetSplit:
    """Index sets (LongTensors, CPU) into the member and the non-member records."""

    train_members: Tensor
    train_nonmembers: Tensor
    eval_members: Tensor
    eval_nonmembers: Tensor

    def take(self, members, nonmembers) -> Tuple[Records, Records, Records, Records]:
        """``(known_members, known_nonmembers, eval_members, eval_nonmembers)`` as Records."""
        m, n = as_records(members, "members"), as_records(nonmembers, "nonmembers")
        for name, idx, recs in (("members", self.eval_members, m), ("nonmembers", self.eval_nonmembers, n)):
            top = max(int(idx.max()) if idx.numel() else -1,
                      int(getattr(self, f"train_{name}").max()) if getattr(self, f"train_{name}").numel() else -1)
            if top >= len(recs):
                raise ValueError(f"the split indexes {name} up to {top} but only {len(recs)} {name} were given; "
                                 "take() the same record sets that were counted in split_targets")
        return m.take(self.train_members), n.take(self.train_nonmembers), m.take(self.eval_members), \
            n.take(self.eval_nonmembers)


def split_targets(n_members: int, n_nonmembers: int, known_fraction: float = 0.5, seed: int = 0,
                  balanced: bool = True) -> TargetSplit:
    """Seeded, disjoint split into known (attack-training) and evaluation records.

    With ``balanced=True`` both classes are first subsampled to ``k = min(n_members,
    n_nonmembers)``; ``round(known_fraction * k)`` of each go to the attacker, the rest
    to evaluation. ``known_fraction=0`` gives an attacker with no prior knowledge (only
    for attacks that need no fit). With ``balanced=False`` each class is split in the
    given fraction without subsampling.
    """
    for k, v in (("n_members", n_members), ("n_nonmembers", n_nonmembers)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{k}={v!r} must be a positive integer; an audit needs members and non-members")
    if not isinstance(known_fraction, (int, float)) or not 0 <= known_fraction < 1:
        raise ValueError(f"known_fraction={known_fraction!r} must lie in [0, 1): the fraction of members the "
                         "attacker knows; the rest are needed for evaluation")
    gen = torch.Generator().manual_seed(seed)
    pm, pn = torch.randperm(n_members, generator=gen), torch.randperm(n_nonmembers, generator=gen)
    if balanced:
        k = min(n_members, n_nonmembers)
        pm, pn = pm[:k], pn[:k]
    km, kn = round(known_fraction * len(pm)), round(known_fraction * len(pn))
    if known_fraction > 0 and (km == 0 or kn == 0):
        raise ValueError(f"known_fraction={known_fraction} of {len(pm)} members / {len(pn)} non-members leaves the "
                         "attacker no known record; raise known_fraction or supply more targets")
    if km >= len(pm) or kn >= len(pn):
        raise ValueError(f"known_fraction={known_fraction} leaves no evaluation record "
                         f"({len(pm)} members, {len(pn)} non-members); lower it or supply more targets")
    return TargetSplit(pm[:km].sort().values, pn[:kn].sort().values, pm[km:].sort().values, pn[kn:].sort().values)
