"""The interface every membership attack implements.

An attack is a small object configured by its parameters (ByzFL/Opacus style):

* ``fit(views, known_members, known_nonmembers)`` uses the attacker's prior
  knowledge — records it knows to be members / non-members — to train (white-box
  network) or to calibrate a decision threshold (threshold attacks). Returns ``self``.
* ``score(views, records)`` returns one score per record, **higher = more likely a
  member**, as a 1-D tensor on the views' device.

``views`` is one model (``nn.Module``, ``(module, flat_params)`` or
:class:`~membership.views.ModelView`) or a list of them; see :mod:`membership.views`.
After ``fit``, ``threshold`` holds the decision threshold (member iff ``score >=
threshold``) and ``threshold_source`` says where it came from.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import ClassVar, List, Optional

import torch

from ..metrics import best_threshold, labels_for
from ..views import ModelView, Records, as_records, as_views

Tensor = torch.Tensor


class MembershipAttack(ABC):
    """Base class: validation at the boundary, threshold calibration in ``fit``."""

    #: registry name
    name: ClassVar[str] = ""
    #: whether ``score`` needs a prior ``fit`` (the white-box network does)
    requires_fit: ClassVar[bool] = False
    #: minimum number of views the attack needs
    min_views: ClassVar[int] = 1
    #: whether the attack needs reference models (LiRA, RMIA: membership.attack_server_view)
    requires_references: ClassVar[bool] = False

    def __init__(self):
        self.threshold: Optional[float] = None
        self.threshold_source: str = "none"
        self._n_views: Optional[int] = None

    # -- public API -----------------------------------------------------------------
    def fit(self, views, known_members, known_nonmembers) -> "MembershipAttack":
        """Learn from the attacker's known members and non-members; returns ``self``."""
        views = self._views(views)
        members = as_records(known_members, "known_members")
        nonmembers = as_records(known_nonmembers, "known_nonmembers")
        self._fit(views, members, nonmembers)
        self._n_views = len(views)
        return self

    def score(self, views, records) -> Tensor:
        """One membership score per record (higher = more likely a member)."""
        views = self._views(views)
        records = as_records(records, "records")
        if self.requires_fit and self._n_views is None:
            raise RuntimeError(f"{type(self).__name__} must be fitted before scoring; call "
                               ".fit(views, known_members, known_nonmembers) first")
        if self.requires_fit and len(views) != self._n_views:
            raise ValueError(f"{type(self).__name__} was fitted on {self._n_views} view(s) but score got "
                             f"{len(views)}; pass the same number of views (e.g. the same rounds)")
        return self._score(views, records)

    # -- to override ----------------------------------------------------------------
    @abstractmethod
    def _score(self, views: List[ModelView], records: Records) -> Tensor:
        ...

    def _fit(self, views: List[ModelView], members: Records, nonmembers: Records) -> None:
        """Default: choose the threshold maximising balanced accuracy on the known records."""
        s = torch.cat([self._score(views, members), self._score(views, nonmembers)])
        _, thr = best_threshold(s, labels_for(len(members), len(nonmembers)))
        self.threshold, self.threshold_source = thr, "known_records"

    # -- helpers --------------------------------------------------------------------
    def _views(self, views) -> List[ModelView]:
        views = as_views(views)
        if len(views) < self.min_views:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_views} views, got {len(views)}; "
                             "pass [model_before, model_after] (e.g. the ascended broadcast and the next view)")
        return views

    def __repr__(self) -> str:
        names = [k for k in inspect.signature(type(self).__init__).parameters if k != "self"]
        params = {k: getattr(self, k) for k in names if hasattr(self, k)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def reduce_views(per_view: List[Tensor], reduce: str, where: str) -> Tensor:
    """Combine per-view scores: ``"last"`` (the most recent view) or ``"mean"``."""
    if reduce == "last":
        return per_view[-1]
    if reduce == "mean":
        return torch.stack(per_view).mean(0)
    raise ValueError(f"{where}: reduce={reduce!r} is not supported; use 'last' or 'mean'")
