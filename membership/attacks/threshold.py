"""Metric-threshold baselines: one number per record, thresholded.

* :class:`LossThreshold` — Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting", CSF 2018: a record is a member
  when its loss is below a threshold (Yeom et al. use the average training loss).
  Score = -loss.
* :class:`ConfidenceThreshold` — the model's confidence: the probability of the true
  label (default) or the largest softmax output (Salem et al. 2019; Song & Mittal 2021).
* :class:`GradientNorm` — the norm of the loss gradient: members, fitted by SGD, sit
  near a minimum of their own loss and have small gradients. This is the signal that
  Nasr et al. (S&P 2019) observe to separate members from non-members and that the
  Cronus appendix Figure 3 plots for the last layer of the aggregated model.
  **Sign convention:** score = -||dL/dtheta|| (small gradient = member).

With several views, ``reduce="last"`` (default) scores the most recent view only and
``reduce="mean"`` averages the per-view scores. ``fit`` is optional: it picks the
threshold that maximises balanced accuracy on the attacker's known records.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..features import outputs_and_losses, per_sample_grad_norm
from ..views import ModelView, Records
from .base import MembershipAttack, reduce_views

Tensor = torch.Tensor


class _PerViewThreshold(MembershipAttack):
    def __init__(self, reduce: str = "last"):
        super().__init__()
        reduce_views([torch.zeros(1)], reduce, type(self).__name__)  # validate early
        self.reduce = reduce

    def _per_view(self, view: ModelView, records: Records) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, views: List[ModelView], records: Records) -> Tensor:
        used = views[-1:] if self.reduce == "last" else views
        return reduce_views([self._per_view(v, records) for v in used], self.reduce, type(self).__name__)


class LossThreshold(_PerViewThreshold):
    """Yeom et al. (CSF 2018) loss attack: score = -cross-entropy loss."""

    name = "loss"

    def _per_view(self, view, records):
        return -outputs_and_losses(view, records)[1]


class ConfidenceThreshold(_PerViewThreshold):
    """Confidence attack: score = p(true label) (``kind="true_label"``) or max softmax (``"max"``)."""

    name = "confidence"

    def __init__(self, kind: str = "true_label", reduce: str = "last"):
        if kind not in ("true_label", "max"):
            raise ValueError(f"kind={kind!r} is not supported; use 'true_label' or 'max'")
        super().__init__(reduce)
        self.kind = kind

    def _per_view(self, view, records):
        probs, _ = outputs_and_losses(view, records)
        if self.kind == "max":
            return probs.max(dim=1).values
        return probs.gather(1, records.y.to(probs.device).view(-1, 1)).squeeze(1)


class GradientNorm(_PerViewThreshold):
    """Gradient-norm attack (Nasr et al. 2019; Cronus appendix B.5, Figure 3): score = -||dL/dtheta||.

    ``layers="last"`` (default) takes the gradient w.r.t. the last layer's weight and
    bias, as in Figure 3; ``"all"`` w.r.t. every parameter.
    """

    name = "gradient_norm"

    def __init__(self, layers: str = "last", last_layer: Optional[str] = None, reduce: str = "last"):
        if layers not in ("last", "all"):
            raise ValueError(f"layers={layers!r} is not supported; use 'last' or 'all'")
        super().__init__(reduce)
        self.layers = layers
        self.last_layer = last_layer

    def _per_view(self, view, records):
        return -per_sample_grad_norm(view, records, layers=self.layers, last_layer=self.last_layer)
