"""``fedaudit bench run``: ``fedaudit run`` with its defaults, end to end, in-process.

The default configuration (:class:`protocols.simulation.RunConfig`: RFA under the
masked SecAgg protocol, 64-bit ring, 20 clients of the embedded digits, 30 rounds)
built with :func:`protocols.runner.make_simulation` and run to the end, data
loading and model building included (Python start-up and imports are not). Goal:
under 60 s on 2 CPU cores. For scale, the same run with the plaintext oracle in
place of the masked protocol (``--secagg plaintext``) is the baseline, so the ratio
is the price of real secure aggregation. ``--quick`` runs 3 rounds (no goal).
One run of each after a one-round warm-up (lazy imports, data loading): the full run is
long enough that the noise is small next to it.

Threads (CPU): the same run (10 rounds) with 1 torch thread, one per core (torch's default)
and the automatic count of ``RunConfig.threads=None`` (the idle cores:
:func:`protocols.simulation.base.apply_threads`), first as the machine is, then with one
busy process per core competing, the way a shared box is: wall and CPU seconds side by side.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import List

import torch

from protocols.runner import make_simulation
from protocols.simulation import RunConfig
from protocols.simulation.base import STARTUP_THREADS

from .timing import add_ratios, synchronize

GOAL_SECONDS = 60.0


def _timed(cfg: RunConfig, device: str):
    t0 = time.perf_counter()
    sim = make_simulation(cfg)
    sim.run()
    synchronize(device)
    return time.perf_counter() - t0, sim


def _burn(stop) -> None:        # a competing job: one busy core
    while not stop.is_set():
        pass


def _thread_rows(cfg: RunConfig, quick: bool, device: str) -> List[dict]:
    """The same run with 1 thread, with one per core (torch's default) and with the automatic
    count (``RunConfig.threads=None``: the idle cores), on the machine as it is and with one
    busy process per core competing (a shared box): CPU seconds beside wall seconds show
    OpenMP spinning against the other jobs."""
    import multiprocessing as mp
    from secagg.keystream import available_cores
    cores = available_cores()
    short = dataclasses.replace(cfg, rounds=3 if quick else 10)
    before = torch.get_num_threads()
    rows: List[dict] = []
    try:
        for load in (False, True):
            procs, stop = [], None
            if load:
                ctx = mp.get_context("spawn")
                stop = ctx.Event()
                procs = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(cores)]
                for p in procs:
                    p.start()
                time.sleep(1.0)
            try:
                tag = f"{short.rounds} rounds" + (f", {cores} busy competitors" if load else "")
                base = f"fedaudit run threads=1 ({tag})"
                for threads in dict.fromkeys((1, cores, None)):
                    # auto reads the load, even where the bench itself runs under OMP_NUM_THREADS,
                    # from torch's start-up count (a count set by the program is otherwise kept)
                    env = os.environ.pop("OMP_NUM_THREADS", None) if threads is None else None
                    if threads is None:
                        torch.set_num_threads(STARTUP_THREADS)
                    try:
                        c0 = os.times()
                        secs, _ = _timed(dataclasses.replace(short, threads=threads), device)
                        c1 = os.times()
                    finally:
                        if env is not None:
                            os.environ["OMP_NUM_THREADS"] = env
                    cpu = (c1.user - c0.user) + (c1.system - c0.system)
                    name = f"fedaudit run threads={threads if threads else 'auto'} ({tag})"
                    rows.append({"case": name, "seconds": secs, "baseline": base, "n": short.clients, "d": None,
                                 "note": f"{cpu:.1f} s CPU; torch threads {torch.get_num_threads()}; load "
                                         f"{os.getloadavg()[0]:.1f}"})
            finally:
                if stop is not None:
                    stop.set()
                    for p in procs:
                        p.join(5)
    finally:
        torch.set_num_threads(before)
    return rows


def run(*, quick: bool = False, device: str = "cpu") -> List[dict]:
    before = torch.get_num_threads()
    try:
        return _run(quick, device)
    finally:
        torch.set_num_threads(before)     # RunConfig.threads=None set the idle cores' count


def _run(quick: bool, device: str) -> List[dict]:
    cfg = RunConfig(device=device)
    if quick:
        cfg = dataclasses.replace(cfg, rounds=3)
    what = f"rule={cfg.rule} secagg={cfg.secagg} bits={cfg.bits} clients={cfg.clients} rounds={cfg.rounds}"
    base_cfg = dataclasses.replace(cfg, secagg="plaintext")
    _timed(dataclasses.replace(cfg, rounds=1), device)   # warm-up: lazy imports, data, first kernels
    base_secs, _ = _timed(base_cfg, device)
    secs, sim = _timed(cfg, device)
    acc = sim.history[-1].test_accuracy
    base = f"fedaudit run --secagg plaintext ({cfg.rounds} rounds)"
    case = "fedaudit run defaults" + (f" ({cfg.rounds} rounds, quick)" if quick else "")
    rows = [
        {"case": base, "seconds": base_secs, "baseline": base, "n": cfg.clients, "d": None,
         "note": "same run, ideal (plaintext) oracle"},
        {"case": case, "seconds": secs, "baseline": base, "n": cfg.clients, "d": None,
         "note": f"{what}; final test accuracy {acc:.3f}"},
    ]
    if not quick:
        rows[1]["goal"] = f"< {GOAL_SECONDS:.0f} s end to end"
        rows[1]["goal_met"] = secs < GOAL_SECONDS
        rows[1]["goal_value"] = secs
    if torch.device(device).type == "cpu":
        rows += _thread_rows(cfg, quick, device)
    add_ratios(rows)
    model = getattr(sim, "model", None)   # d = the model's parameter count
    d = sum(p.numel() for p in model.parameters()) if model is not None else None
    for r in rows:
        r["d"] = d
    return rows
