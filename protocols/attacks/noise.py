"""Multiplicative Gaussian noise (Fu, Xie, Li, Chen 2019, Sec. 4.4)."""
from __future__ import annotations

from dataclasses import dataclass

from .common import randn_like_on
from .base import Attack, AttackView, register_attack


@register_attack
@dataclass
class GaussianMult(Attack):
    """Gaussian noise attack of Fu et al. 2019 (Sec. 4.4, Table 4): each parameter is multiplied by
    a scale epsilon ~ N(1, std^2), drawn independently per parameter and client.

    ``space="params"`` (default, the paper's setting: it corrupts the local *model*) multiplies
    w + Delta_i and submits the resulting update; ``space="update"`` multiplies Delta_i itself.
    ``std`` = 1.0 is the paper's 100% column (it sweeps 0-300%).
    """

    std: float = 1.0
    space: str = "params"
    name = "gaussian-mult"
    citation = "Fu et al. 2019, Sec. 4.4 (Gaussian noise attack)"
    knowledge = "own"

    def poison_updates(self, view: AttackView):
        if not isinstance(self.std, (int, float)) or not 0 <= self.std < float("inf"):
            raise ValueError(f"{self.name}: std={self.std!r} must be a finite number >= 0")
        if self.space not in ("params", "update"):
            raise ValueError(f"{self.name}: space={self.space!r}; choose 'params' or 'update'")
        eps = 1.0 + randn_like_on(view.own, view.generator, float(self.std))
        if self.space == "update":
            return view.own * eps
        w = view.global_params.to(view.own.dtype)
        return (w + view.own) * eps - w
