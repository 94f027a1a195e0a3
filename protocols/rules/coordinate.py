"""Coordinate-wise rules of Yin, Chen, Ramchandran, Bartlett 2018: median and trimmed mean."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from secagg import ClientUpdates

from .common import coordinate_median, revealed
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

    def __call__(self, updates: ClientUpdates) -> Tensor:
        return coordinate_median(revealed(updates))


def trimmed_mean(x: Tensor, k: int) -> Tensor:
    """Per coordinate, drop the k largest and k smallest values and average the rest.

    For small k the 2k extremes are located with ``topk`` and masked out (no sort of all n
    values, and no subtraction of the extremes, which could be huge); otherwise the columns
    are sorted in chunks.
    """
    n, d = x.shape
    if k == 0:
        return x.mean(dim=0)
    if 4 * k <= n:
        keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        keep.scatter_(0, x.topk(k, dim=0).indices, False)
        keep.scatter_(0, x.topk(k, dim=0, largest=False).indices, False)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=0) / (n - 2 * k)
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    step = max(1, _CHUNK_ELEMS // n)
    for s in range(0, d, step):
        out[s:s + step] = x[:, s:s + step].sort(dim=0).values[k:n - k].mean(dim=0)
    return out


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

    def __call__(self, updates: ClientUpdates) -> Tensor:
        if not isinstance(self.beta, (int, float)) or not 0 <= self.beta < 0.5:
            raise ValueError(f"{self.name}: beta={self.beta!r} must lie in [0, 0.5) (the fraction trimmed "
                             "from each end of every coordinate)")
        k = math.floor(self.beta * updates.n)
        return trimmed_mean(revealed(updates), k)
