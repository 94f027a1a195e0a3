"""``bench.json`` and ``bench.md`` for ``fedaudit bench all`` (or one suite with ``--out DIR``).

A row's goal is the text in ``row['goal']``. Whether it is met is ``row['goal_met']``
when the suite decided it (goals on other columns than the ratio, e.g. RFA against
geom_median or the end-to-end run time; ``row['goal_value']`` is then the measured
figure the goal is about), else read from the goal text: a leading ``<= X``, ``< X``,
``>= X`` or ``> X`` compares the row's ratio with X.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .suites import PEERS, ROW_KEYS, peer_status

_GOAL = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)")
_SUITE_TEXT = {
    "oracle": "plaintext vs quantized secure average (encode, exact modular sum, decode)",
    "secagg": "the masked protocol (SecAgg complete graph, SecAgg+ auto) against the keystream bound",
    "flower": "Flower's SecAgg+ round at the same n, d",
    "rfa": "RFA, 3 Weiszfeld calls under each oracle, against the authors' geom_median",
    "rules": "reveal-based robust rules against FedAvg, and against ByzFL",
    "clients": "local training of all clients at once (torch.func vmap) vs the per-client loop",
    "dp": "Opacus DP-SGD client vs the plain client",
    "run": "`fedaudit run` with its defaults, end to end in-process, and the effect of torch's thread count",
    "keystream": "OpenSSL's ChaCha20 / AES-CTR against the torch ChaCha20; mask expansion on one core, threads, processes",
    "scale": "n = 1000 clients of fc-purchase (d = 1.32M), 2 rounds, each case in its own process: wall time, peak RSS",
}


def goal_met(row: dict) -> Optional[bool]:
    """True/False when the row has a goal that can be judged, None otherwise."""
    goal = row.get("goal") or ""
    if not goal:
        return None
    if row.get("goal_met") is not None:
        return bool(row["goal_met"])
    m = _GOAL.match(str(goal))
    ratio = row.get("ratio")
    if m is None or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        return None
    op, x = m.group(1), float(m.group(2))
    return {"<=": ratio <= x, "<": ratio < x, ">=": ratio >= x, ">": ratio > x}[op]


def _met_text(row: dict) -> str:
    met = goal_met(row)
    return "yes" if met else "no" if met is False else "?" if row.get("goal") else ""


def format_rows(rows: List[dict]) -> str:
    """The terminal table of one suite's rows; with goals, a ``met`` column (yes / no / ? when
    the row cannot be judged, e.g. a failed peer)."""
    cols = ["case", "seconds", "baseline", "ratio"]
    if any(r.get("goal") for r in rows):
        cols += ["goal", "met"]
    if any(r.get("note") for r in rows):
        cols.append("note")

    def cell(r: dict, c: str) -> str:
        if c == "seconds":
            return _fmt(r.get(c), ".4f")
        if c == "ratio":
            return _fmt(r.get(c), ".2f")
        if c == "met":
            return _met_text(r)
        return str(r.get(c, "") or "")
    table = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip() for t in table]
    return "\n".join(lines)


def peer_report(result: dict, status: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """For each optional peer whose suite ran (or was skipped) in ``result``: what happened to it.

    why it is not importable (``result['skipped']`` or :func:`peer_status`), 'measured (N rows)' when rows of its suite
    name it with a finite time, else 'installed, not measured: <the rows' notes>'. Peers of
    suites outside the run are left out (a one-suite run says nothing about the others).
    """
    status = dict(peer_status() if status is None else status)
    status.update({k: v for k, v in result.get("skipped", {}).items() if k in PEERS and v})
    ran = set(result.get("seconds", {})) | set(result.get("skipped", {}))
    out = {}
    for name, (suite, _) in PEERS.items():
        if suite not in ran:
            continue
        if status.get(name):
            out[name] = status[name]
            continue
        mine = [r for r in result.get("rows", []) if r.get("suite") == suite
                and name in f"{r.get('case', '')} {r.get('baseline', '')}"]
        timed = [r for r in mine if isinstance(r.get("seconds"), (int, float)) and math.isfinite(r["seconds"])]
        if timed:
            out[name] = f"measured ({len(timed)} rows)"
        else:
            notes = "; ".join(dict.fromkeys(str(r.get("note")) for r in mine if r.get("note")))
            out[name] = "installed, not measured" + (f": {notes}" if notes else "")
    return out


def machine_info() -> Dict[str, object]:
    """Where the numbers come from: load average matters on a shared machine."""
    info: Dict[str, object] = {
        "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:                       # pragma: no cover - not on every OS
        info["load_average"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(v, spec: str) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, (int, float)):
        return "nan" if isinstance(v, float) and math.isnan(v) else format(v, spec)
    return str(v)


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(result: dict, meta: Dict[str, object]) -> str:
    rows: List[dict] = result["rows"]
    lines = ["# fedaudit bench", ""]
    load = meta.get("load_average")
    lines.append(f"Device `{meta.get('device')}`, {'quick' if meta.get('quick') else 'full'} sizes; "
                 f"torch {meta.get('torch')}, {meta.get('torch_threads')} torch threads, "
                 f"{meta.get('cpu_count')} CPUs; load average before/after "
                 f"{meta.get('load_before')} / {load}; total {meta.get('wall_seconds', 0):.0f} s.")
    lines.append("Every ratio is measured side by side in this one run (seconds / the baseline "
                 "case's seconds, medians of repeats).")
    lines.append("")
    goals = [r for r in rows if r.get("goal")]
    if goals:
        lines += ["## Goals", "", "| suite | case | goal | measured | met |", "|---|---|---|---|---|"]
        for r in goals:
            lines.append(f"| {r['suite']} | {_md_cell(r['case'])} | {_md_cell(r['goal'])} | "
                         f"{_fmt(r.get('goal_value', r.get('ratio')), '.3g')} | {_met_text(r)} |")
        lines.append("")
    skipped = result.get("skipped", {})
    failed = result.get("failed", {})
    lines += ["## Peers and skipped suites", ""]
    peers = result.get("peers")
    if peers is None:
        peers = peer_report(result)
    for name, what in peers.items():
        lines.append(f"- `{name}` (suite `{PEERS[name][0]}`): {_md_cell(what)}")
    for name, why in skipped.items():
        if name not in PEERS:
            lines.append(f"- suite `{name}`: {why}")
    for name, err in failed.items():
        lines.append(f"- suite `{name}` FAILED: {_md_cell(err)}")
    lines.append("")
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    for s in suites:
        sr = [r for r in rows if r["suite"] == s]
        secs = result.get("seconds", {}).get(s)
        lines += [f"## {s}", "", _SUITE_TEXT.get(s, "") + (f" ({secs:.0f} s)" if secs is not None else ""), ""]
        lines += ["| case | seconds | baseline | ratio | goal | met | note |", "|---|---|---|---|---|---|---|"]
        for r in sr:
            met = goal_met(r)
            lines.append("| " + " | ".join(_md_cell(c) for c in (
                r["case"], _fmt(r.get("seconds"), ".4f"), r.get("baseline", ""), _fmt(r.get("ratio"), ".3g"),
                r.get("goal", "") or "", "yes" if met else "no" if met is False else "",
                r.get("note", "") or "")) + " |")
        lines.append("")
    return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None                       # strict JSON: NaN (e.g. a peer that failed) becomes null
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def write_report(result: dict, out_dir: Path, meta: Dict[str, object]) -> Dict[str, Path]:
    """Write ``out_dir/bench.json`` ({meta, rows, skipped, failed}) and ``out_dir/bench.md``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder; give a folder (or a .json file "
                         "for the rows of one suite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in result["rows"]:
        row = {k: _jsonable(r.get(k)) for k in ROW_KEYS}
        row.update({k: _jsonable(v) for k, v in r.items() if k not in ROW_KEYS})
        row["goal_met"] = goal_met(r)
        rows.append(row)
    if "peers" not in result:
        result = dict(result, peers=peer_report(result))
    data = {"meta": meta, "rows": rows, "peers": result["peers"], "skipped": result.get("skipped", {}),
            "failed": result.get("failed", {}), "suite_seconds": result.get("seconds", {})}
    paths = {"json": out_dir / "bench.json", "md": out_dir / "bench.md"}
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    paths["md"].write_text(to_markdown(result, meta))
    return paths
