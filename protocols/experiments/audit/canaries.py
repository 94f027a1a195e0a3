"""Empirical epsilon from canaries inserted into one federated run, per server view.

* **Client canaries** (user-level privacy; Andrew et al., ICLR 2024): M extra clients, each a
  random unit direction u_j (isotropic, seeded) and included with probability 1/2. An
  included canary submits ``norm * u_j`` whenever it is sampled (``norm`` = the DP clip under
  user-level DP, else the median norm of that round's real updates); an excluded one is
  absent (never in a cohort: add/remove-one-user neighbours). The run is configured with
  N = n + M clients, so the accountant's sampling rate and noise count every canary. The statistic of a direction is its cosine with what the server holds:
  ``final`` (the final model minus the initial one), ``aggregate`` (each released aggregate:
  the largest cosine over rounds), ``weiszfeld-r`` (each released Weiszfeld intermediate
  v^(r): the largest over rounds) and, without secure aggregation, ``individual`` (the
  canary client's own revealed updates). Fresh directions that were never inserted give the
  null distribution.
* **Record canaries** (record-level privacy; Steinke, Nasr, Jagielski, NeurIPS 2023): M test
  records with a wrong label (mislabelled, so that they are memorable), each inserted with
  probability 1/2 into the data of a random client; the score is minus the canary's loss on
  the view's model (the owner's model for ``individual``, the final model for ``aggregate``,
  broadcast + v^(r) for ``weiszfeld-r``).

Per view: AUC and TPR at low FPR (inserted vs not), ``epsilon_lower`` from the one-run bound
(:func:`membership.one_run_audit`, over the M randomly included canaries only), and for
client canaries ``epsilon_estimate`` from the Gaussian fits (:func:`membership.gaussian_epsilon_estimate`,
a point estimate). Under central DP without secure aggregation the server holds the raw
updates: the guarantee covers the releases, not the ``individual`` view, whose bound may
exceed the accountant's epsilon by design.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import membership as M

from protocols.data import Dataset
from protocols.rules import RFA
from protocols.simulation import Simulation

from .collect import accountant_epsilon, individual_pairs, weiszfeld_outputs
from .config import AuditConfig

Tensor = torch.Tensor

__all__ = ["canary_audit", "client_canary_run", "record_canary_run", "canary_row", "FRESH_DIRECTIONS"]

#: Fresh (never inserted) directions of the client-canary null distribution, at most.
FRESH_DIRECTIONS = 2000
_MAX_FRESH_FLOATS = 1 << 26


def train_rounds(sim, rounds: int, what: str, tick) -> Dict[int, Tensor]:
    """Run ``rounds`` rounds of ``sim``; the clients of each round, {round: client ids}."""
    clients: Dict[int, Tensor] = {}
    for rnd in range(rounds):
        rec = sim.step(rnd)
        clients[rnd] = sim.last_round_clients.clone()
        tick(f"{what} round {rnd + 1}/{rounds}: test accuracy {rec.test_accuracy:.3f}")
    return clients


def _check(cfg: AuditConfig) -> None:
    if cfg.run.attack:
        raise ValueError(f"canary audits run without poisoning (got --attack {cfg.run.attack}): the corrupted "
                         "clients could be canaries; drop --attack or --canaries")


def _finite(x: float) -> Optional[float]:
    return float(x) if x is not None and math.isfinite(x) else None


def canary_row(view: str, stats: Tensor, included: Tensor, fresh: Optional[Tensor], kind: str, delta: float,
               cfg: AuditConfig, eps_accountant: Optional[float]) -> Dict[str, Any]:
    """One canary row: metrics of inserted vs not-inserted statistics (plus fresh directions),
    the one-run bound over the M random canaries, and (client canaries) the Gaussian estimate."""
    s = stats.detach().double().cpu()
    inc = included.bool().cpu()
    neg = s[~inc] if fresh is None else torch.cat([s[~inc], fresh.detach().double().cpu()])
    pos = s[inc]
    scores = torch.cat([pos, neg])
    res = M.evaluate_scores(scores, M.labels_for(len(pos), len(neg)), attack=f"{kind}-canary", view=view,
                            n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    row = {"kind": "canary", **res.to_dict(), "canaries": int(len(s)), "canaries_included": int(inc.sum())}
    one = M.one_run_audit(s, inc, delta=delta, confidence=cfg.confidence)
    row["epsilon_lower"] = _finite(one["epsilon_lower"])
    row["epsilon_lower_detail"] = one
    row["epsilon_estimate"] = None
    if kind == "client":
        est = M.gaussian_epsilon_estimate(pos.numpy(), neg.numpy(), delta)
        row["epsilon_estimate"] = _finite(est["epsilon_estimate"])
        if row["epsilon_estimate"] is None:
            est["note"] = "inserted and fresh statistics do not overlap: no finite estimate"
        row["epsilon_estimate_detail"] = est
    row["epsilon_accountant"] = eps_accountant
    row["roc"] = {"fpr": np.asarray(res.roc[0]), "tpr": np.asarray(res.roc[1])}
    return row


def client_canary_run(cfg: AuditConfig, tick: Callable[..., None]) -> Tuple[Simulation, Dict[str, Tensor], Tensor,
                                                                              Tensor, Dict[str, Any]]:
    """Train the run with M client canaries; returns the run, the canary statistics per view
    ([M] each), the fresh statistics per view, the inclusion mask and facts."""
    run, M_ = cfg.run, cfg.canaries
    n = run.clients
    base = Simulation(run)
    parts = [ix.clone() for ix in base.client_indices]
    # N = n + M users for the oracle and the accountant. Canary clients train on nothing (their
    # update is replaced), but the partition at set-up needs a record per client: M placeholder
    # rows (a copy of record 0) are appended, and the real clients keep their own partition.
    d0 = base.data
    pad = d0.x_train[:1].expand(M_, *d0.x_train.shape[1:])
    ds = Dataset(d0.name, torch.cat([d0.x_train, pad]), torch.cat([d0.y_train, d0.y_train[:1].expand(M_)]),
                 d0.x_test, d0.y_test, d0.num_classes, d0.input_shape,
                 {k: v for k, v in d0.meta.items() if k != "users_train"})
    sim = Simulation(dataclasses.replace(base.cfg, clients=n + M_, partition="iid", partition_args={}), dataset=ds,
                     keep_reveals=True)
    dev = sim.device
    d = sum(p.numel() for p in sim.model.parameters())
    gen = torch.Generator().manual_seed(cfg.seed + 31337)
    U = M.random_unit_directions(M_, d, gen, device=dev)
    included = torch.rand(M_, generator=gen) < 0.5
    n_fresh = int(max(2, min(FRESH_DIRECTIONS, _MAX_FRESH_FLOATS // d)))
    F = M.random_unit_directions(n_fresh, d, gen, device=dev)
    median = int(np.median([len(ix) for ix in parts]))
    n_train = len(d0.y_train)
    # a canary's sample count (its FedAvg weight without DP) is the median client's
    sim.client_indices = [ix.to(dev) for ix in parts] + [
        torch.full((max(1, median),), n_train + j, dtype=torch.long, device=dev) for j in range(M_)]
    user_dp = run.dp in ("user-central", "user-distributed")
    norms: List[float] = []
    real_updates = sim.client_updates          # the bound method, before it is shadowed below

    def with_canaries(ids: Tensor, broadcast: Optional[Tensor] = None) -> Tensor:
        ids_c = ids.cpu()
        real = ids_c < n
        out = torch.zeros(len(ids), d, device=dev)
        if bool(real.any()):
            out[real.to(dev)] = real_updates(ids[real.to(ids.device)], broadcast)
        if bool((~real).any()):
            j = (ids_c[~real] - n).to(dev)
            if user_dp:
                norm = float(run.dp_clip) * (1 - 1e-6)     # at the clip, so clipping leaves it alone
            else:
                norm = float(out[real.to(dev)].norm(dim=1).median()) if bool(real.any()) else \
                    (norms[-1] if norms else 1.0)
            norms.append(norm)
            out[(~real).to(dev)] = norm * U[j]
        return out

    # An excluded canary is a user who is not there (add/remove-one-user neighbours): never in a
    # cohort, so that it neither adds an update nor weighs in a robust rule's vote.
    excluded = n + torch.nonzero(~included).flatten()
    real_cohort = sim.sample_clients

    def cohort() -> Tensor:
        ids = real_cohort()
        return ids[~torch.isin(ids, excluded.to(ids.device))]

    sim.sample_clients = cohort
    sim.client_updates = with_canaries
    R = run.rounds
    clients = train_rounds(sim, R, "client canaries", tick)
    del sim.client_updates, sim.sample_clients
    gh = sim.global_history
    deltas = torch.stack([gh[t + 1] - gh[t] for t in range(R)])
    views: Dict[str, Tuple[Tensor, Tensor]] = {}
    views["final"] = (M.cosines(U, gh[R] - gh[0]), M.cosines(F, gh[R] - gh[0]))
    views["aggregate"] = (M.cosines(U, deltas).max(dim=1).values, M.cosines(F, deltas).max(dim=1).values)
    if isinstance(sim.rule, RFA):
        per_round = [weiszfeld_outputs(sim, t) for t in range(R)]
        for r in sorted(set().union(*per_round)):
            outs = torch.stack([p[r].to(dev) if r in p else torch.zeros(d, device=dev) for p in per_round])
            views[f"weiszfeld-{r}"] = (M.cosines(U, outs).max(dim=1).values, M.cosines(F, outs).max(dim=1).values)
    if run.secagg == "off":
        reveals = {rv.round: rv for rv in sim.transcript.reveals if rv.updates is not None}
        best = torch.zeros(M_, dtype=torch.float64)
        for t, ids in clients.items():
            if t not in reveals:
                continue
            for pos, cid in enumerate(ids.tolist()):
                if cid >= n:
                    c = M.cosines(U[cid - n:cid - n + 1], reveals[t].updates[pos])[0]
                    best[cid - n] = torch.maximum(best[cid - n], c.cpu())
        views = {"individual": (best, None), **views}
    facts = {"kind": "client", "canaries": M_, "included": int(included.sum()), "fresh_directions": n_fresh,
             "dimension": d, "canary_norm": "the DP clip" if user_dp else "median norm of the round's real updates",
             "clients": n + M_, "test_accuracy": sim.history[-1].test_accuracy}
    return sim, {k: v[0] for k, v in views.items()}, {k: v[1] for k, v in views.items()}, included, facts


def record_canary_run(cfg: AuditConfig, tick: Callable[..., None]) -> Tuple[Simulation, Dict[str, Tensor], Tensor,
                                                                              Dict[str, Any]]:
    """Train the run with M mislabelled record canaries, each in a random client's data with
    probability 1/2; returns the run, the canary scores per view ([M], minus the loss), the
    inclusion mask and facts."""
    run, M_ = cfg.run, cfg.canaries
    base = Simulation(run)
    d = base.data
    n_test, C = len(d.y_test), d.num_classes
    if M_ > n_test:
        raise ValueError(f"--canaries {M_}: record canaries are drawn from the {n_test} test records; use at most "
                         f"{n_test}")
    gen = torch.Generator().manual_seed(cfg.seed + 27449)
    pick = torch.randperm(n_test, generator=gen)[:M_].to(base.device)
    cx = d.x_test[pick]
    cy = (d.y_test[pick] + torch.randint(1, C, (M_,), generator=gen).to(base.device)) % C
    included = torch.rand(M_, generator=gen) < 0.5
    owners_pool = [k for k, ix in enumerate(base.client_indices) if len(ix)]
    owner = torch.tensor(owners_pool)[torch.randint(0, len(owners_pool), (M_,), generator=gen)]
    n_train = len(d.y_train)
    meta = {k: v for k, v in d.meta.items() if k != "users_train"}
    ds = Dataset(d.name, torch.cat([d.x_train, cx]), torch.cat([d.y_train, cy]), d.x_test, d.y_test, C,
                 d.input_shape, meta)
    parts = [ix.cpu() for ix in base.client_indices]
    for j in torch.nonzero(included).flatten().tolist():
        c = int(owner[j])
        parts[c] = torch.cat([parts[c], torch.tensor([n_train + j])])
    sim = Simulation(dataclasses.replace(base.cfg, partition="iid", partition_args={}), dataset=ds, keep_reveals=True)
    sim.client_indices = [ix.sort().values.to(sim.device) for ix in parts]
    R = run.rounds
    clients = train_rounds(sim, R, "record canaries", tick)
    model, gh, last = sim.model, sim.global_history, R - 1
    recs = M.Records(cx, cy)

    def score(flat: Tensor, idx: Optional[Tensor] = None) -> Tensor:
        r = recs if idx is None else recs.take(idx)
        return -M.outputs_and_losses((model, flat), r)[1].double().cpu()

    views: Dict[str, Tensor] = {}
    if run.secagg == "off":
        owners = sorted(set(owner.tolist()))
        pairs = individual_pairs(sim, owners, clients, {r: gh[r] for r in range(R)}, "individual")
        s = torch.empty(M_, dtype=torch.float64)
        for j_pos, c in enumerate(owners):
            idx = torch.nonzero(owner == c).flatten()
            s[idx] = score(pairs[j_pos][-1], idx.to(cx.device))
        views["individual"] = s
    views["aggregate"] = score(gh[R])
    if isinstance(sim.rule, RFA):
        for r, v in sorted(weiszfeld_outputs(sim, last).items()):
            views[f"weiszfeld-{r}"] = score(gh[last] + v.to(gh[last].device))
    facts = {"kind": "record", "canaries": M_, "included": int(included.sum()), "canary_records":
             "test records with a wrong label, each in a random client's data with probability 1/2",
             "test_accuracy": sim.history[-1].test_accuracy}
    return sim, views, included, facts


def canary_audit(cfg: AuditConfig, tick: Callable[..., None]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The canary rows of ``cfg`` (client or record canaries by :meth:`AuditConfig.resolved_canary_kind`)."""
    _check(cfg)
    kind = cfg.resolved_canary_kind()
    delta = float(cfg.run.delta)
    if kind == "client":
        sim, stats, fresh, included, facts = client_canary_run(cfg, tick)
    else:
        sim, stats, included, facts = record_canary_run(cfg, tick)
        fresh = {k: None for k in stats}
    eps_acc = accountant_epsilon(sim)
    rows = [canary_row(v, s, included, fresh[v], kind, delta, cfg, eps_acc) for v, s in stats.items()]
    tick(f"{kind} canaries: {len(rows)} views")
    return rows, {**facts, "epsilon_accountant": eps_acc, "delta": delta, "confidence": cfg.confidence}
