"""Running the cells of a sweep. :func:`run_cell` trains one federation
(:func:`protocols.runner.make_simulation`) and measures

* final clean test accuracy, and the attack's own success rate where it has one
  (backdoor ASR, targeted flip rate);
* membership leakage: for every view the honest server has in that cell (the individual
  updates without secure aggregation, the aggregate, RFA's Weiszfeld intermediates),
  the AUC and TPR at 1% FPR of the best membership attack, from :func:`protocols.experiments.audit.run_audit`
  with a small preset (Nasr et al. 2019 threshold attacks; Cronus appendix Table 6 views);
* epsilon spent (DP), oracle calls per round, wall time.

A cell the product refuses to run (Krum under secure aggregation, user-level DP with a rule
that has no public sensitivity, a data-poisoning attack under Opacus DP-SGD clients) is
reported as ``refused`` with the library's reason, never dropped. Cells are independent:
:func:`run_grid` runs them in spawned processes (``--jobs N``) or on Ray (``--backend ray``);
the numbers depend only on the cell and its seed, not on the backend. Each finished cell is
written atomically to ``DIR/cells/<hash>.json``, so a rerun skips it.

Workers import :func:`run_cell` by its path, ``protocols.experiments.tradeoff.cells.run_cell``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from protocols.experiments.audit import AuditConfig, run_audit
from protocols.rules import RFA, make_rule
from protocols.runner import make_simulation
from protocols.simulation import RunConfig

from .grid import Grid, expand, refusal

#: Passive views of the honest server (protocols.experiments.audit); "weiszfeld" only exists for RFA rules.
PASSIVE_VIEWS = ("individual", "aggregate", "weiszfeld")


def _best_per_view(rows) -> Dict[str, Dict[str, Any]]:
    """Per view, the attack with the highest AUC (the server's best), and its TPR at 1% FPR."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        v = r["view"]
        if v not in out or r["auc"] > out[v]["auc"]:
            out[v] = {"auc": float(r["auc"]), "tpr_at_1pct_fpr": float(r["tpr_at_1pct_fpr"]), "attack": r["attack"]}
    return out


def run_cell(cell: Dict[str, Any], threads: int = 1) -> Dict[str, Any]:
    """Train and measure one cell (module docstring). Top-level and picklable: the worker of
    every backend. A cell the library refuses (the pre-check of :func:`refusal`, or a
    ``ValueError`` of the library at setup or in a round, e.g. an update the secagg encoding
    cannot hold) is returned with ``status="refused"`` and the reason; any other error as
    ``"failed"`` (rerun on resume)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    base = {k: cell[k] for k in ("key", "rule", "attack", "corrupt", "dp", "secagg", "seed")}
    reason = refusal(cell)
    if reason is not None:
        return {**base, "status": "refused", "reason": reason, "cell": cell}
    cfg = RunConfig(**cell["run"])
    audit = cell.get("audit") or False
    views: Dict[str, Dict[str, Any]] = {}
    try:
        if audit and cfg.protocol == "params":
            weiszfeld = isinstance(make_rule(cfg.rule, **cfg.rule_args), RFA)
            vs = [v for v in PASSIVE_VIEWS if (v != "individual" or cfg.secagg == "off")
                  and (v != "weiszfeld" or weiszfeld)] + (["active"] if audit.get("active") else [])
            rows = run_audit(AuditConfig(run=cfg, attacks=tuple(audit.get("attacks", ("loss", "gradient_norm"))),
                                         views=tuple(vs), n_bootstrap=int(audit.get("n_bootstrap", 200)),
                                         seed=cfg.seed))
            sim = rows.simulation
            views = _best_per_view(rows)
        else:
            sim = make_simulation(cfg)
            sim.run()
    except ValueError as exc:
        # the library's refusal at setup (e.g. a data-poisoning attack under Opacus DP-SGD clients)
        return {**base, "status": "refused", "reason": str(exc), "cell": cell}
    except Exception as exc:  # reported, never dropped: the cell's row says what went wrong
        return {**base, "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "cell": cell}
    hist = sim.history
    last = hist[-1]
    best = max(views.items(), key=lambda kv: kv[1]["auc"]) if views else None
    metrics = {
        "accuracy": float(last.test_accuracy),
        "attack_success": None if last.attack_success is None else float(last.attack_success),
        "mia_auc": best[1]["auc"] if best else None,
        "mia_tpr1": best[1]["tpr_at_1pct_fpr"] if best else None,
        "epsilon": None if last.epsilon is None else float(last.epsilon),
        "oracle_calls_per_round": sum(r.oracle_calls for r in hist) / len(hist),
        "seconds": time.perf_counter() - t0,
    }
    return {**base, "status": "ok", "reason": "", "metrics": metrics, "views": views,
            "mia_view": best[0] if best else None, "cell": cell}


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finished(out_dir, key: str) -> Optional[Dict[str, Any]]:
    """The stored result of cell ``key`` if it finished (ok or refused); a failed cell reruns."""
    path = Path(out_dir) / "cells" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None   # an unreadable cell file is recomputed (and overwritten)
    return res if res.get("status") in ("ok", "refused") and res.get("key") == key else None


# -- backends ---------------------------------------------------------------------------------


def _run_local(cells, jobs: int, threads: int) -> Iterable[Dict[str, Any]]:
    if jobs == 1:
        for c in cells:
            yield run_cell(c, threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # spawn: no forked torch state; workers import protocols afresh (safe on every platform)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, c, threads) for c in cells]
        try:
            for f in as_completed(futures):
                yield f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(cells, jobs: int, threads: int, address: Optional[str]) -> Iterable[Dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'fedaudit[ray]' (or pip install ray)") from None
    started = False
    if not ray.is_initialized():
        kw: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=jobs, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=threads or 1)(run_cell)
        pending = [remote.remote(c, threads) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def run_grid(grid: Grid, out_dir, jobs: int = 1, backend: str = "local", address: Optional[str] = None,
             threads: int = 1, progress: bool = True) -> List[Dict[str, Any]]:
    """Run every unfinished cell of ``grid`` and return all cells' results (finished ones read
    from ``DIR/cells``). Each result is written to ``DIR/cells/<key>.json`` as it arrives."""
    from tqdm.auto import tqdm
    if backend not in ("local", "ray"):
        raise ValueError(f"backend={backend!r}; choose local or ray")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive integer")
    if address and backend != "ray":
        raise ValueError(f"address={address!r} joins a Ray cluster; add --backend ray")
    grid.validate()
    cells = expand(grid)
    cdir = Path(out_dir) / "cells"
    cdir.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict[str, Any]] = {}
    todo = []
    for c in cells:
        prev = finished(out_dir, c["key"])
        if prev is not None:
            results[c["key"]] = prev
        else:
            todo.append(c)
    bar = tqdm(total=len(cells), initial=len(results), desc="tradeoff cells", unit="cell", disable=not progress,
               file=sys.stderr)
    stream = _run_ray(todo, jobs, threads, address) if backend == "ray" else _run_local(todo, jobs, threads)
    for res in stream:
        _atomic_write(cdir / f"{res['key']}.json", json.dumps(res, indent=1, default=str))
        results[res["key"]] = res
        bar.update(1)
        acc = res.get("metrics", {}).get("accuracy")
        bar.set_postfix_str(f"{res['rule']}/{res['attack']}/{res['dp']}/{res['secagg']}: "
                            + (f"acc {acc:.3f}" if acc is not None else res["status"]))
    bar.close()
    return [results[c["key"]] for c in cells]
