"""Privacy/robustness trade-off sweeps: ``fedaudit tradeoff`` (docs/architecture.md, "Audits and sweeps").

The command line of the sweep: :func:`add_tradeoff_parser` (the grid options, each overriding
the grid file's value), :func:`grid_from_args` and :func:`cmd_tradeoff`, which runs the grid and
writes ``DIR/grid.json``, ``DIR/results.csv``, the plots and the cell files, and prints the summary.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from protocols.experiments.options import parse_kv, prepare_output_dir
from protocols.report import atomic_write_json
from protocols.simulation import SECAGG_MODES

from .cells import run_grid
from .grid import DEFAULT_GRID, Grid, load_grid, make_grid
from .plots import write_plots
from .summary import aggregate, format_summary, write_csv


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
                        "rule_args, attack_args, audit, paired_noise; options below override it")
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
    p.add_argument("--paired-noise", action="store_true",
                   help="DP cells draw their noise from the run seed (per round and call), the same in every "
                        "secagg mode, so that cells differing only in secagg are paired; insecure (the noise is "
                        "reproducible), for comparisons only, and labelled so in the outputs (default: OS CSPRNG "
                        "noise; compare means over seeds)")
    p.add_argument("--no-audit", action="store_true", help="skip the membership audit (no MIA columns)")
    p.add_argument("--audit-attacks", default=None, help="membership attacks of the audit (default: loss,gradient_norm)")
    p.add_argument("--audit-active", action="store_true", help="also audit the malicious server's active views")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel (default: %(default)s)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: spawned processes; ray: Ray tasks (default: %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address to join (default: start a local Ray)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("fedaudit-tradeoff"),
                   help="output folder, checked writable before any cell runs; finished cells are kept there, so "
                        "rerunning the command (after Ctrl-C, or from a second process) resumes or shares the "
                        "work (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tradeoff)
    return p


def grid_from_args(args: argparse.Namespace) -> Grid:
    data = load_grid(args.config) if args.config is not None else {}
    run = {**DEFAULT_GRID["run"], **data.get("run", {})}
    for k in ("rounds", "clients", "dataset"):
        if getattr(args, k) is not None:
            run[k] = getattr(args, k)
    run.update(parse_kv(args.set, "--set"))
    audit = data.get("audit", Grid().audit)
    if args.no_audit:
        audit = False
    elif audit:
        audit = dict(audit)
        if args.audit_attacks:
            audit["attacks"] = _split(args.audit_attacks)
        if args.audit_active:
            audit["active"] = True
    paired = True if args.paired_noise else data.get("paired_noise")
    return make_grid({**data, "run": run, "audit": audit}, paired_noise=paired, rules=_split(args.rules),
                     attacks=_split(args.attacks),
                     corrupt=_split(args.corrupt, float), dp=_split(args.dp), secagg=_split(args.secagg),
                     seeds=_split(args.seeds, int))


def cmd_tradeoff(args: argparse.Namespace) -> int:
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads}: give a positive number, or 0 for torch's default")
    grid = grid_from_args(args)        # every cell validated: a bad value is an error here, before any cell runs
    out = prepare_output_dir(args.out)
    for w in grid.warnings:
        print(f"fedaudit: warning: {w}", file=sys.stderr)
    atomic_write_json(out / "grid.json", grid.to_dict(), indent=1)
    t0 = time.perf_counter()
    try:
        results = run_grid(grid, out, jobs=args.jobs, backend=args.backend, address=args.address,
                           threads=args.threads, progress=not args.quiet)
    except KeyboardInterrupt:
        done = len(list((out / "cells").glob("*.json")))
        print(f"fedaudit: interrupted; {done} finished cell(s) are kept in {out / 'cells'}: run the same command "
              "again to resume", file=sys.stderr)
        return 130
    rows = aggregate(results)
    csv_path = write_csv(rows, out / "results.csv")
    pngs = write_plots(rows, out)
    print(format_summary(rows))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "refused", "failed")}
    print(f"\n{len(results)} cells ({counts['ok']} ok, {counts['refused']} refused, {counts['failed']} failed), "
          f"{len(rows)} rows over seeds {list(grid.seeds)}; {time.perf_counter() - t0:.0f} s "
          f"(backend {args.backend}, {args.jobs} job{'s' if args.jobs > 1 else ''})")
    if grid.paired_noise:
        print("DP noise was seeded (--paired-noise): reproducible and paired across secagg modes, not private")
    print(f"wrote {csv_path}, {', '.join(p.name for p in pngs)} and {len(results)} cell files in {out / 'cells'}")
    return 0 if counts["failed"] == 0 else 1
