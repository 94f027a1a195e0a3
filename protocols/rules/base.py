"""Aggregation-rule interface and registry.

A rule is a small object configured by its parameters (ByzFL style) and called
on a :class:`secagg.ClientUpdates` handle; it returns the aggregate update [d].
``secagg_compatible`` declares whether it runs on ``secure_average`` calls alone;
a rule that is not must call ``updates.reveal()``, which refuses under secure
aggregation. tests/test_aggregators.py checks every registry entry against its
declaration.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict

import torch

from secagg import ClientUpdates

from ..registry import Registry, dataclass_params

Tensor = torch.Tensor


class AggregationRule:
    """Base class: subclasses are dataclasses whose fields are the rule's parameters."""

    name: ClassVar[str]
    secagg_compatible: ClassVar[bool]
    citation: ClassVar[str]

    def __call__(self, updates: ClientUpdates) -> Tensor:
        raise NotImplementedError

    def params(self) -> Dict[str, Any]:
        return dataclass_params(self)


RULES = Registry("rule", required=("name", "secagg_compatible", "citation"),
                 describe_attrs=("secagg_compatible",))
register_rule = RULES.register
make_rule = RULES.make
describe_rules = RULES.describe
