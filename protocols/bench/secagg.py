"""``fedaudit bench secagg``: the masked protocol (SecAgg / SecAgg+) against its bounds.

Measured side by side in one run, n = 100 clients (``clients=``), 32-bit modulus:

- ``plaintext`` and ``quantized`` secure averages (the oracle baselines);
- ``keystream bound``: the time this machine's PRG cipher (AES-128-CTR from
  ``cryptography``, one key, 1 MiB calls) takes to produce exactly as many
  keystream bytes as the protocol case next to it consumed (clients' masks plus
  the server's regenerated masks);
- ``masked ... protocol``: :func:`secagg.run_protocol` on encoded inputs (all
  rounds, key agreement, Shamir sharing, AES-GCM, masking and unmasking; masked
  inputs written over the inputs, as :class:`secagg.MaskedOracle` does);
- ``masked ... protocol active``: the same with ``active_security=True`` (Ed25519
  signatures on the advertised keys under the simulated PKI, the ConsistencyCheck
  round, every client's checks; Bonawitz et al. 2017, Fig. 4, red parts), with the
  honest-but-curious protocol at the same n, d, graph and dropouts as baseline: its
  ratio is the cost of active security;
- ``masked ... oracle``: :class:`secagg.MaskedOracle` end to end (encoding included).

Graphs: complete (SecAgg, Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020) with
``neighbors="auto"``: the Erdős–Rényi graph whose expected degree k and share threshold
t_s meet the paper's bound for 10% corrupt and 10% dropped clients (k = 45, t_s = 11 for
n = 100; the rows carry k, t_s and the bound); no dropouts and
10% of the clients dropping before sending their masked input (the server must
then recover their pairwise masks). Goals (issue 4): masked complete protocol
<= 2x its keystream bound; SecAgg+ >= 5x faster than complete.

``clients=N`` / ``dim=D`` (``fedaudit bench secagg --clients 1000 --dim 1e5``) run
one size: the SecAgg+ protocol (and the complete graph only for N <= 200, whose
cost grows as N^2 d), honest-but-curious and active, without the float oracle rows;
the masked inputs overwrite the inputs, so memory beyond the int64 [N, D] inputs is
O(N * chunk). Every protocol row notes the process's peak RSS so far
(``resource.getrusage``; a high-water mark, never lowered).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch

from secagg import MaskedOracle, PlaintextOracle, QuantizedOracle, run_protocol
from secagg.crypto import PRG_CIPHER, keystream_seconds
from secagg.graph import secagg_plus_parameters

from .timing import add_ratios, time_median


def _peak_rss_mb() -> Optional[float]:
    try:
        import resource
    except ImportError:   # not on this platform
        return None
    import sys
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / 1024 if sys.platform == "darwin" else kb / 1024   # bytes on macOS, KiB on Linux


def _size(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer)):
        raise TypeError(f"{name}={value!r} must be a number, e.g. 1000 or 1e5")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise ValueError(f"{name}={value!r} must be a whole number")
    if int(value) < low:
        raise ValueError(f"{name}={int(value)} must be >= {low}")
    return int(value)


def run(*, quick: bool = False, device: str = "cpu", clients=None, dim=None) -> List[dict]:
    """Rows {case, seconds, baseline, ratio, n, d, goal, note} for SecAgg (Bonawitz et al.
    2017), SecAgg+ (Bell et al. 2020) and their actively secure variant (see the module docstring)."""
    custom = clients is not None or dim is not None
    n = _size("clients", clients, 3) if clients is not None else 100
    bits = 32
    threshold = 2 * n // 3 + 1
    sp = secagg_plus_parameters(n, 0.1, 0.1, threshold=threshold)   # what neighbors="auto" uses
    k = sp.k
    if dim is not None:
        dims = [_size("dim", dim, 1)]
    else:
        dims = [10_000] if quick else [100_000, 1_000_000]
    plus = f"SecAgg+ k={k} t_s={sp.share_threshold}"
    graphs_run = [(plus, "auto")] if sp.graph == "erdos-renyi" else []
    if not custom or n <= 200 or not graphs_run:
        graphs_run = [("complete", None)] + graphs_run
    g = torch.Generator().manual_seed(0)
    drop_rng = np.random.default_rng(0)
    dropped = sorted(drop_rng.choice(n, size=n // 10, replace=False).tolist())
    rows: List[dict] = []
    instance = [0]
    for d in dims:
        big = n * d >= 100_000_000
        reps = 2 if quick else (1 if big else 3)
        warm = 0 if big else 1
        tag = f"n={n} d={d}"
        if not custom:
            x = (torch.rand(n, d, generator=g) * 2 - 1).to(device)
            w = torch.rand(n, generator=g).add_(0.1).to(device)
            plain, quant = f"plaintext average {tag}", f"quantized oracle {tag}"
            rows.append({"case": plain, "baseline": plain, "n": n, "d": d,
                         "seconds": time_median(lambda: PlaintextOracle().average(x, w), repeats=reps,
                                                device=device)})
            rows.append({"case": quant, "baseline": plain, "n": n, "d": d,
                         "seconds": time_median(lambda: QuantizedOracle(bits=bits, clip=1.0).average(x, w),
                                                repeats=reps, device=device, warmup=warm)})
        values = torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64).to(device)
        protocol_case: Dict[str, str] = {}
        for drop in (False, True):
            if custom and drop:
                continue
            dtag = "drop=10%" if drop else "drop=0%"
            dropouts = {"masked_input": dropped} if drop else None
            for graph, neighbors in graphs_run:
                for active in (False, True):
                    state = {"bytes": 0}

                    def once(neighbors=neighbors, dropouts=dropouts, state=state, active=active, values=values):
                        # A new instance per run: fresh keys and masks, as in real use.
                        res = run_protocol(values, modulus_bits=bits, threshold=threshold, neighbors=neighbors,
                                           dropouts=dropouts, seed=1, instance=instance[0], overwrite=True,
                                           active_security=active)
                        instance[0] += 1
                        state["bytes"] = res.keystream_bytes

                    secs = time_median(once, repeats=reps, device=device, warmup=warm)
                    rss = _peak_rss_mb()
                    rss_note = f"peak RSS {rss:.0f} MB" if rss is not None else "peak RSS n/a"
                    case = f"masked {graph} protocol {tag} {dtag}"
                    if active:
                        rows.append({"case": case + " active", "seconds": secs, "baseline": case, "n": n, "d": d,
                                     "note": f"cost of active security (signatures + ConsistencyCheck); {rss_note}"})
                        continue
                    nbytes = state["bytes"]
                    bound_case = f"keystream bound {graph} {tag} {dtag}"
                    bound = time_median(lambda: keystream_seconds(nbytes), repeats=max(reps, 3), device="cpu")
                    rows.append({"case": bound_case, "seconds": bound, "baseline": bound_case, "n": n, "d": d,
                                 "note": f"{PRG_CIPHER}, {nbytes / 1e9:.2f} GB ({nbytes / bound / 1e9:.2f} GB/s)"})
                    protocol_case[graph] = case
                    if graph == "complete" or "complete" not in protocol_case:
                        rows.append({"case": case, "seconds": secs, "baseline": bound_case, "n": n, "d": d,
                                     "goal": "<= 2x its keystream bound" if graph == "complete" else "",
                                     "note": rss_note})
                    else:
                        full = protocol_case["complete"]
                        rows.append({"case": case, "seconds": secs, "baseline": full, "n": n, "d": d,
                                     "goal": "<= 0.2 (>= 5x faster than complete)",
                                     "note": f"{secs / bound:.2f}x its keystream bound; {rss_note}"})
            if custom:
                continue
            for graph, neighbors in graphs_run:
                oracle = MaskedOracle(threshold=threshold, neighbors=neighbors, dropout_rate=0.1 if drop else 0.0,
                                      bits=bits, clip=1.0, seed=1)
                secs = time_median(lambda: oracle.average(x, w), repeats=reps, device=device, warmup=warm)
                rows.append({"case": f"masked {graph} oracle {tag} {dtag}", "seconds": secs, "baseline": quant,
                             "n": n, "d": d, "note": f"encode + protocol + decode (active_security="
                                                     f"{oracle.active_security})"})
        if not custom:
            del x
        del values
    bound = (f"Bell et al. bound: security 2^-{sp.security_bits:.1f}, correctness 2^-{sp.correctness_bits:.1f} "
             f"at gamma={sp.corrupt_fraction:g}, delta={sp.dropout_fraction:g}")
    for r in rows:
        if plus in r["case"]:
            r.update(k=k, t_s=sp.share_threshold, bound=bound)
            r["note"] = f"{r['note']}; {bound}" if r.get("note") else bound
    return add_ratios(rows)
