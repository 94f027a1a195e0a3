"""The sweep's plots, from the rows of :func:`protocols.experiments.tradeoff.summary.aggregate`
(:func:`write_plots`): accuracy vs epsilon; MIA AUC vs accuracy with the Pareto front; the
robustness heatmap of Cronus appendix Table 5, accuracy under attack / benign accuracy;
privacy vs robustness per rule. matplotlib is imported when a plot is drawn (Agg canvas, no pyplot).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points (accuracy, leakage) no other point beats: higher accuracy and
    lower leakage, at least as good in both and better in one. Sorted by accuracy."""
    idx = []
    for i, (a, l) in enumerate(points):
        dominated = any((a2 >= a and l2 <= l) and (a2 > a or l2 < l) for j, (a2, l2) in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


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
