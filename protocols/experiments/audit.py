"""Membership audits of the server's real views: ``fedaudit audit`` (docs/architecture.md, "server views").

Trains a federation (any :class:`~protocols.simulation.RunConfig`: rule, ``secagg``,
DP, ...), then runs membership-inference attacks (:mod:`membership`) against every
model the server really holds in that setting, as in the Cronus appendix B.5 and its
Table 6 after Nasr, Shokri, Houmansadr (S&P 2019):

=========================  =================================================================
view                       what the server observed in the last round (t = rounds - 1)
=========================  =================================================================
``individual``             each target client's model, broadcast + its own update, from the
                           transcript's reveals: only without secure aggregation
``aggregate``              the global model after the last round
``weiszfeld-r``            RFA (smoothed Weiszfeld): broadcast + v^(r), one view per oracle
                           call of the last round (r = 0 the weighted mean, 1..R the iterates)
``active-individual``      malicious server: in the last ``active_rounds`` rounds it
                           broadcasts ``theta + gamma * dL_targets/dtheta`` (gradient ascent on
                           all target records, :func:`membership.gradient_ascent`) and observes
                           each target's model after its owner trained on it (only without
                           secure aggregation); a separate continuation of the same run
``active-aggregate``       the same, observing the aggregate: ascended broadcast + aggregate
=========================  =================================================================

``views=None`` audits every view the setting has; ``"active"`` names both active views
and ``"weiszfeld"`` every intermediate. Requesting a view the server does not have under
the setting (an individual view under secure aggregation, Weiszfeld views under another
rule) is a clear error.

Every view is handed to the attacks as the models the server holds for it, in time order
and the observed one last: ``[broadcast, observed]`` for the passive views, ``[honest
global model, ascended broadcast, observed]`` for the active ones. Single-model attacks
(``loss``, ``confidence``, ``gradient_norm``) read the observed model, the white-box
attack reads all of them (Nasr et al. combine observations across epochs), and
``loss_drop`` / ``gradient_norm_drop`` compare the first with the last (for the active
views: the honest model with the owner's model after the ascent).

**Targets.** Members are the training records of the target clients; non-members an equal
number of test records (same distribution, never trained on), each assigned to a target
client in proportion to its data. Records are attacked through the view that carries
their owner's information (their own client's model for the individual views); the
members and non-members of all target clients are pooled so that the attacker's known
records and the evaluation set (:func:`membership.split_targets`, ``known_fraction``) are
large enough for a tight bootstrap CI. By default, clients 0, 1, ... are targets until
their records outnumber the test set.

**Defaults** (:func:`audit_run_config`): digits, 100 IID clients (about 14 records each),
MLP, 5 local epochs at lr 0.2, 20 rounds, RFA, ``secagg="off"`` so that the table shows
every view; pass ``--secagg masked`` to see what secure aggregation leaves the server.
Few records per client make each local model overfit its owner's data. Measured on
digits (loss attack, pooled target clients, seed 0): 10 clients of 144 records leak
AUC ~0.56 on the individual view, 40 of 36 records ~0.60, 100 of 14 records ~0.67-0.71,
while the aggregate of 100 clients stays at ~0.54. More local epochs or rounds did not
raise the leakage (digits generalises well), so the defaults keep training cheap.

**Active attack** (:data:`ACTIVE_NOTES`): ``active_gamma=5``, one active round, one ascent
step, chosen from the measurements there.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import membership as M

from protocols.experiments.options import add_run_options, config_from_args
from protocols.report import table
from protocols.rules import RFA
from protocols.simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["AuditConfig", "AuditRows", "audit_run_config", "run_audit", "plot_roc", "write_audit",
           "format_table", "add_audit_parser", "AUDIT_RUN_DEFAULTS", "VIEW_KINDS"]

#: The run configuration of ``fedaudit audit`` with no options (see the module docstring).
AUDIT_RUN_DEFAULTS: Dict[str, Any] = dict(dataset="digits", clients=100, partition="iid", model="mlp",
                                          local_epochs=5, lr=0.2, rounds=20, rule="rfa", secagg="off")

VIEW_KINDS = ("individual", "aggregate", "weiszfeld", "active-individual", "active-aggregate")
_INDIVIDUAL = ("individual", "active-individual")
_WEISZFELD_LABEL = re.compile(r"^[^:]+:(v0|w(\d+))$")

ACTIVE_NOTES = """\
Malicious-server gradient ascent (Nasr et al. 2019; Cronus B.5) on digits, default run with
FedAvg, 25 pooled target clients (375 members / 360 test non-members, 180 + 180 evaluated),
AUC of the active-individual view vs the passive individual view, seeds 0-3:

* The ascent is on the mean loss of all target records. One ascended broadcast with the
  passive pair's information ([ascended, after]) is not enough: the owner's training
  mostly undoes the ascent direction, common to all targets, so the raw loss drop
  loss(ascended) - loss(after) falls with gamma (0.71 at gamma 1, 0.64 at 3, 0.56 at 10;
  passive loss drop 0.72) and, on an under-trained model (5 local epochs at lr 0.05),
  even ranks members below chance (AUC 0.23): members, fitted better, start lower and
  lose less. The server also holds its honest model theta_a, so the active views are
  [theta_a, ascended, after] and the drop attacks compare theta_a with after.
* gamma 5, one active round, one step (the default): every seed gains on the threshold
  attacks: loss +0.025..+0.045 AUC, gradient_norm +0.026..+0.043, loss_drop
  +0.028..+0.043, gradient_norm_drop +0.004..+0.025; white-box -0.004..+0.079 (seed 0:
  0.726 vs 0.730; -0.020 under the default RFA rule). gamma 2-3 gains less
  (+0.01..+0.03); gamma 10 gains more on the loss (+0.03..+0.07) but is erratic on the
  gradient-norm drop and the white-box attack, and the honest model's test accuracy
  after that round falls to 0.34-0.75.
* Several active rounds hurt here: the simulation's malicious server applies the clients'
  repair of the ascent to its honest model, so after 5 rounds at gamma 1-3 test accuracy
  is ~0.4-0.6 and the individual-view AUC is at or below passive (0.53-0.73).
* The aggregate of 100 clients gains nothing from the ascent (active-aggregate within
  +-0.03 of passive, around 0.5): each target client weighs 1/100 in it.
"""


def audit_run_config(**overrides) -> RunConfig:
    """The default run of an audit (:data:`AUDIT_RUN_DEFAULTS`) with ``overrides``."""
    return RunConfig(**{**AUDIT_RUN_DEFAULTS, **overrides})


@dataclass
class AuditConfig:
    """What to train and how to attack it.

    ``run``: the federation (any :class:`RunConfig`; DP, secagg, rule are its fields).
    ``attacks``: names from :data:`membership.ATTACKS`. ``views``: view names (see the
    module docstring) or ``None`` for every view the setting has. ``target_clients``:
    client indices whose records are the members, or ``None`` (clients 0, 1, ... until
    their records outnumber the test set). ``known_fraction``: the attacker's prior
    knowledge (Nasr et al.): that fraction of the members and as many non-members train
    or calibrate the attack, the rest evaluate it. ``active_gamma`` / ``active_rounds`` /
    ``active_steps``: the malicious server's ascent step, how many final rounds it
    ascends in, and ascent steps per broadcast. ``attack_args``: per-attack parameters,
    e.g. ``{"whitebox": {"epochs": 100}}``. ``n_bootstrap``: resamples of the AUC CI.
    ``seed``: non-member draw, known/evaluation split, white-box initialisation.
    """

    run: RunConfig = field(default_factory=audit_run_config)
    attacks: Sequence[str] = ("loss", "gradient_norm", "whitebox")
    views: Optional[Sequence[str]] = None
    target_clients: Optional[Sequence[int]] = None
    known_fraction: float = 0.5
    active_gamma: float = 5.0
    active_rounds: int = 1
    active_steps: int = 1
    attack_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    n_bootstrap: int = 1000
    seed: int = 0

    def validate(self) -> None:
        self.run.validate()
        if isinstance(self.attacks, str) or not self.attacks:
            raise ValueError(f"attacks={self.attacks!r} must be a non-empty list of names from "
                             f"{sorted(M.ATTACKS)}")
        for a in self.attacks:
            if a not in M.ATTACKS:
                raise ValueError(f"unknown membership attack {a!r}; choose from {sorted(M.ATTACKS)}")
        for a, kw in self.attack_args.items():
            if a not in self.attacks:
                raise ValueError(f"attack_args names {a!r}, which is not among attacks={list(self.attacks)}")
            try:  # unknown or bad parameters: a clear error now, not after training
                M.make_attack(a, **kw)
            except TypeError as exc:
                raise ValueError(f"attack_args[{a!r}]: {exc}") from None
        if self.views is not None:
            if isinstance(self.views, str) or not self.views:
                raise ValueError(f"views={self.views!r} must be a non-empty list of view names or None (all)")
            for v in self.views:
                if not _known_view_name(v):
                    raise ValueError(f"unknown view {v!r}; choose from {list(VIEW_KINDS)}, 'weiszfeld-R' "
                                     "(R = 0, 1, ...) or 'active' (both active views)")
        if not isinstance(self.known_fraction, (int, float)) or not 0 <= self.known_fraction < 1:
            raise ValueError(f"known_fraction={self.known_fraction!r} must lie in [0, 1)")
        if self.known_fraction == 0:
            needy = [a for a in self.attacks if M.ATTACKS[a].requires_fit]
            if needy:
                raise ValueError(f"known_fraction=0 leaves attack(s) {needy} nothing to train on; "
                                 "use known_fraction > 0 (e.g. 0.5)")
        if not isinstance(self.active_gamma, (int, float)) or not math.isfinite(self.active_gamma) \
                or self.active_gamma <= 0:
            raise ValueError(f"active_gamma={self.active_gamma!r} must be a finite number > 0")
        if not isinstance(self.active_rounds, int) or not 1 <= self.active_rounds <= self.run.rounds:
            raise ValueError(f"active_rounds={self.active_rounds!r} must lie in [1, rounds={self.run.rounds}]")
        if not isinstance(self.active_steps, int) or self.active_steps < 1:
            raise ValueError(f"active_steps={self.active_steps!r} must be a positive integer")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap={self.n_bootstrap!r} must be a positive integer")
        if self.target_clients is not None:
            t = list(self.target_clients)
            if not t:
                raise ValueError("target_clients is empty; give client indices or None (automatic)")
            bad = [k for k in t if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < self.run.clients]
            if bad:
                raise ValueError(f"target client(s) {bad} out of range: clients are 0..{self.run.clients - 1}")
            if len(set(t)) != len(t):
                raise ValueError(f"target_clients={t} lists a client twice")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attacks"], d["views"] = list(self.attacks), None if self.views is None else list(self.views)
        d["target_clients"] = None if self.target_clients is None else list(self.target_clients)
        return d


def _known_view_name(v: str) -> bool:
    return v in VIEW_KINDS or v == "active" or bool(re.fullmatch(r"weiszfeld-\d+", str(v)))


class AuditRows(list):
    """The rows of an audit (a plain ``list`` of dicts) with ``info`` about the run.

    Each row: ``view, attack, auc, auc_ci, accuracy, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr,
    n_members, n_nonmembers`` (evaluation counts), ``threshold, threshold_source``, and
    ``roc`` = ``{"fpr": array, "tpr": array}`` (dropped from ``audit.json``).
    ``simulation``: the honest run that was audited (its ``history``, ``result()``), so that
    callers (``fedaudit tradeoff``) read its metrics without training it twice.
    """

    info: Dict[str, Any]
    simulation: Optional[Simulation] = None


# -- the audit ---------------------------------------------------------------------------------


def _requested(cfg: AuditConfig, secure: bool, weiszfeld: bool) -> List[str]:
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
            if k in _INDIVIDUAL and secure:
                raise ValueError(f"view {k!r} needs each client's individual update, which the server never sees "
                                 f"under secure aggregation (secagg={run.secagg!r}); audit it with secagg='off' "
                                 "(--secagg off) or drop it from the views")
            if k.startswith("weiszfeld") and not weiszfeld:
                raise ValueError(f"view {k!r} exists only for RFA's smoothed Weiszfeld rules (rule='rfa' or "
                                 f"'rfa-personalized'), not rule={run.rule!r}; drop it from the views")
            if k not in kinds:
                kinds.append(k)
    return kinds


def _choose_targets(sim: Simulation, cfg: AuditConfig) -> List[int]:
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
class _Collected:
    """What the training left for the attacks: the views, the pooled targets, run facts."""

    model: torch.nn.Module
    views: List[M.ServerView]
    records: M.TargetSet      # target records (members first) and the target client of each
    targets: List[int]
    info: Dict[str, Any]
    simulation: Optional[Simulation] = None   # the honest run (history, transcript): AuditRows.simulation


def run_audit(cfg: Optional[AuditConfig] = None,
              progress: Optional[Callable[[int, int, str], None]] = None) -> AuditRows:
    """Train ``cfg.run``, attack every requested server view, return one row per (view, attack).

    ``progress(done, total, what)`` is called after each training round and each attack.
    See the module docstring for the views, the targets and the defaults.
    """
    cfg = cfg if cfg is not None else AuditConfig()
    cfg.validate()
    t0 = time.perf_counter()
    state = {"done": 0, "total": cfg.run.rounds + cfg.active_rounds + 6 * len(cfg.attacks)}

    def tick(what: str, total: Optional[int] = None):
        state["done"] += 1
        if total is not None:
            state["total"] = total
        if progress is not None:
            progress(state["done"], state["total"], what)

    col = _collect(cfg, tick)
    state["total"] = state["done"] + len(col.views) * len(cfg.attacks)
    rows = AuditRows()
    for v in col.views:
        for name in cfg.attacks:
            res = _attack(col, v, name, cfg)
            row = res.to_dict()
            row["roc"] = {"fpr": np.asarray(res.roc[0]), "tpr": np.asarray(res.roc[1])}
            rows.append(row)
            tick(f"{v.name} / {name}: AUC {res.auc:.3f}")
    rows.info = {**col.info, "audit": cfg.to_dict(), "seconds": time.perf_counter() - t0}
    rows.simulation = col.simulation
    return rows


def _attack(col: _Collected, v: M.ServerView, name: str, cfg: AuditConfig) -> M.MIAResult:
    """One attack on one view, over the pooled targets (:func:`membership.attack_server_view`)."""
    return M.attack_server_view(col.model, v, col.records, name, cfg.attack_args.get(name, {}),
                                known_fraction=cfg.known_fraction, seed=cfg.seed, n_bootstrap=cfg.n_bootstrap)


def _collect(cfg: AuditConfig, tick: Callable[..., None]) -> _Collected:
    """Train the honest run (and the malicious continuation) and build the requested views."""
    run = cfg.run
    sim = Simulation(run)
    secure = run.secagg != "off"
    kinds = _requested(cfg, secure, isinstance(sim.rule, RFA))
    active = any(k.startswith("active") for k in kinds)
    R = run.rounds
    start_active = R - cfg.active_rounds if active else R
    tick("setup", R + (cfg.active_rounds if active else 0) + 6 * len(cfg.attacks))

    # Targets: members = the target clients' records; non-members = as many test records,
    # each assigned to a target client in proportion to the clients' data.
    targets = _choose_targets(sim, cfg)
    for k in targets:
        if len(sim.client_indices[k]) == 0:
            raise ValueError(f"target client {k} holds no training records; choose other target clients")
    dev = sim.device
    mem_ix = torch.cat([sim.client_indices[k] for k in targets]).to(dev)
    mem_group = torch.cat([torch.full((len(sim.client_indices[k]),), j, dtype=torch.long)
                           for j, k in enumerate(targets)])
    gen = torch.Generator().manual_seed(cfg.seed)
    n_test = len(sim.data.y_test)
    n_non = min(len(mem_ix), n_test)
    non_ix = torch.randperm(n_test, generator=gen)[:n_non].to(dev)
    non_group = mem_group[torch.randperm(len(mem_group), generator=gen)[:n_non]]
    tx = torch.cat([sim.data.x_train[mem_ix], sim.data.x_test[non_ix]])
    ty = torch.cat([sim.data.y_train[mem_ix], sim.data.y_test[non_ix]])

    def step(s: Simulation, rnd: int, log: Dict[int, Tensor], tag: str):
        rec = s.step(rnd)
        log[rnd] = s.last_round_clients.clone()
        tick(f"{tag} round {rnd + 1}/{R}: test accuracy {rec.test_accuracy:.3f}")

    # Honest training, with a snapshot before the malicious server's rounds. A run with Opacus
    # clients (--dp record), whose optimizers cannot be deep-copied, is replayed from its seed.
    honest_clients: Dict[int, Tensor] = {}
    snapshot, replayed = None, getattr(sim, "dpc", None) is not None
    for rnd in range(R):
        if rnd == start_active and not replayed:
            snapshot = copy.deepcopy(sim)
        step(sim, rnd, honest_clients, "train")

    views: List[M.ServerView] = []
    last = R - 1
    if "individual" in kinds:
        bc = {r: sim.global_history[r] for r in range(R)}
        views.append(M.ServerView("individual", _individual_pairs(sim, targets, honest_clients, bc, "individual"), False))
    if "aggregate" in kinds:
        views.append(M.ServerView("aggregate", {0: (sim.global_history[last], sim.global_history[R])}, True))
    weiszfeld_kinds = [k for k in kinds if k.startswith("weiszfeld")]
    if weiszfeld_kinds:
        inter = {}
        for c in sim.transcript.calls_in_round(last):
            m = _WEISZFELD_LABEL.match(c.label)
            if m and c.output is not None and c.output.ndim == 1:
                inter[0 if m.group(1) == "v0" else int(m.group(2))] = sim.global_history[last] + c.output.to(dev)
        want = set(inter) if "weiszfeld" in weiszfeld_kinds else set()
        for k in weiszfeld_kinds:
            if k != "weiszfeld":
                r = int(k.split("-")[1])
                if r not in inter:
                    raise ValueError(f"view {k!r}: the last round has Weiszfeld intermediates "
                                     f"{[f'weiszfeld-{i}' for i in sorted(inter)]} only")
                want.add(r)
        views += [M.ServerView(f"weiszfeld-{r}", {0: (sim.global_history[last], inter[r])}, True) for r in sorted(want)]

    active_accuracy = None
    if active:
        sim_a = snapshot
        if replayed:
            sim_a = Simulation(run)
            for rnd in range(start_active):
                sim_a.step(rnd)
        ascended: Dict[int, Tensor] = {}
        gamma, steps = float(cfg.active_gamma), cfg.active_steps

        def malicious(rnd: int, w: Tensor) -> Tensor:
            # Nasr et al. 2019 / Cronus B.5: theta_m = theta_a + gamma * dL_targets / dtheta_a.
            b = M.gradient_ascent(sim_a.model, w, tx, ty, gamma, steps=steps)
            ascended[rnd] = b
            return b

        sim_a.broadcast_hook = malicious
        active_clients: Dict[int, Tensor] = {}
        for rnd in range(start_active, R):
            step(sim_a, rnd, active_clients, "active")
        active_accuracy = sim_a.history[-1].test_accuracy
        # The server holds its honest model theta_a, the ascended broadcast, and what came back.
        pre = lambda r: (sim_a.global_history[r], ascended[r])  # noqa: E731
        if "active-individual" in kinds:
            views.append(M.ServerView("active-individual",
                               _individual_pairs(sim_a, targets, active_clients, ascended, "active-individual", pre),
                               False))
        if "active-aggregate" in kinds:
            agg = (sim_a.global_history[R] - sim_a.global_history[last]) / run.server_lr
            views.append(M.ServerView("active-aggregate", {0: (*pre(last), ascended[last] + agg)}, True))

    info = {"run": run.to_dict(), "target_clients": targets, "members": len(mem_ix), "nonmembers": n_non,
            "test_accuracy": sim.history[-1].test_accuracy, "active_test_accuracy": active_accuracy,
            "active_replayed": replayed,
            "views": [v.name for v in views]}
    records = M.TargetSet(tx, ty, torch.cat([mem_group, non_group]), len(mem_ix), n_non, len(targets))
    return _Collected(sim.model, views, records, targets, info, sim)


def _individual_pairs(sim: Simulation, targets: List[int], clients: Dict[int, Tensor], broadcasts: Dict[int, Tensor],
                      view: str, pre=None) -> Dict[int, Tuple[Tensor, ...]]:
    """(broadcast, broadcast + update) of each target client in the latest round it took part in."""
    reveals = {r.round: r for r in sim.transcript.reveals if r.updates is not None}
    out = {}
    for j, k in enumerate(targets):
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


# -- output ------------------------------------------------------------------------------------


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The audit rows as a text table."""
    body = [[r["view"], r["attack"], r["auc"], f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]", r["accuracy"],
             r["tpr_at_1pct_fpr"], r["tpr_at_0.1pct_fpr"], r["n_members"], r["n_nonmembers"]] for r in rows]
    return table(["view", "attack", "auc", "auc 95% CI", "accuracy", "tpr@1%fpr", "tpr@0.1%fpr", "members",
                   "non-members"], body)


def json_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows without their ROC curves (the content of ``audit.json``)."""
    return [{k: v for k, v in r.items() if k != "roc"} for r in rows]


def plot_roc(rows: Sequence[Dict[str, Any]], path) -> Path:
    """ROC curves, one per (view, attack), one panel per attack; written with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    fig = Figure(figsize=(4.2 * len(attacks), 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    for ax, attack in zip(axes, attacks):
        for r in rows:
            if r["attack"] == attack:
                ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], lw=1.2, label=f"{r['view']} (AUC {r['auc']:.2f})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set(title=f"attack: {attack}", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_audit(rows: Sequence[Dict[str, Any]], out_dir) -> Tuple[Path, Path]:
    """``DIR/audit.json`` (the rows) and ``DIR/roc.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "audit.json"
    js.write_text(json.dumps(json_rows(rows), indent=2))
    return js, plot_roc(rows, out / "roc.png")


# -- command line ------------------------------------------------------------------------------


def _split_names(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """``fedaudit audit``: the run options (audit defaults) plus the audit's own."""
    p = subparsers.add_parser("audit", help="membership-inference audit of every view the server has",
                              description=__doc__.splitlines()[0])
    add_run_options(p)
    d = AuditConfig()
    p.set_defaults(**{k: v for k, v in AUDIT_RUN_DEFAULTS.items()}, out=Path("fedaudit-audit"),
                   func=cmd_audit)
    p.add_argument("--attacks", default=",".join(d.attacks),
                   help=f"comma-separated membership attacks, from {sorted(M.ATTACKS)} (default: %(default)s)")
    p.add_argument("--views", default=None,
                   help="comma-separated views: individual, aggregate, weiszfeld (or weiszfeld-R), active "
                        "(or active-individual, active-aggregate) (default: every view the server has)")
    p.add_argument("--target-client", type=int, action="append", default=None, metavar="K",
                   help="a target client whose records are the members (repeatable; default: clients 0, 1, ... "
                        "until their records outnumber the test set)")
    p.add_argument("--known-fraction", type=float, default=d.known_fraction,
                   help="fraction of the members (and as many non-members) the attacker knows (default: %(default)s)")
    p.add_argument("--active-gamma", type=float, default=d.active_gamma,
                   help="malicious server's gradient-ascent step (default: %(default)s)")
    p.add_argument("--active-rounds", type=int, default=d.active_rounds,
                   help="final rounds in which the server broadcasts the ascended model (default: %(default)s)")
    p.add_argument("--active-steps", type=int, default=d.active_steps,
                   help="ascent steps per malicious broadcast (default: %(default)s)")
    p.add_argument("--whitebox-epochs", type=int, default=None,
                   help="training epochs of the white-box attack network (default: the attack's, 50)")
    p.add_argument("--bootstrap", type=int, default=d.n_bootstrap,
                   help="bootstrap resamples of the AUC confidence interval (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: %(default)s; the audit's small models and per-record "
                        "attacks run faster on one thread than on several competing for the cores; 0: torch's "
                        "default)")
    p.add_argument("--audit-seed", type=int, default=d.seed,
                   help="seed of the non-member draw, the known/evaluation split and the attack (default: %(default)s)")
    return p


def audit_config_from_args(args: argparse.Namespace) -> AuditConfig:
    attacks = _split_names(args.attacks)
    attack_args = {"whitebox": {"epochs": args.whitebox_epochs}} \
        if args.whitebox_epochs is not None and "whitebox" in attacks else {}
    return AuditConfig(run=config_from_args(args), attacks=tuple(attacks),
                       views=None if args.views is None else tuple(_split_names(args.views)),
                       target_clients=None if args.target_client is None else tuple(args.target_client),
                       known_fraction=args.known_fraction, active_gamma=args.active_gamma,
                       active_rounds=args.active_rounds, active_steps=args.active_steps,
                       attack_args=attack_args, n_bootstrap=args.bootstrap, seed=args.audit_seed)


def cmd_audit(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    cfg = audit_config_from_args(args)
    cfg.validate()
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads}: give a positive number of threads, or 0 for torch's default")
    if args.threads:
        torch.set_num_threads(args.threads)
    bar = tqdm(total=1, desc=f"audit {cfg.run.rule} / secagg={cfg.run.secagg}", unit="step",
               disable=args.quiet, file=sys.stderr)

    def progress(done, total, what):
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(what[:60])

    rows = run_audit(cfg, progress)
    bar.close()
    info = rows.info
    print(format_table(rows))
    print(f"\n{info['members']} members of target clients {_short(info['target_clients'])} vs {info['nonmembers']} "
          f"test non-members; evaluated on a disjoint {1 - cfg.known_fraction:.0%} of each "
          f"(rule={cfg.run.rule}, secagg={cfg.run.secagg}, {cfg.run.clients} clients, {cfg.run.rounds} rounds, "
          f"test accuracy {info['test_accuracy']:.3f}; {info['seconds']:.0f} s)")
    js, png = write_audit(rows, args.out)
    print(f"wrote {js} and {png}")
    return 0


def _short(ks: Sequence[int]) -> str:
    ks = list(ks)
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ",".join(map(str, ks))
