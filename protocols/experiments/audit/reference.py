"""Reference federations for LiRA and RMIA: shadow runs trained the way the audited run was.

Carlini et al. (S&P 2022, Sec. IV-V) train reference models on random halves of the data, so
that every candidate record is IN for about half of them and OUT for the others. Here a
reference run is the audited federation itself (same resolved configuration, the same initial
model, which the server chooses, the same rule, secure aggregation and DP mechanism — under DP
the audited run's noise multiplier), with one change: each target client's slot holds the
target records of its group (its own records and the non-members assigned to it) that are IN
for that run. Every record is IN for exactly K/2 of the K runs (a random half, seeded; K odd:
K//2 or K//2 + 1); the other clients keep their data. Non-member candidates are test records,
so the reference runs train on a copy of the training set extended by them.

The runs are trained in lockstep (:mod:`.lockstep`): all clients of all reference runs in one
vectorized call per round where the setting allows, else one run after another.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Dict, List, Tuple

import torch

from protocols.data import Dataset
from protocols.simulation import Simulation

from .collect import Targets, Trace, malicious_hook, train_run
from .config import AuditConfig
from .lockstep import step_together, vectorizable

Tensor = torch.Tensor

__all__ = ["reference_membership", "reference_dataset", "train_references"]


def reference_membership(n_runs: int, n_records: int, seed: int) -> Tensor:
    """[K, N] bool: record i is IN for a random half of the K runs (K odd: K//2 or K//2 + 1)."""
    if n_runs < 2:
        raise ValueError(f"reference models need K >= 2 runs, got {n_runs}")
    gen = torch.Generator().manual_seed(seed)
    rank = torch.argsort(torch.rand(n_runs, n_records, generator=gen), dim=0).argsort(dim=0)
    half = torch.full((n_records,), n_runs // 2, dtype=torch.long)
    if n_runs % 2:
        half += (torch.rand(n_records, generator=gen) < 0.5).long()
    return rank < half.view(1, -1)


def reference_dataset(sim: Simulation, targets: Targets) -> Tuple[Dataset, Tensor]:
    """The audited run's data with the non-member candidates appended to the training set, and the
    training-set index of every candidate record (members first, then non-members)."""
    d = sim.data
    n_train = len(d.y_train)
    x = torch.cat([d.x_train, d.x_test[targets.non_ix]])
    y = torch.cat([d.y_train, d.y_test[targets.non_ix]])
    meta = dict(d.meta)
    meta.pop("users_train", None)     # the reference partition is set explicitly
    ds = Dataset(d.name, x, y, d.x_test, d.y_test, d.num_classes, d.input_shape, meta)
    index = torch.cat([targets.mem_ix.cpu(), n_train + torch.arange(targets.n_nonmembers)])
    return ds, index


def _reference_config(sim: Simulation):
    cfg = sim.cfg
    kw: Dict[str, Any] = {"partition": "iid", "partition_args": {}}
    if cfg.dp is not None:   # the audited run's mechanism, not a re-calibration on another partition
        kw.update(noise_multiplier=float(sim.noise_multiplier), target_epsilon=None)
    return dataclasses.replace(cfg, **kw)


def train_references(cfg: AuditConfig, sim: Simulation, targets: Targets, active: bool,
                     tick: Callable[..., None]) -> Tuple[List[Trace], Tensor, Dict[str, Any]]:
    """Train ``cfg.reference_models`` reference runs; returns their traces, the membership [K, N]
    of every target record in each, and what they cost."""
    K = cfg.reference_models
    t0 = time.perf_counter()
    ds, index = reference_dataset(sim, targets)
    inside = reference_membership(K, len(index), cfg.seed + 7919)
    group = targets.group.cpu()
    forced = 0
    plans: List[List[Tensor]] = []
    for k in range(K):
        parts = [ix.cpu() for ix in sim.client_indices]
        for j, c in enumerate(targets.clients):
            mine = group == j
            sel = mine & inside[k]
            if not bool(sel.any()):
                # a client needs a record to train on: its first candidate joins this run (counted)
                first = int(torch.nonzero(mine)[0])
                inside[k, first] = True
                sel = mine & inside[k]
                forced += 1
            parts[c] = index[sel].sort().values
        plans.append(parts)
    rcfg = _reference_config(sim)

    def make(k: int) -> Simulation:
        s = Simulation(rcfg, dataset=ds, keep_reveals=True)
        s.client_indices = [ix.to(s.device) for ix in plans[k]]
        return s

    refs = [make(k) for k in range(K)]
    R = rcfg.rounds
    vectorized = cfg.reference_vectorize and all(vectorizable(s) for s in refs)
    if not vectorized:
        traces = [train_run(s, cfg, active, lambda: targets, tick, replay=lambda k=k: make(k),
                            tag=f"reference {k + 1}/{K}") for k, s in enumerate(refs)]
    else:
        traces = _train_lockstep(refs, cfg, targets, active, tick)
    info = {"count": K, "vectorized": vectorized, "rounds_trained": K * (R + (cfg.active_rounds if active else 0)),
            "forced_in": forced, "membership": "each target record IN for a random half of the runs",
            "test_accuracy_mean": sum(t.sim.history[-1].test_accuracy for t in traces) / K,
            "training_seconds": time.perf_counter() - t0}
    return traces, inside, info


def _train_lockstep(refs: List[Simulation], cfg: AuditConfig, targets: Targets, active: bool,
                    tick: Callable[..., None]) -> List[Trace]:
    R = refs[0].cfg.rounds
    start_active = R - cfg.active_rounds if active else R
    gen = torch.Generator().manual_seed(cfg.seed + 104723)
    traces = [Trace(s) for s in refs]
    snapshots = None
    for rnd in range(R):
        if rnd == start_active:
            snapshots = copy.deepcopy(refs)   # one deepcopy: the copies still share the data tensors
        recs = step_together(refs, rnd, gen)
        for tr, s in zip(traces, refs):
            tr.clients[rnd] = s.last_round_clients.clone()
        for k, rec in enumerate(recs):
            tick(f"reference {k + 1}/{len(refs)} round {rnd + 1}/{R}: test accuracy {rec.test_accuracy:.3f}")
    if active:
        for tr, sa in zip(traces, snapshots):
            sa.broadcast_hook = malicious_hook(tr, sa, targets, cfg)
            tr.active = sa
        for rnd in range(start_active, R):
            step_together(snapshots, rnd, gen)
            for tr, sa in zip(traces, snapshots):
                tr.active_clients[rnd] = sa.last_round_clients.clone()
                tick(f"reference active round {rnd + 1}/{R}")
    return traces
