"""Poisoning attacks by registry name (``make_attack``), each declaring what it knows.
Imports secagg, protocols.registry and protocols.rules (attacks tailored to a rule)."""
from .base import (ATTACKS, Attack, AttackView, corrupted_clients, describe_attacks, make_attack, register_attack,
                   submit_poisoned)
from . import backdoor, cronus, fang, fltrust_adaptive, noise, rfa_corruptions, tailored  # noqa: F401  (register)

__all__ = ["ATTACKS", "Attack", "AttackView", "corrupted_clients", "describe_attacks", "make_attack", "submit_poisoned",
           "register_attack"]
