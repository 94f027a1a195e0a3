"""Poisoning attacks, by registry name (``make_attack``)."""
from .base import ATTACKS, Attack, AttackView, corrupted_clients, describe_attacks, make_attack, register_attack, submit_poisoned
from . import rfa_corruptions  # noqa: F401  (registers)
from . import backdoor, cronus, fang, fltrust_adaptive, noise, tailored  # noqa: F401  (register)

__all__ = ["ATTACKS", "Attack", "AttackView", "corrupted_clients", "describe_attacks", "make_attack", "submit_poisoned",
           "register_attack"]
