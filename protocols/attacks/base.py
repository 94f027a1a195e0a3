"""Poisoning-attack interface and registry.

An attack controls the corrupted clients. A *data* attack changes what they
train on (``poison_batch``, applied inside local training); an *update* attack
replaces their updates after training (``poison_updates``); kind "both" does both. Each attack
declares what it knows, and :class:`AttackView` hands it exactly that:

- ``"own"``: its own clients' honestly trained updates and the broadcast model;
- ``"honest-updates"``: also every honest client's update (omniscient).

Under secure aggregation corrupted clients still submit through the oracle,
so their updates obey the same encoding bound as everyone's (the simulation
clips corrupted rows to the bound and reports how many coordinates it clipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch

from ..registry import Registry, dataclass_params
from ..rules.common import floor_count

Tensor = torch.Tensor
KNOWLEDGE = ("own", "honest-updates")


@dataclass
class AttackView:
    """What an update attack may look at in one round."""

    own: Tensor                       # [c, d] the corrupted clients' honestly trained updates
    own_weights: Tensor               # [c] their aggregation weights (sample counts)
    global_params: Tensor             # [d] the broadcast model
    generator: torch.Generator
    honest: Optional[Tensor] = None   # [h, d] only for knowledge == "honest-updates"
    honest_weights: Optional[Tensor] = None
    rule: Optional[Any] = None        # the server's aggregation rule object (Kerckhoffs: public)
    n_selected: int = 0               # clients aggregated this round (honest + corrupted)
    server_update: Optional[Tensor] = None  # FLTrust's root update g0; full-knowledge attacks only


class Attack:
    """Base class; subclasses are dataclasses whose fields are the attack's parameters."""

    name: ClassVar[str]
    citation: ClassVar[str]
    knowledge: ClassVar[str] = "own"
    kind: ClassVar[str] = "update"      # "data", "update", or "both" (e.g. backdoor + scaling)

    def poison_batch(self, x: Tensor, y: Tensor, num_classes: int) -> Tuple[Tensor, Tensor]:
        """Data attacks: the corrupted client's training batch."""
        return x, y

    def poison_updates(self, view: AttackView) -> Tensor:
        """Update attacks: the corrupted clients' submitted updates [c, d]."""
        return view.own

    def params(self) -> Dict[str, Any]:
        return dataclass_params(self)


def _check_attack(cls) -> None:
    if cls.kind not in ("data", "update", "both"):
        raise TypeError(f"attack {cls.name!r}: kind {cls.kind!r} not in ('data', 'update', 'both')")
    if cls.knowledge not in KNOWLEDGE:
        raise TypeError(f"attack {cls.name!r}: knowledge {cls.knowledge!r} not in {KNOWLEDGE}")


ATTACKS = Registry("attack", required=("name", "citation"), describe_attrs=("kind", "knowledge"),
                   check=_check_attack)
register_attack = ATTACKS.register
make_attack = ATTACKS.make
describe_attacks = ATTACKS.describe


def corrupted_clients(n_clients: int, rho: float, seed: int) -> Tensor:
    """The fixed set of floor(rho * n) corrupted client ids (rho taken as the fraction it stands for,
    :func:`protocols.rules.common.floor_count`), drawn with a seeded permutation."""
    if not 0 <= rho < 1:
        raise ValueError(f"corruption level rho={rho!r} must lie in [0, 1)")
    k = floor_count(rho, n_clients)        # exact: int(0.29 * 100) would be 28
    g = torch.Generator().manual_seed(seed + 7919)  # apart from the training stream
    return torch.randperm(n_clients, generator=g)[:k].sort().values


def submit_poisoned(attack: "Attack", view: AttackView, clip: Optional[float] = None) -> Tuple[Tensor, int]:
    """The corrupted clients' rows as they reach the server, and how many coordinates were
    clipped: ``attack.poison_updates(view)``, shape-checked, then clamped to the secure
    aggregation encoding bound ``clip`` (a corrupted client submits through the oracle too,
    so its input obeys the bound; None: no secure aggregation, nothing clamped)."""
    poisoned = attack.poison_updates(view)
    if poisoned.shape != view.own.shape:
        raise RuntimeError(f"attack {attack.name!r} returned shape {tuple(poisoned.shape)}, "
                           f"expected {tuple(view.own.shape)}")
    if clip is None:
        return poisoned, 0
    return poisoned.clamp(-clip, clip), int((poisoned.abs() > clip).sum())

