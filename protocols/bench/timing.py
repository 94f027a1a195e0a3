"""Timing helpers of the bench suites: medians of repeats, interleaved cases, ratios, sizes."""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch


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
