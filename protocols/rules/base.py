"""Aggregation-rule interface and registry.

A rule is a small object configured by its parameters (ByzFL style) and called
on a :class:`secagg.ClientUpdates` handle; it returns the aggregate update [d].
``secagg_compatible`` declares whether it runs on ``secure_average`` calls alone;
a rule that is not must call ``updates.reveal()``, which refuses under secure
aggregation. tests/test_aggregators.py checks every registry entry against its
declaration.

``breakdown_point`` is the fraction of corrupted clients up to which the rule's paper says
its output stays bounded (None where the paper gives none); :meth:`AggregationRule.max_corrupted`
turns it into a count for n clients, and :func:`breakdown_warning` words the warning a run
with more corrupted clients gets. ``check(n)`` validates the parameters against n clients
before any training (``RunConfig.validate`` calls it; every ``__call__`` calls it too).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Dict, Optional

import torch

from secagg import ClientUpdates

from ..registry import Registry, dataclass_params
from .common import as_fraction

Tensor = torch.Tensor


class BreakdownWarning(UserWarning):
    """More corrupted clients than the rule's breakdown point allows: its guarantee is void."""


class AggregationRule:
    """Base class: subclasses are dataclasses whose fields are the rule's parameters."""

    name: ClassVar[str]
    secagg_compatible: ClassVar[bool]
    citation: ClassVar[str]
    # the paper's breakdown point as a fraction of clients, or the name of the parameter that is
    # (trimmed mean: "beta"); None where the paper gives none
    breakdown_point: ClassVar[Optional[Any]] = None
    breakdown_source: ClassVar[str] = ""

    def __call__(self, updates: ClientUpdates) -> Tensor:
        raise NotImplementedError

    def check(self, n: int) -> None:
        """Raise ``ValueError`` (one line, naming the parameter and the fix) if the parameters
        are invalid, or cannot aggregate n clients. The base rule accepts anything."""

    def breakdown(self) -> Optional[float]:
        """This instance's breakdown point (a parameter's value where ``breakdown_point`` names one)."""
        bp = self.breakdown_point
        return float(getattr(self, bp)) if isinstance(bp, str) else bp

    def max_corrupted(self, n: int) -> Optional[int]:
        """The most corrupted clients among n the rule tolerates: the largest f < breakdown * n
        (None without a breakdown point)."""
        bp = self.breakdown()
        if bp is None:
            return None
        return max(0, math.ceil(as_fraction(bp) * n) - 1)

    def params(self) -> Dict[str, Any]:
        return dataclass_params(self)


def breakdown_warning(rule: AggregationRule, corrupted: int, n: int) -> Optional[str]:
    """The warning for ``corrupted`` of ``n`` clients under ``rule`` (None when within its
    breakdown point, or when it has none, or for FedAvg, the non-robust baseline)."""
    bp = rule.breakdown()
    if bp is None or bp == 0 or corrupted <= 0:
        return None
    limit = rule.max_corrupted(n)
    if limit is None or corrupted <= limit:
        return None
    return (f"{corrupted} of {n} clients corrupted ({corrupted / n:.0%}) exceeds the breakdown point of rule "
            f"{rule.name!r}: {as_fraction(bp).limit_denominator(1000)} "
            f"({rule.breakdown_source or rule.citation}), i.e. at most {limit} of {n}; its robustness "
            "guarantee does not hold in this run")


RULES = Registry("rule", required=("name", "secagg_compatible", "citation"),
                 describe_attrs=("secagg_compatible", "breakdown_point"))
register_rule = RULES.register
make_rule = RULES.make
describe_rules = RULES.describe
