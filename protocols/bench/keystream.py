"""``fedaudit bench keystream``: where the masks and the rounding bits come from, and on how many cores.

Measured side by side in one run (GB/s of keystream, seconds, ratios):

- one core: OpenSSL's ChaCha20 (the masks' PRG and the rounding bits) and AES-128-CTR
  through ``cryptography``, against :func:`secagg.chacha20_keystream_batch` (the torch
  ChaCha20, bit for bit the same stream) on ``device``: eager torch ops on a CPU, the
  compiled or Triton kernel on CUDA;
- all cores: :func:`secagg.expand_masks` (a batch of m keystreams expanded into int64-sized
  words) on 1 thread, on every core with threads (``cryptography`` releases the GIL), and on
  every core with processes (shared memory, forkserver);
- the data plane's form, ChaCha20 against AES-128-CTR: :func:`secagg.accumulate_masks` adding
  each of m keystreams to one row and subtracting it from another (a pairwise mask, uint32
  words) on 1 thread and on every core. ChaCha20 is the PRG (the same masks on an
  accelerator); the AES rows say what that choice costs on this CPU.

The baseline of each group is its one-core / one-thread ChaCha20 row; ``ratio`` = seconds / the
baseline's (below 1: faster). Goal (issue 20): the torch ChaCha20 >= 200 GB/s on an H200 (not
measurable on a CPU: the row says so).
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch

from secagg import accumulate_masks, chacha20_keystream_batch, expand_masks
from secagg.chacha20 import backend
from secagg.keystream import available_cores, keystream_gbps, process_expand, shutdown_process_pools

from .timing import add_ratios, time_median


def _gbps(nbytes: int, secs: float) -> str:
    return f"{nbytes / secs / 1e9:.2f} GB/s"


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
        dim: Optional[int] = None) -> List[dict]:
    """Rows {case, seconds, baseline, ratio, n, d, note}: m = ``clients`` keystreams (default 64)
    of ``dim`` 64-bit words (default 2^18; quick 2^15)."""
    m = 64 if clients is None else clients
    words = (1 << 15 if quick else 1 << 18) if dim is None else dim
    nbytes = m * words * 8
    reps = 2 if quick else 3
    cores = available_cores()
    dev = torch.device(device)
    rows: List[dict] = []
    tag = f"m={m} words={words}"

    # one core: OpenSSL against the torch ChaCha20 on the device
    base = f"openssl chacha20 1 core {tag}"
    secs = {}
    for prg in ("chacha20", "aes-128-ctr"):
        gb = max(keystream_gbps(nbytes, prg) for _ in range(reps))
        secs[prg] = nbytes / gb / 1e9
    rows.append({"case": base, "seconds": secs["chacha20"], "baseline": base, "n": m, "d": words,
                 "note": _gbps(nbytes, secs["chacha20"]) + " (cryptography, one stream)"})
    rows.append({"case": f"openssl aes-128-ctr 1 core {tag}", "seconds": secs["aes-128-ctr"], "baseline": base,
                 "n": m, "d": words, "note": _gbps(nbytes, secs["aes-128-ctr"]) + " (the masks' PRG until issue 20)"})
    keys = [os.urandom(32) for _ in range(m)]
    nonces = [bytes(12)] * m
    impl = backend(dev)
    # the eager torch function on a CPU is slow: time a slice of the work and scale
    t_words = words if dev.type == "cuda" else max(64, words // 64)
    t_bytes = m * t_words * 8
    fn = lambda: chacha20_keystream_batch(keys, nonces, t_words * 8, device=dev, dtype=torch.int64)  # noqa: E731
    t = time_median(fn, repeats=reps, device=device, warmup=1) * (nbytes / t_bytes)
    case = f"torch chacha20 ({impl}) {dev.type} {tag}"
    row = {"case": case, "seconds": t, "baseline": base, "n": m, "d": words,
           "note": _gbps(nbytes, t) + ("" if t_bytes == nbytes else f" (timed on {t_bytes / 1e6:.1f} MB)")
           + "; bit for bit OpenSSL's stream"}
    if dev.type == "cuda":
        row["goal"] = ">= 200 GB/s"
        row["goal_met"] = nbytes / t / 1e9 >= 200
        row["goal_value"] = nbytes / t / 1e9
    else:
        row["note"] += "; the 200 GB/s goal is for an H200"
    rows.append(row)

    # all cores: expanding m masks, threads against processes
    one = f"expand_masks 1 thread {tag}"
    cases = {one: lambda: expand_masks(keys, words, 64, workers=1)}
    if cores > 1:
        cases[f"expand_masks {cores} threads {tag}"] = lambda: expand_masks(keys, words, 64, workers=cores)
        process_expand(keys[:2], 1024, 64, workers=cores)           # start the pool outside the timing
        cases[f"expand_masks {cores} processes {tag}"] = lambda: process_expand(keys, words, 64, workers=cores)
    try:
        for case, f in cases.items():
            s = time_median(f, repeats=reps, device="cpu", warmup=1)
            rows.append({"case": case, "seconds": s, "baseline": one, "n": m, "d": words,
                         "note": _gbps(nbytes, s) + f"; ChaCha20 into uint64 words; {cores} cores, load "
                                 f"{os.getloadavg()[0]:.1f}"})
    finally:
        shutdown_process_pools()

    # the data plane's form: each keystream added to one row and subtracted from another
    R = 16
    out = np.zeros((R, 2 * words), dtype=np.uint32)
    dp_bytes = m * 2 * words * 4
    base = f"accumulate_masks chacha20 1 thread {tag}"
    for prg in ("chacha20", "aes-128-ctr"):
        ks = keys if prg == "chacha20" else [k[:16] for k in keys]
        jobs = [(k, [(i % R, 1), ((i + 1) % R, -1)]) for i, k in enumerate(ks)]
        for w in dict.fromkeys((1, cores)):
            case = f"accumulate_masks {prg} {w} thread{'s' if w > 1 else ''} {tag}"
            s = time_median(lambda: accumulate_masks(out, jobs, bits=32, prg=prg, workers=w), repeats=reps,
                            device="cpu", warmup=1)
            rows.append({"case": case, "seconds": s, "baseline": base, "n": m, "d": 2 * words,
                         "note": _gbps(dp_bytes, s) + f" of keystream, added and subtracted (uint32 words); load "
                                 f"{os.getloadavg()[0]:.1f}"})
    return add_ratios(rows)

