"""Coordinate-wise rules of Yin, Chen, Ramchandran, Bartlett 2018: median and trimmed mean."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from secagg import ClientUpdates

from .common import as_fraction, coordinate_median, revealed
from .base import AggregationRule, register_rule

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
    out (no sort of all n values, no subtraction of the extremes, which could be huge). Where
    ties span both ends of a column (its k-th smallest value >= its k-th largest) the two
    ``topk`` calls may pick the same entries and remove fewer than 2k: those columns, rare,
    are averaged by rank from a sort instead. Otherwise the columns are sorted in chunks.
    """
    n, d = x.shape
    if not 0 <= 2 * k < n:
        raise ValueError(f"trimmed mean: trimming k={k} from each end of n={n} values leaves none; "
                         "need 0 <= 2k < n")
    if k == 0:
        return x.mean(dim=0)
    if 4 * k <= n:
        hi, lo = x.topk(k, dim=0), x.topk(k, dim=0, largest=False)
        keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        keep.scatter_(0, hi.indices, False)
        keep.scatter_(0, lo.indices, False)
        out = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=0) / (n - 2 * k)
        shared = lo.values.amax(dim=0) >= hi.values.amin(dim=0)     # the two ends may overlap
        if bool(shared.any()):
            cols = shared.nonzero().flatten()
            out[cols] = x[:, cols].sort(dim=0).values[k:n - k].mean(dim=0)
        return out
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    step = max(1, _CHUNK_ELEMS // n)
    for s in range(0, d, step):
        out[s:s + step] = x[:, s:s + step].sort(dim=0).values[k:n - k].mean(dim=0)
    return out


def trim_count(beta: float, n: int) -> int:
    """floor(beta * n), in exact arithmetic on the fraction beta stands for
    (:func:`protocols.rules.common.as_fraction`: beta = 0.29, n = 100 trims 29, not the 28
    that floating point gives)."""
    return math.floor(as_fraction(beta) * n)


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
