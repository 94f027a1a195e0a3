"""Two-view attacks for the active (gradient-ascent) setting of Nasr et al. (S&P 2019)
and the Cronus appendix B.5: compare the model the adversary broadcast (first view)
with the model it observes afterwards (last view).

* :class:`LossDrop`: score = loss(first view) - loss(last view).
* :class:`GradientNormDrop`: score = ||dL/dtheta||(first) - ||dL/dtheta||(last)
  (last layer by default, as in Cronus Figure 3).

Members' loss and gradient norm drop sharply when their owner trains on them after
the ascent; non-members' barely move. They also serve passively on two successive
rounds' models.
"""
from __future__ import annotations

from typing import Optional

from ..features import outputs_and_losses, per_sample_grad_norm
from .base import MembershipAttack


class LossDrop(MembershipAttack):
    """Loss drop between the first and last view (Nasr et al. 2019 active attack)."""

    name = "loss_drop"
    min_views = 2

    def _score(self, views, records):
        return outputs_and_losses(views[0], records)[1] - outputs_and_losses(views[-1], records)[1]


class GradientNormDrop(MembershipAttack):
    """Gradient-norm drop between the first and last view (Cronus appendix Figure 3)."""

    name = "gradient_norm_drop"
    min_views = 2

    def __init__(self, layers: str = "last", last_layer: Optional[str] = None):
        if layers not in ("last", "all"):
            raise ValueError(f"layers={layers!r} is not supported; use 'last' or 'all'")
        super().__init__()
        self.layers = layers
        self.last_layer = last_layer

    def _score(self, views, records):
        kw = dict(layers=self.layers, last_layer=self.last_layer)
        return per_sample_grad_norm(views[0], records, **kw) - per_sample_grad_norm(views[-1], records, **kw)
