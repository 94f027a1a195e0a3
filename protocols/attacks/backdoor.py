"""Backdoor attacks with a trigger: naive data poisoning, and model replacement by scaling.

Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020 ("How to backdoor federated learning");
FLTrust Sec. VI-A ("Scaling attack", lambda = n); Fu et al. 2019 Sec. 4.3 (naive approach
and model replacement). The attack success rate is measured on triggered test inputs whose
true label is not the target (the simulation uses ``triggered`` and ``target``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .common import n_selected
from .base import Attack, AttackView, register_attack

Tensor = torch.Tensor


@dataclass
class _Trigger:
    """Trigger stamping shared by the backdoor attacks.

    Batched images [..., C, H, W] (4 or more dimensions) get a ``patch`` x ``patch`` square of
    intensity ``value`` in the bottom-right corner of every channel (a pixel-pattern trigger as
    in Gu et al. 2017 / Bagdasaryan et al.); flat features [..., F] get every ``stride``-th feature
    (0, stride, 2 stride, ...) set to ``value`` (FLTrust's feature-pattern trigger for HAR sets
    every 20th feature). A ``fraction`` of each poisoned batch is stamped and relabelled
    ``target`` (FLTrust: target 0 on MNIST; the data augmentation of its Scaling attack).
    """

    target: int = 0
    fraction: float = 0.5
    patch: int = 2
    value: float = 1.0
    stride: int = 20

    def _validate(self, num_classes: Optional[int] = None) -> None:
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction <= 1:
            raise ValueError(f"{self.name}: fraction={self.fraction!r} must lie in (0, 1]")
        if isinstance(self.patch, bool) or not isinstance(self.patch, int) or self.patch < 1:
            raise ValueError(f"{self.name}: patch={self.patch!r} must be a positive integer (pixels)")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"{self.name}: stride={self.stride!r} must be a positive integer")
        if num_classes is not None and not 0 <= self.target < num_classes:
            raise ValueError(f"{self.name}: target={self.target!r} must be a class in [0, {num_classes})")

    def triggered(self, x: Tensor) -> Tensor:
        """``x`` with the trigger stamped on every input (batched: [N, C, H, W] or [N, F])."""
        self._validate()
        out = x.clone()
        if x.ndim >= 4:
            p = self.patch
            if p > x.shape[-1] or p > x.shape[-2]:
                raise ValueError(f"{self.name}: patch={p} exceeds the image size {tuple(x.shape[-2:])}")
            out[..., -p:, -p:] = self.value
        else:
            out[..., ::self.stride] = self.value
        return out

    def poison_batch(self, x: Tensor, y: Tensor, num_classes: int):
        """Stamp the trigger on the first ceil(fraction * B) examples of each batch (batches are
        shuffled, so these are random examples) and relabel them ``target``."""
        self._validate(num_classes)
        b = y.shape[-1]
        k = max(1, int(round(self.fraction * b)))
        pos = torch.arange(b, device=y.device) < k                        # [B]
        py = torch.where(pos, torch.full_like(y, self.target), y)
        mx = pos.reshape((b,) + (1,) * (x.ndim - y.ndim))
        return torch.where(mx, self.triggered(x), x), py


@register_attack
@dataclass
class Backdoor(_Trigger, Attack):
    """Naive backdoor (Bagdasaryan et al. 2020; Fu et al. 2019 Sec. 4.3 "naive approach"): the
    corrupted clients train on batches in which a ``fraction`` of the examples carry the
    trigger and the ``target`` label, and submit their updates unchanged."""

    name = "backdoor"
    citation = "Bagdasaryan et al. 2020 (naive backdoor); Fu et al. 2019 Sec. 4.3"
    kind = "data"
    knowledge = "own"


@register_attack
@dataclass
class BackdoorScale(_Trigger, Attack):
    """Backdoor with model replacement by scaling (Bagdasaryan et al. 2020; FLTrust's
    "Scaling attack", Sec. VI-A): the trigger-poisoned training of :class:`Backdoor`, then each
    corrupted client multiplies its update by ``scale`` before submitting. ``scale`` None means
    lambda = n, the number of clients aggregated this round (FLTrust, following Bagdasaryan et
    al.). Applied in every round (FLTrust); ``last_scale`` records the factor.
    """

    scale: Optional[float] = None
    name = "backdoor-scale"
    citation = "Bagdasaryan et al. 2020 (model replacement); FLTrust Sec. VI-A (Scaling attack)"
    kind = "both"
    knowledge = "own"

    def poison_updates(self, view: AttackView):
        scale = float(n_selected(view)) if self.scale is None else self.scale
        if not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"{self.name}: scale={self.scale!r} must be a finite number > 0")
        self.last_scale = float(scale)
        return view.own * scale
