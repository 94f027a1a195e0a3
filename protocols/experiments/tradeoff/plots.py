"""The sweep's plots, from the rows of :func:`protocols.experiments.tradeoff.summary.aggregate`
(:func:`write_plots`): accuracy vs epsilon (mean and every seed); membership leakage vs
accuracy with confidence intervals and the Pareto front; absolute accuracy (and backdoor
success) under each attack beside the benign accuracy; leakage vs worst accuracy under attack.
matplotlib is imported when a plot is drawn (Agg canvas, no pyplot).

Leakage is max(AUC, 1 - AUC) (0.5: none), so an AUC below 0.5, which separates members as
well as its mirror image, never counts as "more private". Accuracy is shown as absolute
values: a ratio to a poor benign accuracy flatters a rule that never learned.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points (accuracy, leakage) no other point beats: higher accuracy and
    lower leakage, at least as good in both and better in one. Sorted by accuracy."""
    idx = []
    for i, (a, l) in enumerate(points):
        dominated = any((a2 >= a and l2 <= l) and (a2 > a or l2 < l) for j, (a2, l2) in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def _save(fig, path) -> Path:
    """Save atomically: a temporary file in the same folder, then os.replace."""
    import os
    import tempfile
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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


def _noise_note(rows, dots: bool = False) -> str:
    """How the DP cells' noise relates across secagg modes (the plots say it)."""
    dp_rows = [r for r in rows if r["dp"] != "none"]
    if not dp_rows:
        return ""
    if any(r.get("paired_noise") for r in dp_rows):
        return "DP noise seeded by (seed, round, call): the same draws in every secagg mode (paired; insecure)"
    return ("DP noise from the OS CSPRNG: secagg modes are not paired; compare means over seeds (± std"
            + ("; dots: single seeds)" if dots else ")"))


def _place_labels(ax, fig, items, fontsize=8):
    """Number labels next to points without overlapping each other: for each point, the first
    of eight offsets whose box is free (greedy, in display coordinates)."""
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(6, 4), (6, -12), (-14, 4), (-14, -12), (0, 10), (0, -16), (10, -4), (-18, -4)]
    for (x, y), text in items:
        best = None
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              fontweight="bold")
            box = ann.get_window_extent(renderer).expanded(1.1, 1.2)
            if not any(box.overlaps(b) for b in placed):
                best = box
                break
            ann.remove()
        if best is None:      # every spot taken: the last offset, still listed in the side panel
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=offsets[-1], fontsize=fontsize,
                              fontweight="bold")
            best = ann.get_window_extent(renderer)
        placed.append(best)


def _side_list(side, lines: List[str], fontsize=7.5):
    side.axis("off")
    side.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=fontsize, family="monospace",
              transform=side.transAxes)


def plot_accuracy_vs_epsilon(rows, path) -> Path:
    """Benign accuracy vs epsilon spent, one line per rule and secagg mode (mean ± std over
    seeds, each seed a dot); no-DP cells at the right edge, labelled as such."""
    import matplotlib.ticker
    fig = _figure(8.5, 5.2)
    ax = fig.subplots()
    benign = [r for r in rows if r["attack"] == "none" and r["accuracy_mean"] is not None]
    colors = _colors({r["rule"] for r in rows})
    eps = [r["epsilon_mean"] for r in benign if r["epsilon_mean"] is not None and r["epsilon_mean"] > 0]
    right = max(eps) * 4 if eps else 10.0
    modes = sorted({r["secagg"] for r in benign})
    for (rule, sa) in sorted({(r["rule"], r["secagg"]) for r in benign}):
        shift = 1.04 ** (modes.index(sa) - (len(modes) - 1) / 2)     # secagg modes side by side
        pts = sorted(((r["epsilon_mean"] if r["epsilon_mean"] is not None else right) * shift, r)
                     for r in benign if r["rule"] == rule and r["secagg"] == sa)
        xs = [p[0] for p in pts]
        ys = [p[1]["accuracy_mean"] for p in pts]
        es = [p[1]["accuracy_std"] or 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=es, marker=_MARKERS.get(sa, "o"), color=colors[rule], capsize=3, lw=1.4,
                    ls="-" if sa == "off" else "--", label=f"{rule} (secagg {sa})")
        for x, r in pts:
            seeds = r.get("accuracy_seeds") or []
            ax.scatter([x] * len(seeds), seeds, s=9, color=colors[rule], alpha=0.45, edgecolors="none")
    ax.set_xscale("log")
    if benign:
        lo = min(eps) / 1.6 if eps else right / 10
        ticks = [m * 10.0 ** e for e in range(-3, 8) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= right / 2]
        ax.set_xticks(ticks + [right], [f"{t:g}" for t in ticks] + ["no DP"])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.axvspan(right / 1.6, right * 1.6, color="grey", alpha=0.08, lw=0)
        ax.set_xlim(lo, right * 1.6)
    ax.set(xlabel="epsilon spent (log scale; delta as configured)", ylabel="clean test accuracy (benign cells)",
           title="Accuracy vs privacy budget")
    note = _noise_note(rows, dots=True)
    if note:
        ax.text(0.0, -0.16, note, transform=ax.transAxes, fontsize=7.5, va="top", ha="left", color="dimgrey")
    ax.grid(alpha=0.3)
    if benign:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no benign (attack none) cell ran", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def _leak(r) -> Tuple[Optional[float], float, float]:
    """(leakage mean, lower and upper error bar lengths) of a row."""
    m = r.get("mia_leakage_mean")
    if m is None:
        return None, 0.0, 0.0
    lo, hi = r.get("mia_leakage_lo"), r.get("mia_leakage_hi")
    return m, max(0.0, m - lo) if lo is not None else 0.0, max(0.0, hi - m) if hi is not None else 0.0


def plot_mia_vs_accuracy(rows, path) -> Path:
    """Membership leakage max(AUC, 1 - AUC) (server's best attack and view, with its 95%
    bootstrap interval over the seeds) vs clean accuracy (± std over seeds) of the benign cells
    (every cell if the grid has no benign one); the Pareto front marked and listed."""
    fig = _figure(11.5, 5.6)
    ax, side = fig.subplots(1, 2, width_ratios=[2.3, 1])
    pts = [r for r in rows if r.get("mia_leakage_mean") is not None and r["accuracy_mean"] is not None]
    if any(r["attack"] == "none" for r in pts):
        pts = [r for r in pts if r["attack"] == "none"]
    colors = _colors({r["rule"] for r in rows})
    for r in pts:
        y, dlo, dhi = _leak(r)
        ax.errorbar(r["accuracy_mean"], y, xerr=r["accuracy_std"] or 0.0, yerr=[[dlo], [dhi]],
                    color=colors[r["rule"]], marker=_MARKERS.get(r["secagg"], "o"), ms=6, alpha=0.8, capsize=2,
                    lw=0.9, ls="none")
    lines = ["Pareto front (best first):"]
    if pts:
        front = pareto_front([(r["accuracy_mean"], r["mia_leakage_mean"]) for r in pts])
        fx = [pts[i]["accuracy_mean"] for i in front]
        fy = [pts[i]["mia_leakage_mean"] for i in front]
        ax.plot(fx, fy, color="black", lw=1.2, ls="--", zorder=1)
        ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="black", lw=1.4, zorder=3)
        ax.figure.canvas.draw()
        _place_labels(ax, fig, [((pts[i]["accuracy_mean"], pts[i]["mia_leakage_mean"]), str(k))
                                for k, i in enumerate(reversed(front), 1)])
        for k, i in enumerate(reversed(front), 1):
            r = pts[i]
            what = r["rule"] if r["attack"] == "none" else f"{r['rule']}, {r['attack']} rho {r['corrupt']:g}"
            lo, hi = r.get("mia_leakage_lo"), r.get("mia_leakage_hi")
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
            lines.append(f"{k}: {what}\n   dp {r['dp']}, secagg {r['secagg']}\n"
                         f"   acc {r['accuracy_mean']:.3f}, leakage {r['mia_leakage_mean']:.3f}{ci}")
    note = _noise_note(rows)
    _side_list(side, lines + ([""] + _wrap(note, 44) if note else []))
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colors.items()]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=f"secagg {s}") for s, m in _MARKERS.items()
                if any(r["secagg"] == s for r in pts)]
    handles += [Line2D([], [], color="black", ls="--", label="Pareto front (higher acc., lower leakage)")]
    side.legend(handles=handles, fontsize=8, loc="lower left", frameon=False)   # beside: hides no point
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="clean test accuracy (mean ± std over seeds)",
           ylabel="membership leakage max(AUC, 1-AUC)\n(best attack, best view; 0.5 = none; 95% CI)",
           title="Leakage vs utility (" + ("benign cells" if pts and pts[0]["attack"] == "none" else "cells") + ")")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no audited cell (run without --no-audit)", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def _wrap(text: str, width: int) -> List[str]:
    import textwrap
    return textwrap.wrap(text, width)


def plot_robustness_heatmap(rows, path) -> Path:
    """Rule x (no attack, then each attack) -> absolute clean test accuracy, with the backdoor's
    attack success rate where the attack has one; one panel per (DP, secagg, rho). Refused
    cells grey and labelled. (Cronus appendix Table 5 reports the ratio; it is in results.csv,
    but a ratio to a poor benign accuracy makes a rule that never learned look robust.)"""
    import numpy as np
    attacked = [r for r in rows if r["attack"] != "none"]
    panels = sorted({(r["dp"], r["secagg"], r["corrupt"]) for r in attacked}) or \
        sorted({(r["dp"], r["secagg"], 0.0) for r in rows})
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in attacked))
    cols = ["no attack"] + attacks
    n = max(1, len(panels))
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(max(4.2, 1.15 * len(cols) + 2.0) * ncols, (0.55 * len(rules) + 1.9) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    import matplotlib
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
    im = None
    for ax, (dp_l, sa, rho) in zip(axes, panels):
        m = np.full((len(rules), len(cols)), np.nan)
        text = [["" for _ in cols] for _ in rules]
        for r in rows:
            if (r["dp"], r["secagg"]) != (dp_l, sa) or (r["attack"] != "none" and r["corrupt"] != rho):
                continue
            i, j = rules.index(r["rule"]), (0 if r["attack"] == "none" else cols.index(r["attack"]))
            if r["accuracy_mean"] is not None:
                m[i, j] = r["accuracy_mean"]
                t = f"{r['accuracy_mean']:.2f}"
                if r.get("attack_success_mean") is not None:
                    t += f"\nASR {r['attack_success_mean']:.2f}"
                text[i][j] = t
            else:
                text[i][j] = r["status"]
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i in range(len(rules)):
            for j in range(len(cols)):
                ax.text(j, i, text[i][j] or "-", ha="center", va="center", fontsize=7.5)
        ax.axvline(0.5, color="black", lw=1.2)
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(rules)), rules, fontsize=8)
        ax.set_title(f"rho {rho:g}, dp {dp_l}, secagg {sa}", fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes[:len(panels)].tolist(), shrink=0.8, label="clean test accuracy (absolute)")
    else:
        axes[0].text(0.5, 0.5, "no cell ran", ha="center", transform=axes[0].transAxes)
    fig.suptitle("Accuracy under attack beside the benign accuracy (ASR: backdoor success; mean over seeds)",
                 fontsize=10)
    return _save(fig, path)


def _short_dp(label: str) -> str:
    return "no DP" if label == "none" else label.replace("user-central", "central").replace(
        "user-distributed", "distributed")


def plot_privacy_vs_robustness(rows, path) -> Path:
    """Per rule and setting (DP, secagg): leakage of the benign run (with its interval) vs the
    worst accuracy under the grid's attacks (absolute); points numbered, listed beside."""
    fig = _figure(11.5, 5.6)
    ax, side = fig.subplots(1, 2, width_ratios=[2.2, 1])
    colors = _colors({r["rule"] for r in rows})
    pts: List[Dict[str, Any]] = []
    for (rule, dp_l, sa) in sorted({(r["rule"], r["dp"], r["secagg"]) for r in rows}):
        b = [r for r in rows if (r["rule"], r["dp"], r["secagg"], r["attack"]) == (rule, dp_l, sa, "none")]
        att = [r for r in rows if (r["rule"], r["dp"], r["secagg"]) == (rule, dp_l, sa)
               and r["attack"] != "none" and r["accuracy_mean"] is not None]
        if not b or b[0].get("mia_leakage_mean") is None or not att:
            continue
        worst = min(att, key=lambda r: r["accuracy_mean"])
        pts.append({"rule": rule, "dp": dp_l, "secagg": sa, "row": b[0], "worst": worst})
    for p in pts:
        y = p["worst"]["accuracy_mean"]
        x, dlo, dhi = _leak(p["row"])
        ax.errorbar(x, y, xerr=[[dlo], [dhi]], yerr=p["worst"]["accuracy_std"] or 0.0, color=colors[p["rule"]],
                    marker=_MARKERS.get(p["secagg"], "o"), ms=7, capsize=2, lw=0.9, ls="none")
    lines = []
    if pts:
        ax.set_ylim(-0.02, 1.02)
        ax.figure.canvas.draw()
        _place_labels(ax, fig, [((_leak(p["row"])[0], p["worst"]["accuracy_mean"]), str(k))
                                for k, p in enumerate(pts, 1)])
        lines = ["points (benign acc. -> worst under attack):"]
        for k, p in enumerate(pts, 1):
            w = p["worst"]
            lines.append(f"{k:>2}: {p['rule']}, {_short_dp(p['dp'])}, secagg {p['secagg']}\n"
                         f"    {p['row']['accuracy_mean']:.2f} -> {w['accuracy_mean']:.2f} ({w['attack']})")
    note = _noise_note(rows)
    _side_list(side, lines + ([""] + _wrap(note, 44) if note else []), fontsize=7)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colors.items()
               if any(p["rule"] == n for p in pts)]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=f"secagg {s}") for s, m in _MARKERS.items()
                if any(p["secagg"] == s for p in pts)]
    if handles:
        side.legend(handles=handles, fontsize=8, loc="lower left", frameon=False)   # beside: hides no point
    else:
        ax.text(0.5, 0.5, "needs audited benign cells and attacked cells", ha="center", transform=ax.transAxes)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="membership leakage of the benign run, max(AUC, 1-AUC) (0.5 = none; 95% CI)",
           ylabel="worst clean accuracy under the grid's attacks",
           title="Privacy vs robustness per rule and setting (up and left is better)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def write_plots(rows, out_dir) -> List[Path]:
    out = Path(out_dir)
    return [plot_accuracy_vs_epsilon(rows, out / "accuracy_vs_epsilon.png"),
            plot_mia_vs_accuracy(rows, out / "mia_vs_accuracy.png"),
            plot_robustness_heatmap(rows, out / "robustness_heatmap.png"),
            plot_privacy_vs_robustness(rows, out / "privacy_vs_robustness.png")]
