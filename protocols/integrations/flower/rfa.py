"""RFA over Flower's SecAgg+: :class:`RFASecAggPlusWorkflow`, :func:`run_rfa` and its
:class:`FlowerRFAResult`.

:class:`RFASecAggPlusWorkflow` runs smoothed Weiszfeld (Pillutla, Kakade, Harchaoui, RFA,
Algorithm 2) in which every oracle call is one run of Flower's SecAgg+
(``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the clients). The server
broadcasts v^(r); each client computes beta_i = alpha_i / max(nu, ||v^(r) - w_i||) from
its own update (client side, :class:`~protocols.integrations.flower.client.FedauditNumPyClient`)
and submits the vector [u_i w_i, u_i] with u_i = (N_i / N_max) nu / max(nu, ||v^(r) - w_i||),
i.e. beta_i times a public constant (the ``"nu"`` encoding of :mod:`rfa.weiszfeld`, see
:func:`~protocols.integrations.flower.common.rfa_client_weight`); SecAgg+ returns the mean
of those vectors over the survivors and the server divides. ``num_examples`` is sent as 1
with ``max_weight`` 1, so Flower's own weight factor is exactly 1 and the sample counts
never leave the clients. docs/flower.md explains why this uses Flower's SecAgg+ rather than
fedaudit's masked protocol, and what SecAgg+ does not protect.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp.grid import Grid

from protocols.clients import evaluate
from protocols.integrations.flower.client import make_client_app
from protocols.integrations.flower.common import (STAGE_KEY, FlowerSecAgg, check_rfa_config, shapes_of, to_flat,
                                                  unflatten)
from protocols.integrations.flower.engine import ENGINES, run_server
from protocols.models import flat_params, set_flat_params
from protocols.simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["RFASecAggPlusWorkflow", "FlowerRFAResult", "run_rfa"]


class _CallStrategy(Strategy):
    """The legacy Strategy SecAggPlusWorkflow drives for one oracle call: it sends the
    broadcast and keeps the unmasked average; it never moves the global model itself."""

    def __init__(self, owner: "RFASecAggPlusWorkflow"):
        super().__init__()
        self.owner = owner
        self.broadcast: List[np.ndarray] = []
        self.config: Dict[str, Any] = {}
        self.result: Optional[np.ndarray] = None
        self.survivors = 0

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters(unflatten(self.owner.global_flat.numpy(), self.owner.shapes))

    def configure_fit(self, server_round, parameters, client_manager):
        n = self.owner.n_clients
        client_manager.wait_for(n, timeout=60)
        clients = client_manager.sample(num_clients=n, min_num_clients=n)
        ins = FitIns(ndarrays_to_parameters(self.broadcast), dict(self.config))
        return [(c, ins) for c in clients]

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            self.owner.failures += len(failures)
        self.result = to_flat(parameters_to_ndarrays(results[0][1].parameters)) if results else None
        self.survivors = len(results)
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return self.owner.evaluate(server_round, parameters)


class RFASecAggPlusWorkflow:
    """RFA (Pillutla, Kakade, Harchaoui, Algorithm 2) with every oracle call one Flower SecAgg+.

    The fit workflow of a ``DefaultWorkflow``: per round, call ``v0`` sends the global
    model (clients train, keep their update w_i and submit [u_i w_i, u_i] with
    u_i = N_i / N_max: the alpha-weighted mean v^(0)); each of the ``max_calls`` Weiszfeld
    calls sends v^(r) and the clients submit [u_i w_i, u_i] with u_i from
    :func:`rfa_client_weight`. Each call is one full SecAggPlusWorkflow run (setup with
    fresh keys, key sharing, masked input, unmasking); the server learns the mean of the
    survivors' vectors, hence v^(r+1) = sum u_i w_i / sum u_i and the scaled total weight,
    nothing per client. The global model moves by ``server_lr * v^(R)``.

    Parameters
    ----------
    cfg : RunConfig
        The run (rule ``rfa`` with ``rule_args['weight_bound'] = 'nu'``; see
        :func:`check_rfa_config`). nu and max_calls come from ``cfg.rule_args``.
    secagg : FlowerSecAgg
        SecAgg+ parameters; ``clipping_range`` defaults to ``cfg.clip``.
    max_examples : int
        Public bound N_max on any client's sample count (Flower's ``max_weight`` plays the
        same role); clients with more refuse.
    """

    def __init__(self, cfg: RunConfig, secagg: Optional[FlowerSecAgg] = None, *, max_examples: int = 1000,
                 dataset=None):
        check_rfa_config(cfg)
        self.cfg = cfg
        self.secagg = secagg if secagg is not None else FlowerSecAgg(clipping_range=cfg.clip)
        if not (isinstance(max_examples, (int, float)) and max_examples > 0):
            raise ValueError(f"max_examples={max_examples!r} must be a number > 0")
        self.max_examples = float(max_examples)
        self.nu = float(cfg.rule_args.get("nu", 1e-6))
        self.max_calls = int(cfg.rule_args.get("max_calls", 3))
        self.n_clients = cfg.clients
        self.sim = Simulation(cfg, dataset=dataset)   # server side: initial model and test data only
        self.shapes = shapes_of(self.sim.model)
        self.global_flat = flat_params(self.sim.model).cpu().clone()
        self.workflow = self.secagg.workflow(cfg.clients)
        self.strategy = _CallStrategy(self)
        self.history: List[Dict[str, Any]] = []
        self.global_history: List[Tensor] = [self.global_flat.clone()]
        self.failures = 0
        self.stage_seconds: Dict[str, float] = {}

    def evaluate(self, server_round, parameters):
        model = self.sim.model
        with torch.no_grad():
            set_flat_params(model, torch.as_tensor(to_flat(parameters_to_ndarrays(parameters)),
                                                   dtype=torch.float32, device=self.sim.device))
        acc, loss = evaluate(model, self.sim.data.x_test, self.sim.data.y_test)
        return loss, {"accuracy": acc}

    def _call(self, grid: Grid, context: LegacyContext, stage: str, broadcast: Tensor, rnd: int) -> Tensor:
        st = self.strategy
        st.broadcast = [broadcast.detach().cpu().numpy().astype(np.float32)]
        st.config = {STAGE_KEY: stage, "fedaudit-round": rnd, "fedaudit-clip": float(self.secagg.clipping_range),
                     "fedaudit-max-examples": self.max_examples, "fedaudit-nu": self.nu}
        st.result = None
        self.workflow(grid, context)
        if st.result is None:
            raise RuntimeError(f"round {rnd}, call {stage}: Flower's secure aggregation halted "
                               "(too few clients answered; see Flower's log)")
        avg = torch.as_tensor(st.result, dtype=torch.float64)
        d = avg.shape[0] - 1
        if d != self.global_flat.shape[0]:
            raise RuntimeError(f"secure aggregation returned {d + 1} values, expected {self.global_flat.shape[0] + 1}")
        total_u = float(avg[d]) * st.survivors       # the mean times the survivors: sum u_i
        if not total_u > 0:
            raise RuntimeError(f"round {rnd}, call {stage}: the survivors' total weight is {total_u!r}; "
                               "the average is undefined")
        v = (avg[:d] / avg[d]).to(torch.float32)
        res = self.secagg.resolution(self.n_clients)
        # |numerator, denominator errors| <= n * res (stochastic rounding: < 1 quantum each client)
        err = st.survivors * res * (1.0 + float(v.abs().max())) / max(total_u - st.survivors * res, 1e-300)
        self._calls.append({"stage": stage, "survivors": st.survivors, "total_weight": total_u,
                            "error_bound": err, "v": v})
        return v

    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        """One round (the ``fit_workflow`` of a ``DefaultWorkflow``)."""
        rnd = len(self.history)
        context.strategy = self.strategy
        self._calls: List[Dict[str, Any]] = []
        t0 = time.perf_counter()
        v = self._call(grid, context, "rfa-v0", self.global_flat, rnd)
        for _ in range(self.max_calls):
            v = self._call(grid, context, "rfa-w", v, rnd)
        self.global_flat = self.global_flat + self.cfg.server_lr * v
        self.global_history.append(self.global_flat.clone())
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(unflatten(self.global_flat.numpy(), self.shapes)), True)
        self.history.append({"round": rnd, "calls": self._calls, "seconds": time.perf_counter() - t0,
                             "aggregate_error_bound": self._calls[-1]["error_bound"]})


@dataclass
class FlowerRFAResult:
    """Outcome of :func:`run_rfa`: the final global model and the per-round record."""

    global_params: Tensor
    global_history: List[Tensor]
    history: List[Dict[str, Any]]
    test_accuracy: float
    test_loss: float
    seconds: float
    engine: str
    extra: Dict[str, Any] = field(default_factory=dict)


def run_rfa(cfg: RunConfig, *, secagg: Optional[FlowerSecAgg] = None, max_examples: int = 1000,
            engine: str = "simulation", backend_config: Optional[Dict[str, Any]] = None,
            verbose: bool = False) -> FlowerRFAResult:
    """Train ``cfg`` (rule rfa) with Flower: RFA's Weiszfeld calls over Flower's SecAgg+.

    ``engine="simulation"``: Flower's simulation engine (``flwr.simulation.run_simulation``,
    Ray; ``backend_config`` is passed through, default one CPU per client).
    ``engine="inprocess"``: the same ServerApp workflow and ClientApp on :class:`InProcessGrid`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; choose 'simulation' (Flower + Ray) or 'inprocess'")
    wf = RFASecAggPlusWorkflow(cfg, secagg, max_examples=max_examples)

    def server_fn(grid, context):
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds), strategy=wf.strategy)
        DefaultWorkflow(fit_workflow=wf, evaluate_workflow=lambda g, c: None)(grid, legacy)
        wf.flower_history = legacy.history

    t0 = time.perf_counter()
    run_server(server_fn, make_client_app(cfg, secure=True), cfg, engine, backend_config, verbose)
    secs = time.perf_counter() - t0
    if len(wf.history) != cfg.rounds:
        raise RuntimeError(f"the Flower run completed {len(wf.history)} of {cfg.rounds} rounds; see Flower's log")
    set_flat_params(wf.sim.model, wf.global_flat.to(wf.sim.device))
    acc, loss = evaluate(wf.sim.model, wf.sim.data.x_test, wf.sim.data.y_test)
    return FlowerRFAResult(global_params=wf.global_flat, global_history=wf.global_history, history=wf.history,
                           test_accuracy=acc, test_loss=loss, seconds=secs, engine=engine,
                           extra={"quantization_range": wf.secagg.q(cfg.clients),
                                  "resolution": wf.secagg.resolution(cfg.clients), "failures": wf.failures})
