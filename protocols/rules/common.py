"""Helpers shared by the robust rules: validated reveals, pairwise distances, medians.

Everything works on the [n, d] matrix at once and keeps tensors on their device.
"""
from __future__ import annotations

from typing import Optional

import torch

from secagg import ClientUpdates

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


def check_int(name: str, value, rule: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{rule}: {name}={value!r} must be an integer >= {minimum}")
    return value


def pairwise_sq_distances(x: Tensor, center: bool = False) -> Tensor:
    """All squared Euclidean distances ||x_i - x_j||^2, [n, n], from one Gram matrix.

    One [n, d] x [d, n] product (no [n, n, d] intermediate, no copy of x), then
    ||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>, clamped at 0 against rounding. The rounding error
    is relative to the squared norms (as with ``torch.cdist``'s matrix-product path);
    ``center=True`` subtracts the mean row first (distances do not change, the error becomes
    relative to the spread of the points) at the cost of one copy of x.
    """
    if center:
        x = x - x.mean(dim=0)
    g = x @ x.T
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
    the smallest value v with #{x <= v} >= n/2 + 1, found in two cheap passes.
    """
    n = x.shape[dim]
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
