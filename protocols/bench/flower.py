"""Flower's SecAgg+ against fedaudit's masked protocol, same n and d (``--with-flower``).

Measured side by side in one run, one process, no network (both simulate every client
in turn; Flower's messages go through :class:`protocols.integrations.flower.InProcessGrid`, so Ray
and serialization are not timed):

- ``fedaudit masked protocol``: :func:`secagg.run_protocol` on pre-encoded inputs in
  Z_{2^32} with ``neighbors="auto"``: the secure SecAgg+ graph of Bell et al. 2020 (the
  Erdős–Rényi graph whose expected degree k and share threshold t_s meet their bound for
  10% corrupt and 10% dropped clients, :func:`secagg.graph.secagg_plus_parameters`: k = 45,
  t_s = 11 at n = 100); all four rounds: X25519 keys, Shamir shares under AES-GCM,
  ChaCha20 masks on the run's threads, unmasking; the baseline.
- ``fedaudit key rounds (d=1)``: the same protocol on one coordinate: what its
  control plane (keys, shares, reconstruction) costs.
- ``fedaudit MaskedOracle``: the protocol end to end with encoding and decoding of
  float inputs (like for like with Flower, which quantizes inside SecAgg+).
- ``flower SecAgg+ <stage>``: one run of Flower's ``SecAggPlusWorkflow`` with
  ``secaggplus_mod`` clients at the same degree: Flower's graph is a ring of even degree
  (``num_shares`` = degree + 1, odd), so its degree is k rounded down to even (44 at
  n = 100: Flower masks with one neighbour fewer, never more, than our expected 45), and
  its reconstruction threshold is the same t_s; M = 2^32; each of its four stages
  (setup, share keys, collect masked vectors, unmask) and the total. The two graphs differ
  (a ring against a random graph of the same degree); both protocols' work grows with the
  degree, not with the shape.

Ratios are seconds / the baseline row's seconds (Flower's rows against fedaudit's
MaskedOracle, the like-for-like end-to-end call). Flower must be installed
(``pip install -e ".[flower]"``); without it :func:`run` raises ImportError.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from secagg import MaskedOracle, run_protocol
from secagg.graph import secagg_plus_parameters

from .timing import add_ratios, time_median

STAGES = ("setup", "share keys", "collect masked vectors", "unmask")


def _flower_round(n: int, d: int, k: int, share_threshold: int, x: np.ndarray, repeats: int,
                  out: Optional[Dict[str, object]] = None) -> Dict[str, float]:
    """Median seconds of each SecAggPlusWorkflow stage and of the whole run (n clients, rows of
    ``x`` in [-1, 1]); ``out`` receives the last unmasked mean ("result") and Q ("q")."""
    from flwr.app import Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import Strategy
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord

    from protocols.integrations.flower import InProcessGrid

    class _Client(NumPyClient):
        def __init__(self, row):
            self.row = row

        def fit(self, parameters, config):
            return [x[self.row]], 1, {}

    app = ClientApp(client_fn=lambda ctx: _Client(int(ctx.node_config["partition-id"])).to_client(),
                    mods=[secaggplus_mod])
    grid = InProcessGrid(app, n)
    out = {} if out is None else out

    class _Strategy(Strategy):
        def initialize_parameters(self, client_manager):
            return None

        def configure_fit(self, server_round, parameters, client_manager):
            ins = FitIns(ndarrays_to_parameters([]), {})
            return [(c, ins) for c in client_manager.all().values()]

        def aggregate_fit(self, server_round, results, failures):
            out["result"] = parameters_to_ndarrays(results[0][1].parameters)[0]
            out["survivors"] = len(results)
            return None, {}

        def configure_evaluate(self, *a):
            return []

        def aggregate_evaluate(self, *a):
            return None, {}

        def evaluate(self, *a):
            return None

    ctx = LegacyContext(context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                        config=ServerConfig(num_rounds=1), strategy=_Strategy())
    for nid in grid.get_node_ids():
        ctx.client_manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=1))
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(ndarrays_to_parameters([]), True)

    times: Dict[str, List[float]] = {s: [] for s in STAGES + ("total",)}

    class _Timed(SecAggPlusWorkflow):
        pass

    for stage, meth in zip(STAGES, ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage",
                                    "unmask_stage")):
        def timed(self, grid, context, state, _m=getattr(SecAggPlusWorkflow, meth), _s=stage):
            t0 = time.perf_counter()
            ok = _m(self, grid, context, state)
            times[_s].append(time.perf_counter() - t0)
            return ok
        setattr(_Timed, meth, timed)

    q = 1 << min(30, ((1 << 32) // (n + 1)).bit_length() - 1)
    wf = _Timed(num_shares=k + 1, reconstruction_threshold=share_threshold, max_weight=1.0, clipping_range=1.0,
                quantization_range=q, modulus_range=1 << 32)
    out["q"] = q

    def _one(rep):
        t0 = time.perf_counter()
        wf(grid, ctx)
        times["total"].append(time.perf_counter() - t0)
        if out.get("survivors") != n:
            raise RuntimeError(f"Flower's SecAgg+ halted or lost clients ({out.get('survivors')} of {n})")
        if rep == 0:
            err = float(np.abs(out["result"] - x.mean(axis=0)).max())
            if err > 2.0 / q:   # each client's rounding error is below one quantum 2c/Q (c = 1)
                raise RuntimeError(f"Flower's SecAgg+ returned a wrong average (max error {err:.3g})")

    from flwr.supercore.logger import FLOWER_LOGGER
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)   # Flower logs every stage at INFO
    try:
        for rep in range(repeats + 1):        # the first run warms up and is not counted
            _one(rep)
    finally:
        FLOWER_LOGGER.setLevel(level)
    return {s: statistics.median(v[1:]) for s, v in times.items()}


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
        dim: Optional[int] = None) -> List[dict]:
    """Rows {case, seconds, baseline, ratio, n, d, note}: Flower's SecAgg+ round (each stage
    and the total) against fedaudit's masked protocol at the same n, d and graph degree;
    d in {1e5, 1e6} by default (``bench all``), one d with ``dim``."""
    n = clients if clients is not None else (20 if quick else 100)
    dims = [dim] if dim is not None else ([10_000] if quick else [100_000, 1_000_000])
    rows: List[dict] = []
    for d in dims:
        rows += _run_one(n, d, quick, device)
    return rows


def _run_one(n, d, quick: bool, device: str) -> List[dict]:
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"clients={n!r} must be an integer >= 3 (Flower's SecAgg+ needs 3 shares or more)")
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"dim={d!r} must be a positive integer")
    reps = 1 if (quick or d >= 1_000_000) else 3
    threshold = 2 * n // 3 + 1
    sp = secagg_plus_parameters(n, 0.1, 0.1, threshold=threshold)   # what neighbors="auto" uses
    k = round(sp.k) if sp.graph == "erdos-renyi" else n - 1
    share_threshold = sp.share_threshold
    k_flower = min(k - k % 2, n - 1 - (n - 1) % 2)   # Flower's ring graph has an even degree (odd num_shares)
    g = torch.Generator().manual_seed(0)
    x_cpu = (torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1)
    # fedaudit's side runs on ``device``; Flower's is numpy on the CPU
    x, w = x_cpu.to(device), torch.ones(n, dtype=torch.float64, device=device)
    values = torch.randint(0, 2 ** 32, (n, d), generator=g, dtype=torch.int64).to(device)
    tag = f"n={n} d={d} k={k}"
    graph_note = (f"SecAgg+ auto ({sp.graph}, expected degree {k}, t_s={share_threshold}); Flower: ring of "
                  f"degree {k_flower}, {k_flower + 1} shares, threshold {share_threshold}")
    base = f"fedaudit masked protocol {tag}"
    oracle_case = f"fedaudit MaskedOracle {tag}"
    rows: List[dict] = []
    state = {"instance": 0}

    def proto(vals=values, dd=d):
        state["instance"] += 1
        run_protocol(vals[:, :dd].clone(), modulus_bits=32, threshold=threshold, neighbors="auto", seed=1,
                     instance=state["instance"], overwrite=True)

    rows.append({"case": base, "baseline": base, "n": n, "d": d,
                 "seconds": time_median(proto, repeats=reps, device=device),
                 "note": f"SecAgg+ (Bell et al. 2020), X25519 + AES-GCM + ChaCha20 masks, 2^32; {graph_note}"})
    rows.append({"case": f"fedaudit key rounds (d=1) {tag}", "baseline": base, "n": n, "d": 1,
                 "seconds": time_median(lambda: proto(dd=1), repeats=reps, device=device),
                 "note": "control plane only"})
    oracle = MaskedOracle(threshold=threshold, neighbors="auto", bits=32, clip=1.0, seed=1)
    rows.append({"case": oracle_case, "baseline": base, "n": n, "d": d,
                 "seconds": time_median(lambda: oracle.average(x, w), repeats=reps, device=device),
                 "note": "encode + protocol + decode"})
    fl = _flower_round(n, d, k_flower, share_threshold, x_cpu.numpy(), reps)
    for s in STAGES:
        rows.append({"case": f"flower SecAgg+ {s} {tag}", "baseline": oracle_case, "n": n, "d": d,
                     "seconds": fl[s], "note": "SecAggPlusWorkflow stage, in process"})
    rows.append({"case": f"flower SecAgg+ total {tag}", "baseline": oracle_case, "n": n, "d": d,
                 "seconds": fl["total"], "goal": ">= 20",   # issue 13: fedaudit >= 20x faster end to end
                 "note": f"SECP384R1 ECDH + Fernet + MT19937 masks, 2^32; {graph_note}"})
    return add_ratios(rows)
