"""RobustFilter, the practical variant used by Cronus (Diakonikolas et al.; Cronus appendix C, Alg. 6)."""
from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass
from typing import Optional

import torch

from secagg import ClientUpdates

from .common import as_fraction, check_int, revealed
from .base import AggregationRule, register_rule

Tensor = torch.Tensor


def filter_count(epsilon: float, n: int) -> int:
    """round(epsilon * n / 2), halves up, in exact arithmetic on the fraction epsilon stands for
    (:func:`protocols.rules.common.as_fraction`): the updates each RobustFilter iteration removes."""
    return math.floor(as_fraction(epsilon) * n / 2 + Fraction(1, 2))


def top_direction_scores(x: Tensor):
    """|v* . (Y - Y_bar)| for every row and the top eigenvalue lambda* of the covariance,
    from the [m, m] Gram matrix of the centred rows (never the [d, d] covariance).

    With C = Y - Y_bar and C C^T = U diag(s^2) U^T, the top right singular vector is
    v* = C^T u / s, so C v* = s u: the projections are s |u|, and lambda* = s^2 / m.
    """
    m = x.shape[0]
    c = x - x.mean(dim=0)
    gram = (c @ c.T).to(torch.float64)
    evals, evecs = torch.linalg.eigh(gram)
    top = evals[-1].clamp_min(0)
    proj = top.sqrt() * evecs[:, -1].abs()
    return proj.to(x.dtype), float(top) / m


@register_rule
@dataclass
class RobustFilter(AggregationRule):
    """RobustFilter (Diakonikolas, Kamath, Kane, Li, Moitra, Stewart; Cronus appendix C, Alg. 6),
    in the practical form Cronus evaluates: each iteration projects the centred updates on the
    top eigenvector v* of their covariance and removes the epsilon/2 fraction (of the n
    inputs, rounded to the nearest integer) with the largest |v* . (Y - Y_bar)|, for
    ``iterations`` = 2 iterations; the output is the mean of what remains.

    ``threshold``: if given, stop early once the top eigenvalue lambda* <= threshold (Alg. 6's
    test with 9 assumes identity-covariance inputs; off by default as in the practical form).
    """

    epsilon: float = 0.2
    iterations: int = 2
    threshold: Optional[float] = None
    name = "robustfilter"
    secagg_compatible = False
    citation = "Diakonikolas et al. (filter); Cronus appendix C, Alg. 6 (practical variant)"
    breakdown_point = "epsilon"
    breakdown_source = "the filter assumes at most an epsilon fraction corrupted (Cronus appendix C)"

    def check(self, n: int) -> int:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) or not 0 <= self.epsilon < 1:
            raise ValueError(f"{self.name}: epsilon={self.epsilon!r} must lie in [0, 1) (the corrupted fraction)")
        check_int("iterations", self.iterations, self.name, minimum=1)
        per_iter = filter_count(self.epsilon, n)
        if per_iter * self.iterations >= n:
            raise ValueError(f"{self.name}: removing {per_iter} of n={n} updates in each of {self.iterations} "
                             f"iterations leaves none; lower epsilon={self.epsilon} or iterations")
        return per_iter

    def max_corrupted(self, n: int) -> int:
        return math.floor(as_fraction(self.epsilon) * n)

    def __call__(self, updates: ClientUpdates) -> Tensor:
        n = updates.n
        per_iter = self.check(n)
        x = revealed(updates)
        keep = torch.arange(n, device=x.device)
        for _ in range(self.iterations):
            if per_iter == 0 or keep.numel() < 2:
                break
            scores, lam = top_direction_scores(x[keep])
            if self.threshold is not None and lam <= self.threshold:
                break
            drop = scores.topk(per_iter).indices
            mask = torch.ones(keep.numel(), dtype=torch.bool, device=x.device)
            mask[drop] = False
            keep = keep[mask]
        return x[keep].mean(dim=0)
