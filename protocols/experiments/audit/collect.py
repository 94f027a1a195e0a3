"""Training the audited run and building the views its server holds (docs/architecture.md).

:func:`train_run` trains a run honestly (and the malicious server's continuation for the
active views), :func:`make_targets` picks the target records, and :func:`run_views` builds
every requested :class:`membership.ServerView` of a trained run from what its transcript says
the server saw, so that the audited run and its reference runs are read the same way
(:func:`protocols.experiments.audit.run.collect` puts them together).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import membership as M

from protocols.rules import RFA
from protocols.simulation import Simulation

from .config import AuditConfig

Tensor = torch.Tensor

__all__ = ["Targets", "Trace", "requested_views", "choose_targets", "make_targets",
           "train_run", "run_views", "weiszfeld_outputs", "individual_pairs", "malicious_hook", "accountant_epsilon",
           "INDIVIDUAL"]

INDIVIDUAL = ("individual", "active-individual")
WEISZFELD_LABEL = re.compile(r"^[^:]+:(v0|w(\d+))$")


def requested_views(cfg: AuditConfig, secure: bool, weiszfeld: bool) -> List[str]:
    """The view kinds to build, validated against what the server has under ``cfg.run``."""
    run = cfg.run
    if cfg.views is None:
        kinds = ["aggregate"]
        if not secure:
            kinds.insert(0, "individual")
        if weiszfeld:
            kinds.append("weiszfeld")
        kinds += ([] if secure else ["active-individual"]) + ["active-aggregate"]
        return kinds
    kinds: List[str] = []
    for v in cfg.views:
        for k in (["active-individual", "active-aggregate"] if v == "active" and not secure else
                  ["active-aggregate"] if v == "active" else [v]):
            if k in INDIVIDUAL and secure:
                raise ValueError(f"view {k!r} needs each client's individual update, which the server never sees "
                                 f"under secure aggregation (secagg={run.secagg!r}); audit it with secagg='off' "
                                 "(--secagg off) or drop it from the views")
            if k.startswith("weiszfeld") and not weiszfeld:
                raise ValueError(f"view {k!r} exists only for RFA's smoothed Weiszfeld rules (rule='rfa' or "
                                 f"'rfa-personalized'), not rule={run.rule!r}; drop it from the views")
            if k not in kinds:
                kinds.append(k)
    return kinds


def choose_targets(sim: Simulation, cfg: AuditConfig) -> List[int]:
    """``cfg.target_clients``, else clients 0, 1, ... until their records outnumber the test set."""
    if cfg.target_clients is not None:
        return list(cfg.target_clients)
    pool = len(sim.data.y_test)
    targets, total = [], 0
    for k, ix in enumerate(sim.client_indices):
        if len(ix) == 0:
            continue
        targets.append(k)
        total += len(ix)
        if total >= pool:
            break
    return targets


@dataclass
class Targets:
    """The target records: members (the target clients' training records, ``mem_ix`` into the
    training set) first, then non-members (test records ``non_ix``); ``group[i]``: the target
    client (position in ``clients``) whose views score record i."""

    clients: List[int]
    mem_ix: Tensor
    non_ix: Tensor
    group: Tensor
    x: Tensor
    y: Tensor

    @property
    def n_members(self) -> int:
        return len(self.mem_ix)

    @property
    def n_nonmembers(self) -> int:
        return len(self.non_ix)


def make_targets(sim: Simulation, cfg: AuditConfig) -> Targets:
    """Members = the target clients' records; non-members = as many test records, each assigned to
    a target client in proportion to the clients' data (seeded by ``cfg.seed``)."""
    clients = choose_targets(sim, cfg)
    for k in clients:
        if len(sim.client_indices[k]) == 0:
            raise ValueError(f"target client {k} holds no training records; choose other target clients")
    dev = sim.device
    mem_ix = torch.cat([sim.client_indices[k] for k in clients]).to(dev)
    mem_group = torch.cat([torch.full((len(sim.client_indices[k]),), j, dtype=torch.long)
                           for j, k in enumerate(clients)])
    gen = torch.Generator().manual_seed(cfg.seed)
    n_test = len(sim.data.y_test)
    n_non = min(len(mem_ix), n_test)
    non_ix = torch.randperm(n_test, generator=gen)[:n_non].to(dev)
    non_group = mem_group[torch.randperm(len(mem_group), generator=gen)[:n_non]]
    x = torch.cat([sim.data.x_train[mem_ix], sim.data.x_test[non_ix]])
    y = torch.cat([sim.data.y_train[mem_ix], sim.data.y_test[non_ix]])
    return Targets(clients, mem_ix, non_ix, torch.cat([mem_group, non_group]), x, y)


@dataclass
class Trace:
    """What one trained run left for the views: the honest run and the clients of each round,
    and the malicious continuation (its run, clients, ascended broadcasts) when active views are
    requested."""

    sim: Simulation
    clients: Dict[int, Tensor] = field(default_factory=dict)
    active: Optional[Simulation] = None
    active_clients: Dict[int, Tensor] = field(default_factory=dict)
    ascended: Dict[int, Tensor] = field(default_factory=dict)
    replayed: bool = False


def malicious_hook(trace: Trace, sim_a: Simulation, targets: Targets, cfg: AuditConfig):
    """Nasr et al. 2019 / Cronus B.5: broadcast theta_m = theta_a + gamma * dL_targets / dtheta_a."""
    gamma, steps = float(cfg.active_gamma), cfg.active_steps

    def malicious(rnd: int, w: Tensor) -> Tensor:
        b = M.gradient_ascent(sim_a.model, w, targets.x, targets.y, gamma, steps=steps)
        trace.ascended[rnd] = b
        return b
    return malicious


def train_run(sim: Simulation, cfg: AuditConfig, active: bool, targets: Callable[[], Targets],
              tick: Callable[..., None], replay: Callable[[], Simulation], tag: str = "train") -> Trace:
    """Train ``sim`` honestly, snapshotting before the malicious server's rounds; then the malicious
    continuation. A run with Opacus clients (--dp record), whose optimizers cannot be deep-copied,
    is replayed from its seed by ``replay()``. ``targets`` is called after the first round's setup
    (the audited run chooses its targets from its own partition)."""
    R = sim.cfg.rounds
    start_active = R - cfg.active_rounds if active else R
    trace = Trace(sim, replayed=getattr(sim, "dpc", None) is not None)
    snapshot = None
    for rnd in range(R):
        if rnd == start_active and not trace.replayed:
            snapshot = copy.deepcopy(sim)
        rec = sim.step(rnd)
        trace.clients[rnd] = sim.last_round_clients.clone()
        tick(f"{tag} round {rnd + 1}/{R}: test accuracy {rec.test_accuracy:.3f}")
    if active:
        sim_a = snapshot
        if trace.replayed:
            sim_a = replay()
            for rnd in range(start_active):
                sim_a.step(rnd)
        sim_a.broadcast_hook = malicious_hook(trace, sim_a, targets(), cfg)
        for rnd in range(start_active, R):
            rec = sim_a.step(rnd)
            trace.active_clients[rnd] = sim_a.last_round_clients.clone()
            tick(f"active round {rnd + 1}/{R}: test accuracy {rec.test_accuracy:.3f}")
        trace.active = sim_a
    return trace


def accountant_epsilon(sim: Simulation) -> Optional[float]:
    """The accountant's epsilon of a finished DP run (``result()["dp"]["epsilon"]``), None without DP."""
    dps = sim.result().get("dp")
    return None if not dps else float(dps["epsilon"])


def weiszfeld_outputs(sim: Simulation, rnd: int) -> Dict[int, Tensor]:
    """The Weiszfeld intermediates the server received in round ``rnd``: r -> v^(r) (r = 0 the
    weighted mean, 1..R the iterates), from the transcript's oracle outputs."""
    inter = {}
    for c in sim.transcript.calls_in_round(rnd):
        m = WEISZFELD_LABEL.match(c.label)
        if m and c.output is not None and c.output.ndim == 1:
            inter[0 if m.group(1) == "v0" else int(m.group(2))] = c.output
    return inter


def individual_pairs(sim: Simulation, clients_of: List[int], clients: Dict[int, Tensor],
                      broadcasts: Dict[int, Tensor], view: str, pre=None) -> Dict[int, Tuple[Tensor, ...]]:
    """(broadcast, broadcast + update) of each target client in the latest round it took part in."""
    reveals = {r.round: r for r in sim.transcript.reveals if r.updates is not None}
    out = {}
    for j, k in enumerate(clients_of):
        rounds = [r for r in sorted(clients, reverse=True) if r in reveals and r in broadcasts
                  and bool((clients[r] == k).any())]
        if not rounds:
            raise ValueError(f"view {view!r}: target client {k} took part in no observed round"
                             f"{' with the malicious broadcast' if view.startswith('active') else ''}; "
                             "choose other target clients, more active rounds, or clients_per_round=None")
        r = rounds[0]
        pos = int(torch.nonzero(clients[r] == k)[0])
        b = broadcasts[r]
        out[j] = (*(pre(r) if pre else (b,)), b + reveals[r].updates[pos].to(b.device))
    return out


def run_views(trace: Trace, kinds: List[str], clients_of: List[int], cfg: AuditConfig,
              weiszfeld_want: Optional[List[int]] = None) -> List[M.ServerView]:
    """The requested views of one trained run, in a fixed order (individual, aggregate, each
    Weiszfeld intermediate, the active views)."""
    sim = trace.sim
    R = sim.cfg.rounds
    last = R - 1
    dev = sim.device
    views: List[M.ServerView] = []
    if "individual" in kinds:
        bc = {r: sim.global_history[r] for r in range(R)}
        views.append(M.ServerView("individual", individual_pairs(sim, clients_of, trace.clients, bc, "individual"),
                                  False))
    if "aggregate" in kinds:
        views.append(M.ServerView("aggregate", {0: (sim.global_history[last], sim.global_history[R])}, True))
    wk = [k for k in kinds if k.startswith("weiszfeld")]
    if wk:
        inter = {r: sim.global_history[last] + v.to(dev) for r, v in weiszfeld_outputs(sim, last).items()}
        want = set(inter) if "weiszfeld" in wk else set()
        for k in wk:
            if k != "weiszfeld":
                r = int(k.split("-")[1])
                if r not in inter:
                    raise ValueError(f"view {k!r}: the last round has Weiszfeld intermediates "
                                     f"{[f'weiszfeld-{i}' for i in sorted(inter)]} only")
                want.add(r)
        if weiszfeld_want is not None:
            missing = sorted(set(weiszfeld_want) - set(inter))
            if missing:
                raise RuntimeError(f"a reference run's last round lacks Weiszfeld intermediates {missing} that the "
                                   "audited run has; the Weiszfeld iteration count differs between runs")
            want = set(weiszfeld_want)
        views += [M.ServerView(f"weiszfeld-{r}", {0: (sim.global_history[last], inter[r])}, True)
                  for r in sorted(want)]
    if trace.active is not None:
        sim_a = trace.active
        # The server holds its honest model theta_a, the ascended broadcast, and what came back.
        pre = lambda r: (sim_a.global_history[r], trace.ascended[r])  # noqa: E731
        if "active-individual" in kinds:
            views.append(M.ServerView("active-individual", individual_pairs(
                sim_a, clients_of, trace.active_clients, trace.ascended, "active-individual", pre), False))
        if "active-aggregate" in kinds:
            agg = (sim_a.global_history[R] - sim_a.global_history[last]) / sim.cfg.server_lr
            views.append(M.ServerView("active-aggregate", {0: (*pre(last), trace.ascended[last] + agg)}, True))
    return views
