"""Membership attacks behind one interface (:class:`MembershipAttack`) and a registry.
May import membership's views, features, metrics and reference; nothing outside membership.

=====================  ==========================================================
name                   attack
=====================  ==========================================================
``loss``               :class:`LossThreshold` (Yeom et al. 2018), score = -loss
``confidence``         :class:`ConfidenceThreshold`, true-label or max probability
``gradient_norm``      :class:`GradientNorm`, score = -||dL/dtheta|| (Cronus Fig. 3)
``whitebox``           :class:`WhiteboxAttack` (Nasr, Shokri, Houmansadr 2019)
``loss_drop``          :class:`LossDrop`, active: loss(before) - loss(after)
``gradient_norm_drop`` :class:`GradientNormDrop`, active: gradient-norm drop
``lira``               :class:`LiRA` (Carlini et al. 2022), reference models
``rmia``               :class:`RMIA` (Zarifzadeh et al. 2024), reference models
=====================  ==========================================================

``lira`` and ``rmia`` (``requires_references``) score a record by comparing the target with
reference models trained with and without it; they run through
:func:`membership.attack_server_view` on a view that has reference runs.
"""
from __future__ import annotations

import inspect
from typing import Dict, Type

from .base import MembershipAttack
from .drop import GradientNormDrop, LossDrop
from .reference import LiRA, RMIA
from .threshold import ConfidenceThreshold, GradientNorm, LossThreshold
from .whitebox import AttackNetwork, WhiteboxAttack

ATTACKS: Dict[str, Type[MembershipAttack]] = {
    cls.name: cls for cls in (LossThreshold, ConfidenceThreshold, GradientNorm, WhiteboxAttack, LossDrop,
                              GradientNormDrop, LiRA, RMIA)
}


def make_attack(name: str, **kwargs) -> MembershipAttack:
    """Instantiate a registered attack by name with its parameters."""
    if name not in ATTACKS:
        raise ValueError(f"unknown membership attack {name!r}; choose one of {sorted(ATTACKS)}")
    cls = ATTACKS[name]
    sig = inspect.signature(cls.__init__)
    unknown = [k for k in kwargs if k not in sig.parameters or k == "self"]
    if unknown:
        allowed = [k for k in sig.parameters if k != "self"]
        raise TypeError(f"attack {name!r} has no parameter(s) {unknown}; its parameters are {allowed}")
    return cls(**kwargs)


__all__ = ["ATTACKS", "make_attack", "MembershipAttack", "LossThreshold", "ConfidenceThreshold", "GradientNorm",
           "WhiteboxAttack", "AttackNetwork", "LossDrop", "GradientNormDrop", "LiRA", "RMIA"]
