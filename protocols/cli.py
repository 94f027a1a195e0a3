"""The ``fedaudit`` command line: run, bench, list.

Every option has a default; ``fedaudit run`` with none trains the flagship
configuration on the embedded digits data in well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from protocols.experiments.audit import add_audit_parser
from protocols.experiments.options import add_run_options, config_from_args
from protocols.experiments.reproduce import add_reproduce_parser
from protocols.experiments.tradeoff import add_tradeoff_parser
from protocols.report import table
from protocols.runner import make_simulation


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    cfg = config_from_args(args)
    sim = make_simulation(cfg)
    what = "cronus" if cfg.protocol == "cronus" else cfg.rule
    bar = tqdm(total=cfg.rounds, desc=f"{what} / secagg={cfg.secagg}", unit="round",
               disable=args.quiet, file=sys.stderr)

    def progress(rec):
        bar.update(1)
        post = {"acc": f"{rec.test_accuracy:.3f}", "loss": f"{rec.test_loss:.3f}"}
        if rec.epsilon is not None:
            post["eps"] = f"{rec.epsilon:.3g}"
        bar.set_postfix(**post)

    sim.run(progress)
    bar.close()
    result = sim.result()
    hist = sim.history
    shown = sorted({0, len(hist) // 4, len(hist) // 2, 3 * len(hist) // 4, len(hist) - 1})
    dp_on = cfg.dp is not None
    print(table(["round", "test_accuracy", "test_loss", "oracle_calls", "seconds"] + (["epsilon"] if dp_on else []),
                 [[hist[i].round, hist[i].test_accuracy, hist[i].test_loss, hist[i].oracle_calls,
                   hist[i].seconds] + ([hist[i].epsilon] if dp_on else []) for i in shown]))
    ts = result["transcript"]
    dps = result.get("dp")
    dp_text = "" if not dps else (f"; DP {dps['mode']}: epsilon {dps['epsilon']:.3f} at delta {dps['delta']:g}, "
                                  f"noise multiplier {dps['noise_multiplier']:.3g}")
    if cfg.protocol == "cronus":
        who = f"protocol=cronus, aggregator={result['cronus']['params']['aggregator']}"
    else:
        who = f"rule={cfg.rule}"
    mew = ts["max_effective_weight"]
    mew_text = f", max effective weight {mew:.3f}" if mew == mew else ""   # NaN: no weighted call
    print(f"\nfinal test accuracy {result['final']['test_accuracy']:.4f}  "
          f"({who}, secagg={cfg.secagg}, {cfg.clients} clients, {cfg.rounds} rounds; "
          f"oracle calls {ts['calls']}, individual reveals {ts['individual_reveals']}{mew_text}{dp_text})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "result.json"
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``fedaudit bench SUITE|all``: rows printed per suite; ``--out DIR`` writes bench.json
    and bench.md (``--out FILE.json`` with one suite: just the rows, as JSON)."""
    import os
    import time
    from protocols.bench import format_rows, peer_status, run_all, run_suite
    from protocols.bench.report import machine_info, write_report
    if args.with_flower and args.suite != "secagg":
        raise ValueError(f"--with-flower adds Flower's SecAgg+ rows to `bench secagg`, not to "
                         f"`bench {args.suite}`; drop it (`bench all` runs the flower suite when flwr is installed)")
    if args.with_flower and peer_status()["flwr"]:
        raise ValueError(f"--with-flower needs flwr: {peer_status()['flwr']}")
    load_before = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    if args.suite == "all":
        if args.clients is not None or args.dim is not None:
            raise ValueError("--clients/--dim set the size of one suite (e.g. `fedaudit bench secagg "
                             "--clients 1000 --dim 1e5`); `bench all` runs each suite at its own sizes")
        result = run_all(quick=args.quick, device=args.device,
                         progress=lambda name: print(f"== bench {name}", file=sys.stderr, flush=True))
        for name in dict.fromkeys(r["suite"] for r in result["rows"]):
            print(f"\n## {name}\n" + format_rows([r for r in result["rows"] if r["suite"] == name]))
        for name, why in result["skipped"].items():
            print(f"skipped {name}: {why}")
        for name, err in result["failed"].items():
            print(f"fedaudit: error: bench {name} failed: {err}", file=sys.stderr)
    else:
        rows = run_suite(args.suite, quick=args.quick, device=args.device, clients=args.clients, dim=args.dim)
        if args.with_flower:
            rows += run_suite("flower", quick=args.quick, device=args.device, clients=args.clients, dim=args.dim)
        print(format_rows(rows))
        result = {"rows": rows, "skipped": {}, "failed": {}, "seconds": {args.suite: time.perf_counter() - t0}}
    if args.out is not None:
        if args.suite != "all" and args.out.suffix == ".json":
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result["rows"], indent=2))
            print(f"wrote {args.out}")
        else:
            meta = dict(machine_info(), device=args.device, quick=args.quick, suite=args.suite,
                        load_before=load_before, wall_seconds=time.perf_counter() - t0)
            paths = write_report(result, args.out, meta)
            print(f"wrote {paths['json']} and {paths['md']}")
    return 1 if result["failed"] else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "rules":
        from protocols.rules import describe_rules
        rows = [[r["name"], "yes" if r["secagg_compatible"] else "no",
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_rules()]
        print(table(["rule", "secagg", "parameters (defaults)", "source"], rows))
    elif args.what == "attacks":
        from protocols.attacks import describe_attacks
        rows = [[r["name"], r["kind"], r["knowledge"],
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_attacks()]
        print(table(["attack", "kind", "knows", "parameters (defaults)", "source"], rows))
    elif args.what == "datasets":
        from protocols.data import DATASETS
        print("\n".join(sorted(DATASETS)))
    elif args.what == "models":
        from protocols.models import MODELS
        print("\n".join(sorted(MODELS)))
    return 0


def _count(flag: str):
    """argparse type for --clients / --dim: a positive integer, 1e5 notation accepted."""
    def parse(text: str) -> int:
        from protocols.bench import parse_count
        try:
            return parse_count(text, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = flag.lstrip("-")
    return parse


def build_parser() -> argparse.ArgumentParser:
    from protocols.bench import SUITES
    parser = argparse.ArgumentParser(prog="fedaudit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train a federation and report accuracy per round")
    add_run_options(p_run)
    p_run.set_defaults(func=cmd_run)
    p_bench = sub.add_parser("bench", help="benchmarks as ratios measured side by side in one run")
    p_bench.add_argument("suite", choices=sorted(SUITES) + ["all"],
                         help="which benchmark; all: every suite, with a report (see docs/bench-cpu.md)")
    p_bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p_bench.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p_bench.add_argument("--out", type=Path, default=None, metavar="DIR",
                         help="write DIR/bench.json (rows {suite, case, seconds, baseline, ratio, n, d, "
                              "device}) and DIR/bench.md (tables, goals met or not); with one suite, a "
                              "path ending in .json gets just the rows as JSON")
    p_bench.add_argument("--clients", type=_count("--clients"), default=None, metavar="N",
                         help="number of clients, for the suites that take it (default: the suite's)")
    p_bench.add_argument("--dim", type=_count("--dim"), default=None, metavar="D",
                         help="vector dimension, e.g. 1e5, for the suites that take it (default: the suite's)")
    p_bench.add_argument("--with-flower", action="store_true",
                         help="bench secagg: add Flower's SecAgg+ round at the same sizes (needs flwr)")
    p_bench.set_defaults(func=cmd_bench)
    p_list = sub.add_parser("list", help="list registered rules, attacks, datasets or models")
    p_list.add_argument("what", choices=["rules", "attacks", "datasets", "models"])
    p_list.set_defaults(func=cmd_list)
    add_audit_parser(sub)
    add_tradeoff_parser(sub)
    add_reproduce_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        # Bad input: one clear line, not a traceback.
        print(f"fedaudit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
