"""Client-side l2 norm clipping, then one secure average (Sun et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from secagg import ClientUpdates

from .base import AggregationRule, register_rule

Tensor = torch.Tensor


@register_rule
@dataclass
class NormClip(AggregationRule):
    """Norm bounding: each client clips its own update, Delta_i * min(1, M / ||Delta_i||_2), and
    the server takes one (sample-count weighted) secure average (Sun, Kairouz, Suresh, McMahan
    2019, "Can you really backdoor federated learning?"; the RFA paper's baseline).

    The clipping runs client-side (it sees only the client's own row), so the rule is
    secagg-compatible. The papers do not fix M; ``max_norm`` = 1.0 is this toolkit's default,
    to be tuned to the model's typical update norm.
    """

    max_norm: float = 1.0
    weighted: bool = True
    name = "normclip"
    secagg_compatible = True
    citation = "Sun et al. 2019 (norm bounding); RFA Sec. V-B baseline"

    def __call__(self, updates: ClientUpdates) -> Tensor:
        if not isinstance(self.max_norm, (int, float)) or not self.max_norm > 0 or self.max_norm == float("inf"):
            raise ValueError(f"{self.name}: max_norm={self.max_norm!r} must be a finite number > 0")
        bound = float(self.max_norm)

        def clip(row, _):
            norm = torch.linalg.vector_norm(row)
            return row * torch.clamp(bound / norm.clamp_min(torch.finfo(row.dtype).tiny), max=1.0)

        return updates.secure_average(weight=updates.num_samples if self.weighted else None, transform=clip,
                                      label=self.name)
