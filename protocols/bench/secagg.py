"""``fedaudit bench secagg``: the masked protocol (SecAgg / SecAgg+) against its bounds.

Measured side by side in one run, n = 100 clients, 32-bit modulus:

- ``plaintext`` and ``quantized`` secure averages (the oracle baselines);
- ``keystream bound``: the time this machine's PRG cipher (AES-128-CTR from
  ``cryptography``, one key, 1 MiB calls) takes to produce exactly as many
  keystream bytes as the protocol case next to it consumed (clients' masks plus
  the server's regenerated masks);
- ``masked ... protocol``: :func:`secagg.run_protocol` on encoded inputs (all four
  rounds, key agreement, Shamir sharing, AES-GCM, masking and unmasking; masked
  inputs written over the inputs, as :class:`secagg.MaskedOracle` does);
- ``masked ... oracle``: :class:`secagg.MaskedOracle` end to end (encoding included).

Graphs: complete (SecAgg, Bonawitz et al. 2017) and random k-regular with the
default degree k = 14 for n = 100 (SecAgg+, Bell et al. 2020); no dropouts and
10% of the clients dropping before sending their masked input (the server must
then recover their pairwise masks). Goals (issue 4): masked complete protocol
<= 2x its keystream bound; k-regular >= 5x faster than complete.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from secagg import MaskedOracle, PlaintextOracle, QuantizedOracle, run_protocol
from secagg.crypto import PRG_CIPHER, keystream_seconds
from secagg.graph import default_degree

from . import add_ratios, time_median


def run(*, quick: bool = False, device: str = "cpu") -> List[dict]:
    """Rows {case, seconds, baseline, ratio, n, d, goal, note} for SecAgg (Bonawitz et al.
    2017) and SecAgg+ (Bell et al. 2020) at n = 100 (see the module docstring)."""
    n, bits = 100, 32
    threshold = 2 * n // 3 + 1
    k = default_degree(n)
    dims = [10_000] if quick else [100_000, 1_000_000]
    g = torch.Generator().manual_seed(0)
    drop_rng = np.random.default_rng(0)
    dropped = sorted(drop_rng.choice(n, size=n // 10, replace=False).tolist())
    rows: List[dict] = []
    for d in dims:
        big = d >= 1_000_000
        reps = 2 if quick else (1 if big else 3)
        x = (torch.rand(n, d, generator=g) * 2 - 1).to(device)
        w = torch.rand(n, generator=g).add_(0.1).to(device)
        tag = f"n={n} d={d}"
        plain, quant = f"plaintext average {tag}", f"quantized oracle {tag}"
        rows.append({"case": plain, "baseline": plain, "n": n, "d": d,
                     "seconds": time_median(lambda: PlaintextOracle().average(x, w), repeats=reps, device=device)})
        rows.append({"case": quant, "baseline": plain, "n": n, "d": d,
                     "seconds": time_median(lambda: QuantizedOracle(bits=bits, clip=1.0).average(x, w),
                                            repeats=reps, device=device, warmup=0 if big else 1)})
        values = torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64).to(device)
        protocol_case: Dict[str, str] = {}
        for drop in (False, True):
            dtag = "drop=10%" if drop else "drop=0%"
            dropouts = {"masked_input": dropped} if drop else None
            for graph, neighbors in (("complete", None), (f"k-regular k={k}", k)):
                state = {"instance": 0, "bytes": 0}

                def once(neighbors=neighbors, dropouts=dropouts, state=state):
                    # A new instance per run: fresh keys and masks, as in real use.
                    res = run_protocol(values, modulus_bits=bits, threshold=threshold, neighbors=neighbors,
                                       dropouts=dropouts, seed=1, instance=state["instance"], overwrite=True)
                    state["instance"] += 1
                    state["bytes"] = res.keystream_bytes

                secs = time_median(once, repeats=reps, device=device, warmup=0 if big else 1)
                nbytes = state["bytes"]
                bound_case = f"keystream bound {graph} {tag} {dtag}"
                bound = time_median(lambda: keystream_seconds(nbytes), repeats=max(reps, 3), device="cpu")
                rows.append({"case": bound_case, "seconds": bound, "baseline": bound_case, "n": n, "d": d,
                             "note": f"{PRG_CIPHER}, {nbytes / 1e9:.2f} GB ({nbytes / bound / 1e9:.2f} GB/s)"})
                case = f"masked {graph} protocol {tag} {dtag}"
                protocol_case[graph] = case
                if graph == "complete":
                    rows.append({"case": case, "seconds": secs, "baseline": bound_case, "n": n, "d": d,
                                 "goal": "<= 2x its keystream bound"})
                else:
                    full = protocol_case["complete"]
                    rows.append({"case": case, "seconds": secs, "baseline": full, "n": n, "d": d,
                                 "goal": "<= 0.2 (>= 5x faster than complete)",
                                 "note": f"{secs / bound:.2f}x its keystream bound"})
            for graph, neighbors in (("complete", None), (f"k-regular k={k}", k)):
                oracle = MaskedOracle(threshold=threshold, neighbors=neighbors, dropout_rate=0.1 if drop else 0.0,
                                      bits=bits, clip=1.0, seed=1)
                secs = time_median(lambda: oracle.average(x, w), repeats=reps, device=device,
                                   warmup=0 if big else 1)
                rows.append({"case": f"masked {graph} oracle {tag} {dtag}", "seconds": secs, "baseline": quant,
                             "n": n, "d": d, "note": "encode + protocol + decode"})
        del x, values
    return add_ratios(rows)
