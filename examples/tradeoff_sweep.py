"""Privacy vs robustness on a small grid: FedAvg and RFA, benign and under a backdoor, with and without secagg and DP.

Runs ``protocols.experiments.tradeoff`` (what ``fedaudit tradeoff`` runs) on 2 rules x 2 attacks x 2 DP
settings x 2 secagg modes, one seed, 8 rounds, and prints the summary table. Expected: the
server's membership-inference AUC is high on the individual view without secure aggregation
and near 0.5 with it (it only holds the aggregate); user-level DP costs accuracy; Krum-like
rules are refused under secure aggregation (add ``krum`` to see the refusal).

Run: ``python examples/tradeoff_sweep.py [--out DIR] [--jobs N]`` (about a minute on 2 cores);
writes DIR/results.csv and four plots.
"""
from __future__ import annotations

import argparse

from protocols.experiments.tradeoff import aggregate, format_summary, make_grid, run_grid, write_csv, write_plots

GRID = {"rules": ["fedavg", "rfa"], "attacks": ["none", "backdoor"], "corrupt": [0.2],
        "dp": ["none", "user-central:z=0.5"], "secagg": ["off", "quantized"], "seeds": [0],
        "run": {"rounds": 8, "clients": 20}}


def main(out="fedaudit-tradeoff-example", jobs: int = 1, rules=None, progress: bool = True):
    grid = make_grid(GRID, rules=rules)
    results = run_grid(grid, out, jobs=jobs, progress=progress)
    rows = aggregate(results)
    write_csv(rows, f"{out}/results.csv")
    write_plots(rows, out)
    print(format_summary(rows))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="fedaudit-tradeoff-example")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rules", nargs="+", default=None)
    a = ap.parse_args()
    main(a.out, a.jobs, a.rules)
