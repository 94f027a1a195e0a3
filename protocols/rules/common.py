"""Helpers shared by the robust rules: validated reveals, pairwise distances, medians.

Everything works on the [n, d] matrix at once and keeps tensors on their device.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import torch

from secagg import ClientUpdates

from .selection import FusedUnavailable, fusable, order_statistics

Tensor = torch.Tensor


def revealed(updates: ClientUpdates) -> Tensor:
    """``updates.reveal()`` (refused under secure aggregation), checked to be finite."""
    x = updates.reveal()
    lo, hi = torch.aminmax(x)
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        bad = (~torch.isfinite(x).all(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rule {updates.rule!r}: non-finite values in the updates of client(s) {bad[:10]}; "
                         "a diverged client must be fixed or excluded before aggregation")
    return x


def as_fraction(x: float) -> Fraction:
    """The fraction a float parameter stands for: the simplest one within the float's rounding
    (denominator up to 1e9). 0.29 is the binary float 0.28999..., whose product with 100
    floors to 28, and float(1/3) times 3 is just below 1 exactly; as fractions, 29/100 and
    1/3 give the counts the user meant (floor(0.29 * 100) = 29)."""
    return Fraction(float(x)).limit_denominator(10 ** 9)


def floor_count(fraction: float, n: int) -> int:
    """floor(fraction * n) on the fraction the float stands for (:func:`as_fraction`): how many of
    n clients a fraction such as a trim level or a corruption level rho means (0.29 of 100: 29)."""
    return math.floor(as_fraction(fraction) * n)


def check_int(name: str, value, rule: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{rule}: {name}={value!r} must be an integer >= {minimum}")
    return value


# Columns per block of the float64 Gram accumulation. One thread: 16,384 (the block stays in
# cache). Several threads: few large blocks (each op is a parallel region, and on a shared box
# small ones cost more in thread wake-ups than they compute: 2.0 s vs 0.9 s at n = 100, d = 1e6),
# at most 2^25 elements (268 MB of float64) per block.
_GRAM_BLOCK = 16384
_GRAM_BLOCK_THREADED = 262144
_GRAM_MAX_ELEMS = 1 << 25


def pairwise_sq_distances(x: Tensor, center: bool = True) -> Tensor:
    """All squared Euclidean distances ||x_i - x_j||^2, [n, n], from one Gram matrix, in float64.

    ||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j> (no [n, n, d] intermediate), clamped at 0 against
    rounding. That identity cancels: its error is relative to the squared norms, not to the
    distances, and float32 left Krum choosing a client whose score was 0.64% above the true
    minimum when the updates shared a large offset (or when a few lay far from the rest). So
    the columns are centred on their mean (the distances do not change) and the Gram matrix is
    accumulated in float64, block by block of columns so that no float64 copy of x is made
    (about 2x the float32 product on a CPU). ``center=False`` skips the centring. Returns
    float64 (the input's dtype if wider).
    """
    acc = torch.float64 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.dtype
    n, d = x.shape
    g = torch.zeros(n, n, dtype=acc, device=x.device)
    step = _GRAM_BLOCK if torch.get_num_threads() == 1 or x.device.type != "cpu" else \
        min(_GRAM_BLOCK_THREADED, max(_GRAM_BLOCK, _GRAM_MAX_ELEMS // max(n, 1)))
    buf = torch.empty(n, min(step, d), dtype=acc, device=x.device)   # reused: no allocation per block
    for s in range(0, d, step):
        block = buf[:, :min(step, d - s)]
        block.copy_(x[:, s:s + step])
        if center:
            block -= block.mean(dim=0)             # per column, so per block is the same as global
        g.addmm_(block, block.T)
    g = (g + g.T) * 0.5            # exactly symmetric: mutual nearest neighbours tie exactly, as they should
    sq = g.diagonal().clone()
    d2 = sq[:, None] + sq[None, :] - 2 * g
    d2.clamp_(min=0)
    d2.fill_diagonal_(0)
    return d2


def pairwise_distances_p(x: Tensor, p: float) -> Tensor:
    """||x_i - x_j||_p, [n, n]; p = 2 from the Gram matrix, other p via ``torch.cdist``."""
    if p == 2:
        return pairwise_sq_distances(x).sqrt()
    return torch.cdist(x[None], x[None], p=float(p))[0]


def coordinate_median(x: Tensor, dim: int = 0) -> Tensor:
    """The coordinate-wise median along ``dim``: the middle value for an odd count, the
    mean of the two middle values for an even count (``numpy.median``'s convention).

    ``torch.median`` returns the lower middle value; for an even count the upper one is
    the smallest value v with #{x <= v} >= n/2 + 1, found in two cheap passes. Large CPU
    matrices (dim 0) take both middle values from the fused sorting network of
    :mod:`protocols.rules.selection` instead (the same values, about 15x faster).
    """
    n = x.shape[dim]
    if dim == 0 and x.dim() == 2 and fusable(x):
        try:
            mid = order_statistics(x, ((n - 1) // 2,) if n % 2 == 1 else (n // 2 - 1, n // 2))
            return mid[0] if n % 2 == 1 else (mid[0] + mid[1]) / 2
        except FusedUnavailable:
            pass
    lower = x.median(dim=dim, keepdim=True).values
    if n % 2 == 1:
        return lower.squeeze(dim)
    at_most = (x <= lower).sum(dim=dim, keepdim=True)
    inf = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    above = torch.where(x > lower, x, inf).amin(dim=dim, keepdim=True)
    upper = torch.where(at_most >= n // 2 + 1, lower, above)
    return ((lower + upper) / 2).squeeze(dim)


def median_last(t: Tensor) -> Tensor:
    """Median over the last dimension (mean of the two middle values for an even count)."""
    k = t.shape[-1]
    s = t.sort(dim=-1).values
    if k % 2 == 1:
        return s[..., k // 2]
    return (s[..., k // 2 - 1] + s[..., k // 2]) / 2


def closest_to_median_mean(x: Tensor, beta: int, center: Optional[Tensor] = None) -> Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the coordinate-wise median.

    Bulyan's aggregation phase (El Mhamdi et al. 2018; Cronus appendix Alg. 3, eq. 3). The
    n - beta farthest values are located with ``topk`` and masked out (ties: either may go).
    """
    n = x.shape[0]
    if center is None:
        center = coordinate_median(x)
    if beta >= n:
        return x.mean(dim=0)
    far = (x - center).abs().topk(n - beta, dim=0).indices
    keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    keep.scatter_(0, far, False)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=0) / beta
