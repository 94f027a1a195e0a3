"""How much does the server learn about a client's records? A membership audit of its real views.

Two federations on the embedded digits data, in the audit's default setting (100 IID
clients of about 14 records each, so that local models overfit their owner's data):

1. FedAvg without secure aggregation: the server holds every client's update, so it can
   attack each target client's own model (``individual``) as well as the new global
   model (``aggregate``). Expected (Cronus appendix, Table 6 shape): individual >= aggregate.
2. RFA under the masked Bonawitz et al. protocol: the server only holds averages, the
   global model and each of smoothed Weiszfeld's intermediate averages
   (``weiszfeld-0`` = the weighted mean, ``weiszfeld-1..3`` the iterates); individual
   views do not exist.

In both, a malicious server also runs the gradient-ascent attack of Nasr et al. (S&P
2019) before the last round (``active-*`` views), compared with the honest server's
(passive) views on the same targets and seed.

Run: ``python examples/audit_leakage.py`` (a few minutes on 2 cores; ``--quick`` skips
the white-box attack).
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional, Sequence

from protocols.experiments.audit import AuditConfig, audit_run_config, format_table, json_rows, run_audit

SETTINGS = {
    "fedavg / secagg off": (dict(rule="fedavg", secagg="off"), ("individual", "aggregate", "active")),
    "rfa / secagg masked": (dict(rule="rfa", secagg="masked"), ("aggregate", "weiszfeld", "active")),
}


def main(attacks: Sequence[str] = ("loss", "gradient_norm", "whitebox"), rounds: int = 20, seed: int = 0,
         neighbors: Optional[int] = None, n_bootstrap: int = 1000) -> List[Dict]:
    """Audit both settings; print one table each and return every row (with a ``setting`` key)."""
    rows: List[Dict] = []
    for setting, (run_kw, views) in SETTINGS.items():
        run = audit_run_config(rounds=rounds, seed=seed, **run_kw)
        if run.secagg == "masked":
            run.neighbors = neighbors   # None: complete graph (SecAgg); k: SecAgg+ k-regular graph
        res = run_audit(AuditConfig(run=run, attacks=tuple(attacks), views=views, n_bootstrap=n_bootstrap,
                                    seed=seed))
        print(f"\n== {setting}: {res.info['members']} members of {len(res.info['target_clients'])} target clients "
              f"vs {res.info['nonmembers']} test records; test accuracy {res.info['test_accuracy']:.3f} "
              f"({res.info['seconds']:.0f} s)")
        print(format_table(res))
        rows += [{"setting": setting, **r} for r in res]
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neighbors", type=int, default=None, help="SecAgg+ graph degree (default: complete graph)")
    ap.add_argument("--quick", action="store_true", help="threshold attacks only (no white-box network)")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)   # small models: one thread is faster than two competing ones
    attacks = ("loss", "gradient_norm") if args.quick else ("loss", "gradient_norm", "whitebox")
    out = main(attacks, args.rounds, args.seed, args.neighbors)
    if args.json:
        print(json.dumps(json_rows(out), indent=1))
