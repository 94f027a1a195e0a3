"""The audit itself: train, attack every view with every attack, add the empirical epsilon.

:func:`run_audit` returns :class:`AuditRows`, one row per (view, attack) — and, with canaries,
one per canary view — each with ``auc``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr`` (None
where fewer than 100 / 1,000 non-member scores make it not estimable), ``epsilon_lower`` (a
bound holding with ``cfg.confidence``), ``epsilon_estimate`` (a point estimate, client
canaries only) and ``epsilon_accountant`` (the accountant's epsilon, with DP).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

import membership as M

from protocols.rules import RFA
from protocols.simulation import Simulation

from .canaries import canary_audit
from .collect import accountant_epsilon, make_targets, requested_views, run_views, train_run
from .config import AuditConfig
from .reference import train_references

__all__ = ["AuditRows", "Collected", "collect", "run_audit", "epsilon_columns"]


class AuditRows(list):
    """The rows of an audit (a plain ``list`` of dicts) with ``info`` about the run.

    Each membership row: ``kind="membership", view, attack, auc, auc_ci, accuracy,
    tpr_at_1pct_fpr(_ci), tpr_at_0.1pct_fpr(_ci)`` (None with ``not_estimable`` saying why),
    ``n_members, n_nonmembers`` (evaluated scores), ``target_runs`` (1 + reference models),
    ``threshold, threshold_source``, ``epsilon_lower`` (+ ``epsilon_lower_detail``),
    ``epsilon_estimate`` (None), ``epsilon_accountant``, and ``roc`` = ``{"fpr": array, "tpr":
    array}`` (dropped from ``audit.json``). Canary rows (``kind="canary"``) have the same metrics.
    ``simulation``: the honest run that was audited (its ``history``, ``result()``), so that
    callers (``fedaudit tradeoff``) read its metrics without training it twice.
    """

    info: Dict[str, Any]
    simulation: Optional[Simulation] = None

    def __init__(self, *args):
        super().__init__(*args)
        self.info = {}


@dataclass
class Collected:
    """What the training left for the attacks: the views (with their reference runs), the
    targets, run facts."""

    model: torch.nn.Module
    views: List[M.ServerView]
    records: M.TargetSet          # target records (members first), the target client of each, reference membership
    targets: List[int]
    info: Dict[str, Any]
    simulation: Optional[Simulation] = None   # the honest run (history, transcript): AuditRows.simulation


def collect(cfg: AuditConfig, tick: Callable[..., None]) -> Collected:
    """Train the audited run (and the malicious continuation) and its reference runs, and build
    the requested views."""
    run = cfg.run
    sim = Simulation(run, keep_reveals=True)      # the individual view reads the reveals
    secure = run.secagg != "off"
    kinds = requested_views(cfg, secure, isinstance(sim.rule, RFA))
    active = any(k.startswith("active") for k in kinds)
    K = cfg.reference_models
    per_run = run.rounds + (cfg.active_rounds if active else 0)
    tick("setup", per_run * (1 + K) + 6 * len(cfg.attacks))
    targets = make_targets(sim, cfg)
    trace = train_run(sim, cfg, active, lambda: targets, tick, replay=lambda: Simulation(run, keep_reveals=True))
    views = run_views(trace, kinds, targets.clients, cfg)
    inside, ref_info = None, None
    if K:
        wz = [int(v.name.split("-")[1]) for v in views if v.name.startswith("weiszfeld-")]
        t0 = time.perf_counter()
        ref_traces, inside, ref_info = train_references(cfg, sim, targets, active, tick)
        for tr in ref_traces:
            rv = run_views(tr, kinds, targets.clients, cfg, weiszfeld_want=wz if wz else None)
            if [v.name for v in rv] != [v.name for v in views]:
                raise RuntimeError(f"a reference run has views {[v.name for v in rv]}, the audited run "
                                   f"{[v.name for v in views]}")
            for v, r in zip(views, rv):
                v.runs = (v.runs or []) + [r.models]
        ref_info["seconds"] = time.perf_counter() - t0
    records = M.TargetSet(targets.x, targets.y, targets.group, targets.n_members, targets.n_nonmembers,
                          len(targets.clients), inside=inside)
    info = {"run": sim.cfg.to_dict(), "target_clients": targets.clients, "members": targets.n_members,
            "nonmembers": targets.n_nonmembers, "test_accuracy": sim.history[-1].test_accuracy,
            "active_test_accuracy": trace.active.history[-1].test_accuracy if trace.active is not None else None,
            "active_replayed": trace.replayed, "views": [v.name for v in views], "reference_models": ref_info}
    return Collected(sim.model, views, records, targets.clients, info, sim)


def epsilon_columns(res: M.MIAResult, delta: float, confidence: float, seed: int,
                    eps_accountant: Optional[float]) -> Dict[str, Any]:
    """``epsilon_lower`` from an attack's evaluation scores (Jagielski et al. 2020: Clopper-Pearson,
    the threshold chosen on a split), with the accountant's epsilon beside it."""
    try:
        b = M.epsilon_lower_from_scores(res.scores, res.labels, delta=delta, confidence=confidence, seed=seed)
        lower, detail = b["epsilon_lower"], b
    except ValueError as exc:   # too few records to split: reported, not guessed
        lower, detail = None, {"not_estimable": str(exc)}
    return {"epsilon_lower": lower, "epsilon_lower_detail": detail, "epsilon_estimate": None,
            "epsilon_accountant": eps_accountant}


def run_audit(cfg: Optional[AuditConfig] = None, progress: Optional[Callable[[int, int, str], None]] = None,
              sink: Optional[AuditRows] = None) -> AuditRows:
    """Train ``cfg.run`` (and its reference runs), attack every requested server view, return one
    row per (view, attack), then the canary rows.

    ``progress(done, total, what)`` is called after each training round and each attack. ``sink``:
    rows are appended to it as they are computed (and ``sink.info`` filled before the attacks),
    so that a caller keeps the finished rows if the audit is interrupted.
    """
    cfg = cfg if cfg is not None else AuditConfig()
    cfg.validate()
    t0 = time.perf_counter()
    rows = sink if sink is not None else AuditRows()
    state = {"done": 0, "total": cfg.run.rounds + cfg.active_rounds + 6 * len(cfg.attacks)}

    def tick(what: str, total: Optional[int] = None):
        state["done"] += 1
        if total is not None:
            state["total"] = total
        if progress is not None:
            progress(state["done"], state["total"], what)

    col = collect(cfg, tick)
    rows.simulation = col.simulation
    eps_acc = accountant_epsilon(col.simulation)
    state["total"] = state["done"] + len(col.views) * len(cfg.attacks) + (2 if cfg.canaries else 0)
    rows.info.update({**col.info, "audit": cfg.to_dict(), "epsilon_accountant": eps_acc,
                      "view_counts": {}, "seconds": None})
    t_attack = time.perf_counter()
    for v in col.views:
        game = None
        if any(M.ATTACKS[a].requires_references for a in cfg.attacks):
            game = M.reference_game(col.model, v, col.records)
        for name in cfg.attacks:
            res = M.attack_server_view(col.model, v, col.records, name, cfg.attack_args.get(name, {}),
                                       known_fraction=cfg.known_fraction, seed=cfg.seed,
                                       n_bootstrap=cfg.n_bootstrap, game=game)
            row = {"kind": "membership", **res.to_dict(),
                   **epsilon_columns(res, cfg.run.delta, cfg.confidence, cfg.seed, eps_acc)}
            row["roc"] = {"fpr": np.asarray(res.roc[0]), "tpr": np.asarray(res.roc[1])}
            rows.append(row)
            rows.info["view_counts"][v.name] = {"members": res.n_members, "nonmembers": res.n_nonmembers,
                                               "target_runs": res.extra.get("target_runs", 1)}
            tick(f"{v.name} / {name}: AUC {res.auc:.3f}")
    rows.info["attack_seconds"] = time.perf_counter() - t_attack
    if cfg.canaries:
        t_can = time.perf_counter()
        canary_rows, canary_info = canary_audit(cfg, tick)
        rows.extend(canary_rows)
        rows.info["canaries"] = {**canary_info, "seconds": time.perf_counter() - t_can}
    rows.info["seconds"] = time.perf_counter() - t0
    return rows

