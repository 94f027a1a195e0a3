"""Benchmarks: ratios measured side by side in one run (``fedaudit bench SUITE``).

Each suite is a module in this package exposing ``run(*, quick, device) -> list[dict]``
whose rows are ``{case, seconds, baseline, ratio}`` (``ratio`` = seconds / the
baseline case's seconds, both measured in the same run, median of repeats), plus
optional extra keys (n, d, goal, note). Register it in :data:`SUITES`.
"""
from __future__ import annotations

import importlib
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

# suite name -> module (relative to this package) exposing run(quick=..., device=...)
SUITES: Dict[str, str] = {
    "dp": ".dp",
    "oracle": ".oracle",
    "rfa": ".rfa",
    "rules": ".rules",
    "secagg": ".secagg",
}


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


def add_ratios(rows: List[dict], baseline_of: Optional[Callable[[dict], str]] = None) -> List[dict]:
    """Fill ``ratio`` = seconds / seconds of the row named by ``row['baseline']``."""
    by_case = {r["case"]: r for r in rows}
    for r in rows:
        base = by_case.get(r["baseline"])
        if base is None:
            raise KeyError(f"row {r['case']!r} names baseline {r['baseline']!r}, which was not measured")
        r["ratio"] = r["seconds"] / base["seconds"]
    return rows


def run_suite(name: str, *, quick: bool = False, device: str = "cpu") -> List[dict]:
    if name not in SUITES:
        raise ValueError(f"unknown bench suite {name!r}; choose one of {sorted(SUITES)}")
    module = importlib.import_module(SUITES[name], __name__)
    return module.run(quick=quick, device=device)


def format_rows(rows: List[dict]) -> str:
    cols = ["case", "seconds", "baseline", "ratio"] + [k for k in ("goal", "note") if any(k in r for r in rows)]
    table = [[r.get("case", ""), f"{r['seconds']:.4f}", r.get("baseline", ""), f"{r['ratio']:.2f}"]
             + [str(r.get(k, "")) for k in cols[4:]] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    return "\n".join(lines)
