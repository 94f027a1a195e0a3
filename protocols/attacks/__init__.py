"""Poisoning attacks, by registry name (``make_attack``)."""
from .base import ATTACKS, Attack, AttackView, corrupted_clients, describe_attacks, make_attack, register_attack
from . import rfa_corruptions  # noqa: F401  (registers)

__all__ = ["ATTACKS", "Attack", "AttackView", "corrupted_clients", "describe_attacks", "make_attack",
           "register_attack"]
