"""Membership audits of Cronus's views next to FedAvg's (Cronus appendix B.5, D.2.2, Table 6).

Both systems are trained on the same parties (the same private records, the same reference
sets) and attacked on the same targets with :mod:`membership`'s attacks, pooled over the
target parties by :func:`membership.attack_server_view`. The views, observed by the server:

===================  ===============================================  ==================================
view                 FedAvg (parameter averaging, secagg off)         Cronus
===================  ===============================================  ==================================
individual           each target party's model in the last round      the server's model trained on the
                     (broadcast + its update)                         party's shared predictions
aggregate            the global model after the last round            the model trained on the aggregate
active-individual    malicious server broadcasts theta + gamma dL/d   the server trains its model S on
                     theta on the targets (gradient ascent) in the    the aggregate, ascends it on the
                     last round; the party's model after training     targets (theta_m), broadcasts
                                                                      theta_m's predictions instead of the
                                                                      aggregate; the model trained from
                                                                      theta_m on the party's next shared
                                                                      predictions
active-aggregate     the same, the next aggregate                     the same, on the next aggregate
===================  ===============================================  ==================================

Each view is the list of models the server holds for it, in time order, the observed one
last: [before, observed] for the passive views, [honest, ascended, observed] for the active
ones (as in :mod:`protocols.experiments.audit`). Members are the target parties' training records, the
non-members as many test records.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch

import membership as M

from protocols.clients import evaluate
from protocols.cronus.simulation import CronusSimulation
from protocols.data import Dataset
from protocols.models import set_flat_params
from protocols.simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["audit_cronus_and_fedavg", "private_dataset", "VIEWS"]

VIEWS = ("individual", "aggregate", "active-individual", "active-aggregate")


def private_dataset(sim: CronusSimulation) -> Dataset:
    """The dataset without Cronus's public set: the training data a parameter-sharing
    federation over the same parties partitions (same order, so the same partition)."""
    keep = torch.ones(len(sim.data.y_train), dtype=torch.bool, device=sim.device)
    keep[sim.public_indices] = False
    d = sim.data
    meta = dict(d.meta)
    if "users_train" in meta:   # natural partition: the record owners of what remains
        meta["users_train"] = meta["users_train"][keep.cpu()]
    return Dataset(d.name, d.x_train[keep], d.y_train[keep], d.x_test, d.y_test, d.num_classes, d.input_shape, meta)


def _targets(sim, n_test: int, targets: Optional[Sequence[int]], gen: torch.Generator):
    if targets is None:
        targets, total = [], 0
        for k in sim.honest:
            targets.append(k)
            total += len(sim.client_indices[k])
            if total >= n_test:
                break
    targets = list(targets)
    bad = [k for k in targets if k not in sim.honest]
    if bad:
        raise ValueError(f"target parties {bad} are corrupted or out of range; choose honest parties {sim.honest}")
    mem = torch.cat([sim.client_indices[k] for k in targets])
    group = torch.cat([torch.full((len(sim.client_indices[k]),), j, dtype=torch.long) for j, k in enumerate(targets)])
    n_non = min(len(mem), n_test)
    non = torch.randperm(n_test, generator=gen)[:n_non].to(sim.device)
    non_group = group[torch.randperm(len(group), generator=gen)[:n_non]]
    d = sim.data
    x = torch.cat([d.x_train[mem], d.x_test[non]])
    y = torch.cat([d.y_train[mem], d.y_test[non]])
    return targets, x, y, torch.cat([group, non_group]), len(mem), n_non


def _fedavg_views(run: RunConfig, ds: Dataset, targets: List[int], tx: Tensor, ty: Tensor, gamma: float,
                  want: Sequence[str]) -> Dict[str, M.ServerView]:
    sim = Simulation(run, dataset=ds, keep_reveals=True)   # the individual view reads the reveals
    R = run.rounds
    snapshot = None
    for rnd in range(R):
        if rnd == R - 1:
            snapshot = copy.deepcopy(sim)
        sim.step(rnd)
    last = R - 1

    def update_of(s, k):
        rev = [r for r in s.transcript.reveals if r.round == last and r.updates is not None]
        return rev[-1].updates[k]

    gh = sim.global_history
    views = {"individual": M.ServerView("individual", {j: (gh[last], gh[last] + update_of(sim, k))
                                                  for j, k in enumerate(targets)}, False),
             "aggregate": M.ServerView("aggregate", {0: (gh[last], gh[R])}, True)}
    info = {"test_accuracy": sim.history[-1].test_accuracy}
    if any(v.startswith("active") for v in want):
        sa, ascended = snapshot, {}

        def malicious(rnd, w):
            ascended[rnd] = M.gradient_ascent(sa.model, w, tx, ty, gamma)
            return ascended[rnd]

        sa.broadcast_hook = malicious
        sa.step(last)
        ga, up = sa.global_history, ascended[last]
        views["active-individual"] = M.ServerView("active-individual", {
            j: (ga[last], up, up + update_of(sa, k)) for j, k in enumerate(targets)}, False)
        views["active-aggregate"] = M.ServerView("active-aggregate",
                                            {0: (ga[last], up, up + (ga[R] - ga[last]) / run.server_lr)}, True)
        info["active_test_accuracy"] = sa.history[-1].test_accuracy
    return views, info, sim


def _cronus_views(sim: CronusSimulation, targets: List[int], tx: Tensor, ty: Tensor, gamma: float,
                  want: Sequence[str]):
    R = sim.cfg.rounds
    if R < 2:
        raise ValueError(f"the Cronus audit needs rounds >= 2 (the active server acts one round before it "
                         f"observes), got rounds={R}")
    sim.initialize()
    snapshot = None
    for rnd in range(R):
        if rnd == R - 2:
            snapshot = copy.deepcopy(sim)
        sim.step(rnd)
    base = sim.train_student(sim.aggregate_history[R - 2])
    shared = sim.shared_history[R - 1]
    views = {"individual": M.ServerView("individual", {j: (base, sim.train_student(shared[k], start=base))
                                                  for j, k in enumerate(targets)}, False),
             "aggregate": M.ServerView("aggregate", {0: (base, sim.train_student(sim.aggregate_history[R - 1],
                                                                            start=base))}, True)}
    info = {"test_accuracy": sim.history[-1].test_accuracy}
    if any(v.startswith("active") for v in want):
        sa, held = snapshot, {}

        def malicious(rnd, agg):
            if rnd != R - 2:
                return agg
            s = sa.train_student(agg)
            held["honest"], held["ascended"] = s, M.gradient_ascent(sa.model, s, tx, ty, gamma)
            return sa.labels_of(held["ascended"])

        sa.broadcast_hook = malicious
        sa.step(R - 2)
        sa.step(R - 1)
        s, up = held["honest"], held["ascended"]
        sh = sa.shared_history[R - 1]
        views["active-individual"] = M.ServerView("active-individual", {
            j: (s, up, sa.train_student(sh[k], start=up)) for j, k in enumerate(targets)}, False)
        views["active-aggregate"] = M.ServerView("active-aggregate", {
            0: (s, up, sa.train_student(sa.aggregate_history[R - 1], start=up))}, True)
        info["active_test_accuracy"] = sa.history[-1].test_accuracy
        m = copy.deepcopy(sa.model)
        set_flat_params(m, up)
        info["ascended_student_accuracy"] = evaluate(m, sa.data.x_test, sa.data.y_test)[0]
    return views, info


def audit_cronus_and_fedavg(cronus: RunConfig, fedavg: RunConfig, attacks: Sequence[str] = ("loss",),
                            views: Sequence[str] = VIEWS, targets: Optional[Sequence[int]] = None,
                            gamma: float = 5.0, known_fraction: float = 0.5, n_bootstrap: int = 200,
                            seed: int = 0, dataset: Optional[Dataset] = None,
                            systems: Sequence[str] = ("fedavg", "cronus"),
                            cronus_gamma: Optional[float] = None) -> List[Dict[str, Any]]:
    """Train Cronus (``cronus``, protocol "cronus") and FedAvg (``fedavg``, protocol "params",
    secagg off) on the same parties and attack the ``views`` of both (Table 6).

    ``fedavg`` runs on :func:`private_dataset` of the Cronus run (the public set removed), with
    the same ``clients``, ``partition``, ``seed`` and ``client_holdout``, so both systems' parties
    hold the same records (checked). Returns one row per (system, view, attack): ``system,
    view, attack, accuracy`` (balanced accuracy of the membership attack, Table 6's metric),
    ``auc``, ``auc_ci``, ``n_members``, ``n_nonmembers`` and the systems' ``test_accuracy``.
    ``gamma``: the malicious server's ascent step (``cronus_gamma`` for Cronus's server model,
    default the same; Cronus D.2.2 keeps the ascended model about as accurate as the parties').
    ``systems``: which of the two to train and attack.
    """
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"unknown view(s) {bad}; choose from {VIEWS}")
    if fedavg.secagg != "off" and any(v.endswith("individual") for v in views):
        raise ValueError(f"the individual FedAvg views need secagg='off' (got {fedavg.secagg!r}): under secure "
                         "aggregation the server never sees a party's update")
    for k in ("clients", "partition", "alpha", "seed", "client_holdout", "model", "dataset"):
        if getattr(cronus, k) != getattr(fedavg, k):
            raise ValueError(f"cronus and fedavg runs differ in {k} ({getattr(cronus, k)!r} vs "
                             f"{getattr(fedavg, k)!r}); the comparison needs the same parties")
    csim = CronusSimulation(cronus, dataset=dataset)
    gen = torch.Generator().manual_seed(seed)
    targets, tx, ty, group, n_m, n_n = _targets(csim, len(csim.data.y_test), targets, gen)
    bad = [s for s in systems if s not in ("fedavg", "cronus")] or ([] if systems else ["(none)"])
    if bad:
        raise ValueError(f"systems={list(systems)!r}: choose from 'fedavg', 'cronus'")
    trained = []
    if "fedavg" in systems:
        fviews, finfo, fsim = _fedavg_views(fedavg, private_dataset(csim), targets, tx, ty, gamma, views)
        pool = torch.ones(len(csim.data.y_train), dtype=torch.bool)
        pool[csim.public_indices.cpu()] = False
        pool = pool.nonzero().flatten().to(csim.device)
        for k in targets:
            if not torch.equal(pool[fsim.client_indices[k]], csim.client_indices[k]):
                raise RuntimeError(f"party {k} holds different records in the FedAvg and the Cronus run")
        trained.append(("fedavg", fviews, finfo))
    if "cronus" in systems:
        cg = gamma if cronus_gamma is None else cronus_gamma
        cviews, cinfo = _cronus_views(csim, targets, tx, ty, cg, views)
        trained.append(("cronus", cviews, cinfo))
    records = M.TargetSet(tx, ty, group, n_m, n_n, len(targets))
    rows = []
    for system, vs, info in trained:
        for v in views:
            for a in attacks:
                res = M.attack_server_view(csim.model, vs[v], records, a, known_fraction=known_fraction,
                                           seed=seed, n_bootstrap=n_bootstrap)
                rows.append({"system": system, "view": v, "attack": a, "accuracy": res.accuracy, "auc": res.auc,
                             "auc_ci": list(res.auc_ci), "n_members": res.n_members,
                             "n_nonmembers": res.n_nonmembers, **info})
    return rows
