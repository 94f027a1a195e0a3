"""MixTailor ("MixTailor: mixed gradient aggregation for robust learning against tailored
attacks"): a random rule per round from a pool.

The pool of Sec. 5: four classes of robust aggregators, comed, Krum, geometric median and
Bulyan, each with 16 members whose l_p norm p is drawn at random from {1, ..., 16}; 64
aggregators, one drawn uniformly at random in every round from a generator derived from
``seed`` and the round (the attacker knows the pool, not the draw).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch

from secagg import ClientUpdates

from .common import closest_to_median_mean, coordinate_median, pairwise_distances_p, revealed
from .base import AggregationRule, register_rule
from .krum import bulyan_max_f, krum_scores, resolve_bulyan_f

Tensor = torch.Tensor

CLASSES = ("comed", "krum", "geomed", "bulyan")
SELECTORS = ("krum", "average", "geomed", "comed")


class PoolMember(NamedTuple):
    family: str          # one of CLASSES
    p: int               # the member's l_p norm
    selector: str = ""   # Bulyan members: the rule of the selection phase


def weiszfeld_lp(x: Tensor, p: float = 2.0, iters: int = 100, nu: float = 1e-6, ftol: float = 1e-6) -> Tensor:
    """Geometric median by Weiszfeld's iteration with weights 1 / max(nu, ||v - x_i||_p).

    For p = 2 this is the smoothed Weiszfeld algorithm (RFA paper, Alg. 2, on plaintext points);
    for other p the same fixed-point iteration with l_p distances, the usual heuristic for an
    l_p geometric median. Stops when the objective sum_i ||v - x_i||_p improves by less than
    ``ftol`` relatively.
    """
    v = x.mean(dim=0)
    obj = torch.linalg.vector_norm(x - v, ord=p, dim=1)
    prev = float(obj.sum())
    for _ in range(iters):
        beta = 1.0 / obj.clamp_min(nu)
        v = (beta @ x) / beta.sum()
        obj = torch.linalg.vector_norm(x - v, ord=p, dim=1)
        cur = float(obj.sum())
        if prev - cur <= ftol * max(prev, 1e-30):
            break
        prev = cur
    return v


def krum_lp(x: Tensor, f: int, p: float) -> Tensor:
    """Generalised Krum with l_p distances (MixTailor eq. (3)): argmin_i of the sum of
    ||G_i - G_j||_p^2 over its n - f - 2 nearest neighbours."""
    d2 = pairwise_distances_p(x, p) ** 2
    return x[krum_scores(d2, f).argmin()]


def bulyan_lp(x: Tensor, f: int, p: float, selector: str) -> Tensor:
    """Bulyan with selection rule ``selector`` under the l_p norm (El Mhamdi et al. 2018;
    Cronus appendix Alg. 3):
    theta = n - 2f times, apply the rule to the clients not yet selected and select the client
    closest (in l_p) to its output (for Krum, Krum's own choice); then per coordinate average
    the beta = theta - 2f selected values closest to their median."""
    n = x.shape[0]
    theta = n - 2 * f
    remaining = torch.ones(n, dtype=torch.bool, device=x.device)
    d2 = pairwise_distances_p(x, p) ** 2 if selector == "krum" else None
    chosen = []
    for _ in range(theta):
        idx = remaining.nonzero().flatten()
        if selector == "krum":
            pick = idx[krum_scores(d2[idx][:, idx], f).argmin()]
        else:
            rows = x[idx]
            out = rows.mean(dim=0) if selector == "average" else \
                weiszfeld_lp(rows, p) if selector == "geomed" else coordinate_median(rows)
            pick = idx[torch.linalg.vector_norm(rows - out, ord=p, dim=1).argmin()]
        chosen.append(pick)
        remaining[pick] = False
    return closest_to_median_mean(x[torch.stack(chosen)], theta - 2 * f)


@register_rule
@dataclass
class MixTailor(AggregationRule):
    """MixTailor (MixTailor paper, Sec. 3 and Sec. 5): in every round, one aggregator
    drawn uniformly at random from a pool of 64.

    The pool (Sec. 5): 16 members in each of the classes comed, Krum, geometric median and
    Bulyan, every member with its own l_p norm, p drawn uniformly from {1, ..., 16} (once, from
    ``seed``). Krum members use l_p distances in their score (eq. (3)); geometric-median
    members run Weiszfeld with l_p distances; Bulyan members use, in turn, Krum, average,
    geometric median and comed for the selection phase ("each Bulyan aggregator uses a
    different aggregator ... for either the selection phase or the aggregation phase"; here
    the selection phase, with the usual coordinate-wise aggregation phase). The coordinate
    median has no norm, so its 16 members coincide (the class keeps its 1/4 share).

    The round's draw uses a generator seeded from ``seed`` and ``updates.context['round']``
    (a per-call counter when the context has no round); ``last_choice`` records it. ``f`` is
    the Byzantine count for Krum and Bulyan; None takes the largest that Bulyan tolerates
    (n >= 4f + 3; MixTailor's experiments: n = 12, f = 2).
    """

    f: Optional[int] = None
    seed: int = 0
    name = "mixtailor"
    secagg_compatible = False
    citation = "MixTailor (mixed gradient aggregation against tailored attacks), Sec. 3 and 5"
    breakdown_point = 0.25
    breakdown_source = "its pool's Bulyan members need n >= 4f + 3 (MixTailor Sec. 5)"

    def check(self, n: int) -> None:
        resolve_bulyan_f(self.f, n, self.name)

    def max_corrupted(self, n: int) -> int:
        return bulyan_max_f(n)

    def pool(self) -> List[PoolMember]:
        """The 64 aggregators, fixed by ``seed``."""
        ps = torch.randint(1, 17, (len(CLASSES), 16), generator=torch.Generator().manual_seed(self.seed))
        members = []
        for c, family in enumerate(CLASSES):
            for j in range(16):
                members.append(PoolMember(family, int(ps[c, j]), SELECTORS[j % 4] if family == "bulyan" else ""))
        return members

    def draw(self, rnd: int) -> int:
        """Index of the round's aggregator in :meth:`pool`."""
        g = torch.Generator().manual_seed((int(self.seed) * 1_000_003 + int(rnd)) % (2 ** 63))
        return int(torch.randint(64, (1,), generator=g))

    def __call__(self, updates: ClientUpdates) -> Tensor:
        f = resolve_bulyan_f(self.f, updates.n, self.name)
        rnd = updates.context.get("round")
        if rnd is None:
            rnd = getattr(self, "_calls", 0)
            self._calls = rnd + 1
        index = self.draw(int(rnd))
        member = self.pool()[index]
        self.last_choice = {"index": index, **member._asdict()}
        x = revealed(updates)
        return aggregate_member(member, x, f)


def aggregate_member(member: PoolMember, x: Tensor, f: int) -> Tensor:
    """Apply one pool member to the plaintext updates x [n, d]."""
    if member.family == "comed":
        return coordinate_median(x)
    if member.family == "krum":
        return krum_lp(x, f, member.p).clone()
    if member.family == "geomed":
        return weiszfeld_lp(x, member.p)
    return bulyan_lp(x, f, member.p, member.selector)
