"""The ``fedaudit`` command line: run, bench, list.

Every option has a default; ``fedaudit run`` with none trains the flagship
configuration on the embedded digits data in well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .simulation import DP_MODES, PROTOCOLS, SECAGG_MODES, RunConfig, make_simulation

_DEFAULTS = RunConfig()


def _parse_kv(items: Sequence[str], what: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: {what} {item!r} must look like key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _table(headers: List[str], rows: List[List[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    p.add_argument("--protocol", default=d.protocol, choices=PROTOCOLS,
                   help="params: clients share model updates, aggregated by --rule; cronus: clients share "
                        "predictions on a public set (default: %(default)s)")
    p.add_argument("--protocol-arg", action="append", default=[], metavar="K=V",
                   help="protocol parameter (repeatable; e.g. cronus public_size=500)")
    p.add_argument("--dataset", default=d.dataset, help="dataset name (default: %(default)s; "
                   "see `fedaudit list datasets`)")
    p.add_argument("--data-dir", default=d.data_dir, help="folder of an on-disk dataset")
    p.add_argument("--clients", type=int, default=d.clients, help="number of clients (default: %(default)s)")
    p.add_argument("--clients-per-round", type=int, default=d.clients_per_round,
                   help="clients sampled per round (default: all)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="communication rounds (default: %(default)s)")
    p.add_argument("--partition", default=d.partition,
                   help="auto | iid | dirichlet | shards | qgroup | natural (default: %(default)s, the "
                   "dataset's own: dirichlet for digits, natural for shakespeare)")
    p.add_argument("--partition-arg", action="append", default=[], metavar="K=V",
                   help="partitioner parameter (repeatable; e.g. q=0.5 for --partition qgroup)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration (default: %(default)s)")
    p.add_argument("--labels-per-client", type=int, default=d.labels_per_client,
                   help="labels per client for --partition shards (default: %(default)s)")
    p.add_argument("--model", default=d.model, help="model (default: %(default)s, the dataset's own; see `fedaudit list models`)")
    p.add_argument("--rule", default=d.rule, help="aggregation rule (default: %(default)s; see `fedaudit list rules`)")
    p.add_argument("--rule-arg", action="append", default=[], metavar="K=V", help="rule parameter (repeatable)")
    p.add_argument("--attack", default=d.attack, help="poisoning attack of the corrupted clients "
                   "(default: none; see `fedaudit list attacks`)")
    p.add_argument("--attack-arg", action="append", default=[], metavar="K=V", help="attack parameter (repeatable)")
    p.add_argument("--corrupt", type=float, default=d.corrupt,
                   help="fraction rho of corrupted clients (default: %(default)s)")
    p.add_argument("--secagg", default=d.secagg, choices=SECAGG_MODES,
                   help="secure aggregation: off (server sees updates), plaintext (ideal oracle), "
                        "quantized (fixed-point oracle), masked (Bonawitz protocol) (default: %(default)s)")
    p.add_argument("--bits", type=int, default=d.bits, help="log2 of the secagg modulus (default: %(default)s)")
    p.add_argument("--clip", type=float, default=d.clip,
                   help="per-coordinate bound of the fixed-point encoding (default: %(default)s)")
    p.add_argument("--overflow", default=d.overflow, choices=["raise", "clip"],
                   help="an update coordinate beyond --clip: raise an error, or clip it and count it "
                        "in the per-round history (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="masked: Shamir threshold, a count or a fraction of clients (default: protocol's)")
    p.add_argument("--neighbors", type=int, default=d.neighbors,
                   help="masked: degree of the SecAgg+ k-regular graph (default: complete graph)")
    p.add_argument("--dropout-rate", type=float, default=d.dropout_rate,
                   help="masked: probability a client drops in a protocol call (default: %(default)s)")
    p.add_argument("--personalize", action="store_true",
                   help="RFA Alg. 4 personalization: per-client parameters u_i, only w aggregated")
    p.add_argument("--client-holdout", type=float, default=d.client_holdout,
                   help="fraction of each client's data held out for per-client accuracy "
                        "(default: 0, or 0.2 when personalized)")
    p.add_argument("--local-epochs", type=int, default=d.local_epochs,
                   help="local epochs per round (default: the dataset's preset, else 2)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="client learning rate (default: the dataset's preset, e.g. shakespeare 0.8, else 0.05)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="client momentum (default: %(default)s)")
    p.add_argument("--adv-reg", type=float, default=d.adv_reg,
                   help="adversarial regularization strength lambda in local training (Nasr et al. 2018; "
                        "default: off)")
    p.add_argument("--server-lr", type=float, default=d.server_lr, help="(default: %(default)s)")
    p.add_argument("--training", default=d.training, choices=["vmap", "loop"],
                   help="vectorized clients or a per-client loop (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument("--device", default=d.device, help="torch device (default: %(default)s)")
    g = p.add_argument_group("differential privacy")
    g.add_argument("--dp", default=d.dp, choices=DP_MODES,
                   help="record: Opacus DP-SGD in each client's local training; user-central: clip each "
                        "update to --dp-clip, Gaussian noise by the server; user-distributed: discrete "
                        "Gaussian shares summed by --secagg quantized|masked (default: off)")
    g.add_argument("--noise-multiplier", type=float, default=d.noise_multiplier,
                   help="z: noise std / sensitivity (give this or --target-epsilon)")
    g.add_argument("--target-epsilon", type=float, default=d.target_epsilon,
                   help="choose z so that the run ends at this epsilon (give this or --noise-multiplier)")
    g.add_argument("--delta", type=float, default=d.delta, help="DP delta (default: %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="record: per-example gradient clip (default: %(default)s)")
    g.add_argument("--dp-clip", type=float, default=d.dp_clip,
                   help="user-level: L2 clip of each client's update (default: %(default)s; --clip is "
                        "the secagg encoding bound)")
    g.add_argument("--accountant", default=d.accountant, choices=["rdp", "prv"],
                   help="Opacus privacy accountant (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write DIR/result.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    threshold = args.threshold
    if threshold is not None and float(threshold).is_integer() and threshold >= 1:
        threshold = int(threshold)
    return RunConfig(
        protocol=args.protocol, protocol_args=_parse_kv(args.protocol_arg, "--protocol-arg"),
        data_dir=args.data_dir, partition_args=_parse_kv(args.partition_arg, "--partition-arg"),
        adv_reg=args.adv_reg, dataset=args.dataset, clients=args.clients, clients_per_round=args.clients_per_round,
        rounds=args.rounds, partition=args.partition, alpha=args.alpha,
        labels_per_client=args.labels_per_client, model=args.model, rule=args.rule,
        rule_args=_parse_kv(args.rule_arg, "--rule-arg"), attack=args.attack,
        attack_args=_parse_kv(args.attack_arg, "--attack-arg"), corrupt=args.corrupt, secagg=args.secagg, bits=args.bits,
        clip=args.clip, overflow=args.overflow, threshold=threshold, neighbors=args.neighbors, dropout_rate=args.dropout_rate,
        personalize=args.personalize, client_holdout=args.client_holdout, local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        server_lr=args.server_lr, training=args.training, seed=args.seed, device=args.device,
        dp=args.dp, noise_multiplier=args.noise_multiplier, target_epsilon=args.target_epsilon, delta=args.delta,
        max_grad_norm=args.max_grad_norm, dp_clip=args.dp_clip, accountant=args.accountant)


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
    print(_table(["round", "test_accuracy", "test_loss", "oracle_calls", "seconds"] + (["epsilon"] if dp_on else []),
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
    from .bench import format_rows, peer_status, run_all, run_suite
    from .bench.report import machine_info, write_report
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
        from .aggregators import describe_rules
        rows = [[r["name"], "yes" if r["secagg_compatible"] else "no",
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_rules()]
        print(_table(["rule", "secagg", "parameters (defaults)", "source"], rows))
    elif args.what == "attacks":
        from .attacks import describe_attacks
        rows = [[r["name"], r["kind"], r["knowledge"],
                 ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-", r["citation"]]
                for r in describe_attacks()]
        print(_table(["attack", "kind", "knows", "parameters (defaults)", "source"], rows))
    elif args.what == "datasets":
        from .data import DATASETS
        print("\n".join(sorted(DATASETS)))
    elif args.what == "models":
        from .models import MODELS
        print("\n".join(sorted(MODELS)))
    return 0


def _count(flag: str):
    """argparse type for --clients / --dim: a positive integer, 1e5 notation accepted."""
    def parse(text: str) -> int:
        from .bench import parse_count
        try:
            return parse_count(text, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = flag.lstrip("-")
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .bench import SUITES
    parser = argparse.ArgumentParser(prog="fedaudit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train a federation and report accuracy per round")
    _add_run_options(p_run)
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
    from .audit import add_audit_parser
    add_audit_parser(sub)
    from .tradeoff import add_tradeoff_parser
    add_tradeoff_parser(sub)
    from .reproduce import add_reproduce_parser
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
