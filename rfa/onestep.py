"""One-step RFA: a single smoothed Weiszfeld step from v0 = 0.

Pillutla, Kakade, Harchaoui 2022, Algorithm 3 (Sec. IV-B, "One-step RFA"): on
model *updates*, device i sets beta_i = alpha_i / max(nu, ||w_i||) and one secure
average returns sum_i beta_i w_i / sum_i beta_i. It is Algorithm 2 with v^(0) = 0
and R = 1, so it shares :func:`rfa.smoothed_weiszfeld`'s encoding of the weights.
"""
from __future__ import annotations

from typing import Optional

import torch

from .weiszfeld import RFAResult, WeightBound, smoothed_weiszfeld

Tensor = torch.Tensor


def one_step(updates, alphas: Optional[Tensor] = None, *, nu: float = 1e-6,
             track_objective: bool = False, weight_bound: WeightBound = "auto",
             max_encoding_error: float = 1e-6, label: str = "rfa-onestep") -> RFAResult:
    """One-step smoothed Weiszfeld (Algorithm 3): one oracle call, v0 = 0.

    Each client down-weights itself by the norm of its own update, so a few large
    (e.g. corrupted) updates cannot dominate the average. ``track_objective`` adds two
    1-coordinate calls for g(0) and g(v^(1)); off by default to keep the single call.
    Other parameters as in :func:`rfa.smoothed_weiszfeld`.
    """
    if not hasattr(updates, "secure_average"):
        raise TypeError(f"updates must be a secagg.ClientUpdates handle, got {type(updates).__name__}")
    v0 = torch.zeros(updates.d, device=updates.device, dtype=updates.dtype)
    return smoothed_weiszfeld(updates, alphas, nu=nu, max_calls=1, v0=v0, tol=None,
                              track_objective=track_objective, weight_bound=weight_bound,
                              max_encoding_error=max_encoding_error, label=label)
