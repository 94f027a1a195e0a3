"""Aggregation rules by registry name (``make_rule``): each takes a ``secagg.ClientUpdates`` handle.
Imports secagg, rfa and protocols.registry; nothing else of protocols."""
from .base import RULES, AggregationRule, describe_rules, make_rule, register_rule
from . import coordinate, fedavg, fltrust, krum, mixtailor, mwu, normclip, residual, rfa, robustfilter  # noqa: F401,E501  (register)
from .rfa import RFA

__all__ = ["RULES", "AggregationRule", "describe_rules", "make_rule", "register_rule", "RFA"]
