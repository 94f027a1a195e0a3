"""One call from (attack, views, members, non-members) to an :class:`MIAResult`.

The audit loop of the protocols layer calls :func:`run_attack` once per (view, attack):
split the targets into the attacker's known records and a disjoint balanced evaluation
set (:func:`membership.split.split_targets`), fit the attack on the known records,
score the evaluation records, and compute the metrics (:mod:`membership.metrics`).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .attacks import MembershipAttack, make_attack
from .metrics import MIAResult, evaluate_scores, labels_for
from .split import split_targets
from .views import as_records, as_views

__all__ = ["run_attack"]


def run_attack(attack: Union[str, MembershipAttack], views, members, nonmembers, known_fraction: float = 0.5,
               seed: int = 0, view_name: Optional[str] = None, n_bootstrap: int = 1000,
               balanced: bool = True) -> MIAResult:
    """Fit ``attack`` on the known part of the targets and evaluate it on the rest.

    ``attack``: a registered name (``"loss"``, ``"whitebox"``, ...) or an attack object.
    ``views``: the model(s) the adversary observes (see :mod:`membership.views`).
    ``members`` / ``nonmembers``: ``(x, y)`` target records. ``known_fraction``: the
    attacker's prior knowledge (Nasr et al. 2019); ``0`` evaluates on all targets and
    reports the best-threshold accuracy (only for attacks that need no fit).
    """
    if isinstance(attack, str):
        attack = make_attack(attack, **({"seed": seed} if attack == "whitebox" else {}))
    if not isinstance(attack, MembershipAttack):
        raise TypeError(f"attack must be a registered name or a MembershipAttack, got {type(attack).__name__}")
    vs = as_views(views)
    m, n = as_records(members, "members"), as_records(nonmembers, "nonmembers")
    if known_fraction == 0 and attack.requires_fit:
        raise ValueError(f"attack {attack.name!r} must be trained on known records; use known_fraction > 0 "
                         "(e.g. 0.5)")
    split = split_targets(len(m), len(n), known_fraction, seed=seed, balanced=balanced)
    km, kn, em, en = split.take(m, n)
    if known_fraction > 0:
        attack.fit(vs, km, kn)
    scores = torch.cat([attack.score(vs, em), attack.score(vs, en)])
    name = view_name if view_name is not None else (vs[-1].name or "view")
    threshold = attack.threshold if known_fraction > 0 else None
    res = evaluate_scores(scores, labels_for(len(em), len(en)), attack=attack.name, view=name,
                          threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
    if threshold is not None:
        res.threshold_source = attack.threshold_source
    return res
