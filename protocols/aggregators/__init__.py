"""Aggregation rules, by registry name (``make_rule``)."""
from .base import RULES, AggregationRule, describe_rules, make_rule, register_rule
from . import fedavg, rfa  # noqa: F401  (registers)
from . import coordinate, fltrust, krum, mixtailor, mwu, normclip, residual, robustfilter  # noqa: F401,E501  (register)

__all__ = ["RULES", "AggregationRule", "describe_rules", "make_rule", "register_rule"]
