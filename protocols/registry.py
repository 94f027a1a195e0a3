"""A name -> class registry for configurable components (rules, attacks).

Each registered class is a dataclass whose fields are its parameters (ByzFL style);
``make`` validates the name and the parameters at the boundary (scikit-learn style).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Type


class Registry(dict):
    """``{name: class}`` with registration checks, construction and description.

    Parameters
    ----------
    kind : str
        What is registered ("rule", "attack"), for messages.
    required : attribute names every class must define.
    describe_attrs : class attributes listed by :meth:`describe` besides name, citation, parameters.
    check : optional extra validation of a class at registration.
    """

    def __init__(self, kind: str, required: Sequence[str], describe_attrs: Sequence[str] = (),
                 check: Optional[Callable[[type], None]] = None):
        super().__init__()
        self.kind, self.required, self.describe_attrs, self.check = kind, tuple(required), tuple(describe_attrs), check

    def register(self, cls: Type) -> Type:
        for attr in self.required:
            if not hasattr(cls, attr):
                raise TypeError(f"{self.kind} class {cls.__name__} must define {attr!r}")
        if self.check is not None:
            self.check(cls)
        if cls.name in self:
            raise ValueError(f"{self.kind} name {cls.name!r} registered twice")
        self[cls.name] = cls
        return cls

    def make(self, name: str, **kwargs) -> Any:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)} "
                             f"(`fedaudit list {self.kind}s` describes them)")
        cls = self[name]
        known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no parameter(s) {unknown}; "
                             f"its parameters are {sorted(known)}")
        return cls(**kwargs)

    def describe(self) -> List[Dict[str, Any]]:
        out = []
        for name, cls in sorted(self.items()):
            defaults = {f.name: f.default for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
            out.append({"name": name, **{a: getattr(cls, a) for a in self.describe_attrs},
                        "citation": cls.citation, "parameters": defaults})
        return out


def dataclass_params(obj: Any) -> Dict[str, Any]:
    """An instance's parameters (its dataclass fields)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
