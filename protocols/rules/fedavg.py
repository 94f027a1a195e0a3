"""FedAvg: the sample-count-weighted mean of client updates (McMahan et al. 2017, Alg. 1)."""
from __future__ import annotations

from dataclasses import dataclass

from secagg import ClientUpdates

from .base import AggregationRule, register_rule


@register_rule
@dataclass
class FedAvg(AggregationRule):
    """sum_k n_k Delta_k / sum_k n_k, one secure-average call (each client weights itself by n_k).

    McMahan, Moore, Ramage, Hampson, Arcas 2017, Algorithm 1 (FederatedAveraging);
    Cronus appendix Alg. 1. ``weighted=False`` gives the plain mean.
    """

    weighted: bool = True
    name = "fedavg"
    secagg_compatible = True
    citation = "McMahan et al. 2017, Alg. 1 (FederatedAveraging)"
    breakdown_point = 0.0
    breakdown_source = "the mean's breakdown point is 0: one client moves it arbitrarily (RFA Sec. I)"

    def __call__(self, updates: ClientUpdates):
        weight = updates.num_samples if self.weighted else None
        return updates.secure_average(weight=weight, label="fedavg")
