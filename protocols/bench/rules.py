"""``fedaudit bench rules``: the reveal-based robust rules against FedAvg, and against ByzFL.

n = 100 clients, d in {1e5, 1e6} (quick: {1e4, 1e5}). For each d: FedAvg (one plaintext
secure average) is the baseline; Krum, multi-Krum, Bulyan (f = 10), coordinate median and
trimmed mean (beta = 0.1) run on the revealed updates, ratio = seconds / FedAvg's. If ByzFL
is importable (``pip install --no-deps byzfl``: it requires its own torch), its Krum, Median and TrMean
run on the same tensor, each row's baseline being our rule, so ratio = ByzFL seconds / ours
(the speed-up). Each does what ours does: Krum with f + 1 (ByzFL averages the n - f - 1 nearest
distances, ours sums the n - f - 2 nearest), TrMean trimming ``trim_count(BETA, n)``, as ours.
Goal: ByzFL's Krum, Median and TrMean at least 3x slower than ours at d = 1e6.
``--clients`` / ``--dim`` set n and one d.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import List, Optional, Tuple

import torch

from secagg import ClientUpdates, Transcript

from protocols.rules import make_rule
from protocols.rules.coordinate import trim_count
from .timing import add_ratios, sizes, time_median

F = 10
BETA = 0.1


def load_byzfl() -> Tuple[Optional[object], str]:
    """ByzFL's aggregators module, or None and why not.

    ``import byzfl`` also imports its benchmark package, which needs torchvision; the
    aggregators themselves do not, so when only torchvision is missing the package is
    entered without running its ``__init__``.
    """
    try:
        importlib.import_module("byzfl")
        return importlib.import_module("byzfl.aggregators.aggregators"), ""
    except ModuleNotFoundError as err:
        if err.name == "byzfl":
            return None, "byzfl not installed (pip install --no-deps byzfl)"
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            return None, f"byzfl unusable: {err}"
        for key in [k for k in sys.modules if k == "byzfl" or k.startswith("byzfl.")]:
            del sys.modules[key]
        # the package from its own spec, its __init__ not run; the spec stays set, so that a later
        # importlib.util.find_spec("byzfl") (the report's peer check) still works
        sys.modules["byzfl"] = importlib.util.module_from_spec(spec)
        try:
            return importlib.import_module("byzfl.aggregators.aggregators"), \
                f"byzfl aggregators loaded without its benchmark package ({err.name} missing)"
        except Exception as err2:                       # pragma: no cover - depends on the install
            return None, f"byzfl unusable: {err2}"


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
        dim: Optional[int] = None) -> List[dict]:
    n, dims = sizes(quick, clients, dim)
    repeats = 2 if quick else 3
    bz, bz_note = load_byzfl()
    g = torch.Generator().manual_seed(0)
    rows: List[dict] = []
    for d in dims:
        x = torch.randn(n, d, generator=g).to(device)
        tag = f"n={n} d={d}"
        base = f"fedavg {tag}"
        rules = {
            base: make_rule("fedavg", weighted=False),
            f"krum {tag}": make_rule("krum", f=F),
            f"multikrum {tag}": make_rule("multikrum", f=F),
            f"bulyan {tag}": make_rule("bulyan", f=F),
            f"median {tag}": make_rule("median"),
            f"trimmedmean {tag}": make_rule("trimmedmean", beta=BETA),
        }
        for case, rule in rules.items():
            def call(rule=rule):
                # keep_outputs=False: the audit copy of revealed matrices is not the rule's cost
                return rule(ClientUpdates(x, secure=False, rule=rule.name,
                                          transcript=Transcript(keep_outputs=False)))
            secs = time_median(call, repeats=repeats, device=device)
            rows.append({"case": case, "seconds": secs, "baseline": base, "n": n, "d": d,
                         "note": f"f={F}" if rule.name in ("krum", "multikrum", "bulyan") else
                         f"beta={BETA}" if rule.name == "trimmedmean" else ""})
        if bz is not None:
            ours = {"Krum": (f"krum {tag}", bz.Krum(f=F + 1)), "Median": (f"median {tag}", bz.Median()),
                    "TrMean": (f"trimmedmean {tag}", bz.TrMean(f=trim_count(BETA, n)))}
            for label, (mine, agg) in ours.items():
                same = {"Krum": f"; f={F + 1} (its n - f - 1 neighbours are our n - f - 2)",
                        "TrMean": f"; f={trim_count(BETA, n)}, the trim of ours"}.get(label, "")
                row = {"case": f"byzfl {label} {tag}", "baseline": mine, "n": n, "d": d,
                       "note": "ratio = byzfl / ours" + same + (f"; {bz_note}" if bz_note else "")}
                if d >= 1_000_000:
                    row["goal"] = ">= 3 (ours >= 3x faster)"
                try:
                    row["seconds"] = time_median(lambda agg=agg: agg(x), repeats=repeats, device=device)
                except Exception as err:        # e.g. torch.quantile's input size limit
                    row["seconds"] = float("nan")
                    row["note"] = f"byzfl failed: {type(err).__name__}: {str(err)[:80]}"
                rows.append(row)
    if bz is None:
        rows.append({"case": "byzfl", "seconds": float("nan"), "baseline": base, "note": bz_note})
    return add_ratios(rows)
