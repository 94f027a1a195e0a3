"""What an audit writes: the text table, ``audit.json`` (self-describing), ``roc.png`` (log-log
ROC per view) and the epsilon plot (``epsilon_lower`` per view against the accountant's).

``audit.json`` holds the provenance (fedaudit version, git commit, time), the audit and the
fully resolved run configuration, the audit's defaults and how they differ from ``fedaudit
run``'s, the seed, the audited model's accuracy, per view the counts of evaluated members and
non-members, the reference models and their cost, the canaries, and the rows. Files are
written atomically; an interrupted audit writes the rows it finished (``"interrupted": true``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from protocols.report import atomic_write_json, provenance, table
from protocols.simulation import RunConfig

from .config import AUDIT_RUN_DEFAULTS

__all__ = ["format_table", "json_rows", "audit_document", "write_audit", "plot_roc", "plot_epsilon",
           "defaults_note", "setting_title"]

FORMAT = "fedaudit-audit/2"


def defaults_note() -> str:
    """How the audit's default run differs from ``fedaudit run``'s (said in --help and audit.json)."""
    run = RunConfig()
    diff = [f"{k}={v} (run: {getattr(run, k)})" for k, v in AUDIT_RUN_DEFAULTS.items() if getattr(run, k) != v]
    return ("fedaudit audit's defaults differ from fedaudit run's, so that local models overfit their owner's "
            "data and every view exists: " + ", ".join(diff))


def _clean(x):
    """JSON-ready: numpy scalars and arrays as Python values, non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def json_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows without their ROC curves (the ``rows`` of ``audit.json``)."""
    return [_clean({k: v for k, v in r.items() if k != "roc"}) for r in rows]


def _num(x: Optional[float], fmt: str = "{:.4f}") -> str:
    return "n/e" if x is None else fmt.format(x)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The audit rows as a text table; "n/e": not estimable (too few non-member scores), "-": not applicable."""
    body = []
    for r in rows:
        est = r.get("epsilon_estimate")
        acc = r.get("epsilon_accountant")
        body.append([r["view"], r["attack"], r["auc"], f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]",
                     _num(r["tpr_at_1pct_fpr"]), _num(r["tpr_at_0.1pct_fpr"]),
                     _num(r.get("epsilon_lower"), "{:.3f}"), "-" if est is None else f"{est:.3f}",
                     "-" if acc is None else f"{acc:.3f}", r["n_members"], r["n_nonmembers"]])
    return table(["view", "attack", "auc", "auc 95% CI", "tpr@1%fpr", "tpr@0.1%fpr", "eps_lower", "eps_estimate",
                  "eps_accountant", "members", "non-members"], body)


def setting_title(run: Dict[str, Any], info: Dict[str, Any]) -> str:
    """A one-line description of the audited setting (plot titles)."""
    dp = run.get("dp")
    dp_text = "no DP" if not dp else f"DP {dp} eps={info.get('epsilon_accountant') or 0:.3g}"
    refs = (info.get("reference_models") or {}).get("count", 0)
    return (f"{run.get('dataset')}, {run.get('model')}, {run.get('rule')}, secagg={run.get('secagg')}, {dp_text}, "
            f"{run.get('clients')} clients x {run.get('rounds')} rounds, {refs} reference runs")


def audit_document(rows: Sequence[Dict[str, Any]], interrupted: bool = False) -> Dict[str, Any]:
    """The content of ``audit.json`` (module docstring)."""
    info = dict(getattr(rows, "info", {}) or {})
    audit = info.get("audit", {})
    return _clean({
        "format": FORMAT,
        "provenance": provenance(),
        "interrupted": interrupted,
        "config": {"audit": audit, "run_resolved": info.get("run"),
                   "audit_defaults": {"run": AUDIT_RUN_DEFAULTS, "note": defaults_note()}},
        "seed": {"run": (info.get("run") or {}).get("seed"), "audit": audit.get("seed")},
        "target": {"test_accuracy": info.get("test_accuracy"), "active_test_accuracy": info.get("active_test_accuracy"),
                   "target_clients": info.get("target_clients"), "members": info.get("members"),
                   "nonmembers": info.get("nonmembers")},
        "epsilon_accountant": info.get("epsilon_accountant"),
        "views": info.get("view_counts", {}),
        "reference_models": info.get("reference_models"),
        "canaries": info.get("canaries"),
        "seconds": {"total": info.get("seconds"), "attacks": info.get("attack_seconds")},
        "rows": json_rows(rows),
    })


_STYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def plot_roc(rows: Sequence[Dict[str, Any]], path, title: Optional[str] = None) -> Path:
    """Log-log ROC curves (the field's convention: low FPR visible), one panel per view (canary
    views apart), one curve per attack in its own colour, line style and marker, the chance line
    y = x, and ``title`` (the setting) on top. Written with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    panels = list(dict.fromkeys((r.get("kind", "membership"), r["view"]) for r in rows))
    if not panels:
        raise ValueError("no rows to plot")
    ncol = min(4, len(panels))
    nrow = int(math.ceil(len(panels) / ncol))
    fig = Figure(figsize=(3.9 * ncol, 3.6 * nrow + 0.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    colors = [f"C{i % 10}" for i in range(len(attacks))]
    for ax, (kind, view) in zip(axes, panels):
        lo = 1.0
        for r in rows:
            if (r.get("kind", "membership"), r["view"]) != (kind, view):
                continue
            i = attacks.index(r["attack"])
            fpr, tpr = np.asarray(r["roc"]["fpr"]), np.asarray(r["roc"]["tpr"])
            lo = min(lo, 1.0 / max(r["n_nonmembers"], 1))
            t01 = r["tpr_at_0.1pct_fpr"]
            label = f"{r['attack']} AUC {r['auc']:.2f}, TPR@0.1% {'n/e' if t01 is None else f'{t01:.3f}'}"
            ax.plot(fpr, tpr, color=colors[i], ls=_STYLES[i % len(_STYLES)], lw=1.4, label=label,
                    marker=_MARKERS[i % len(_MARKERS)], markevery=0.12, ms=4)
        ax.plot([lo, 1], [lo, 1], ls=":", c="grey", lw=0.9, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlim=(lo, 1), ylim=(lo, 1.05), xlabel="false positive rate", ylabel="true positive rate",
               title=f"{'canary: ' if kind == 'canary' else ''}{view}")
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        ax.legend(fontsize=6.5, loc="lower right")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_epsilon(points: Sequence[Dict[str, Any]], path, title: Optional[str] = None) -> Path:
    """``epsilon_lower`` per view against the accountant's epsilon, one point per (DP setting, view),
    with the line y = x (a sound bound lies on or below it). ``points``: dicts with
    ``epsilon_accountant``, ``epsilon_lower``, ``view`` and optionally ``epsilon_estimate``
    (drawn hollow: an estimate, not a bound) and ``setting``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    pts = [p for p in points if p.get("epsilon_accountant") is not None and p.get("epsilon_lower") is not None]
    if not pts:
        raise ValueError("no point has both an accountant's epsilon and an epsilon_lower; audit runs with DP")
    fig = Figure(figsize=(6.0, 5.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    views = list(dict.fromkeys(p["view"] for p in pts))
    def _est(p):
        e = p.get("epsilon_estimate")
        return e if e is not None and math.isfinite(e) else None

    vals = [p["epsilon_accountant"] for p in pts] + [p["epsilon_lower"] for p in pts] + \
        [_est(p) for p in pts if _est(p) is not None]
    top = max(max(vals), 1e-3) * 1.1
    for i, v in enumerate(views):
        sel = [p for p in pts if p["view"] == v]
        x = [p["epsilon_accountant"] for p in sel]
        jitter = (i - (len(views) - 1) / 2) * 0.015 * top   # overlapping views side by side
        ax.scatter([a + jitter for a in x], [p["epsilon_lower"] for p in sel], color=f"C{i % 10}",
                   marker=_MARKERS[i % len(_MARKERS)], s=36, label=f"{v}: epsilon_lower (95%)", zorder=3)
        est = [(a + jitter, _est(p)) for a, p in zip(x, sel) if _est(p) is not None]
        if est:
            ax.scatter(*zip(*est), facecolors="none", edgecolors=f"C{i % 10}", marker=_MARKERS[i % len(_MARKERS)],
                       s=36, label=f"{v}: epsilon_estimate", zorder=3)
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1, label="y = x (accountant)")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="accountant's epsilon", ylabel="empirical epsilon")
    ax.set_title(title or "empirical epsilon per view vs the accountant", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _atomic_png(plot, path: Path, *args, **kwargs) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    plot(*args, tmp, **kwargs)
    tmp.replace(path)
    return path


def write_audit(rows: Sequence[Dict[str, Any]], out_dir, interrupted: bool = False) -> Tuple[Path, Optional[Path]]:
    """``DIR/audit.json`` (atomically) and ``DIR/roc.png`` (None when there is no row yet); with DP,
    also ``DIR/epsilon.png`` (every row's epsilon_lower and estimate against the accountant's)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = atomic_write_json(out / "audit.json", audit_document(rows, interrupted))
    if not rows:
        return js, None
    info = getattr(rows, "info", {}) or {}
    title = setting_title(info.get("run") or {}, info)
    png = _atomic_png(plot_roc, out / "roc.png", rows, title=title)
    pts = [{"view": f"{r['view']} ({r['attack']})", "epsilon_accountant": r.get("epsilon_accountant"),
            "epsilon_lower": r.get("epsilon_lower"), "epsilon_estimate": r.get("epsilon_estimate")} for r in rows]
    if any(p["epsilon_accountant"] is not None and p["epsilon_lower"] is not None for p in pts):
        _atomic_png(plot_epsilon, out / "epsilon.png", pts, title=title)
    return js, png
