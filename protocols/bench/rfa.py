"""``fedaudit bench rfa``: RFA (3 Weiszfeld calls) under each oracle vs one plaintext mean.

RFA paper (Pillutla, Kakade, Harchaoui 2022), Algorithm 2 with R = 3 and v0 = the
mean (one more call), as an iterative secure aggregate on n = 100 clients. Every
row's ``ratio`` is its seconds over one plaintext secure mean in the same run.
If the optional ``geom_median`` package (the paper authors' code) is importable,
its torch geometric median at the same number of iterations (mean start, 3
Weiszfeld steps) is timed too; RFA rows then carry ``vs_geom_median`` (their
seconds over geom_median's) and the objectives side by side. Goal: RFA under the
quantized oracle <= 0.7x geom_median's time at equal iterations, objective within 1e-3
relative. ``--clients`` / ``--dim`` set n and one d. The objective column is the exact float64 g(v) of each output, computed
by the harness (not through an oracle).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional

import torch

import secagg
from rfa import smoothed_weiszfeld
from secagg import ClientUpdates, MaskedOracle, PlaintextOracle, QuantizedOracle

from .timing import add_ratios, sizes, time_median

try:  # optional extra: the paper authors' implementation, for comparison only
    from geom_median.torch import compute_geometric_median
except ImportError:  # pragma: no cover - depends on the environment
    compute_geometric_median = None

Tensor = torch.Tensor
CALLS = 3


def _objective(x: Tensor, v: Tensor) -> float:
    """Exact g(v) with alpha_i = 1/n, in float64, chunked over clients (harness only)."""
    v = v.to(torch.float64)
    total = 0.0
    for s in range(0, x.shape[0], 10):
        total += float(torch.linalg.vector_norm(x[s:s + 10].to(torch.float64) - v, dim=1).sum())
    return total / x.shape[0]


def _interleaved(cases: Dict[str, tuple], device: str) -> Dict[str, float]:
    """Median seconds per case, the repeats taken round-robin across the cases.

    On a shared machine the load drifts; interleaving spreads it over all cases
    alike, so the ratios stay meaningful. One warm-up per case with > 1 repeat.
    """
    for fn, _, _, reps in cases.values():
        if reps > 1:
            fn()
    samples: Dict[str, List[float]] = {case: [] for case in cases}
    for r in range(max(c[3] for c in cases.values())):
        for case, (fn, _, _, reps) in cases.items():
            if r < reps:
                samples[case].append(time_median(fn, repeats=1, device=device, warmup=0))
    return {case: statistics.median(v) for case, v in samples.items()}


def _data(n: int, d: int, device: str, g: torch.Generator) -> Tensor:
    x = torch.rand(n, d, generator=g) * 2 - 1
    bad = n // 10                     # 10% shifted clients, so the median differs from the mean
    x[:bad] = torch.rand(bad, d, generator=g) * 0.2 + 0.8
    return x.to(device)


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
        dim: Optional[int] = None) -> List[dict]:
    n, dims = sizes(quick, clients, dim)
    repeats = 3 if quick else 5
    g = torch.Generator().manual_seed(0)
    rows: List[dict] = []
    for d in dims:
        x = _data(n, d, device, g)
        base = f"mean plaintext (1 call) d={d}"

        def rfa_case(oracle_fn: Callable[[], secagg.SecureAverageOracle], track: bool = False):
            out = {}

            def fn():
                h = ClientUpdates(x, oracle=oracle_fn(), secure=True, rule="rfa")
                out["res"] = smoothed_weiszfeld(h, max_calls=CALLS, track_objective=track)
            return fn, out

        cases: Dict[str, tuple] = {}
        cases[base] = (lambda: ClientUpdates(x, secure=True).secure_average(), None, "", repeats)
        oracles = {
            "plaintext": PlaintextOracle,
            "quantized-32": lambda: QuantizedOracle(bits=32, clip=1.0),
            "quantized-64": lambda: QuantizedOracle(bits=64, clip=1.0),
        }
        # Masked: SecAgg+ with neighbors="auto" (the graph of Bell et al.'s bound); the complete
        # graph only where it finishes in seconds
        # (quick: the masked cases at the smallest d only).
        if not quick or d == dims[0]:
            oracles["masked-32 SecAgg+ auto"] = lambda: MaskedOracle(bits=32, clip=1.0, neighbors="auto")
            oracles["masked-64 SecAgg+ auto"] = lambda: MaskedOracle(bits=64, clip=1.0, neighbors="auto")
            if d <= 100_000:
                oracles["masked-32 complete"] = lambda: MaskedOracle(bits=32, clip=1.0)
        for name, make in oracles.items():
            fn, out = rfa_case(make)
            slow = name.startswith("masked")
            cases[f"rfa {name} ({CALLS} calls) d={d}"] = (fn, out, name, 1 if slow else repeats)
        fn, out = rfa_case(oracles["quantized-32"], track=True)
        cases[f"rfa quantized-32 +objective ({CALLS} calls) d={d}"] = (fn, out, "quantized-32", repeats)

        gm_case: Optional[str] = None
        gm_out: dict = {}
        if compute_geometric_median is not None:
            # geom_median's torch backend passes its weights to numpy (np.average): it runs on host
            # tensors, so on an accelerator it gets a host copy of the updates.
            x_host = x if x.device.type == "cpu" else x.cpu()
            gm_case = f"geom_median torch ({CALLS} iters) d={d}" + ("" if x_host is x else " (host)")
            weights = torch.ones(n)

            def gm():
                # ftol < 0: never stop early, exactly CALLS Weiszfeld steps after the mean.
                gm_out["res"] = compute_geometric_median(x_host, weights, maxiter=CALLS, ftol=-1.0)
            cases[gm_case] = (gm, gm_out, "", repeats)

        times = _interleaved(cases, device)
        g_gm = _objective(x, gm_out["res"].median.to(x.device)) if gm_case else None
        for case, (fn, out, oracle, reps) in cases.items():
            row = {"case": case, "seconds": times[case], "baseline": base, "n": n, "d": d,
                   "goal": "", "note": ""}
            if out is not None and "res" in out and case != gm_case:
                res = out["res"]
                g_v = _objective(x, res.aggregate)
                row.update(objective=g_v, oracle_calls=res.oracle_calls, weight_bound=res.weight_bound)
                note = f"calls={res.oracle_calls} enc={res.weight_bound} g={g_v:.6g}"
                if gm_case:
                    rel = abs(g_v - g_gm) / g_gm
                    row.update(vs_geom_median=times[case] / times[gm_case], objective_rel_diff=rel)
                    note += f" vs_gm={times[case] / times[gm_case]:.2f}x rel_g={rel:.1e}"
                    if oracle.startswith("quantized") and "+objective" not in case:
                        row["goal"] = "<= 0.7x geom_median's time, rel_g <= 1e-3"
                        row["goal_met"] = times[case] / times[gm_case] <= 0.7 and rel <= 1e-3
                        row["goal_value"] = times[case] / times[gm_case]
                row["note"] = note
            elif case == gm_case:
                row.update(objective=g_gm, note=f"g={g_gm:.6g} (its own log: {gm_out['res'].logs[-1]:.6g})")
            rows.append(row)
    return add_ratios(rows)
