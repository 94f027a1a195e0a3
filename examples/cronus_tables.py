"""Cronus vs FedAvg: the shapes of the Cronus appendix's Table 6 (membership inference) and
Table 5 (robustness), measured on this machine.

Table 6: the server attacks each party's view and the aggregate, passively and actively
(gradient ascent), in FedAvg (parameters) and Cronus (predictions on a public set), with and
without adversarial regularization (Nasr et al. 2018, lambda = 3 as the paper's Purchase
row). Table 5: honest-party accuracy of Cronus (RobustFilter on predictions), FedAvg on
predictions, and FedAvg on parameters, benign and under label flip, PAF, LIE and OFOM at
corruption level epsilon.

    python examples/cronus_tables.py                 # the small preset (a few minutes on a CPU)
    python examples/cronus_tables.py --preset full   # more data and rounds, + the white-box attack

CPU-preset deviations from the paper (D.1), which trains 50 + 50 epochs over 10,000 records
per party: fewer records, epochs and rounds; Adam at 1e-3 (not SGD at 1e-3) on the public
set, and on digits Adam at 5e-3 on the private data, so that a party with ~100 records
takes enough steps.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Sequence

from protocols.cronus import audit_cronus_and_fedavg
from protocols.data import load_dataset
from protocols.runner import make_simulation
from protocols.simulation import RunConfig

PRESETS = {
    "small": dict(t6_samples=10000, t6_public=2000, t6_rounds=5, t6_fedavg_rounds=10,
                  t6_attacks=("loss", "loss_drop"), t6_cronus_reg=False, t5_clients=10, t5_rounds=10),
    "full": dict(t6_samples=10000, t6_public=2000, t6_rounds=10, t6_fedavg_rounds=20,
                 t6_attacks=("loss", "loss_drop", "whitebox"), t6_cronus_reg=True, t5_clients=20, t5_rounds=20),
}
TABLE5_ATTACKS = ("labelflip", "paf", "lie", "ofom")


def table6(preset: str = "small", lam: float = 3.0, gamma: float = 5.0, cronus_gamma: float = 1.0,
           seed: int = 0) -> List[Dict]:
    """Rows of Table 6 on the Purchase-style data, 4 parties (as the paper), each holding as
    many reference records (for adversarial regularization) as training records."""
    p = PRESETS[preset]
    # pinned generator parameters (a task the parties learn; the loader's defaults may change)
    ds = load_dataset("purchase", seed=seed, n_samples=p["t6_samples"], flip=0.2, type_flip=0.1)
    rows = []
    for reg in (0.0, lam):
        common = dict(dataset="purchase", clients=4, partition="iid", model="fc-purchase-small",
                      client_holdout=0.5, seed=seed, secagg="off", adv_reg=reg)
        cronus = RunConfig(protocol="cronus", rounds=p["t6_rounds"], **common,
                           protocol_args=dict(public_size=p["t6_public"], init_epochs=20, public_optimizer="adam"))
        fedavg = RunConfig(rule="fedavg", rounds=p["t6_fedavg_rounds"], local_epochs=5, lr=0.1, **common)
        systems = ("fedavg", "cronus") if reg == 0 or p["t6_cronus_reg"] else ("fedavg",)
        for r in audit_cronus_and_fedavg(cronus, fedavg, attacks=p["t6_attacks"], gamma=gamma,
                                         cronus_gamma=cronus_gamma, dataset=ds, systems=systems, seed=seed):
            rows.append({**r, "adv_reg": reg})
    return rows


def _accuracy(cfg: RunConfig) -> float:
    sim = make_simulation(cfg)
    sim.run()
    return sim.history[-1].test_accuracy


def table5(preset: str = "small", corrupt: float = 0.2, attacks: Sequence[str] = TABLE5_ATTACKS,
           seed: int = 0, systems: Sequence[str] = ("cronus", "cronus-mean", "fedavg")) -> List[Dict]:
    """Rows of Table 5 on digits: one per (system, attack), attack None for the benign run."""
    p = PRESETS[preset]
    common = dict(dataset="digits", clients=p["t5_clients"], partition="iid", model="mlp", seed=seed,
                  secagg="off", rounds=p["t5_rounds"])
    cronus_args = dict(public_size=400, init_epochs=20, lr=5e-3, public_optimizer="adam")
    makers = {
        "cronus": lambda **kw: RunConfig(protocol="cronus", protocol_args=cronus_args, **common, **kw),
        "cronus-mean": lambda **kw: RunConfig(protocol="cronus", protocol_args={**cronus_args, "aggregator": "mean"},
                                              **common, **kw),
        "fedavg": lambda **kw: RunConfig(rule="fedavg", **common, **kw),
    }
    unknown = [s for s in systems if s not in makers]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {sorted(makers)}")
    rows = []
    for name in systems:
        make = makers[name]
        for attack in (None, *attacks):
            kw = {} if attack is None else dict(attack=attack, corrupt=corrupt)
            t0 = time.perf_counter()
            rows.append({"system": name, "attack": attack or "benign", "accuracy": _accuracy(make(**kw)),
                         "seconds": time.perf_counter() - t0})
    return rows


def robustness(rows5: List[Dict]) -> Dict[str, Dict]:
    """Per system: benign accuracy, the strongest attack (lowest accuracy) and the ratio (Table 3/5)."""
    out = {}
    for system in dict.fromkeys(r["system"] for r in rows5):
        mine = [r for r in rows5 if r["system"] == system]
        benign = next(r["accuracy"] for r in mine if r["attack"] == "benign")
        worst = min((r for r in mine if r["attack"] != "benign"), key=lambda r: r["accuracy"])
        out[system] = {"benign": benign, "worst": worst["accuracy"], "strongest": worst["attack"],
                       "robustness": worst["accuracy"] / benign}
    return out


def format_table6(rows: List[Dict]) -> str:
    lines = ["Table 6 shape: membership-inference accuracy (%) [AUC], server as adversary",
             f"{'system':<8} {'adv_reg':>7} {'attack':<9} {'individual':>14} {'active-ind.':>14} "
             f"{'aggregate':>14} {'active-agg.':>14} {'test acc':>8}"]
    keys = list(dict.fromkeys((r["system"], r["adv_reg"], r["attack"]) for r in rows))
    for s, lam, a in keys:
        cell = {r["view"]: r for r in rows if (r["system"], r["adv_reg"], r["attack"]) == (s, lam, a)}
        vals = [f"{100 * cell[v]['accuracy']:5.1f} [{cell[v]['auc']:.2f}]" for v in
                ("individual", "active-individual", "aggregate", "active-aggregate")]
        lines.append(f"{s:<8} {lam:>7g} {a:<9} " + " ".join(f"{v:>14}" for v in vals)
                     + f" {100 * next(iter(cell.values()))['test_accuracy']:8.1f}")
    for r in rows:
        if r.get("ascended_student_accuracy") is not None:
            lines.append(f"(Cronus adv_reg={r['adv_reg']:g}: the ascended server model's test accuracy "
                         f"{100 * r['ascended_student_accuracy']:.1f}%)")
            break
    return "\n".join(lines)


def format_table5(rows: List[Dict]) -> str:
    systems = list(dict.fromkeys(r["system"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    acc = {(r["system"], r["attack"]): r["accuracy"] for r in rows}
    lines = ["Table 5 shape: mean test accuracy (%) of the honest parties' models (digits)",
             f"{'attack':<10}" + "".join(f"{s:>13}" for s in systems)]
    for a in attacks:
        lines.append(f"{a:<10}" + "".join(f"{100 * acc[(s, a)]:13.1f}" for s in systems))
    rob = robustness(rows)
    lines.append(f"{'robustness':<10}" + "".join(f"{rob[s]['robustness']:13.2f}" for s in systems))
    lines.append(f"{'strongest':<10}" + "".join(f"{rob[s]['strongest']:>13}" for s in systems))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--table", choices=("5", "6", "both"), default="both")
    ap.add_argument("--corrupt", type=float, default=0.2, help="Table 5 corruption level epsilon (default 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = {}
    if args.table in ("6", "both"):
        out["table6"] = table6(args.preset, seed=args.seed)
        print(format_table6(out["table6"]), "\n")
    if args.table in ("5", "both"):
        out["table5"] = table5(args.preset, corrupt=args.corrupt, seed=args.seed)
        print(format_table5(out["table5"]))
    return out


if __name__ == "__main__":
    main()
