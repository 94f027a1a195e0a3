"""Privacy/robustness trade-off sweeps: ``fedaudit tradeoff`` (DESIGN.md, "Audits and sweeps").

A grid over aggregation rules x poisoning attacks x corruption levels rho x DP settings x
secure-aggregation modes x seeds. Every cell trains one federation
(:func:`protocols.simulation.make_simulation`) and measures

* final clean test accuracy, and the attack's own success rate where it has one
  (backdoor ASR, targeted flip rate);
* membership leakage: for every view the honest server has in that cell (the individual
  updates without secure aggregation, the aggregate, RFA's Weiszfeld intermediates),
  the AUC and TPR at 1% FPR of the best membership attack, from :func:`protocols.audit.run_audit`
  with a small preset (Nasr et al. 2019 threshold attacks; Cronus appendix Table 6 views);
* epsilon spent (DP), oracle calls per round, wall time.

A cell the product refuses to run (Krum under secure aggregation, user-level DP with a rule
that has no public sensitivity, a data-poisoning attack under Opacus DP-SGD clients) is
reported as ``refused`` with the library's reason, never dropped. Cells are independent:
they run in spawned processes (``--jobs N``) or on Ray (``--backend ray``); the numbers
depend only on the cell and its seed, not on the backend. Each finished cell is written
atomically to ``DIR/cells/<hash>.json``, so a rerun skips it.

Outputs: ``DIR/results.csv`` (one row per cell, seeds aggregated as mean and std) and the
plots of :func:`write_plots` (accuracy vs epsilon; MIA AUC vs accuracy with the Pareto front;
the robustness heatmap of Cronus appendix Table 5, accuracy under attack / benign accuracy;
privacy vs robustness per rule).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .simulation import DP_MODES, SECAGG_MODES, RunConfig

__all__ = ["Grid", "DPSetting", "parse_dp", "load_grid", "expand", "cell_key", "run_cell", "run_grid",
           "aggregate", "write_csv", "write_plots", "pareto_front", "format_summary", "add_tradeoff_parser",
           "CELL_FORMAT"]

#: Bumped when a cell's measurement changes, so that old cell files are not reused.
CELL_FORMAT = 1

#: Passive views of the honest server (protocols.audit); "weiszfeld" only exists for RFA rules.
PASSIVE_VIEWS = ("individual", "aggregate", "weiszfeld")

# The default grid: three rules (one that needs individual updates), benign + two attacks,
# no DP and two user-level noise levels, secure aggregation off and on, two seeds.
DEFAULT_GRID: Dict[str, Any] = {
    "rules": ["fedavg", "rfa", "krum"],
    "attacks": ["none", "backdoor", "lie"],
    "corrupt": [0.2],
    "dp": ["none", "user-central:z=0.3", "user-central:z=1.0"],
    "secagg": ["off", "quantized"],
    "seeds": [0, 1],
    "run": {"rounds": 10, "clients": 20},
}


# -- the grid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPSetting:
    """One DP setting of the grid: ``mode`` None (off) or one of :data:`DP_MODES`, with
    exactly one of ``noise_multiplier`` (z) and ``target_epsilon``."""

    mode: Optional[str] = None
    noise_multiplier: Optional[float] = None
    target_epsilon: Optional[float] = None

    @property
    def label(self) -> str:
        if self.mode is None:
            return "none"
        return f"{self.mode}:z={self.noise_multiplier:g}" if self.noise_multiplier is not None \
            else f"{self.mode}:eps={self.target_epsilon:g}"

    def run_fields(self) -> Dict[str, Any]:
        return {"dp": self.mode, "noise_multiplier": self.noise_multiplier, "target_epsilon": self.target_epsilon}


def parse_dp(spec: Any) -> DPSetting:
    """A DP setting from ``"none"``, ``"MODE:z=Z"``, ``"MODE:eps=E"`` or a mapping
    ``{mode, noise_multiplier | target_epsilon}``."""
    if isinstance(spec, DPSetting):
        return spec
    if spec is None:
        return DPSetting()
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"mode", "noise_multiplier", "target_epsilon"})
        if unknown:
            raise ValueError(f"DP setting {spec!r}: unknown key(s) {unknown}; use mode, noise_multiplier, "
                             "target_epsilon")
        mode = spec.get("mode")
        mode = None if mode in (None, "none", "off") else mode
        s = DPSetting(mode, spec.get("noise_multiplier"), spec.get("target_epsilon"))
    elif isinstance(spec, str):
        text = spec.strip()
        if text in ("none", "off", ""):
            return DPSetting()
        mode, sep, param = text.partition(":")
        key, eq, value = param.partition("=")
        if not sep or not eq or key not in ("z", "eps"):
            raise ValueError(f"DP setting {spec!r}: write none, MODE:z=NOISE_MULTIPLIER or MODE:eps=TARGET_EPSILON "
                             f"(MODE one of {DP_MODES}), e.g. user-central:z=1.0")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"DP setting {spec!r}: {value!r} is not a number") from None
        s = DPSetting(mode, v if key == "z" else None, v if key == "eps" else None)
    else:
        raise ValueError(f"DP setting {spec!r} must be a string (none, MODE:z=Z, MODE:eps=E) or a mapping")
    if s.mode is None:
        if s.noise_multiplier is not None or s.target_epsilon is not None:
            raise ValueError(f"DP setting {spec!r} gives a noise level without a mode; add mode (one of {DP_MODES})")
        return s
    if s.mode not in DP_MODES:
        raise ValueError(f"DP setting {spec!r}: mode {s.mode!r} is not one of {DP_MODES}")
    if (s.noise_multiplier is None) == (s.target_epsilon is None):
        raise ValueError(f"DP setting {spec!r} needs exactly one of noise_multiplier (z=) and target_epsilon (eps=)")
    return s


@dataclass
class Grid:
    """The sweep: every combination of the lists, over ``run`` (RunConfig overrides shared by
    all cells). ``attacks`` may include ``"none"`` (the benign cell, rho = 0; it is the
    denominator of the robustness ratio, so the heatmap needs it). ``rule_args`` /
    ``attack_args``: per-name parameters. ``audit``: False, or the membership audit's preset
    (``attacks``, ``n_bootstrap``, ``active``: also the malicious server's active views)."""

    rules: Sequence[str] = tuple(DEFAULT_GRID["rules"])
    attacks: Sequence[str] = tuple(DEFAULT_GRID["attacks"])
    corrupt: Sequence[float] = tuple(DEFAULT_GRID["corrupt"])
    dp: Sequence[Any] = tuple(DEFAULT_GRID["dp"])
    secagg: Sequence[str] = tuple(DEFAULT_GRID["secagg"])
    seeds: Sequence[int] = tuple(DEFAULT_GRID["seeds"])
    run: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GRID["run"]))
    rule_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    attack_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    audit: Any = field(default_factory=lambda: {"attacks": ["loss", "gradient_norm"], "n_bootstrap": 200,
                                                "active": False})

    def validate(self) -> None:
        from .aggregators import RULES
        from .attacks import ATTACKS
        for name in ("rules", "attacks", "corrupt", "dp", "secagg", "seeds"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
                raise ValueError(f"grid {name}={v!r} must be a non-empty list")
            if len(set(map(repr, v))) != len(v):
                raise ValueError(f"grid {name}={list(v)} lists a value twice")
        for r in self.rules:
            if r not in RULES:
                raise ValueError(f"grid rule {r!r} unknown; choose from {sorted(RULES)} (`fedaudit list rules`)")
        for a in self.attacks:
            if a != "none" and a not in ATTACKS:
                raise ValueError(f"grid attack {a!r} unknown; choose 'none' or from {sorted(ATTACKS)} "
                                 "(`fedaudit list attacks`)")
        for c in self.corrupt:
            if not isinstance(c, (int, float)) or isinstance(c, bool) or not 0 < c < 1:
                raise ValueError(f"grid corruption level {c!r} must lie in (0, 1); the benign cell is attack 'none'")
        for s in self.secagg:
            if s not in SECAGG_MODES:
                raise ValueError(f"grid secagg mode {s!r}; choose from {SECAGG_MODES}")
        for s in self.seeds:
            if not isinstance(s, int) or isinstance(s, bool):
                raise ValueError(f"grid seed {s!r} must be an integer")
        for d in self.dp:
            parse_dp(d)
        known = {f.name for f in dataclasses.fields(RunConfig)}
        owned = {"rule", "rule_args", "attack", "attack_args", "corrupt", "secagg", "seed", "dp",
                 "noise_multiplier", "target_epsilon"}
        for k in self.run:
            if k not in known:
                raise ValueError(f"grid run option {k!r} is not a RunConfig field; choose from {sorted(known - owned)}")
            if k in owned:
                raise ValueError(f"grid run option {k!r} is a grid axis; set it with the grid's own list instead")
        for what, args, names in (("rule_args", self.rule_args, self.rules), ("attack_args", self.attack_args,
                                                                                self.attacks)):
            for k in args:
                if k not in names:
                    raise ValueError(f"grid {what} names {k!r}, which is not in the grid ({list(names)})")
        if self.audit not in (False, None) and not isinstance(self.audit, dict):
            raise ValueError(f"grid audit={self.audit!r} must be false or a mapping (attacks, n_bootstrap, active)")
        if isinstance(self.audit, dict):
            unknown = sorted(set(self.audit) - {"attacks", "n_bootstrap", "active"})
            if unknown:
                raise ValueError(f"grid audit has unknown key(s) {unknown}; use attacks, n_bootstrap, active")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dp"] = [parse_dp(x).label for x in self.dp]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_GRID_KEYS = {f.name for f in dataclasses.fields(Grid)}


def load_grid(path) -> Dict[str, Any]:
    """The grid mapping of a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file (keys: the fields of :class:`Grid`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    elif suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"grid file {str(path)!r} is YAML, which needs PyYAML (pip install pyyaml); "
                             "or write the grid as .toml or .json") from None
        data = yaml.safe_load(path.read_text())
    else:
        raise ValueError(f"grid file {str(path)!r}: unknown format {suffix!r}; use .toml, .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"grid file {str(path)!r} must hold a mapping of grid keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _GRID_KEYS)
    if unknown:
        raise ValueError(f"grid file {str(path)!r} has unknown key(s) {unknown}; use {sorted(_GRID_KEYS)}")
    return data


def make_grid(data: Optional[Dict[str, Any]] = None, **overrides) -> Grid:
    """A validated :class:`Grid` from a mapping (a grid file) and keyword overrides (options)."""
    merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    g = Grid(**merged)
    g.validate()
    return g


# -- cells ------------------------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cell_key(cell: Dict[str, Any]) -> str:
    """The cell's file name stem: a hash of everything that determines its numbers."""
    return hashlib.sha256(_canonical({"format": CELL_FORMAT, **cell}).encode()).hexdigest()[:16]


def group_of(cell: Dict[str, Any]) -> Tuple:
    """The results.csv row of a cell: its coordinates without the seed."""
    return (cell["rule"], cell["attack"], cell["corrupt"], cell["dp"], cell["secagg"])


def expand(grid: Grid) -> List[Dict[str, Any]]:
    """Every cell of the grid, as JSON-ready specs (the benign ``attack="none"`` has rho 0, once)."""
    cells = []
    for rule, attack, secagg, dp_spec, seed in itertools.product(grid.rules, grid.attacks, grid.secagg,
                                                                 grid.dp, grid.seeds):
        dps = parse_dp(dp_spec)
        for rho in ([0.0] if attack == "none" else list(grid.corrupt)):
            run = {**grid.run, "rule": rule, "rule_args": dict(grid.rule_args.get(rule, {})),
                   "secagg": secagg, "seed": int(seed), **dps.run_fields()}
            if attack != "none":
                run.update(attack=attack, corrupt=float(rho), attack_args=dict(grid.attack_args.get(attack, {})))
            cell = {"rule": rule, "attack": attack, "corrupt": float(rho), "dp": dps.label, "secagg": secagg,
                    "seed": int(seed), "run": run, "audit": grid.audit or False}
            cell["key"] = cell_key(cell)
            cells.append(cell)
    return cells


def refusal(cell: Dict[str, Any]) -> Optional[str]:
    """Why the product refuses this cell (None: it runs). Checked before any training."""
    from .aggregators import make_rule
    run = cell["run"]
    try:
        rule = make_rule(run["rule"], **run.get("rule_args", {}))
        if run["secagg"] != "off" and not getattr(rule, "secagg_compatible", False):
            return (f"rule {run['rule']!r} needs individual updates (reveal), which secure aggregation "
                    f"(secagg={run['secagg']!r}) never gives the server")
        RunConfig(**run).validate()
    except ValueError as exc:
        return str(exc)
    return None


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
    from .audit import AuditConfig, run_audit
    from .simulation import make_simulation
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
            from .aggregators.rfa import RFA
            from .aggregators import make_rule
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


# -- aggregation and outputs ------------------------------------------------------------------

METRICS = ("accuracy", "attack_success", "mia_auc", "mia_tpr1", "epsilon", "oracle_calls_per_round", "seconds")


def _mean_std(xs: List[float]) -> Tuple[Optional[float], Optional[float]]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def aggregate(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per cell (seeds aggregated: mean and sample std of every metric over the seeds
    that ran), plus ``robustness`` = accuracy / the benign accuracy of the same rule, DP and
    secagg setting (Cronus appendix Table 5's ratio; None without a benign cell)."""
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(group_of(r), []).append(r)
    rows = []
    for g, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        status = "ok" if len(ok) == len(rs) else rs[0]["status"] if not ok else "partial"
        reasons = sorted({r["reason"] for r in rs if r["status"] != "ok"})
        row: Dict[str, Any] = dict(zip(("rule", "attack", "corrupt", "dp", "secagg"), g))
        row.update(status=status, seeds=len(rs), seeds_ok=len(ok), reason=" | ".join(reasons))
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r["metrics"][m] for r in ok])
        views: Dict[str, List[float]] = {}
        for r in ok:
            for v, d in r.get("views", {}).items():
                views.setdefault(v, []).append(d["auc"])
        row["views_auc"] = ";".join(f"{v}={sum(a) / len(a):.3f}" for v, a in views.items())
        rows.append(row)
    benign = {(r["rule"], r["dp"], r["secagg"]): r["accuracy_mean"] for r in rows
              if r["attack"] == "none" and r["accuracy_mean"] is not None}
    for r in rows:
        b = benign.get((r["rule"], r["dp"], r["secagg"]))
        r["benign_accuracy"] = b
        r["robustness"] = None if b is None or r["accuracy_mean"] is None or b == 0 else r["accuracy_mean"] / b
    return rows


CSV_FIELDS = (["rule", "attack", "corrupt", "dp", "secagg", "status", "seeds", "seeds_ok"]
              + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
              + ["benign_accuracy", "robustness", "views_auc", "reason"])


def write_csv(rows: Sequence[Dict[str, Any]], path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k))
                        for k in CSV_FIELDS})
    return path


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points (accuracy, leakage) no other point beats: higher accuracy and
    lower leakage, at least as good in both and better in one. Sorted by accuracy."""
    idx = []
    for i, (a, l) in enumerate(points):
        dominated = any((a2 >= a and l2 <= l) and (a2 > a or l2 < l) for j, (a2, l2) in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def _setting(r) -> str:
    return f"dp {r['dp']}, secagg {r['secagg']}"


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _colors(names):
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


_MARKERS = {"off": "o", "plaintext": "s", "quantized": "^", "masked": "D"}


def plot_accuracy_vs_epsilon(rows, path) -> Path:
    """Benign accuracy vs epsilon spent, one line per rule (and secagg mode); no-DP cells at the right edge."""
    import matplotlib.ticker
    fig = _figure(7.5, 4.8)
    ax = fig.subplots()
    benign = [r for r in rows if r["attack"] == "none" and r["accuracy_mean"] is not None]
    colors = _colors({r["rule"] for r in rows})
    eps = [r["epsilon_mean"] for r in benign if r["epsilon_mean"] is not None and r["epsilon_mean"] > 0]
    right = max(eps) * 4 if eps else 10.0
    for (rule, sa) in sorted({(r["rule"], r["secagg"]) for r in benign}):
        pts = sorted(((r["epsilon_mean"] if r["epsilon_mean"] is not None else right), r["accuracy_mean"],
                      r["accuracy_std"] or 0.0) for r in benign if r["rule"] == rule and r["secagg"] == sa)
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker=_MARKERS.get(sa, "o"), color=colors[rule], capsize=3, lw=1.4,
                    ls="-" if sa == "off" else "--", label=f"{rule} (secagg {sa})")
    ax.set_xscale("log")
    if benign:
        # the no-DP cells sit at a placeholder position, labelled as such (not an epsilon)
        lo = min(eps) / 1.6 if eps else right / 10
        ticks = [m * 10.0 ** e for e in range(-3, 8) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= right / 2]
        ax.set_xticks(ticks + [right], [f"{t:g}" for t in ticks] + ["no DP"])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.axvspan(right / 1.6, right * 1.6, color="grey", alpha=0.08, lw=0)
        ax.set_xlim(lo, right * 1.6)
    ax.set(xlabel="epsilon spent (log scale; delta as configured)", ylabel="clean test accuracy (benign cells)",
           title="Accuracy vs privacy budget")
    ax.grid(alpha=0.3)
    if benign:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no benign (attack none) cell ran", ha="center", transform=ax.transAxes)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_mia_vs_accuracy(rows, path) -> Path:
    """MIA AUC (server's best view) vs clean accuracy of the benign cells (every cell if the grid
    has no benign one): the design choices rule x DP x secagg, the Pareto front marked and listed."""
    fig = _figure(10.5, 5.2)
    ax, side = fig.subplots(1, 2, width_ratios=[2.3, 1])
    pts = [r for r in rows if r["mia_auc_mean"] is not None and r["accuracy_mean"] is not None]
    if any(r["attack"] == "none" for r in pts):
        pts = [r for r in pts if r["attack"] == "none"]
    colors = _colors({r["rule"] for r in rows})
    for r in pts:
        ax.scatter(r["accuracy_mean"], r["mia_auc_mean"], color=colors[r["rule"]], marker=_MARKERS.get(r["secagg"], "o"),
                   s=36, alpha=0.75, edgecolors="none")
    if pts:
        front = pareto_front([(r["accuracy_mean"], r["mia_auc_mean"]) for r in pts])
        fx = [pts[i]["accuracy_mean"] for i in front]
        fy = [pts[i]["mia_auc_mean"] for i in front]
        ax.plot(fx, fy, color="black", lw=1.2, ls="--", zorder=1, label="Pareto front")
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", lw=1.4, zorder=3)
        lines = ["Pareto front (best first):"]
        for k, i in enumerate(reversed(front), 1):
            r = pts[i]
            ax.annotate(str(k), (r["accuracy_mean"], r["mia_auc_mean"]), textcoords="offset points",
                        xytext=(7, 5), fontsize=8, fontweight="bold")
            what = r["rule"] if r["attack"] == "none" else f"{r['rule']}, {r['attack']} rho {r['corrupt']:g}"
            lines.append(f"{k}: {what}\n   dp {r['dp']}, secagg {r['secagg']}\n"
                         f"   acc {r['accuracy_mean']:.3f}, AUC {r['mia_auc_mean']:.3f}")
        side.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
                  transform=side.transAxes)
    side.axis("off")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colors.items()]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=f"secagg {s}") for s, m in _MARKERS.items()
                if any(r["secagg"] == s for r in pts)]
    handles += [Line2D([], [], color="black", ls="--", label="Pareto front (higher acc., lower AUC)")]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="clean test accuracy", ylabel="membership-inference AUC (best attack, best view)",
           title="Leakage vs utility (" + ("benign cells" if pts and pts[0]["attack"] == "none" else "cells")
           + ", mean over seeds)")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no audited cell (run without --no-audit)", ha="center", transform=ax.transAxes)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_robustness_heatmap(rows, path) -> Path:
    """Rule x attack -> accuracy under attack / benign accuracy (Cronus appendix Table 5's
    robustness ratio), one panel per (DP, secagg, rho); refused cells grey and labelled."""
    import numpy as np
    attacked = [r for r in rows if r["attack"] != "none"]
    panels = sorted({(r["dp"], r["secagg"], r["corrupt"]) for r in attacked})
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in attacked))
    n = max(1, len(panels))
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig = _figure(max(4.0, 0.9 * len(attacks) + 2.2) * cols, (0.45 * len(rules) + 1.6) * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    import matplotlib
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
    im = None
    for ax, (dp_l, sa, rho) in zip(axes, panels):
        m = np.full((len(rules), len(attacks)), np.nan)
        text = [["" for _ in attacks] for _ in rules]
        for r in attacked:
            if (r["dp"], r["secagg"], r["corrupt"]) != (dp_l, sa, rho):
                continue
            i, j = rules.index(r["rule"]), attacks.index(r["attack"])
            if r["robustness"] is not None:
                m[i, j] = r["robustness"]
                text[i][j] = f"{r['robustness']:.2f}"
            else:
                text[i][j] = r["status"] if r["status"] != "ok" else "no benign"
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=1.1, aspect="auto")
        for i in range(len(rules)):
            for j in range(len(attacks)):
                ax.text(j, i, text[i][j] or "-", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(rules)), rules, fontsize=8)
        ax.set_title(f"rho {rho:g}, dp {dp_l}, secagg {sa}", fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes[:len(panels)].tolist(), shrink=0.8, label="accuracy under attack / benign accuracy")
    else:
        axes[0].text(0.5, 0.5, "no attacked cell", ha="center", transform=axes[0].transAxes)
    fig.suptitle("Robustness (Cronus appendix Table 5 ratio)", fontsize=10)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_privacy_vs_robustness(rows, path) -> Path:
    """Per rule and setting: leakage (MIA AUC of the benign cell) vs worst-case robustness over attacks."""
    fig = _figure(7.5, 5.0)
    ax = fig.subplots()
    colors = _colors({r["rule"] for r in rows})
    pts = []
    for (rule, dp_l, sa) in sorted({(r["rule"], r["dp"], r["secagg"]) for r in rows}):
        b = [r for r in rows if (r["rule"], r["dp"], r["secagg"], r["attack"]) == (rule, dp_l, sa, "none")]
        rob = [r["robustness"] for r in rows if (r["rule"], r["dp"], r["secagg"]) == (rule, dp_l, sa)
               and r["attack"] != "none" and r["robustness"] is not None]
        if not b or b[0]["mia_auc_mean"] is None or not rob:
            continue
        pts.append((rule, dp_l, sa, b[0]["mia_auc_mean"], min(rob)))
    for rule, dp_l, sa, auc, rob in pts:
        ax.scatter(auc, rob, color=colors[rule], marker=_MARKERS.get(sa, "o"), s=50)
        ax.annotate("no DP" if dp_l == "none" else dp_l.split(":", 1)[-1], (auc, rob), textcoords="offset points",
                    xytext=(5, 3), fontsize=7)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colors.items()
               if any(p[0] == n for p in pts)]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=f"secagg {s}") for s, m in _MARKERS.items()
                if any(p[2] == s for p in pts)]
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "needs audited benign cells and attacked cells", ha="center", transform=ax.transAxes)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="membership-inference AUC of the benign run (lower: more private)",
           ylabel="worst acc. under attack / benign acc.",
           title="Privacy vs robustness per rule (labels: DP noise; higher and left is better)")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return Path(path)


def write_plots(rows, out_dir) -> List[Path]:
    out = Path(out_dir)
    return [plot_accuracy_vs_epsilon(rows, out / "accuracy_vs_epsilon.png"),
            plot_mia_vs_accuracy(rows, out / "mia_vs_accuracy.png"),
            plot_robustness_heatmap(rows, out / "robustness_heatmap.png"),
            plot_privacy_vs_robustness(rows, out / "privacy_vs_robustness.png")]


def _pm(r, m, fmt="{:.3f}") -> str:
    if r[f"{m}_mean"] is None:
        return "-"
    return fmt.format(r[f"{m}_mean"]) + ("" if not r[f"{m}_std"] else " ± " + fmt.format(r[f"{m}_std"]))


def format_summary(rows) -> str:
    from .cli import _table
    body = []
    for r in rows:
        if r["status"] == "refused":
            body.append([r["rule"], r["attack"], f"{r['corrupt']:g}", r["dp"], r["secagg"], "refused", "", "", "", "",
                         "", r["reason"][:70]])
            continue
        body.append([r["rule"], r["attack"], f"{r['corrupt']:g}", r["dp"], r["secagg"], _pm(r, "accuracy"),
                     _pm(r, "attack_success", "{:.2f}"), _pm(r, "mia_auc"),
                     _pm(r, "epsilon", "{:.3g}"), _pm(r, "oracle_calls_per_round", "{:.1f}"), _pm(r, "seconds", "{:.1f}"),
                     "" if r["robustness"] is None else f"robustness {r['robustness']:.2f}"
                     + (f"; {r['status']}: {r['reason'][:50]}" if r["status"] != "ok" else "")])
    return _table(["rule", "attack", "rho", "dp", "secagg", "accuracy", "ASR", "MIA AUC", "epsilon", "calls/rnd",
                   "seconds", "note"], body)


# -- command line -----------------------------------------------------------------------------


def _split(text: Optional[str], cast=str):
    if text is None:
        return None
    try:
        return [cast(s.strip()) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise ValueError(f"could not read the list {text!r}: {exc}") from None


def add_tradeoff_parser(subparsers) -> argparse.ArgumentParser:
    """``fedaudit tradeoff``: the grid options (each overrides the grid file's value)."""
    d = DEFAULT_GRID
    p = subparsers.add_parser("tradeoff", help="privacy/robustness grid: rules x attacks x rho x DP x secagg x seeds",
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None,
                   help="grid file (.toml, .json, .yaml): keys rules, attacks, corrupt, dp, secagg, seeds, run, "
                        "rule_args, attack_args, audit; options below override it")
    p.add_argument("--rules", default=None, help=f"comma-separated rules (default: {','.join(d['rules'])})")
    p.add_argument("--attacks", default=None,
                   help=f"comma-separated attacks, 'none' = benign (default: {','.join(d['attacks'])})")
    p.add_argument("--corrupt", default=None, help=f"comma-separated corruption levels rho (default: "
                   f"{','.join(map(str, d['corrupt']))})")
    p.add_argument("--dp", default=None, help="comma-separated DP settings: none, MODE:z=Z or MODE:eps=E "
                   f"(default: {','.join(d['dp'])})")
    p.add_argument("--secagg", default=None, help=f"comma-separated secagg modes from {SECAGG_MODES} "
                   f"(default: {','.join(d['secagg'])})")
    p.add_argument("--seeds", default=None, help=f"comma-separated seeds (default: {','.join(map(str, d['seeds']))})")
    p.add_argument("--rounds", type=int, default=None, help=f"rounds per cell (default: {d['run']['rounds']})")
    p.add_argument("--clients", type=int, default=None, help=f"clients per cell (default: {d['run']['clients']})")
    p.add_argument("--dataset", default=None, help="dataset (default: digits)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="any other RunConfig field for every cell (repeatable; e.g. partition=iid)")
    p.add_argument("--no-audit", action="store_true", help="skip the membership audit (no MIA columns)")
    p.add_argument("--audit-attacks", default=None, help="membership attacks of the audit (default: loss,gradient_norm)")
    p.add_argument("--audit-active", action="store_true", help="also audit the malicious server's active views")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel (default: %(default)s)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: spawned processes; ray: Ray tasks (default: %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address to join (default: start a local Ray)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("fedaudit-tradeoff"), help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tradeoff)
    return p


def grid_from_args(args: argparse.Namespace) -> Grid:
    from .cli import _parse_kv
    data = load_grid(args.config) if args.config is not None else {}
    run = {**DEFAULT_GRID["run"], **data.get("run", {})}
    for k in ("rounds", "clients", "dataset"):
        if getattr(args, k) is not None:
            run[k] = getattr(args, k)
    run.update(_parse_kv(args.set, "--set"))
    audit = data.get("audit", Grid().audit)
    if args.no_audit:
        audit = False
    elif audit:
        audit = dict(audit)
        if args.audit_attacks:
            audit["attacks"] = _split(args.audit_attacks)
        if args.audit_active:
            audit["active"] = True
    return make_grid({**data, "run": run, "audit": audit}, rules=_split(args.rules), attacks=_split(args.attacks),
                     corrupt=_split(args.corrupt, float), dp=_split(args.dp), secagg=_split(args.secagg),
                     seeds=_split(args.seeds, int))


def cmd_tradeoff(args: argparse.Namespace) -> int:
    grid = grid_from_args(args)
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads}: give a positive number, or 0 for torch's default")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(grid.to_dict(), indent=1))
    t0 = time.perf_counter()
    results = run_grid(grid, out, jobs=args.jobs, backend=args.backend, address=args.address,
                       threads=args.threads, progress=not args.quiet)
    rows = aggregate(results)
    csv_path = write_csv(rows, out / "results.csv")
    pngs = write_plots(rows, out)
    print(format_summary(rows))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "refused", "failed")}
    print(f"\n{len(results)} cells ({counts['ok']} ok, {counts['refused']} refused, {counts['failed']} failed), "
          f"{len(rows)} rows over seeds {list(grid.seeds)}; {time.perf_counter() - t0:.0f} s "
          f"(backend {args.backend}, {args.jobs} job{'s' if args.jobs > 1 else ''})")
    print(f"wrote {csv_path}, {', '.join(p.name for p in pngs)} and {len(results)} cell files in {out / 'cells'}")
    return 0 if counts["failed"] == 0 else 1
