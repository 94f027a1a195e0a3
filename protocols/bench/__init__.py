"""Benchmarks: ratios measured side by side in one run (``fedaudit bench SUITE``).

Each suite is a module in this package exposing ``run(*, quick, device) -> list[dict]``
whose rows are ``{case, seconds, baseline, ratio}`` (``ratio`` = seconds / the
baseline case's seconds, both measured in the same run, median of repeats), plus
optional extra keys (n, d, goal, goal_met, note). Register it in :data:`SUITES`.
A suite that can change its number of clients or dimension takes ``clients=`` and
``dim=`` keyword arguments too (``fedaudit bench SUITE --clients N --dim D``);
:func:`run_suite` refuses those options for a suite whose ``run`` does not.

``fedaudit bench all`` (:func:`run_all`) runs every suite and
:mod:`protocols.bench.report` writes ``bench.json`` and ``bench.md``.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

# suite name -> module (relative to this package) exposing run(quick=..., device=...)
SUITES: Dict[str, str] = {
    "clients": ".clients",
    "dp": ".dp",
    "flower": ".flower",
    "oracle": ".oracle",
    "rfa": ".rfa",
    "rules": ".rules",
    "run": ".run",
    "secagg": ".secagg",
}
# the order of `fedaudit bench all` (cheap and self-contained first)
ALL_ORDER = ("oracle", "secagg", "flower", "rfa", "rules", "clients", "dp", "run")
# optional peers (the `bench` extra): import name -> (suite that uses it, how to install)
PEERS: Dict[str, Tuple[str, str]] = {
    "geom_median": ("rfa", "pip install geom_median"),
    "byzfl": ("rules", "pip install --no-deps byzfl  (it requires its own torch and torchvision; --no-deps keeps yours)"),
    "flwr": ("flower", "pip install flwr"),
}
# the row keys every row of bench.json carries
ROW_KEYS = ("suite", "case", "seconds", "baseline", "ratio", "n", "d", "device")


def sizes(quick: bool, clients: Optional[int] = None, dim: Optional[int] = None) -> Tuple[int, List[int]]:
    """(n, dims) of a suite: ``--clients``/``--dim`` when given, else n = 100 clients and
    d in {1e5, 1e6} ({1e4, 1e5} with ``--quick``), the sizes of issue 13."""
    n = 100 if clients is None else clients
    dims = [dim] if dim is not None else ([10_000, 100_000] if quick else [100_000, 1_000_000])
    return n, dims


def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], repeats: int = 3, device="cpu", warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(cases: Dict[str, Callable[[], object]], repeats: int, device="cpu",
                     warmup: int = 1) -> Dict[str, float]:
    """Median seconds per case, the repeats taken round-robin across the cases.

    On a shared machine the load drifts; interleaving spreads it over all cases
    alike, so the ratios between them stay meaningful.
    """
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def add_ratios(rows: List[dict], baseline_of: Optional[Callable[[dict], str]] = None) -> List[dict]:
    """Fill ``ratio`` = seconds / seconds of the row named by ``row['baseline']``."""
    by_case = {r["case"]: r for r in rows}
    for r in rows:
        base = by_case.get(r["baseline"])
        if base is None:
            raise KeyError(f"row {r['case']!r} names baseline {r['baseline']!r}, which was not measured")
        r["ratio"] = r["seconds"] / base["seconds"] if base["seconds"] else float("nan")
    return rows


def parse_count(text: str, what: str = "value") -> int:
    """A positive integer from ``100000``, ``1e5`` or ``1_000_000`` (for --clients / --dim)."""
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise ValueError(f"{what}={text!r} is not a number; give an integer such as 1000 or 1e5") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"{what}={text!r} must be a positive integer (e.g. 1000 or 1e5)")
    return int(value)


def peer_status() -> Dict[str, str]:
    """For each optional peer: '' if importable, else why it is skipped (and how to install it)."""
    out = {}
    for name, (_, how) in PEERS.items():
        out[name] = "" if importlib.util.find_spec(name) is not None else f"not importable ({how})"
    return out


def suite_module(name: str):
    if name not in SUITES:
        raise ValueError(f"unknown bench suite {name!r}; choose one of {sorted(SUITES)} or 'all'")
    return importlib.import_module(SUITES[name], __name__)


def run_suite(name: str, *, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
              dim: Optional[int] = None) -> List[dict]:
    """Run one suite; ``clients`` / ``dim`` go to its ``run`` only if given, and a suite whose
    ``run`` has no such parameter refuses them (ValueError) instead of ignoring them."""
    module = suite_module(name)
    params = inspect.signature(module.run).parameters
    kwargs = {}
    for key, value, flag in (("clients", clients, "--clients"), ("dim", dim, "--dim")):
        if value is None:
            continue
        if key not in params:
            takes = [s for s in sorted(SUITES) if s != name and _takes(s, key)]
            raise ValueError(f"bench suite {name!r} has a fixed {'number of clients' if key == 'clients' else 'dimension'}"
                             f" and does not take {flag}; drop {flag}"
                             + (f" (suites that take it: {', '.join(takes)})" if takes else ""))
        kwargs[key] = value
    rows = module.run(quick=quick, device=device, **kwargs)
    for r in rows:
        r.setdefault("suite", name)
        r.setdefault("device", str(device))
        r.setdefault("n", None)
        r.setdefault("d", None)
    return rows


def _takes(name: str, key: str) -> bool:
    try:
        return key in inspect.signature(suite_module(name).run).parameters
    except Exception:                     # a suite that cannot even be imported takes nothing
        return False


def run_all(*, quick: bool = False, device: str = "cpu", progress: Optional[Callable[[str], None]] = None,
            suites: Optional[List[str]] = None) -> dict:
    """Every suite of :data:`ALL_ORDER` in one process.

    Returns ``{"rows": [...], "skipped": {suite or peer: why}, "failed": {suite: error},
    "seconds": {suite: wall seconds}}``. The ``flower`` suite runs only when ``flwr`` is
    importable; a suite that raises is recorded in ``failed`` (and the report says so)
    while the others still run.
    """
    peers = peer_status()
    skipped = {name: why for name, why in peers.items() if why}
    rows: List[dict] = []
    failed: Dict[str, str] = {}
    seconds: Dict[str, float] = {}
    for name in suites or ALL_ORDER:
        if name == "flower" and peers["flwr"]:
            skipped["flower"] = f"suite skipped: flwr {peers['flwr']}"
            continue
        if progress is not None:
            progress(name)
        t0 = time.perf_counter()
        try:
            rows += run_suite(name, quick=quick, device=device)
        except Exception as err:           # recorded and reported, never hidden
            failed[name] = f"{type(err).__name__}: {err}"
        seconds[name] = time.perf_counter() - t0
    return {"rows": rows, "skipped": skipped, "failed": failed, "seconds": seconds}


def format_rows(rows: List[dict]) -> str:
    cols = ["case", "seconds", "baseline", "ratio"] + [k for k in ("goal", "note") if any(k in r for r in rows)]

    def num(v, fmt):
        return fmt.format(v) if isinstance(v, (int, float)) else str(v)
    table = [[r.get("case", ""), num(r.get("seconds", ""), "{:.4f}"), r.get("baseline", ""),
              num(r.get("ratio", ""), "{:.2f}")] + [str(r.get(k, "")) for k in cols[4:]] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)] if table else [len(c) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    return "\n".join(lines)
