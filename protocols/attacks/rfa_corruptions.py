"""The corruptions of the RFA paper, Sec. V-A (Pillutla, Kakade, Harchaoui)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Attack, AttackView, register_attack


@register_attack
@dataclass
class LabelFlip(Attack):
    """Label flipping l -> L - 1 - l (RFA Sec. V-A(a) for Sent140; Cronus, FLTrust), or a
    targeted flip ``source -> target`` when both are given (e.g. 1 -> 7)."""

    source: int = -1
    target: int = -1
    name = "labelflip"
    citation = "RFA Sec. V-A(a); Fang et al. 2020 / FLTrust Sec. 5 (label flipping)"
    kind = "data"

    def poison_batch(self, x, y, num_classes):
        if self.source >= 0 or self.target >= 0:
            if not (0 <= self.source < num_classes and 0 <= self.target < num_classes):
                raise ValueError(f"targeted flip needs 0 <= source, target < {num_classes}; "
                                 f"got source={self.source}, target={self.target}")
            return x, torch.where(y == self.source, torch.full_like(y, self.target), y)
        return x, num_classes - 1 - y

    def success_rate(self, model, x_test, y_test):
        """Targeted flip rate: source-class test inputs classified as the target (None if untargeted)."""
        if self.source < 0:
            return None
        keep = y_test == self.source
        if not keep.any():
            return None
        return float((model(x_test[keep]).argmax(1) == self.target).float().mean())


@register_attack
@dataclass
class NegateImages(Attack):
    """Data poisoning by negated images x -> 1 - x, labels unchanged (RFA Sec. V-A(a), EMNIST)."""

    name = "negate"
    citation = "RFA Sec. V-A(a)"
    kind = "data"

    def poison_batch(self, x, y, num_classes):
        return 1 - x, y


@register_attack
@dataclass
class GaussianUpdate(Attack):
    """Gaussian corruption: w_i + zeta, zeta ~ N(0, sigma^2 I), sigma^2 the variance across the
    components of the client's own update w_i - w (RFA Sec. V-A(b)). ``scale`` multiplies sigma."""

    scale: float = 1.0
    name = "gaussian"
    citation = "RFA Sec. V-A(b)"

    def poison_updates(self, view: AttackView):
        sigma = view.own.var(dim=1, keepdim=True).sqrt() * self.scale
        noise = torch.randn(view.own.shape, generator=view.generator).to(view.own.device, view.own.dtype)
        return view.own + sigma * noise


@register_attack
@dataclass
class Omniscient(Attack):
    """Omniscient corruption (RFA Sec. V-A(c)): the corrupted clients make the weighted mean
    over the selected clients the negative of what it would have been without corruption.

    ``space="update"`` (default) negates the mean *update* sum_i a_i Delta_i, so FedAvg takes a
    step of gradient ascent every round; ``space="params"`` negates the mean of the returned
    parameters w + Delta_i, the paper's literal statement (the global model then flips sign
    every round). All corrupted clients send the same vector x_c with
    sum_c a_c x_c = -(sum_all a_i x_i^clean) - sum_h a_h x_h.
    """

    space: str = "update"
    name = "omniscient"
    citation = "RFA Sec. V-A(c)"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        if self.space not in ("update", "params"):
            raise ValueError(f"space={self.space!r}; choose 'update' or 'params'")
        shift = view.global_params if self.space == "params" else torch.zeros_like(view.global_params)
        a_c, a_h = view.own_weights, view.honest_weights
        honest_sum = (a_h[:, None] * (view.honest + shift)).sum(0)
        clean_sum = honest_sum + (a_c[:, None] * (view.own + shift)).sum(0)
        x_c = (-clean_sum - honest_sum) / a_c.sum()
        return (x_c - shift).expand_as(view.own).clone()
