"""Inputs of every membership attack: model *views* and labelled target *records*.

A **view** is one model the adversary observes: an ``nn.Module`` as it is, or an
``nn.Module`` used as an architecture plus a flat parameter vector (in
``model.parameters()`` order, the project's currency) that is substituted for its
parameters through ``torch.func.functional_call`` without touching the module.
Several views (e.g. successive global models, the Weiszfeld intermediates, or the
ascended broadcast and the next round's model of the active attack) are passed as a
list; Nasr, Shokri and Houmansadr (S&P 2019, arXiv:1812.00910) attack the federated
model as observed at several training epochs the same way.

A **record set** is a pair ``(x, y)``: inputs ``[N, *shape]`` and integer labels ``[N]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class Records:
    """Labelled target records: inputs ``x`` [N, *shape] and class labels ``y`` [N].

    ``len(records)`` is N; ``x, y = records`` unpacks like a pair.
    """

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __iter__(self):
        return iter((self.x, self.y))

    def take(self, index: Tensor) -> "Records":
        """The records at ``index`` (a LongTensor of positions)."""
        return Records(self.x[index.to(self.x.device)], self.y[index.to(self.y.device)])

    def to(self, device) -> "Records":
        return Records(self.x.to(device), self.y.to(device))


def as_records(obj, name: str = "records", allow_empty: bool = False) -> Records:
    """Validate ``(x, y)`` and return it as :class:`Records`.

    Raises ``ValueError`` naming ``name`` for empty sets, mismatched lengths,
    non-integer or non-1-D labels and non-finite inputs.
    """
    if isinstance(obj, Records):
        x, y = obj
    else:
        try:
            x, y = obj
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair (x, y) of tensors, got {type(obj).__name__}; "
                            "pass membership.Records(x, y)") from None
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name} must hold torch tensors (x, y), got ({type(x).__name__}, {type(y).__name__}); "
                        "convert with torch.as_tensor")
    if y.ndim != 1:
        raise ValueError(f"{name}: labels y must be 1-D [N], got shape {tuple(y.shape)}; "
                         "pass class indices, not one-hot rows")
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0] if x.ndim else 0} rows (shape {tuple(x.shape)}) but y has "
                         f"{y.shape[0]} labels; x and y must describe the same records")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name}: labels y must be integer class indices, got dtype {y.dtype}; use y.long()")
    if y.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 records); an attack needs at least one record in each set")
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: x holds {int((~torch.isfinite(x)).sum())} non-finite values; clean the inputs")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name}: labels y must be >= 0, got min {int(y.min())}")
    return Records(x, y.long())


def unflatten_params(model: nn.Module, flat: Tensor) -> Dict[str, Tensor]:
    """Split a flat vector into ``{name: tensor}`` in ``model.named_parameters()`` order.

    The inverse of ``torch.nn.utils.parameters_to_vector(model.parameters())``.
    The result shares memory with ``flat`` (views), so gradients flow to ``flat``.
    """
    named = list(model.named_parameters())
    d = sum(p.numel() for _, p in named)
    if not isinstance(flat, Tensor) or flat.ndim != 1:
        shape = tuple(flat.shape) if isinstance(flat, Tensor) else type(flat).__name__
        raise ValueError(f"flat parameters must be a 1-D tensor of length {d}, got {shape}; "
                         "pass one row of the [n, d] matrix")
    if flat.numel() != d:
        raise ValueError(f"flat parameters have length {flat.numel()} but {type(model).__name__} has d={d} "
                         "parameters; the vector must come from this architecture (model.parameters() order)")
    out, offset = {}, 0
    for k, p in named:
        out[k] = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return out


def flatten_params(model: nn.Module) -> Tensor:
    """``model``'s parameters as one detached flat vector (``model.parameters()`` order)."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


@dataclass
class ModelView:
    """One observed model: ``model`` with, optionally, a flat parameter vector ``params``.

    ``params=None`` uses the module's own parameters. ``name`` labels the view in
    results (``"client3/round5"``, ``"aggregate"``, ``"weiszfeld[2]"``).
    """

    model: nn.Module
    params: Optional[Tensor] = None
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"ModelView.model must be a torch nn.Module, got {type(self.model).__name__}")
        if not any(True for _ in self.model.parameters()):
            raise ValueError(f"{type(self.model).__name__} has no parameters to attack")
        if self.params is not None:
            self.params = self.params.detach()
            unflatten_params(self.model, self.params)  # validates the length
            if self.params.is_floating_point() and not bool(torch.isfinite(self.params).all()):
                raise ValueError(f"view {self.name!r}: params hold "
                                 f"{int((~torch.isfinite(self.params)).sum())} non-finite values")

    @property
    def device(self) -> torch.device:
        if self.params is not None:
            return self.params.device
        return next(self.model.parameters()).device

    def param_dict(self) -> Dict[str, Tensor]:
        """``{name: tensor}`` for ``functional_call`` (detached)."""
        if self.params is None:
            return {k: p.detach() for k, p in self.model.named_parameters()}
        return unflatten_params(self.model, self.params)

    def flat(self) -> Tensor:
        return self.params if self.params is not None else flatten_params(self.model)


ViewLike = Union[nn.Module, ModelView, Tuple[nn.Module, Tensor]]


def as_view(obj: ViewLike, name: str = "") -> ModelView:
    """An ``nn.Module``, a ``ModelView`` or a pair ``(module, flat_params)`` as a ``ModelView``."""
    if isinstance(obj, ModelView):
        return obj
    if isinstance(obj, nn.Module):
        return ModelView(obj, None, name)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], nn.Module):
        return ModelView(obj[0], obj[1], name)
    raise TypeError(f"a view must be an nn.Module, a ModelView or a pair (module, flat_params); "
                    f"got {type(obj).__name__}")


def as_single_view(obj, where: str = "this function") -> ModelView:
    """Exactly one view; a list of several is refused with a clear error."""
    views = as_views(obj)
    if len(views) != 1:
        raise ValueError(f"{where} takes one view, got {len(views)}; call it once per view")
    return views[0]


def as_views(obj: Union[ViewLike, Sequence[ViewLike]]) -> List[ModelView]:
    """One view or a list of views, as a non-empty list of ``ModelView``."""
    if isinstance(obj, (nn.Module, ModelView)) or (isinstance(obj, tuple) and len(obj) == 2
                                                    and isinstance(obj[0], nn.Module)
                                                    and isinstance(obj[1], Tensor)):
        return [as_view(obj)]
    if isinstance(obj, (list, tuple)):
        if len(obj) == 0:
            raise ValueError("no views given (empty list); pass at least one model or (model, flat_params)")
        return [as_view(v, name=f"view{i}") for i, v in enumerate(obj)]
    return [as_view(obj)]
