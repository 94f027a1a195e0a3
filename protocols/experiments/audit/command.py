"""``fedaudit audit``: the run options (with the audit's own defaults, said in --help and in
audit.json) plus the audit's options; --out is checked and created before any work, results are
written atomically, and Ctrl-C keeps the rows that finished."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import membership as M

from protocols.experiments.options import add_run_options, config_from_args, prepare_output_dir
from protocols.simulation.base import apply_threads

from .config import (AUDIT_RUN_DEFAULTS, CANARY_KINDS, DEFAULT_ATTACKS, DEFAULT_REFERENCE_MODELS, AuditConfig)
from .report import defaults_note, format_table, write_audit
from .run import AuditRows, run_audit

__all__ = ["add_audit_parser", "audit_config_from_args", "cmd_audit", "split_names"]


def split_names(values) -> List[str]:
    """Names given as one comma list, as separate words, or both: ``["a,b", "c"]`` -> a, b, c."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [s.strip() for v in values for s in str(v).split(",") if s.strip()]


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """``fedaudit audit``: the run options (audit defaults) plus the audit's own."""
    p = subparsers.add_parser(
        "audit", help="membership-inference audit of every view the server has, with empirical epsilon",
        description="Membership audit of every view the server really holds (docs/audit.md): LiRA and RMIA with "
                    "reference federations, baseline attacks, TPR at low FPR, and empirical epsilon (lower bounds "
                    "and estimates) beside the accountant's.",
        epilog=defaults_note() + ".")
    add_run_options(p, out_help="output folder: DIR/audit.json (rows and the resolved configuration) and DIR/roc.png "
                                "(log-log ROC per view) (default: %(default)s)")
    d = AuditConfig()
    p.set_defaults(**{k: v for k, v in AUDIT_RUN_DEFAULTS.items()}, out=Path("fedaudit-audit"), func=cmd_audit)
    p.add_argument("--attacks", nargs="+", default=None, metavar="ATTACK",
                   help=f"membership attacks, as words or a comma list, from {sorted(M.ATTACKS)} "
                        f"(default: {' '.join(DEFAULT_ATTACKS)}; without reference models: "
                        f"{' '.join(a for a in DEFAULT_ATTACKS if not M.ATTACKS[a].requires_references)})")
    p.add_argument("--views", nargs="+", default=None, metavar="VIEW",
                   help="views, as words or a comma list: individual, aggregate, weiszfeld (or weiszfeld-R), active "
                        "(or active-individual, active-aggregate) (default: every view the server has)")
    p.add_argument("--reference-models", type=int, default=DEFAULT_REFERENCE_MODELS, metavar="K",
                   help="reference federations for LiRA and RMIA, trained like the audited run with each target "
                        "record in half of them; the records of all K + 1 runs are attacked, each run the target in "
                        "turn (0: none) (default: %(default)s)")
    p.add_argument("--no-vectorize", action="store_true",
                   help="train the reference federations one after another instead of all clients in one "
                        "vectorized call per round")
    p.add_argument("--canaries", type=int, default=0, metavar="M",
                   help="M canaries for the empirical epsilon of each view (one-run bound and Gaussian estimate; "
                        "0: none) (default: %(default)s)")
    p.add_argument("--canary-kind", default="auto", choices=CANARY_KINDS,
                   help="client canaries (random update directions, user-level DP) or record canaries (mislabelled "
                        "records, record-level DP); auto: record under --dp record, else client (default: %(default)s)")
    p.add_argument("--confidence", type=float, default=d.confidence,
                   help="confidence of every epsilon_lower (default: %(default)s)")
    p.add_argument("--lira-offline", action="store_true", help="LiRA with OUT reference models only (offline)")
    p.add_argument("--rmia-gamma", type=float, default=None, help="RMIA's likelihood-ratio threshold gamma (default: 1)")
    p.add_argument("--rmia-offline-a", type=float, default=None,
                   help="offline RMIA with coefficient a (OUT models only; ML Privacy Meter uses 0.3) (default: online)")
    p.add_argument("--target-client", type=int, action="append", default=None, metavar="K",
                   help="a target client whose records are the members (repeatable; default: clients 0, 1, ... "
                        "until their records outnumber the test set)")
    p.add_argument("--known-fraction", type=float, default=d.known_fraction,
                   help="fraction of the members (and as many non-members) the attacker knows (default: %(default)s)")
    p.add_argument("--active-gamma", type=float, default=d.active_gamma,
                   help="malicious server's gradient-ascent step (default: %(default)s)")
    p.add_argument("--active-rounds", type=int, default=d.active_rounds,
                   help="final rounds in which the server broadcasts the ascended model (default: %(default)s)")
    p.add_argument("--active-steps", type=int, default=d.active_steps,
                   help="ascent steps per malicious broadcast (default: %(default)s)")
    p.add_argument("--whitebox-epochs", type=int, default=None,
                   help="training epochs of the white-box attack network (default: the attack's, 50)")
    p.add_argument("--bootstrap", type=int, default=d.n_bootstrap,
                   help="bootstrap resamples of the AUC and TPR confidence intervals (default: %(default)s)")
    # --threads comes with the run options; the audit's small models and per-record attacks run
    # faster on one thread than on several competing for the cores (0: the idle cores)
    p.set_defaults(threads=1)
    p.add_argument("--audit-seed", type=int, default=d.seed,
                   help="seed of the non-member draw, the known/evaluation split, the reference runs' membership, "
                        "the canaries and the attacks (default: %(default)s)")
    return p


def audit_config_from_args(args: argparse.Namespace) -> AuditConfig:
    if args.attacks is None:
        attacks = [a for a in DEFAULT_ATTACKS if args.reference_models or not M.ATTACKS[a].requires_references]
    else:
        attacks = split_names(args.attacks)
    attack_args = {}
    if args.whitebox_epochs is not None and "whitebox" in attacks:
        attack_args["whitebox"] = {"epochs": args.whitebox_epochs}
    if getattr(args, "lira_offline", False) and "lira" in attacks:
        attack_args["lira"] = {"online": False}
    rmia = {k: v for k, v in (("gamma", getattr(args, "rmia_gamma", None)),
                              ("offline_a", getattr(args, "rmia_offline_a", None))) if v is not None}
    if rmia and "rmia" in attacks:
        attack_args["rmia"] = rmia
    views = split_names(args.views) if args.views is not None else None
    return AuditConfig(run=config_from_args(args), attacks=tuple(attacks), views=None if views is None else tuple(views),
                       target_clients=None if args.target_client is None else tuple(args.target_client),
                       known_fraction=args.known_fraction, active_gamma=args.active_gamma,
                       active_rounds=args.active_rounds, active_steps=args.active_steps,
                       attack_args=attack_args, n_bootstrap=args.bootstrap, seed=args.audit_seed,
                       reference_models=args.reference_models, reference_vectorize=not args.no_vectorize,
                       canaries=args.canaries, canary_kind=args.canary_kind, confidence=args.confidence)


def cmd_audit(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    cfg = audit_config_from_args(args)
    cfg.validate()
    if args.threads is not None and args.threads < 0:
        raise ValueError(f"--threads {args.threads}: give a positive number of threads, or 0 for the idle cores")
    out = prepare_output_dir(args.out)        # before any work: no finished audit is lost to a bad --out
    apply_threads(args.threads or None)       # the audit builds its simulations itself: set them here
    bar = tqdm(total=1, desc=f"audit {cfg.run.rule} / secagg={cfg.run.secagg}", unit="step",
               disable=args.quiet, file=sys.stderr)

    def progress(done, total, what):
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(what[:60])

    rows = AuditRows()
    try:
        run_audit(cfg, progress, sink=rows)
    except KeyboardInterrupt:
        bar.close()
        if rows.info:
            js, _ = write_audit(rows, out, interrupted=True)
            print(f"interrupted: wrote the {len(rows)} finished row(s) to {js}", file=sys.stderr)
        raise
    bar.close()
    info = rows.info
    print(format_table(rows))
    refs = info.get("reference_models") or {}
    ref_text = (f"; {refs['count']} reference federations ({'vectorized' if refs.get('vectorized') else 'looped'}, "
                f"{refs.get('seconds', 0):.0f} s)") if refs else ""
    print(f"\n{info['members']} members of target clients {_short(info['target_clients'])} vs {info['nonmembers']} "
          f"test non-members per run; evaluated on a disjoint {1 - cfg.known_fraction:.0%} of each, pooled over "
          f"{1 + cfg.reference_models} run(s) (rule={cfg.run.rule}, secagg={cfg.run.secagg}, {cfg.run.clients} "
          f"clients, {cfg.run.rounds} rounds, test accuracy {info['test_accuracy']:.3f}{ref_text}; "
          f"{info['seconds']:.0f} s in all). n/e: not estimable (too few non-member scores).")
    js, png = write_audit(rows, out)
    print(f"wrote {js} and {png}")
    return 0


def _short(ks: Sequence[int]) -> str:
    ks = list(ks)
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ",".join(map(str, ks))
