"""``fedaudit bench oracle``: plaintext vs quantized secure average (foundation issue).

Both oracles average the same [n, d] updates with the same weights in one run;
the ratio is quantized seconds / plaintext seconds. Goal: quantized <= 3x.
"""
from __future__ import annotations

from typing import List

import torch

from secagg import PlaintextOracle, QuantizedOracle

from . import add_ratios, time_median


def run(*, quick: bool = False, device: str = "cpu") -> List[dict]:
    n = 100
    dims = [10_000, 100_000] if quick else [100_000, 1_000_000]
    repeats = 2 if quick else 3
    g = torch.Generator().manual_seed(0)
    rows: List[dict] = []
    for d in dims:
        x = (torch.rand(n, d, generator=g) * 2 - 1).to(device)
        w = torch.rand(n, generator=g).add_(0.1).to(device)
        base = f"plaintext n={n} d={d}"
        cases = {
            base: PlaintextOracle(),
            f"quantized-32 n={n} d={d}": QuantizedOracle(bits=32, clip=1.0),
            f"quantized-32-nearest n={n} d={d}": QuantizedOracle(bits=32, clip=1.0, rounding="nearest"),
            f"quantized-64 n={n} d={d}": QuantizedOracle(bits=64, clip=1.0),
        }
        for case, oracle in cases.items():
            secs = time_median(lambda: oracle.average(x, w), repeats=repeats, device=device)
            rows.append({"case": case, "seconds": secs, "baseline": base, "n": n, "d": d,
                         "goal": "<= 3x" if case.startswith("quantized-32 ") else ""})
        del x
    return add_ratios(rows)
