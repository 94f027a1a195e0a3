"""Aggregation rules, by registry name (``make_rule``)."""
from .base import RULES, AggregationRule, describe_rules, make_rule, register_rule
from . import fedavg  # noqa: F401  (registers)

__all__ = ["RULES", "AggregationRule", "describe_rules", "make_rule", "register_rule"]
