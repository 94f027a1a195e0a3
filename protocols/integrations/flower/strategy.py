"""fedaudit rules as a Flower ``Strategy``: :class:`FedauditStrategy` (with
:class:`FlowerSecureAverage`, the handle a rule gets under SecAgg+) and :func:`run_strategy`.

In :class:`FedauditStrategy` any fedaudit aggregation rule (registry name + arguments,
:func:`protocols.rules.make_rule`) aggregates the fit results. Without secure aggregation
the server holds every client's model, so the deltas (client model - current global) are
handed to the rule as a revealed :class:`secagg.ClientUpdates`. Under Flower's
``SecAggPlusWorkflow`` the server holds one ``num_examples``-weighted average per round
and nothing else, so only a rule that is exactly one such average (``fedavg``) can run;
every other rule is refused with a clear error (rules with ``secagg_compatible = False``
need individual updates; RFA and the other compatible rules need client-side weights per
call: use :class:`protocols.integrations.flower.RFASecAggPlusWorkflow`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from secagg import ClientUpdates, PlaintextOracle, SecureAggregationViolation, Transcript

from protocols.clients import evaluate
from protocols.integrations.flower.client import make_client_app
from protocols.integrations.flower.common import STAGE_KEY, FlowerSecAgg, shapes_of, to_flat, unflatten
from protocols.integrations.flower.engine import run_server
from protocols.models import flat_params, set_flat_params
from protocols.rules import make_rule
from protocols.simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["FedauditStrategy", "FlowerSecureAverage", "run_strategy"]


class FlowerSecureAverage(ClientUpdates):
    """The handle a rule gets under Flower's SecAgg+: one num_examples-weighted average.

    The server holds only SecAggPlusWorkflow's output, so the one call it can answer is
    ``secure_average(weight=updates.num_samples)`` (or equal weights when every
    num_examples is equal) with no transform; anything else is refused.
    """

    def __init__(self, average: Tensor, n: int, rule: str, num_samples: Tensor, transcript: Transcript,
                 context: dict):
        super().__init__(torch.zeros(n, average.shape[0], dtype=average.dtype), secure=True, rule=rule,
                         num_samples=num_samples, transcript=transcript, context=context)
        self._average = average

    def secure_average(self, weight=None, transform=None, *, broadcast=None, weight_bound=None, label=None,
                       client_data=None):
        equal = bool((self.num_samples == self.num_samples[0]).all())
        ok = transform is None and client_data is None and self.oracle_calls == 0 and \
            (weight is self.num_samples or (weight is None and equal))
        if not ok:
            raise SecureAggregationViolation(
                f"rule {self.rule!r} asked for a secure average with its own client-side weights or transform "
                f"(or a second call), but Flower's SecAggPlusWorkflow computes exactly one "
                f"num_examples-weighted average per round. Use rule 'fedavg' with SecAgg+, "
                "protocols.integrations.flower.RFASecAggPlusWorkflow for RFA, or run without secure aggregation")
        self.oracle_calls += 1
        self.transcript.record_call(label=label or f"{self.rule}:secaggplus", oracle="flower-secaggplus",
                                    output=self._average,
                                    # Flower sends num_examples (and fit metrics) unmasked
                                    revealed={"n_inputs": self.n, "num_examples": self.num_samples.tolist()},
                                    survivors=list(range(self.n)))
        return self._average


class FedauditStrategy(Strategy):
    """A Flower ``Strategy`` that aggregates fit results with a fedaudit rule.

    Each round every available client (at least ``min_clients``) trains from the global
    model; the rule receives the deltas (client model - current global) as a
    :class:`secagg.ClientUpdates` with weights ``num_examples``, and the global model
    moves by ``server_lr`` times the rule's aggregate.

    Without secure aggregation (``secure=False``, Flower's default fit workflow) the
    server holds every client model, so the handle is revealed (recorded in
    ``transcript``) and every registered rule runs, including the ones that need
    individual updates (``secagg_compatible = False``: krum, bulyan, coordinate median,
    trimmed mean, ...).

    With ``secure=True`` (the strategy is driven by ``SecAggPlusWorkflow``) the server
    receives only the num_examples-weighted average of the client models. Rules that
    need individual updates are refused at construction (``ValueError``); a compatible
    rule that needs more than that one average (its own client-side weights, a transform,
    several calls: rfa, rfa-onestep, normclip, fltrust, mwu, ...) is refused when it
    asks (``SecureAggregationViolation``). Use :class:`RFASecAggPlusWorkflow` for RFA.

    Parameters
    ----------
    rule : str
        Registry name (``fedaudit list rules``); ``rule_args`` its parameters.
    initial_parameters : list of ndarrays
        The initial global model (Flower order and shapes).
    min_clients : int
        Clients to wait for and sample each round.
    server_lr : float
        Step on the aggregate (1.0: plain FedAvg).
    oracle : secagg oracle, optional
        For ``secure=False``: the oracle of the rule's secure_average calls (default
        :class:`secagg.PlaintextOracle`; a ``QuantizedOracle`` shows the encoding's effect).
    evaluate_fn : callable(round, ndarrays) -> (loss, metrics) or None, optional
        Centralized evaluation.
    """

    def __init__(self, rule: str, rule_args: Optional[Dict[str, Any]] = None, *,
                 initial_parameters: Sequence[np.ndarray], min_clients: int = 2, server_lr: float = 1.0,
                 secure: bool = False, oracle=None, evaluate_fn: Optional[Callable] = None,
                 fit_config: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.rule = make_rule(rule, **(rule_args or {}))
        self.secure = bool(secure)
        if self.secure and not self.rule.secagg_compatible:
            raise ValueError(f"rule {rule!r} needs the individual client updates (secagg_compatible=False), "
                             "which Flower's SecAggPlusWorkflow hides by design; use a secagg-compatible "
                             "rule (fedavg under SecAgg+, RFASecAggPlusWorkflow for rfa) or run without "
                             "secure aggregation (secure=False, Flower's default fit workflow)")
        if getattr(self.rule, "needs_server_update", False) or getattr(self.rule, "personalized", False):
            raise ValueError(f"rule {rule!r} needs server root data or personal client state, which this "
                             "adapter does not provide; run it in fedaudit's own Simulation")
        if not isinstance(min_clients, int) or min_clients < 1:
            raise ValueError(f"min_clients={min_clients!r} must be a positive integer")
        if not server_lr > 0:
            raise ValueError(f"server_lr={server_lr!r} must be > 0")
        self.shapes = [tuple(np.shape(a)) for a in initial_parameters]
        self.global_flat = torch.as_tensor(to_flat(initial_parameters), dtype=torch.float32)
        self.min_clients, self.server_lr = min_clients, float(server_lr)
        self.oracle = oracle if oracle is not None else PlaintextOracle()
        self.evaluate_fn, self.fit_config = evaluate_fn, dict(fit_config or {})
        self.transcript = Transcript()

    def __repr__(self) -> str:
        return f"FedauditStrategy(rule={self.rule.name!r}, secure={self.secure})"

    def _params(self) -> Parameters:
        return ndarrays_to_parameters(unflatten(self.global_flat.numpy(), self.shapes))

    def initialize_parameters(self, client_manager: ClientManager) -> Optional[Parameters]:
        return self._params()

    def configure_fit(self, server_round, parameters, client_manager):
        clients = client_manager.sample(num_clients=max(self.min_clients, client_manager.num_available()),
                                        min_num_clients=self.min_clients)
        config = {STAGE_KEY: "train", "fedaudit-round": server_round - 1, **self.fit_config}
        return [(c, FitIns(parameters, dict(config))) for c in sorted(clients, key=lambda c: c.cid)]

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            raise ValueError(f"round {server_round}: no fit results ({len(failures)} failures); "
                             "nothing to aggregate")
        self.transcript.round = server_round - 1
        counts = torch.tensor([float(r.num_examples) for _, r in results])
        context = {"round": server_round - 1, "global_params": self.global_flat}
        if self.secure:
            avg = torch.as_tensor(to_flat(parameters_to_ndarrays(results[0][1].parameters)), dtype=torch.float32)
            handle = FlowerSecureAverage(avg - self.global_flat, len(results), self.rule.name, counts,
                                         self.transcript, context)
        else:
            models = torch.stack([torch.as_tensor(to_flat(parameters_to_ndarrays(r.parameters)),
                                                  dtype=torch.float32) for _, r in results])
            handle = ClientUpdates(models - self.global_flat, oracle=self.oracle, secure=False, rule=self.rule.name,
                                   num_samples=counts, transcript=self.transcript, context=context)
            handle.reveal()   # without secure aggregation the server holds every update
        agg = self.rule(handle)
        if agg.shape != self.global_flat.shape or not torch.isfinite(agg).all():
            raise RuntimeError(f"rule {self.rule.name!r} returned an invalid aggregate of shape {tuple(agg.shape)}")
        self.global_flat = self.global_flat + self.server_lr * agg.to(self.global_flat.dtype)
        return self._params(), {"clients": len(results), "failures": len(failures)}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        if self.evaluate_fn is None:
            return None
        return self.evaluate_fn(server_round, parameters_to_ndarrays(parameters))


def run_strategy(cfg: RunConfig, *, secagg: Optional[FlowerSecAgg] = None, engine: str = "inprocess",
                 backend_config: Optional[Dict[str, Any]] = None, verbose: bool = False) -> FedauditStrategy:
    """Train ``cfg`` with Flower and :class:`FedauditStrategy` (rule ``cfg.rule``): Flower's
    default fit workflow, or ``SecAggPlusWorkflow`` when ``secagg`` is given. Clients are
    :class:`~protocols.integrations.flower.client.FedauditNumPyClient` (fedaudit's local
    training on the simulation's partitions). ``engine``: ``"inprocess"`` or ``"simulation"``
    (:func:`~protocols.integrations.flower.engine.run_server`). Returns the strategy
    (``global_flat``: the final model)."""
    cfg.validate()
    sim = Simulation(cfg)
    init = unflatten(flat_params(sim.model).cpu().numpy(), shapes_of(sim.model))

    def evaluate_fn(rnd, arrays):
        with torch.no_grad():
            set_flat_params(sim.model, torch.as_tensor(to_flat(arrays), dtype=torch.float32, device=sim.device))
        acc, loss = evaluate(sim.model, sim.data.x_test, sim.data.y_test)
        return loss, {"accuracy": acc}

    strategy = FedauditStrategy(cfg.rule, cfg.rule_args, initial_parameters=init, min_clients=cfg.clients,
                                server_lr=cfg.server_lr, secure=secagg is not None, evaluate_fn=evaluate_fn)
    fit = None if secagg is None else SecAggPlusWorkflow(
        num_shares=secagg.num_shares, reconstruction_threshold=secagg.reconstruction_threshold,
        max_weight=float(max(len(ix) for ix in sim.client_indices)), clipping_range=float(secagg.clipping_range),
        quantization_range=secagg.q(cfg.clients), modulus_range=secagg.modulus_range, timeout=secagg.timeout)

    def server_fn(grid, context):
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds), strategy=strategy)
        DefaultWorkflow(fit_workflow=fit, evaluate_workflow=lambda g, c: None)(grid, legacy)

    run_server(server_fn, make_client_app(cfg, secure=secagg is not None), cfg, engine, backend_config, verbose)
    return strategy
