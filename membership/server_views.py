"""Attacking what a federated server holds: server views over pooled target clients.

A federated audit has many target clients, each seen through its *own* models in some
views (the individual view: broadcast + that client's update) and through one shared model
in others (the aggregate, a Weiszfeld intermediate). :class:`ServerView` records that as
``group -> models`` (one group for a shared view); :class:`TargetSet` holds the target
records (members first, then non-members) and the group of each; :func:`attack_server_view`
runs one attack on one view over all targets pooled, so that the attacker's known records
and the evaluation set are large (:func:`membership.run_attack`: split, fit, score, metrics).

Both federated protocols' audits use this module (parameter sharing in
``protocols.experiments.audit``, Cronus in ``protocols.cronus.audit``). Pooling is exact:
each record is scored by the attack on its own group's models, and only the threshold (or
the white-box attack network) is shared across groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .attacks import MembershipAttack, WhiteboxAttack, make_attack
from .evaluate import run_attack
from .features import Features, record_features
from .metrics import MIAResult
from .views import ModelView, Records

Tensor = torch.Tensor

__all__ = ["ServerView", "TargetSet", "TargetPool", "PooledScore", "PooledWhitebox", "pooled_attack",
           "attack_server_view"]


@dataclass
class ServerView:
    """One kind of model the server holds: ``models[group]`` are flat parameter vectors in time
    order, the observed one last (e.g. ``(broadcast, broadcast + update)``). ``shared``: one
    entry (group 0) seen for every target (aggregate-type views)."""

    name: str
    models: Dict[int, Tuple[Tensor, ...]]
    shared: bool


@dataclass
class TargetSet:
    """Target records, members first then non-members, and the target client (group) of each."""

    x: Tensor
    y: Tensor
    group: Tensor
    n_members: int
    n_nonmembers: int
    n_groups: int

    def __post_init__(self):
        n = len(self.y)
        if self.n_members + self.n_nonmembers != n or len(self.group) != n or len(self.x) != n:
            raise ValueError(f"TargetSet: {self.n_members} members + {self.n_nonmembers} non-members must equal "
                             f"the {n} records (x {len(self.x)}, group {len(self.group)})")


class TargetPool:
    """Target records indexed 0..N-1, each attacked through the views of its group.

    Attacks receive :class:`membership.Records` whose ``x`` holds pool indices; the pooled
    attacks look the records and their group's views up, so that
    :func:`membership.run_attack` runs unchanged.
    """

    def __init__(self, x: Tensor, y: Tensor, group: Tensor, views: List[List[ModelView]]):
        self.x, self.y, self.group, self.views = x, y, group, views

    def apply(self, idx: Tensor, fn: Callable[[List[ModelView], Records], Any], combine, take):
        idx = idx.cpu().long()
        g = self.group[idx]
        parts, pos = [], []
        for gid in torch.unique(g).tolist():
            sel = torch.nonzero(g == gid).flatten()
            parts.append(fn(self.views[gid], Records(self.x[idx[sel]], self.y[idx[sel]])))
            pos.append(sel)
        inv = torch.argsort(torch.cat(pos))
        return take(combine(parts), inv)

    def score(self, inner: MembershipAttack, idx: Tensor) -> Tensor:
        return self.apply(idx, lambda v, r: inner.score(v, r), torch.cat, lambda s, i: s[i.to(s.device)])


class PooledScore(MembershipAttack):
    """A score-only attack applied per group; the threshold is learned on the pooled known records."""

    def __init__(self, pool: TargetPool, inner: MembershipAttack):
        super().__init__()
        self.pool, self.inner = pool, inner
        self.name, self.min_views = inner.name, inner.min_views

    def _score(self, views, records):
        return self.pool.score(self.inner, records.x)


class PooledWhitebox(WhiteboxAttack):
    """Nasr et al.'s white-box attack on pooled targets: features from each record's own views."""

    def __init__(self, pool: TargetPool, **kwargs):
        super().__init__(**kwargs)
        self.pool = pool

    def features(self, views, records):
        return self.pool.apply(records.x, lambda v, r: record_features(v, r, last_layer=self.last_layer),
                               Features.cat, lambda f, i: f.take(i))


def pooled_attack(name: str, pool: TargetPool, kwargs: Mapping[str, Any], seed: int) -> MembershipAttack:
    """The registered attack ``name`` over ``pool`` (the white-box attack network is trained on
    the pooled features; score attacks keep per-group scores and share one threshold)."""
    if name == "whitebox":
        return PooledWhitebox(pool, **{"seed": seed, **kwargs})
    inner = make_attack(name, **kwargs)
    if inner.requires_fit:
        raise ValueError(f"attack {name!r} needs training and cannot yet be pooled over target clients")
    return PooledScore(pool, inner)


def attack_server_view(model: nn.Module, view: ServerView, targets: TargetSet, attack: str,
                       attack_args: Optional[Mapping[str, Any]] = None, *, known_fraction: float = 0.5,
                       seed: int = 0, n_bootstrap: int = 1000) -> MIAResult:
    """One attack on one server view over the pooled targets (:func:`membership.run_attack`).

    ``model`` is the architecture the flat parameter vectors of ``view.models`` fill.
    """
    vlist = {g: [ModelView(model, p, f"{view.name}[{i}]") for i, p in enumerate(ps)]
             for g, ps in view.models.items()}
    if view.shared:
        pool = TargetPool(targets.x, targets.y, torch.zeros_like(targets.group), [vlist[0]])
    else:
        missing = [g for g in range(targets.n_groups) if g not in vlist]
        if missing:
            raise ValueError(f"view {view.name!r} has no models for target group(s) {missing}")
        pool = TargetPool(targets.x, targets.y, targets.group, [vlist[g] for g in range(targets.n_groups)])
    n_m, n_n = targets.n_members, targets.n_nonmembers
    members = Records(torch.arange(n_m), targets.y[:n_m].cpu())
    nonmembers = Records(torch.arange(n_m, n_m + n_n), targets.y[n_m:].cpu())
    att = pooled_attack(attack, pool, dict(attack_args or {}), seed)
    return run_attack(att, pool.views[0], members, nonmembers, known_fraction=known_fraction, seed=seed,
                      view_name=view.name, n_bootstrap=n_bootstrap)
