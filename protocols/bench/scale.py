"""``fedaudit bench scale``: a run at scale, with its wall time and its peak memory.

``fedaudit run --dataset purchase --clients 1000 --partition iid --rounds 2 --rule fedavg``
(the fc-purchase model of Nasr et al. 2019, d = 1.32M) with ``--secagg off``, ``quantized``
and ``masked`` on the secure SecAgg+ graph (``--neighbors auto``: Bell et al. 2020's bound
for 10% corrupt and 10% dropped clients, k = 116 and t_s = 44 at n = 1000), each in a
fresh process so that each peak RSS (``ru_maxrss``) is its own; with ``--device cuda``
the peak GPU memory too (``torch.cuda.max_memory_allocated``). Goal (issue 20): every case
completes with peak RSS under 10 GB on the 2-core CPU box (24 GB, where the runs were
killed by the OOM killer before the clients were trained in groups, the masked oracle
encoded and masked in groups of clients, and the transcript stopped copying the revealed
updates of a run that no audit reads).

A case whose estimated memory passes 60% of the free memory is not started (the row says
why and with what estimate); each case runs with its private data capped (RLIMIT_DATA, 80%
of the free memory at the start, at most 16 GB: an allocation past it fails in the case)
and a watchdog stops a case whose RSS passes that cap, so the benchmark never drives a
shared machine into the OOM killer. ``--quick``: 20 clients, 1 round. ``--clients N`` sets n.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import List, Optional

from protocols.clients import free_memory_bytes

from .timing import add_ratios

GOAL_GB = 10.0
_D = 1_320_240          # fc-purchase's parameter count (600-1024-512-256-128-100)

_CHILD = r"""
import json, resource, sys, time, dataclasses
import torch
from protocols.runner import make_simulation
from protocols.simulation import RunConfig
kw = json.loads(sys.argv[1])
t0 = time.perf_counter()
sim = make_simulation(RunConfig(**kw))
sim.run()
if kw.get("device", "cpu").startswith("cuda"):
    torch.cuda.synchronize()
out = {"seconds": time.perf_counter() - t0, "accuracy": sim.history[-1].test_accuracy,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "threads": torch.get_num_threads()}
if kw.get("device", "cpu").startswith("cuda"):
    out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
print("RESULT " + json.dumps(out))
"""


def estimate_gb(secagg: str, n: int, d: int) -> float:
    """What a case holds at its peak (GB): the float32 updates [n, d], the data and the model,
    a group of clients in training, and the oracle: the quantized oracle's blocks are small;
    MaskedOracle one group of int64 encodings (``secagg.masked.GROUP_BYTES``) and its threads'
    chunks."""
    from secagg.masked import GROUP_BYTES
    base = n * d * 4 + 2e9
    if secagg == "masked":
        base += min(GROUP_BYTES, n * (d + 1) * 8) + 0.2e9
    return base / 1e9


def _rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _limit_data(cap_mb: float):
    """In the child: cap its private data (RLIMIT_DATA, what malloc and torch's allocations take),
    so that a case over the cap fails with an allocation error instead of waking the OOM killer."""
    def apply():
        import resource
        cap = int(cap_mb * 2 ** 20)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    return apply


def _run_case(kw: dict, cap_mb: float, timeout: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(kw)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit_data(cap_mb) if sys.platform.startswith("linux") else None)
    t0, seen = time.perf_counter(), 0.0
    while proc.poll() is None:
        rss = _rss_mb(proc.pid) or 0.0
        seen = max(seen, rss)
        if rss > cap_mb or time.perf_counter() - t0 > timeout:
            proc.kill()
            proc.wait()
            why = f"RSS {rss:.0f} MB over the cap {cap_mb:.0f} MB" if rss > cap_mb else f"over {timeout:.0f} s"
            return {"error": f"stopped by the bench: {why}", "peak_rss_mb": seen,
                    "seconds": time.perf_counter() - t0}
        time.sleep(0.2)
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (err.strip().splitlines() or ["no output"])[-1][:200]
    return {"error": f"exit {proc.returncode}: {tail}", "peak_rss_mb": seen, "seconds": time.perf_counter() - t0}


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None) -> List[dict]:
    from secagg.graph import secagg_plus_parameters
    n = clients if clients is not None else (20 if quick else 1000)
    rounds = 1 if quick else 2
    free = free_memory_bytes("cpu")
    cap_mb = min(16e3, 0.8 * free / 2 ** 20)
    rows: List[dict] = []
    base = f"secagg off n={n}"
    common = dict(dataset="purchase", clients=n, partition="iid", rounds=rounds, rule="fedavg", model="fc-purchase",
                  device=device)
    for secagg in ("off", "quantized", "masked"):
        kw = dict(common, secagg=secagg)
        note = ""
        if secagg == "masked":
            kw["neighbors"] = "auto"
            sp = secagg_plus_parameters(n, 0.1, 0.1, threshold=2 * n // 3 + 1)
            note = (f"SecAgg+ auto ({sp.graph}, k={sp.k:g}, t_s={sp.share_threshold}); " if sp.graph == "erdos-renyi"
                    else "SecAgg+ auto (the complete graph at this n); ")
        case = f"secagg {secagg} n={n}"
        need = estimate_gb(secagg, n, _D)
        row = {"case": case, "baseline": base, "n": n, "d": _D, "seconds": float("nan")}
        if need * 1e9 > 0.6 * free:
            row["note"] = note + f"not started: needs ~{need:.1f} GB (estimate), {free / 1e9:.1f} GB free"
            rows.append(row)
            continue
        res = _run_case(kw, cap_mb, timeout=3600)
        rss_gb = res.get("peak_rss_mb", float("nan")) / 1024
        row["seconds"] = res.get("seconds", float("nan")) if "error" not in res else float("nan")
        row["peak_rss_gb"] = rss_gb
        row["goal"] = f"peak RSS < {GOAL_GB:.0f} GB"
        row["goal_met"] = "error" not in res and rss_gb < GOAL_GB
        row["goal_value"] = rss_gb
        if "error" in res:
            row["note"] = note + f"{res['error']}; peak RSS {rss_gb:.1f} GB"
        else:
            row["note"] = (note + f"peak RSS {rss_gb:.2f} GB"
                           + (f", peak GPU {res['peak_gpu_mb'] / 1024:.2f} GB" if "peak_gpu_mb" in res else "")
                           + f"; {rounds} rounds, test accuracy {res['accuracy']:.3f}; torch threads {res['threads']}")
        rows.append(row)
    return add_ratios(rows)
