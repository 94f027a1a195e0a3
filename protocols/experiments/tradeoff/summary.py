"""The sweep's numbers: :func:`aggregate` folds the cells' results into one row per cell,
seeds aggregated as mean and std (with the per-seed values kept, so that plots show the
spread), with the benign accuracy beside the robustness ratio; :func:`write_csv` writes them as
``DIR/results.csv`` and :func:`format_summary` as the table the command prints.

Leakage is ``max(AUC, 1 - AUC)`` of the best membership attack on the server's most revealing
view (0.5: none), with its bootstrap interval; over seeds the interval shown is the envelope
of the seeds' intervals.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from protocols.report import atomic_write_text, table

from .grid import group_of

METRICS = ("accuracy", "attack_success", "mia_auc", "mia_leakage", "mia_tpr1", "epsilon", "oracle_calls_per_round",
           "aborted_rounds", "seconds")


def _mean_std(xs: List[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def aggregate(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per cell (seeds aggregated: mean and sample std of every metric over the seeds
    that ran, and the per-seed values in ``<metric>_seeds``), plus ``benign_accuracy`` (the
    accuracy of the same rule, DP and secagg setting without attack) and ``robustness`` =
    accuracy / benign accuracy (Cronus appendix Table 5's ratio; None without a benign cell).
    The ratio is never shown alone: a rule with a poor benign accuracy has a flattering one."""
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
            vals = [r["metrics"].get(m) for r in ok]
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(vals)
            row[f"{m}_seeds"] = [v for v in vals if v is not None]
        lo = [r["metrics"].get("mia_leakage_lo") for r in ok if r["metrics"].get("mia_leakage_lo") is not None]
        hi = [r["metrics"].get("mia_leakage_hi") for r in ok if r["metrics"].get("mia_leakage_hi") is not None]
        row["mia_leakage_lo"], row["mia_leakage_hi"] = (min(lo), max(hi)) if lo and hi else (None, None)
        row["paired_noise"] = any(bool(r.get("cell", {}).get("run", {}).get("dp_seeded_noise")) for r in rs)
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
              + ["mia_leakage_lo", "mia_leakage_hi", "benign_accuracy", "robustness", "paired_noise", "views_auc",
                 "reason"])


def write_csv(rows: Sequence[Dict[str, Any]], path) -> Path:
    """``results.csv``: one row per cell over seeds (the columns of :data:`CSV_FIELDS`), written atomically."""
    path = Path(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k))
                    for k in CSV_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def _pm(r, m, fmt="{:.3f}") -> str:
    if r[f"{m}_mean"] is None:
        return "-"
    return fmt.format(r[f"{m}_mean"]) + ("" if not r[f"{m}_std"] else " ± " + fmt.format(r[f"{m}_std"]))


def format_summary(rows) -> str:
    body = []
    for r in rows:
        if r["status"] == "refused":
            body.append([r["rule"], r["attack"], f"{r['corrupt']:g}", r["dp"], r["secagg"], "refused", "", "", "", "",
                         "", "", r["reason"][:70]])
            continue
        note = "" if r["robustness"] is None or r["attack"] == "none" else \
            f"benign {r['benign_accuracy']:.3f} (ratio {r['robustness']:.2f})"
        if r["status"] != "ok":
            note += f"; {r['status']}: {r['reason'][:50]}"
        if r.get("aborted_rounds_mean"):
            note += f"; {r['aborted_rounds_mean']:.1f} rounds aborted"
        body.append([r["rule"], r["attack"], f"{r['corrupt']:g}", r["dp"], r["secagg"], _pm(r, "accuracy"),
                     _pm(r, "attack_success", "{:.2f}"), _pm(r, "mia_leakage"), _pm(r, "mia_auc"),
                     _pm(r, "epsilon", "{:.3g}"), _pm(r, "oracle_calls_per_round", "{:.1f}"),
                     _pm(r, "seconds", "{:.1f}"), note.lstrip("; ")])
    return table(["rule", "attack", "rho", "dp", "secagg", "accuracy", "ASR", "leakage", "MIA AUC", "epsilon",
                  "calls/rnd", "seconds", "note"], body)
