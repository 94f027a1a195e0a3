"""Running the cells of a sweep. :func:`run_cell` trains one federation
(:func:`protocols.runner.make_simulation`) and measures

* final clean test accuracy, and the attack's own success rate where it has one
  (backdoor ASR, targeted flip rate);
* membership leakage: for every view the honest server has in that cell (the individual
  updates without secure aggregation, the aggregate, RFA's Weiszfeld intermediates), the
  AUC with its bootstrap CI and the TPR at 1% FPR of every attack, from
  :func:`protocols.experiments.audit.run_audit` with a small preset (Nasr et al. 2019
  threshold attacks; Cronus appendix Table 6 views). The cell's leakage is the largest
  ``max(AUC, 1 - AUC)`` over views and attacks (0.5: none; an AUC below 0.5 separates members
  as well as its mirror image, so it is not "more private");
* epsilon spent (DP), oracle calls per round, wall time.

A cell the product refuses to run (Krum under secure aggregation, user-level DP with a rule
that has no public sensitivity, a data-poisoning attack under Opacus DP-SGD clients) is
reported as ``refused`` with the library's reason, never dropped. Cells are independent:
:func:`run_grid` runs them in spawned processes (``--jobs N``) or on Ray (``--backend ray``);
the numbers depend only on the cell and its seed, not on the backend. Each finished cell is
written atomically to ``DIR/cells/<hash>.json``, so a rerun skips it, and is run under a file
lock (``DIR/cells/<hash>.lock``, ``filelock``), so that several sweeps on one ``--out`` share
the cells instead of each running all of them.

Workers import :func:`run_cell` by its path, ``protocols.experiments.tradeoff.cells.run_cell``.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from protocols.experiments.audit import AuditConfig, run_audit
from protocols.report import atomic_write_json
from protocols.rules import RFA, make_rule
from protocols.runner import make_simulation
from protocols.simulation import RunConfig

from .grid import Grid, expand, refusal

#: Passive views of the honest server (protocols.experiments.audit); "weiszfeld" only exists for RFA rules.
PASSIVE_VIEWS = ("individual", "aggregate", "weiszfeld")

#: How often a sweep that waits for a cell another sweep is running checks its lock (seconds).
POLL_SECONDS = 0.5


def leakage(auc: float) -> float:
    """max(AUC, 1 - AUC): how well the attack separates members from non-members, whichever
    way round; 0.5 is no leakage."""
    return max(float(auc), 1.0 - float(auc))


def leakage_ci(lo: float, hi: float) -> Tuple[float, float]:
    """The interval of max(AUC, 1 - AUC) for an AUC interval [lo, hi] (0.5 when it contains 0.5)."""
    if lo >= 0.5:
        return float(lo), float(hi)
    if hi <= 0.5:
        return 1.0 - float(hi), 1.0 - float(lo)
    return 0.5, max(float(hi), 1.0 - float(lo))


def _best_per_view(rows) -> Dict[str, Dict[str, Any]]:
    """Per view, the attack with the largest leakage max(AUC, 1 - AUC), with its AUC, the AUC's
    CI and the leakage's, and its TPR at 1% FPR."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        if r.get("kind", "membership") != "membership" or r.get("auc") is None:
            continue
        v, auc = r["view"], float(r["auc"])
        ci = r.get("auc_ci") or (auc, auc)
        entry = {"auc": auc, "auc_ci": [float(ci[0]), float(ci[1])], "leakage": leakage(auc),
                 "leakage_ci": list(leakage_ci(float(ci[0]), float(ci[1]))),
                 "tpr_at_1pct_fpr": None if r.get("tpr_at_1pct_fpr") is None else float(r["tpr_at_1pct_fpr"]),
                 "attack": r["attack"]}
        if v not in out or entry["leakage"] > out[v]["leakage"]:
            out[v] = entry
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
    base["ran_by"] = {"host": socket.gethostname(), "pid": os.getpid()}
    reason = refusal(cell)
    if reason is not None:
        return {**base, "status": "refused", "reason": reason, "cell": cell}
    cfg = RunConfig(**cell["run"])
    audit = cell.get("audit") or False
    views: Dict[str, Dict[str, Any]] = {}
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # the grid validation reported them once
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
    best = max(views.items(), key=lambda kv: kv[1]["leakage"]) if views else None
    metrics = {
        "accuracy": float(last.test_accuracy),
        "attack_success": None if last.attack_success is None else float(last.attack_success),
        "mia_auc": best[1]["auc"] if best else None,
        "mia_leakage": best[1]["leakage"] if best else None,
        "mia_leakage_lo": best[1]["leakage_ci"][0] if best else None,
        "mia_leakage_hi": best[1]["leakage_ci"][1] if best else None,
        "mia_tpr1": best[1]["tpr_at_1pct_fpr"] if best else None,
        "epsilon": None if last.epsilon is None else float(last.epsilon),
        "oracle_calls_per_round": sum(r.oracle_calls for r in hist) / len(hist),
        "aborted_rounds": sum(1 for r in hist if getattr(r, "aborted", None)),
        "seconds": time.perf_counter() - t0,
    }
    return {**base, "status": "ok", "reason": "", "metrics": metrics, "views": views,
            "mia_view": best[0] if best else None, "cell": cell}


def finished(out_dir, key: str) -> Optional[Dict[str, Any]]:
    """The stored result of cell ``key`` if it finished (ok or refused); a failed cell reruns."""
    path = Path(out_dir) / "cells" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None   # an unreadable cell file is recomputed (and overwritten)
    return res if res.get("status") in ("ok", "refused") and res.get("key") == key else None


# -- backends: submit a cell, wait for the next result --------------------------------------------


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the sweep, which stops them and keeps the finished cells."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Serial:
    """Runs a cell when it is submitted (``jobs=1``), in this process."""

    def __init__(self, threads: int):
        self.threads = threads
        self.done: deque = deque()

    def submit(self, cell) -> None:
        self.done.append(sys.modules[__name__].run_cell(cell, self.threads))   # patchable in tests

    def next(self) -> Dict[str, Any]:
        return self.done.popleft()

    def close(self, abort: bool = False) -> None:
        pass


class _Pool:
    """``jobs`` spawned processes (no forked torch state); results arrive in completion order."""

    def __init__(self, jobs: int, threads: int):
        import multiprocessing
        self.threads, self.results = threads, queue.Queue()
        self.pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_ignore_sigint)

    def submit(self, cell) -> None:
        def failed(exc, cell=cell):   # the worker died (the cell itself catches its exceptions)
            self.results.put({**{k: cell[k] for k in ("key", "rule", "attack", "corrupt", "dp", "secagg", "seed")},
                              "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "cell": cell})
        self.pool.apply_async(run_cell, (cell, self.threads), callback=self.results.put, error_callback=failed)

    def next(self) -> Dict[str, Any]:
        while True:
            try:
                return self.results.get(timeout=0.5)    # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue

    def close(self, abort: bool = False) -> None:
        if abort:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


class _Ray:
    def __init__(self, jobs: int, threads: int, address: Optional[str]):
        try:
            import ray
        except ImportError:
            raise ValueError("--backend ray needs Ray: pip install 'fedaudit[ray]' (or pip install ray)") from None
        self.ray, self.started, self.pending = ray, False, []
        if not ray.is_initialized():
            kw: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=jobs, **kw)
            self.started = True
        self.remote, self.threads = ray.remote(num_cpus=threads or 1)(run_cell), threads

    def submit(self, cell) -> None:
        self.pending.append(self.remote.remote(cell, self.threads))

    def next(self) -> Dict[str, Any]:
        done, self.pending = self.ray.wait(self.pending, num_returns=1)
        return self.ray.get(done[0])

    def close(self, abort: bool = False) -> None:
        if abort:
            for ref in self.pending:
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def _schedule(cells: List[Dict[str, Any]], out_dir: Path, backend, jobs: int,
              write: Callable[[Dict[str, Any]], None]) -> Iterable[Dict[str, Any]]:
    """Yield every cell's result, running each unfinished cell under its file lock.

    At most ``jobs`` cells are in flight. A cell is locked (without waiting) just before it is
    submitted; a cell another sweep holds is set aside and, once this sweep has nothing else to
    run, waited for: its result is read from disk (or, if that sweep died without one, the cell
    runs here). The result is written by ``write`` before the lock is released, so a cell runs
    once however many sweeps share ``out_dir``.
    """
    from filelock import FileLock, Timeout
    cdir = out_dir / "cells"
    todo, waiting = deque(cells), deque()
    in_flight: Dict[str, Tuple[Dict[str, Any], Any]] = {}
    try:
        while todo or in_flight or waiting:
            while todo and len(in_flight) < jobs:
                c = todo.popleft()
                lock = FileLock(str(cdir / f"{c['key']}.lock"))
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    waiting.append(c)          # another sweep runs it now
                    continue
                prev = finished(out_dir, c["key"])
                if prev is not None:           # it finished while this sweep was busy
                    lock.release()
                    yield prev
                    continue
                in_flight[c["key"]] = (c, lock)
                backend.submit(c)
            if in_flight:
                res = backend.next()
                _, lock = in_flight.pop(res["key"])
                try:
                    if finished(out_dir, res["key"]) is not None:   # cannot happen under the lock
                        print(f"fedaudit: warning: cell {res['key']} ran twice (is {cdir} on a file system "
                              "without working locks?)", file=sys.stderr)
                    write(res)
                finally:
                    lock.release()
                yield res
                continue
            if waiting:
                c = waiting.popleft()
                lock = FileLock(str(cdir / f"{c['key']}.lock"))
                try:
                    lock.acquire(timeout=POLL_SECONDS)
                except Timeout:
                    waiting.append(c)
                    continue
                prev = finished(out_dir, c["key"])
                lock.release()
                if prev is not None:
                    yield prev
                else:                          # the other sweep stopped without a result
                    todo.append(c)
    finally:
        for _, lock in in_flight.values():
            lock.release()


def run_grid(grid: Grid, out_dir, jobs: int = 1, backend: str = "local", address: Optional[str] = None,
             threads: int = 1, progress: bool = True) -> List[Dict[str, Any]]:
    """Run every unfinished cell of ``grid`` and return all cells' results (finished ones read
    from ``DIR/cells``). Each result is written to ``DIR/cells/<key>.json`` as it arrives.
    On Ctrl-C the workers are stopped and ``KeyboardInterrupt`` propagates: every cell that
    finished is on disk, and a rerun resumes from there."""
    from tqdm.auto import tqdm
    if backend not in ("local", "ray"):
        raise ValueError(f"backend={backend!r}; choose local or ray")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive integer")
    if address and backend != "ray":
        raise ValueError(f"address={address!r} joins a Ray cluster; add --backend ray")
    grid.validate()
    cells = expand(grid)
    out_dir = Path(out_dir)
    cdir = out_dir / "cells"
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

    sweep = {"host": socket.gethostname(), "pid": os.getpid()}

    def write(res: Dict[str, Any]) -> None:
        res["sweep"] = sweep            # which sweep ran it (several may share --out)
        atomic_write_json(cdir / f"{res['key']}.json", res, indent=1)

    runner = None
    aborted = True
    try:
        if todo:
            runner = (_Ray(jobs, threads, address) if backend == "ray" else
                      _Serial(threads) if jobs == 1 else _Pool(min(jobs, len(todo)), threads))
            for res in _schedule(todo, out_dir, runner, jobs, write):
                results[res["key"]] = res
                bar.update(1)
                acc = res.get("metrics", {}).get("accuracy")
                bar.set_postfix_str(f"{res['rule']}/{res['attack']}/{res['dp']}/{res['secagg']}: "
                                    + (f"acc {acc:.3f}" if acc is not None else res["status"]))
        aborted = False
    finally:
        bar.close()
        if runner is not None:
            runner.close(abort=aborted)
    return [results[c["key"]] for c in cells]
