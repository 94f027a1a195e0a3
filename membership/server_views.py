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

**Reference runs** (LiRA, RMIA: :mod:`membership.reference`). A view may carry the same view
of K reference runs (``ServerView.runs``: federations trained the way the target was, in which
each target record was included with probability 1/2, ``TargetSet.inside``). The audit is then
the game of Carlini et al. (S&P 2022, Sec. V): every run is the target in turn and the other K
its references, so the records of all K + 1 runs are pooled (K + 1 times the members and
non-members of one run) and *every* attack, reference-based or not, is evaluated on the same
pooled records. ``MIAResult.extra["target_run"]`` keeps the metrics on the audited run's own
records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .attacks import MembershipAttack, WhiteboxAttack, make_attack
from .evaluate import run_attack
from .features import Features, record_features
from .metrics import MIAResult, auc as auc_of
from .reference import ReferenceGame, reference_signals
from .split import split_targets
from .views import ModelView, Records

Tensor = torch.Tensor

__all__ = ["ServerView", "TargetSet", "TargetPool", "PooledScore", "PooledWhitebox", "pooled_attack",
           "attack_server_view"]


@dataclass
class ServerView:
    """One kind of model the server holds: ``models[group]`` are flat parameter vectors in time
    order, the observed one last (e.g. ``(broadcast, broadcast + update)``). ``shared``: one
    entry (group 0) seen for every target (aggregate-type views). ``runs``: the same view in
    each reference run (same groups), for the reference-model attacks."""

    name: str
    models: Dict[int, Tuple[Tensor, ...]]
    shared: bool
    runs: Optional[List[Dict[int, Tuple[Tensor, ...]]]] = None


@dataclass
class TargetSet:
    """Target records, members first then non-members, and the target client (group) of each."""

    x: Tensor
    y: Tensor
    group: Tensor
    n_members: int
    n_nonmembers: int
    n_groups: int
    inside: Optional[Tensor] = None     # [K, N] bool: record i in reference run k's training data

    def __post_init__(self):
        n = len(self.y)
        if self.n_members + self.n_nonmembers != n or len(self.group) != n or len(self.x) != n:
            raise ValueError(f"TargetSet: {self.n_members} members + {self.n_nonmembers} non-members must equal "
                             f"the {n} records (x {len(self.x)}, group {len(self.group)})")
        if self.inside is not None and (self.inside.ndim != 2 or self.inside.shape[1] != n):
            raise ValueError(f"TargetSet.inside must be [K, {n}] (reference run x record), got "
                             f"{tuple(self.inside.shape)}")

    def labels(self) -> Tensor:
        """[1 + K, N] membership of every record in the audited run (row 0) and each reference run."""
        own = torch.zeros(1, len(self.y), dtype=torch.bool)
        own[0, :self.n_members] = True
        return own if self.inside is None else torch.cat([own, self.inside.bool().cpu()])


class TargetPool:
    """Target records indexed 0..N-1, each attacked through the views of its group.

    Attacks receive :class:`membership.Records` whose ``x`` holds pool indices; the pooled
    attacks look the records and their group's views up, so that
    :func:`membership.run_attack` runs unchanged.
    """

    def __init__(self, x: Tensor, y: Tensor, group: Tensor, views: List[List[ModelView]],
                 record: Optional[Tensor] = None):
        self.x, self.y, self.group, self.views = x, y, group, views
        self.record = record    # pool index -> row of x and y (several runs share one record set)

    def apply(self, idx: Tensor, fn: Callable[[List[ModelView], Records], Any], combine, take):
        idx = idx.cpu().long()
        g = self.group[idx]
        rows = idx if self.record is None else self.record[idx]
        parts, pos = [], []
        for gid in torch.unique(g).tolist():
            sel = torch.nonzero(g == gid).flatten()
            r = rows[sel].to(self.x.device)
            parts.append(fn(self.views[gid], Records(self.x[r], self.y[r.to(self.y.device)])))
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


def _group_views(model: nn.Module, name: str, models: Dict[int, Tuple[Tensor, ...]], shared: bool,
                 n_groups: int) -> List[List[ModelView]]:
    vlist = {g: [ModelView(model, p, f"{name}[{i}]") for i, p in enumerate(ps)] for g, ps in models.items()}
    if shared:
        return [vlist[0]]
    missing = [g for g in range(n_groups) if g not in vlist]
    if missing:
        raise ValueError(f"view {name!r} has no models for target group(s) {missing}")
    return [vlist[g] for g in range(n_groups)]


def reference_game(model: nn.Module, view: ServerView, targets: TargetSet) -> ReferenceGame:
    """The LiRA / RMIA signals of every target record on the observed model of each run
    (the audited run first, then ``view.runs``) and group."""
    if not view.runs:
        raise ValueError(f"view {view.name!r} has no reference runs; the reference-model attacks (lira, rmia) "
                         "need them (fedaudit audit --reference-models K)")
    labels = targets.labels()
    if labels.shape[0] != 1 + len(view.runs):
        raise ValueError(f"view {view.name!r} has {len(view.runs)} reference runs but the targets' membership "
                         f"covers {labels.shape[0] - 1}")
    G = 1 if view.shared else targets.n_groups
    records = Records(targets.x, targets.y)
    phi, prob = [], []
    for models in [view.models] + list(view.runs):
        groups = _group_views(model, view.name, models, view.shared, targets.n_groups)
        p, q = reference_signals([vs[-1] for vs in groups], records)
        phi.append(p)
        prob.append(q)
    group = torch.zeros(len(targets.y), dtype=torch.long) if view.shared else targets.group.cpu().long()
    game = ReferenceGame(torch.stack(phi), torch.stack(prob), group, labels)
    assert game.phi.shape[1] == G
    return game


def attack_server_view(model: nn.Module, view: ServerView, targets: TargetSet, attack: str,
                       attack_args: Optional[Mapping[str, Any]] = None, *, known_fraction: float = 0.5,
                       seed: int = 0, n_bootstrap: int = 1000,
                       game: Optional[ReferenceGame] = None) -> MIAResult:
    """One attack on one server view over the pooled targets (:func:`membership.run_attack`).

    ``model`` is the architecture the flat parameter vectors of ``view.models`` fill. With
    reference runs (``view.runs`` and ``targets.inside``) the records of every run are pooled,
    each run the target in turn (module docstring); ``game`` reuses the signals of
    :func:`reference_game` across attacks.
    """
    kwargs = dict(attack_args or {})
    cls = make_attack(attack, **kwargs)
    runs = list(view.runs or [])
    if runs and targets.inside is None:
        raise ValueError(f"view {view.name!r} has {len(runs)} reference runs but the targets carry no membership "
                         "of them (TargetSet.inside)")
    if cls.requires_references and not runs:
        raise ValueError(f"attack {attack!r} needs reference models; view {view.name!r} has none (fedaudit audit "
                         "--reference-models K, K >= 2)")
    N, n_m = len(targets.y), targets.n_members
    R = 1 + len(runs)
    G = 1 if view.shared else targets.n_groups
    views: List[List[ModelView]] = []
    for models in [view.models] + runs:
        views += _group_views(model, view.name, models, view.shared, targets.n_groups)
    base_group = torch.zeros(N, dtype=torch.long) if view.shared else targets.group.cpu().long()
    group = torch.cat([base_group + r * G for r in range(R)])
    record = torch.arange(N).repeat(R)
    pool = TargetPool(targets.x, targets.y, group, views, record=None if R == 1 else record)
    labels = targets.labels().reshape(-1) if R > 1 else torch.cat([torch.ones(n_m, dtype=torch.bool),
                                                                     torch.zeros(N - n_m, dtype=torch.bool)])
    mem_idx, non_idx = torch.nonzero(labels).flatten(), torch.nonzero(~labels).flatten()
    y_all = targets.y.cpu()[record]
    members, nonmembers = Records(mem_idx, y_all[mem_idx]), Records(non_idx, y_all[non_idx])
    if cls.requires_references:
        att = cls.bind(game if game is not None else reference_game(model, view, targets))
    else:
        att = pooled_attack(attack, pool, kwargs, seed)
    res = run_attack(att, pool.views[0], members, nonmembers, known_fraction=known_fraction, seed=seed,
                     view_name=view.name, n_bootstrap=n_bootstrap)
    res.extra["target_runs"] = R
    if R > 1:
        # the audited run's own records among the evaluated ones (same split as run_attack's)
        split = split_targets(len(mem_idx), len(non_idx), known_fraction, seed=seed)
        em, en = mem_idx[split.eval_members], non_idx[split.eval_nonmembers]
        own_m, own_n = (em < N).numpy(), (en < N).numpy()
        k_m, k_n = int(own_m.sum()), int(own_n.sum())
        s = res.scores
        if k_m and k_n:
            sm, sn = s[:len(em)][own_m], s[len(em):][own_n]
            y = [1] * k_m + [0] * k_n
            res.extra["target_run"] = {"auc": auc_of(list(sm) + list(sn), y), "n_members": k_m, "n_nonmembers": k_n}
    return res
