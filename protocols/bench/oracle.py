"""``fedaudit bench oracle``: plaintext vs quantized secure average.

Both oracles average the same [n, d] updates (uniform in [-1, 1], clip 1) with the
same weights in one run, n = 100 (``--clients``), d in {1e5, 1e6} (quick: {1e4, 1e5};
``--dim`` for one size). The quantized oracle encodes every client's (u_i x_i, u_i)
into Z_{2^bits} with unbiased stochastic rounding, sums exactly mod 2^bits and decodes
(what the masked protocol returns bit for bit). ``ratio`` = seconds / the plaintext
case's. Goal: quantized (32 bits, stochastic) <= 3x plaintext. The cases are timed
round-robin so that load drift hits all of them alike.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from secagg import PlaintextOracle, QuantizedOracle

from .timing import add_ratios, sizes, time_interleaved


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
        dim: Optional[int] = None) -> List[dict]:
    n, dims = sizes(quick, clients, dim)
    repeats = 3 if quick else 5
    g = torch.Generator().manual_seed(0)
    rows: List[dict] = []
    for d in dims:
        x = (torch.rand(n, d, generator=g) * 2 - 1).to(device)
        w = torch.rand(n, generator=g).add_(0.1).to(device)
        base = f"plaintext n={n} d={d}"
        oracles = {
            base: PlaintextOracle(),
            f"quantized-32 n={n} d={d}": QuantizedOracle(bits=32, clip=1.0),
            f"quantized-32-nearest n={n} d={d}": QuantizedOracle(bits=32, clip=1.0, rounding="nearest"),
            f"quantized-64 n={n} d={d}": QuantizedOracle(bits=64, clip=1.0),
        }
        times = time_interleaved({case: (lambda o=o, x=x, w=w: o.average(x, w)) for case, o in oracles.items()},
                                 repeats, device=device)
        for case in oracles:
            rows.append({"case": case, "seconds": times[case], "baseline": base, "n": n, "d": d,
                         "goal": "<= 3x plaintext" if case.startswith("quantized-32 ") else "",
                         "note": "" if case == base else "encode + exact sum mod 2^bits + decode"})
    return add_ratios(rows)
