"""Distance-based selection: Krum, multi-Krum and Bulyan.

All three need the individual updates (``reveal()``). Their choices are those of float64
arithmetic on the differences: the pairwise distances come from a float32 screen with a rigorous
error bound, and the clients it cannot separate are re-scored in float64
(:mod:`protocols.rules.screen`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from secagg import ClientUpdates

from .common import check_int, closest_to_median_mean, revealed
from .base import AggregationRule, register_rule
from .screen import DistanceBounds

Tensor = torch.Tensor


def krum_max_f(n: int) -> int:
    """The largest f Krum tolerates with n clients (n > 2f + 2)."""
    return max(0, (n - 3) // 2)


def resolve_krum_f(f: Optional[int], n: int, rule: str) -> int:
    """Validate Krum's f against n (Blanchard et al. 2017, Prop. 1 needs n > 2f + 2)."""
    if f is None:
        f = krum_max_f(n)
    check_int("f", f, rule)
    if n <= 2 * f + 2:
        raise ValueError(f"{rule} with f={f} needs n > 2f + 2 = {2 * f + 2} clients (Blanchard et al. 2017, "
                         f"Prop. 1); got n={n}. Lower f to at most {krum_max_f(n)}"
                         + (" or aggregate more clients" if n >= 3 else "; Krum needs at least 3 clients"))
    return f


def krum_scores(d2: Tensor, f: int) -> Tensor:
    """Krum's score s(i) = sum of the n - f - 2 smallest squared distances from i to the others.

    Blanchard et al. 2017, Sec. 4; Cronus appendix eq. (2); FLTrust eq. (1). ``d2`` is the
    [n, n] matrix of squared distances. With fewer than n - f - 2 other points (Bulyan's
    late selections) every other point counts.
    """
    n = d2.shape[0]
    k = min(max(n - f - 2, 0), n - 1)
    if k == 0:
        return torch.zeros(n, dtype=d2.dtype, device=d2.device)
    off = d2 + torch.diag(torch.full((n,), float("inf"), dtype=d2.dtype, device=d2.device))
    return off.topk(k, dim=1, largest=False).values.sum(dim=1)


def krum_select(x: Tensor, f: int, m: int = 1) -> Tensor:
    """Indices (ascending) of the m updates with the lowest Krum scores, ties by lowest index, as
    float64 arithmetic on the differences selects them (:class:`protocols.rules.screen.DistanceBounds`:
    a float32 screen with a rigorous error bound, float64 re-scoring of the clients it cannot
    separate)."""
    n = x.shape[0]
    return DistanceBounds(x).select(torch.arange(n, device=x.device), f, m)


@register_rule
@dataclass
class Krum(AggregationRule):
    """Krum: the update with the smallest sum of squared distances to its n - f - 2 nearest
    neighbours (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, Sec. 4; Cronus appendix eq. 2;
    FLTrust eq. 1).

    ``f`` is the number of Byzantine clients the server assumes; None takes the largest
    value Krum tolerates for the round's n (n > 2f + 2). FLTrust sets f to the true number
    of malicious clients.
    """

    f: Optional[int] = None
    name = "krum"
    secagg_compatible = False
    citation = "Blanchard et al. 2017 (Krum); Cronus appendix eq. 2; FLTrust eq. 1"
    breakdown_point = 0.5
    breakdown_source = "Blanchard et al. 2017, Prop. 1: n > 2f + 2 (Cronus appendix A.3: (n - 2) / 2n)"

    def check(self, n: int) -> None:
        resolve_krum_f(self.f, n, self.name)

    def max_corrupted(self, n: int) -> int:
        return krum_max_f(n)

    def __call__(self, updates: ClientUpdates) -> Tensor:
        f = resolve_krum_f(self.f, updates.n, self.name)
        x = revealed(updates)
        return x[krum_select(x, f)[0]].clone()


@register_rule
@dataclass
class MultiKrum(AggregationRule):
    """Multi-Krum: the mean of the m updates with the lowest Krum scores (Blanchard et al. 2017,
    Sec. 5; the RFA paper's baseline, Sec. V-B). ``m`` None means m = n - f."""

    f: Optional[int] = None
    m: Optional[int] = None
    name = "multikrum"
    secagg_compatible = False
    citation = "Blanchard et al. 2017, Sec. 5 (multi-Krum); RFA Sec. V-B baseline"
    breakdown_point = 0.5
    breakdown_source = "Blanchard et al. 2017, Prop. 1: n > 2f + 2"

    def check(self, n: int) -> int:
        f = resolve_krum_f(self.f, n, self.name)
        m = n - f if self.m is None else self.m
        check_int("m", m, self.name, minimum=1)
        if m > n:
            raise ValueError(f"{self.name}: m={m} exceeds the number of clients n={n}; choose 1 <= m <= n")
        return f

    def max_corrupted(self, n: int) -> int:
        return krum_max_f(n)

    def __call__(self, updates: ClientUpdates) -> Tensor:
        n = updates.n
        f = self.check(n)
        m = n - f if self.m is None else self.m
        x = revealed(updates)
        w = torch.zeros(n, dtype=x.dtype, device=x.device)
        w[krum_select(x, f, m)] = 1.0 / m
        return w @ x                    # the mean of the selected rows without gathering them


def bulyan_max_f(n: int) -> int:
    """The largest f Bulyan tolerates with n clients (n >= 4f + 3)."""
    return max(0, (n - 3) // 4)


def resolve_bulyan_f(f: Optional[int], n: int, rule: str) -> int:
    if f is None:
        f = bulyan_max_f(n)
    check_int("f", f, rule)
    if n < 4 * f + 3:
        raise ValueError(f"{rule} with f={f} needs n >= 4f + 3 = {4 * f + 3} clients (El Mhamdi et al. 2018); "
                         f"got n={n}. Lower f to at most {bulyan_max_f(n)}"
                         + (" or aggregate more clients" if n >= 3 else "; Bulyan needs at least 3 clients"))
    return f


def iterated_selection(x: Tensor, f: int, theta: int) -> Tensor:
    """Bulyan's selection phase with Krum: repeatedly take Krum's choice among the clients not
    yet selected (Cronus appendix Alg. 3, lines 3-6), in the order chosen; every choice as in
    :func:`krum_select` (one :class:`protocols.rules.screen.DistanceBounds` for all, its float64
    rows reused)."""
    n = x.shape[0]
    bounds = DistanceBounds(x)
    remaining = torch.ones(n, dtype=torch.bool, device=x.device)
    chosen = []
    for _ in range(theta):
        pick = bounds.select(remaining.nonzero().flatten(), f, 1, refine_all=True)[0]
        chosen.append(pick)
        remaining[pick] = False
    return torch.stack(chosen)


@register_rule
@dataclass
class Bulyan(AggregationRule):
    """Bulyan (El Mhamdi, Guerraoui, Rouault 2018; Cronus appendix Alg. 3 and eq. 3).

    Selection: theta = n - 2f updates, each Krum's choice among those not yet selected.
    Aggregation: per coordinate, the mean of the beta = theta - 2f selected values closest to
    their median. Needs n >= 4f + 3; ``f`` None takes the largest such f.
    """

    f: Optional[int] = None
    name = "bulyan"
    secagg_compatible = False
    citation = "El Mhamdi et al. 2018 (Bulyan); Cronus appendix Alg. 3, eq. 3"
    breakdown_point = 0.25
    breakdown_source = "El Mhamdi et al. 2018: n >= 4f + 3"

    def check(self, n: int) -> None:
        resolve_bulyan_f(self.f, n, self.name)

    def max_corrupted(self, n: int) -> int:
        return bulyan_max_f(n)

    def __call__(self, updates: ClientUpdates) -> Tensor:
        n = updates.n
        f = resolve_bulyan_f(self.f, n, self.name)
        x = revealed(updates)
        theta = n - 2 * f
        sel = iterated_selection(x, f, theta)
        return closest_to_median_mean(x[sel], theta - 2 * f)
