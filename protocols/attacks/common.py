"""Helpers shared by the update attacks: what a view holds, and the server's rule replayed."""
from __future__ import annotations

import copy
from typing import Optional

import torch

from secagg import ClientUpdates

from .base import AttackView

Tensor = torch.Tensor


def honest_of(view: AttackView, attack: str) -> Tensor:
    """The honest clients' updates; only attacks that declare knowledge "honest-updates" get them."""
    if view.honest is None:
        raise ValueError(f"attack {attack!r} needs the honest clients' updates (knowledge 'honest-updates') "
                         "but the view has none")
    if view.honest.shape[0] == 0:
        raise ValueError(f"attack {attack!r} needs at least one honest update this round; every selected "
                         "client is corrupted")
    return view.honest


def clean_of(view: AttackView, attack: str):
    """All clean (pre-attack) updates and weights: the corrupted clients' honestly trained
    ones first, then the honest clients' (the "g_1, ..., g_n without attack")."""
    honest = honest_of(view, attack)
    hw = view.honest_weights if view.honest_weights is not None else torch.ones(
        honest.shape[0], dtype=honest.dtype, device=honest.device)
    rows = torch.cat([view.own, honest])
    weights = torch.cat([view.own_weights.to(honest.dtype), hw.to(honest.dtype)])
    return rows, weights


def n_selected(view: AttackView) -> int:
    """Clients aggregated this round (the view's n_selected, else own + honest)."""
    if view.n_selected:
        return int(view.n_selected)
    return view.own.shape[0] + (view.honest.shape[0] if view.honest is not None else 0)


def replay_rule(rule, rows: Tensor, weights: Optional[Tensor] = None, context: Optional[dict] = None) -> Tensor:
    """The server's public rule applied to plaintext rows the attacker knows (Kerckhoffs).

    The attacker computes this itself on a copy of the rule object: no oracle, no transcript
    and no diagnostic attribute of the server's rule is touched.
    """
    rule = copy.copy(rule)
    name = getattr(rule, "name", "<rule>")
    handle = ClientUpdates(rows, secure=False, rule=name, num_samples=weights, context=dict(context or {}))
    return rule(handle)


def randn_like_on(x: Tensor, generator: torch.Generator, std: float = 1.0) -> Tensor:
    """Gaussian noise shaped like ``x`` from the (CPU) attack generator, moved to x's device."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return (noise * std).to(x.device, x.dtype)


def rand_like_on(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.rand(x.shape, generator=generator, device=generator.device,
                      dtype=torch.float32).to(x.device, x.dtype)
