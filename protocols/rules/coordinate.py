"""Coordinate-wise rules of Yin, Chen, Ramchandran, Bartlett 2018: median and trimmed mean."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from secagg import ClientUpdates

from .common import coordinate_median, floor_count, revealed
from .base import AggregationRule, register_rule
from .selection import FusedUnavailable, column_blocks, fusable, order_statistic_blocks

Tensor = torch.Tensor

# Columns sorted per chunk in the trimmed mean: bounds the sort's temporaries.
_CHUNK_ELEMS = 1 << 22


@register_rule
@dataclass
class Median(AggregationRule):
    """Coordinate-wise median (Yin et al. 2018, Definition 1; FLTrust Sec. II-A;
    the RFA paper's baseline). For an even number of clients, the mean of the two middle
    values (``numpy.median``); for an odd number it equals ``torch.median``."""

    name = "median"
    secagg_compatible = False
    citation = "Yin et al. 2018 (coordinate-wise median); FLTrust Sec. II-A"
    breakdown_point = 0.5
    breakdown_source = "Yin et al. 2018, Thm. 1: fewer than half the clients corrupted"

    def __call__(self, updates: ClientUpdates) -> Tensor:
        return coordinate_median(revealed(updates))


def trimmed_mean(x: Tensor, k: int) -> Tensor:
    """Per coordinate, drop the k largest and k smallest values and average the n - 2k others
    (the values at sorted ranks k .. n - k - 1; with ties, which of the equal entries goes
    does not change the result).

    For small k (4k <= n) the k largest and the k smallest are located with ``topk`` and masked
    out (no sort of all n values, no subtraction of the extremes, which could be huge), block by
    block of columns (:func:`protocols.rules.selection.column_blocks`, the blocks of the fused
    path, so that both add in the same order). Where ties span both ends of a column (its k-th
    smallest value >= its k-th largest) the two ``topk`` calls may pick the same entries and
    remove fewer than 2k: those columns, rare, are averaged by rank from a sort instead.
    Otherwise the columns are sorted in chunks. Large CPU matrices take the fused sorting
    network (:func:`_trimmed_mean_fused`, the same result bit for bit).
    """
    n, d = x.shape
    if not 0 <= 2 * k < n:
        raise ValueError(f"trimmed mean: trimming k={k} from each end of n={n} values leaves none; "
                         "need 0 <= 2k < n")
    if k == 0:
        return x.mean(dim=0)
    if 4 * k <= n and fusable(x):
        try:
            return _trimmed_mean_fused(x, k)
        except FusedUnavailable:
            pass
    if 4 * k <= n:
        out = torch.empty(d, dtype=x.dtype, device=x.device)
        span = torch.zeros(d, dtype=torch.bool, device=x.device)
        for s, e in column_blocks(d):
            kept, span[s:e] = _drop_extremes(x[:, s:e], k)
            out[s:e] = kept.sum(dim=0) / (n - 2 * k)
        return _average_spans(x, k, out, span)
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    step = max(1, _CHUNK_ELEMS // n)
    for s in range(0, d, step):
        out[s:s + step] = x[:, s:s + step].sort(dim=0).values[k:n - k].mean(dim=0)
    return out


def _drop_extremes(x: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """(``x`` with the entries of ``topk(k)`` and ``topk(k, largest=False)`` of every column set
    to 0, contiguous; the columns where those two sets may overlap: k-th smallest >= k-th largest,
    NaN counting as the largest value, as ``topk`` does)."""
    hi, lo = x.topk(k, dim=0), x.topk(k, dim=0, largest=False)
    keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    keep.scatter_(0, hi.indices, False)
    keep.scatter_(0, lo.indices, False)
    kept = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).contiguous()
    return kept, lo.values.amax(dim=0) >= hi.values.amin(dim=0)


def _average_spans(x: Tensor, k: int, out: Tensor, span: Tensor) -> Tensor:
    """``out`` with the columns of ``span`` replaced by the mean of their sorted ranks k .. n-k-1."""
    if bool(span.any()):
        cols = span.nonzero().flatten()
        n = x.shape[0]
        out[cols] = x[:, cols].sort(dim=0).values[k:n - k].mean(dim=0)
    return out


def _trimmed_mean_fused(x: Tensor, k: int) -> Tensor:
    """:func:`trimmed_mean` for 4k <= n through the fused sorting network, bit for bit.

    Per block of columns the network gives the values at sorted ranks k - 1, k, n - k - 1, n - k
    (a, lo, hi, b) and the block with every entry outside (a, b) zeroed: without ties at the trim
    boundaries (a < lo, hi < b) exactly the entries the eager path keeps. Columns with a tie there
    or a NaN get the eager path's ``topk`` choice (which of the equal entries goes decides the
    order of the sum; ``topk`` ranks NaN above every number), columns whose ties span both ends
    (a >= b) its sorted mean. The column sums run over the eager path's blocks, so both add in the
    same order.
    """
    n, d = x.shape
    out = torch.empty(d, dtype=x.dtype)
    span = torch.zeros(d, dtype=torch.bool)
    for s, (a, lo, hi, b), masked in order_statistic_blocks(x, (k - 1, k, n - k - 1, n - k), mask=True):
        e = s + masked.shape[1]
        span[s:e] = a >= b
        redo = (((a == lo) | (hi == b)) & ~span[s:e]) | a.isnan()      # NaN: at every rank
        if bool(redo.any()):
            cols = redo.nonzero().flatten()
            masked[:, cols], span[s + cols] = _drop_extremes(x[:, s + cols], k)
        out[s:e] = masked.sum(dim=0) / (n - 2 * k)
    return _average_spans(x, k, out, span)


def trim_count(beta: float, n: int) -> int:
    """floor(beta * n), in exact arithmetic on the fraction beta stands for
    (:func:`protocols.rules.common.floor_count`: beta = 0.29, n = 100 trims 29, not the 28
    that floating point gives)."""
    return floor_count(beta, n)


@register_rule
@dataclass
class TrimmedMean(AggregationRule):
    """Coordinate-wise trimmed mean (Yin et al. 2018, Definition 2): per coordinate, remove the
    floor(beta * n) largest and smallest values and average the remaining ones.

    Default beta = 0.2: FLTrust (Table I) sets the trim parameter k to the number of
    malicious clients, 20% of n.
    """

    beta: float = 0.2
    name = "trimmedmean"
    secagg_compatible = False
    citation = "Yin et al. 2018, Def. 2 (trimmed mean); FLTrust Sec. II-A"
    breakdown_point = "beta"
    breakdown_source = "Yin et al. 2018, Thm. 4: at most a beta fraction corrupted"

    def check(self, n: int) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0 <= self.beta < 0.5:
            raise ValueError(f"{self.name}: beta={self.beta!r} must lie in [0, 0.5) (the fraction trimmed "
                             "from each end of every coordinate)")

    def max_corrupted(self, n: int) -> int:
        return trim_count(self.beta, n)

    def __call__(self, updates: ClientUpdates) -> Tensor:
        self.check(updates.n)
        k = trim_count(self.beta, updates.n)
        return trimmed_mean(revealed(updates), k)
