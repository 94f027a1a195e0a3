"""RFA rules: the geometric median as an iterative secure aggregate.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning":
Algorithm 2 (smoothed Weiszfeld, [rfa]), Algorithm 3 (one-step, [rfa-onestep]) and
Algorithm 4 (personalization, [rfa-personalized]; the simulation trains the personal
parameters u_i, only the shared update is aggregated here). All three reach the
updates only through ``secure_average`` and so run under any ``--secagg``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import rfa
from secagg import ClientUpdates

from .base import AggregationRule, register_rule


@register_rule
@dataclass
class RFA(AggregationRule):
    """Smoothed Weiszfeld (RFA Alg. 2) with budget ``max_calls`` (paper: R = 3, nu = 1e-6).

    ``v0="mean"`` starts from the alpha-weighted mean (one more oracle call, as in the
    authors' code); ``v0="zero"`` starts from 0 (no extra call). ``track_objective``
    obtains g(v) through the oracle each iteration (more calls, more revealed scalars);
    off by default. The last result is kept in ``last_result`` for audits.
    """

    nu: float = 1e-6
    max_calls: int = 3
    v0: str = "mean"
    track_objective: bool = False
    weight_bound: Union[str, float] = "auto"
    name = "rfa"
    secagg_compatible = True
    citation = "Pillutla, Kakade, Harchaoui, RFA, Alg. 2 (smoothed Weiszfeld)"
    breakdown_point = 0.5
    breakdown_source = "RFA Sec. II: the geometric median's breakdown point is 1/2 (in total weight)"

    def __post_init__(self):
        if self.v0 not in ("mean", "zero"):
            raise ValueError(f"v0={self.v0!r}; choose 'mean' (one extra call) or 'zero'")
        self.last_result: Optional[rfa.RFAResult] = None

    def __call__(self, updates: ClientUpdates):
        import torch
        v0 = None if self.v0 == "mean" else torch.zeros(updates.d, device=updates.device, dtype=updates.dtype)
        self.last_result = rfa.smoothed_weiszfeld(
            updates, nu=self.nu, max_calls=self.max_calls, v0=v0, track_objective=self.track_objective,
            weight_bound=self.weight_bound, label=self.name)
        return self.last_result.aggregate


@register_rule
@dataclass
class OneStepRFA(AggregationRule):
    """One-step RFA (Alg. 3): beta_i = alpha_i / max(nu, ||w_i||), one oracle call."""

    nu: float = 1e-6
    weight_bound: Union[str, float] = "auto"
    name = "rfa-onestep"
    secagg_compatible = True
    citation = "Pillutla, Kakade, Harchaoui, RFA, Alg. 3 (one-step)"

    def __post_init__(self):
        self.last_result: Optional[rfa.RFAResult] = None

    def __call__(self, updates: ClientUpdates):
        self.last_result = rfa.one_step(updates, nu=self.nu, weight_bound=self.weight_bound, label=self.name)
        return self.last_result.aggregate


@register_rule
@dataclass
class PersonalizedRFA(RFA):
    """RFA with personalization (Alg. 4): clients keep u_i, predict with w + u_i; the shared
    updates are aggregated by smoothed Weiszfeld exactly as [rfa]."""

    name = "rfa-personalized"
    citation = "Pillutla, Kakade, Harchaoui, RFA, Alg. 4 (personalization)"
    personalized = True
