"""Aggregation-rule interface and registry.

A rule is a small object configured by its parameters (ByzFL style) and called
on a :class:`secagg.ClientUpdates` handle; it returns the aggregate update [d].
``secagg_compatible`` declares whether it runs on ``secure_average`` calls alone;
a rule that is not must call ``updates.reveal()``, which refuses under secure
aggregation. tests/test_aggregators.py checks every registry entry against its
declaration.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Dict, List, Type

import torch

from secagg import ClientUpdates

Tensor = torch.Tensor


class AggregationRule:
    """Base class: subclasses are dataclasses whose fields are the rule's parameters."""

    name: ClassVar[str]
    secagg_compatible: ClassVar[bool]
    citation: ClassVar[str]

    def __call__(self, updates: ClientUpdates) -> Tensor:
        raise NotImplementedError

    def params(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} \
            if dataclasses.is_dataclass(self) else {}


RULES: Dict[str, Type[AggregationRule]] = {}


def register_rule(cls: Type[AggregationRule]) -> Type[AggregationRule]:
    for attr in ("name", "secagg_compatible", "citation"):
        if not hasattr(cls, attr):
            raise TypeError(f"rule class {cls.__name__} must define {attr!r}")
    if cls.name in RULES:
        raise ValueError(f"rule name {cls.name!r} registered twice")
    RULES[cls.name] = cls
    return cls


def make_rule(name: str, **kwargs) -> AggregationRule:
    """Instantiate a registered rule by name; unknown names and parameters are errors."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {sorted(RULES)} "
                         "(`fedaudit list rules` describes them)")
    cls = RULES[name]
    if dataclasses.is_dataclass(cls):
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"rule {name!r} has no parameter(s) {unknown}; its parameters are {sorted(known)}")
    return cls(**kwargs)


def describe_rules() -> List[Dict[str, Any]]:
    out = []
    for name, cls in sorted(RULES.items()):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        out.append({"name": name, "secagg_compatible": cls.secagg_compatible,
                    "citation": cls.citation, "parameters": defaults})
    return out
