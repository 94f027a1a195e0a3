"""How much does the server learn about a client's records? A membership audit of its real views.

Federations in the audit's default setting (100 IID clients of about 14 digits records each, or
40 real MNIST digits with ``--dataset mnist5k``, so that local models overfit their owner's data):

1. ``fedavg-off``: FedAvg without secure aggregation: the server holds every client's update,
   so it attacks each target client's own model (``individual``) as well as the new global
   model (``aggregate``). Expected (Cronus appendix, Table 6 shape): individual >= aggregate.
2. ``rfa-masked``: RFA under the masked Bonawitz et al. protocol: the server only holds
   averages, the global model and each of smoothed Weiszfeld's intermediate averages
   (``weiszfeld-0`` = the weighted mean, ``weiszfeld-1..3`` the iterates); no individual view.
   ``rfa-quantized``: the same server outputs from the fixed-point oracle the masked protocol
   matches bit for bit, for models too large to mask on a CPU in reasonable time.
3. ``dp1``, ``dp4``, ``dp8``: DP-FedAvg (user-level, central Gaussian noise on the securely
   aggregated sum, ``--secagg quantized``) at accountant epsilon 1, 4, 8; ``dp1-off``: the same
   at epsilon 1 without secure aggregation (the server then holds the raw updates, which the
   guarantee does not cover).

In the first two a malicious server also runs the gradient-ascent attack of Nasr et al. (S&P
2019) before the last round (``active-*`` views). With reference attacks (``lira``, ``rmia``)
the audit trains ``--reference-models`` shadow federations; with ``--canaries M`` it adds the
empirical epsilon of client canaries per view, and ``--out DIR`` writes each setting's
audit.json and roc.png plus ``epsilon.png`` (epsilon_lower per view against the accountant's).

Run: ``python examples/audit_leakage.py`` (baseline attacks and the first two settings, a few
minutes on 2 cores); the table of docs/audit.md: ``python examples/audit_leakage.py --attacks
loss,lira,rmia --settings fedavg-off,rfa-masked,dp1,dp4,dp8 --canaries 200 --markdown --out DIR``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import membership as M
from protocols.experiments.audit import (DEFAULT_REFERENCE_MODELS, AuditConfig, audit_run_config, format_table,
                                         json_rows, plot_epsilon, run_audit, write_audit)

SETTINGS: Dict[str, Any] = {
    "fedavg-off": ("fedavg / secagg off", dict(rule="fedavg", secagg="off"), ("individual", "aggregate", "active")),
    "rfa-masked": ("rfa / secagg masked", dict(rule="rfa", secagg="masked"), ("aggregate", "weiszfeld", "active")),
    "rfa-quantized": ("rfa / secagg quantized", dict(rule="rfa", secagg="quantized"),
                      ("aggregate", "weiszfeld", "active")),
    "dp1": ("dp-fedavg eps=1", dict(rule="fedavg", secagg="quantized", dp="user-central", target_epsilon=1.0),
            ("aggregate",)),
    "dp4": ("dp-fedavg eps=4", dict(rule="fedavg", secagg="quantized", dp="user-central", target_epsilon=4.0),
            ("aggregate",)),
    "dp8": ("dp-fedavg eps=8", dict(rule="fedavg", secagg="quantized", dp="user-central", target_epsilon=8.0),
            ("aggregate",)),
    "dp1-off": ("dp-fedavg eps=1 / secagg off", dict(rule="fedavg", secagg="off", dp="user-central",
                                                    target_epsilon=1.0), ("individual", "aggregate")),
}
DEFAULT_SETTINGS = ("fedavg-off", "rfa-masked")


def main(attacks: Sequence[str] = ("loss", "gradient_norm", "whitebox"), rounds: int = 20, seed: int = 0,
         neighbors: Optional[int] = None, n_bootstrap: int = 1000, reference_models: Optional[int] = None,
         canaries: int = 0, dataset: str = "digits", settings: Sequence[str] = DEFAULT_SETTINGS,
         out: Optional[Path] = None, run_overrides: Optional[Dict[str, Any]] = None) -> List[Dict]:
    """Audit each setting; print one table each and return every row (with a ``setting`` key).

    ``reference_models=None``: the audit's default (8) when a reference attack (lira, rmia) is
    requested, else none. ``run_overrides``: more run fields (e.g. a smaller model for mnist5k).
    """
    if reference_models is None:
        reference_models = DEFAULT_REFERENCE_MODELS if any(M.ATTACKS[a].requires_references for a in attacks) else 0
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise ValueError(f"unknown setting(s) {bad}; choose from {sorted(SETTINGS)}")
    rows: List[Dict] = []
    for key in settings:
        label, run_kw, views = SETTINGS[key]
        run = audit_run_config(rounds=rounds, seed=seed, dataset=dataset, **{**run_kw, **(run_overrides or {})})
        if run.secagg == "masked":
            run.neighbors = neighbors   # None: complete graph (SecAgg); k: SecAgg+ k-regular graph
        res = run_audit(AuditConfig(run=run, attacks=tuple(attacks), views=views, n_bootstrap=n_bootstrap,
                                    seed=seed, reference_models=reference_models, canaries=canaries))
        refs = res.info.get("reference_models") or {}
        print(f"\n== {label} ({dataset}): {res.info['members']} members of {len(res.info['target_clients'])} target "
              f"clients vs {res.info['nonmembers']} test records per run; test accuracy "
              f"{res.info['test_accuracy']:.3f}; {refs.get('count', 0)} reference federations in "
              f"{refs.get('seconds', 0):.0f} s; {res.info['seconds']:.0f} s in all")
        print(format_table(res))
        if out is not None:
            write_audit(res, Path(out) / key)
        rows += [{"setting": label, "setting_key": key, "dataset": dataset,
                  "reference_seconds": refs.get("seconds"), **r} for r in res]
    if out is not None and any(r.get("epsilon_accountant") is not None for r in rows):
        pts = [{"view": r["view"] + (" (secagg off)" if SETTINGS[r["setting_key"]][1]["secagg"] == "off" else ""),
                "epsilon_accountant": r["epsilon_accountant"], "epsilon_lower": r["epsilon_lower"],
                "epsilon_estimate": r["epsilon_estimate"]}
               for r in rows if r["kind"] == "canary" and r["view"] != "individual"]
        if pts:
            plot_epsilon(pts, Path(out) / "epsilon.png", title=f"{dataset}, DP-FedAvg: canaries vs accountant")
    return rows


def markdown(rows: Sequence[Dict]) -> str:
    """The rows as the markdown table of docs/audit.md."""
    def f(x, fmt="{:.3f}"):
        return "n/e" if x is None else fmt.format(x)
    lines = ["| setting | view | attack | AUC | TPR@0.1%FPR | TPR@1%FPR | eps_lower | eps_estimate | eps_accountant |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = r.get("epsilon_accountant")
        lines.append(f"| {r['setting']} | {r['view']} | {r['attack']} | {r['auc']:.3f} | {f(r['tpr_at_0.1pct_fpr'])} | "
                     f"{f(r['tpr_at_1pct_fpr'])} | {f(r['epsilon_lower'], '{:.2f}')} | "
                     f"{'-' if r.get('epsilon_estimate') is None else f(r['epsilon_estimate'], '{:.2f}')} | "
                     f"{'-' if acc is None else f'{acc:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neighbors", type=int, default=None, help="SecAgg+ graph degree (default: complete graph)")
    ap.add_argument("--quick", action="store_true", help="threshold attacks only (no white-box network)")
    ap.add_argument("--attacks", default=None, help="comma list (default: loss,gradient_norm,whitebox)")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"comma list from {sorted(SETTINGS)}")
    ap.add_argument("--dataset", default="digits", help="digits or mnist5k (needs fedaudit[data])")
    ap.add_argument("--model", default=None, help="model override (default: the audit's mlp)")
    ap.add_argument("--reference-models", type=int, default=None)
    ap.add_argument("--canaries", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="also print the rows as a markdown table")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)   # small models: one thread is faster than two competing ones
    attacks = tuple(args.attacks.split(",")) if args.attacks else \
        (("loss", "gradient_norm") if args.quick else ("loss", "gradient_norm", "whitebox"))
    result = main(attacks, args.rounds, args.seed, args.neighbors, reference_models=args.reference_models,
                  canaries=args.canaries, dataset=args.dataset, settings=tuple(args.settings.split(",")),
                  out=args.out, run_overrides={"model": args.model} if args.model else None)
    if args.markdown:
        print(markdown(result))
    if args.json:
        print(json.dumps(json_rows(result), indent=1))
