"""Flower integration (optional extra ``flower``): fedaudit rules as Flower strategies, and
RFA as an iterative secure aggregate over Flower's own SecAgg+.

Two pieces, for users who run their federation with Flower (``flwr`` >= 1.42):

- :class:`FedauditStrategy`: a Flower ``Strategy`` in which any fedaudit aggregation
  rule (registry name + arguments, :func:`protocols.aggregators.make_rule`) aggregates
  the fit results. Without secure aggregation the server holds every client's model, so
  the deltas (client model - current global) are handed to the rule as a revealed
  :class:`secagg.ClientUpdates`. Under Flower's ``SecAggPlusWorkflow`` the server holds
  one ``num_examples``-weighted average per round and nothing else, so only a rule that
  is exactly one such average (``fedavg``) can run; every other rule is refused with a
  clear error (rules with ``secagg_compatible = False`` need individual updates; RFA and
  the other compatible rules need client-side weights per call: use
  :class:`RFASecAggPlusWorkflow`).
- :class:`RFASecAggPlusWorkflow`: smoothed Weiszfeld (Pillutla, Kakade, Harchaoui, RFA,
  Algorithm 2) in which every oracle call is one run of Flower's SecAgg+
  (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the clients). The server
  broadcasts v^(r); each client computes beta_i = alpha_i / max(nu, ||v^(r) - w_i||) from
  its own update (client side, :class:`FedauditNumPyClient`) and submits the vector
  [u_i w_i, u_i] with u_i = (N_i / N_max) nu / max(nu, ||v^(r) - w_i||), i.e. beta_i times
  a public constant (the ``"nu"`` encoding of :mod:`rfa.weiszfeld`, see
  :func:`rfa_client_weight`); SecAgg+ returns the mean of
  those vectors over the survivors and the server divides. ``num_examples`` is sent as 1
  with ``max_weight`` 1, so Flower's own weight factor is exactly 1 and the sample
  counts never leave the clients. docs/flower.md explains why this uses Flower's
  SecAgg+ rather than fedaudit's masked protocol, and what SecAgg+ does not protect.

Clients train with fedaudit's own local training (:mod:`protocols.clients`) on the
partitions of :class:`protocols.simulation.Simulation` for the same
:class:`RunConfig`, with the generator stream the simulation would use
(:func:`replay_generator`), so a Flower run and ``Simulation(cfg)`` with
``secagg="quantized"`` agree to the quantization bound (tests/test_flower.py).

:class:`InProcessGrid` runs a Flower ``ServerApp`` workflow against ``ClientApp``
objects in this process (no Ray): the benchmark (:mod:`protocols.bench.flower`) and the
fast tests use it; :func:`run_rfa` and :func:`run_strategy` also run on Flower's simulation engine
(``flwr.simulation.run_simulation``, needs ``flwr[simulation]``, i.e. Ray).
"""
from __future__ import annotations

import copy
import importlib.util
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

if importlib.util.find_spec("flwr") is None:  # pragma: no cover - only without the extra
    raise ImportError("protocols.flower needs Flower: pip install -e '.[flower]' "
                      "(flwr[simulation] >= 1.42; Ray is only needed for the simulation engine)")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network from tests and examples

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp.grid import Grid

from secagg import ClientUpdates, PlaintextOracle, SecureAggregationViolation, Transcript

from .aggregators import make_rule
from .clients import evaluate
from .models import flat_params, set_flat_params
from .simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["FlowerSecAgg", "FedauditStrategy", "RFASecAggPlusWorkflow", "FedauditNumPyClient",
           "InProcessGrid", "replay_generator", "rfa_client_weight", "make_client_app", "run_rfa", "run_strategy",
           "FlowerRFAResult", "check_rfa_config"]

_STAGE = "fedaudit-stage"
_STATE = "fedaudit-client"


# --------------------------------------------------------------------------- SecAgg+ parameters


@dataclass(frozen=True)
class FlowerSecAgg:
    """Parameters of Flower's ``SecAggPlusWorkflow`` (Bell et al. 2020 SecAgg+ as Flower builds it).

    Flower maps a coordinate x in [-c, c] to round_stochastic((x + c) Q / (2 c)) in [0, Q]
    (``flwr.common.secure_aggregation.quantization``) and sums in Z_M. It clips to [-c, c]
    silently; fedaudit's clients refuse out-of-range inputs before they reach Flower.

    Parameters
    ----------
    clipping_range : float
        c, the per-coordinate bound (Flower's default 8.0).
    quantization_range : int or None
        Q. None: the largest power of two with n Q < M (so the sum of n values in [0, Q]
        cannot wrap) and Q < 2^31 (Flower casts quantized values to int32).
    modulus_range : int
        M, a power of two (Flower's default and documented maximum 2^32).
    num_shares, reconstruction_threshold : int or float
        As in ``SecAggPlusWorkflow``: shares per client (its neighbourhood in Flower's ring
        graph, itself included) and the Shamir threshold. Floats are fractions.
    """

    clipping_range: float = 8.0
    quantization_range: Optional[int] = None
    modulus_range: int = 2 ** 32
    num_shares: Any = 1.0
    reconstruction_threshold: Any = 0.6
    timeout: Optional[float] = None

    def __post_init__(self):
        if not (isinstance(self.clipping_range, (int, float)) and math.isfinite(self.clipping_range)
                and self.clipping_range > 0):
            raise ValueError(f"clipping_range={self.clipping_range!r} must be a finite number > 0")
        m = self.modulus_range
        if not isinstance(m, int) or m < 4 or m & (m - 1):
            raise ValueError(f"modulus_range={m!r} must be a power of two (Flower's default 2**32)")

    def q(self, n: int) -> int:
        """Q for n summands, validated: n Q < M and Q < 2^31."""
        if self.quantization_range is None:
            q = 1 << min(30, (self.modulus_range // (n + 1)).bit_length() - 1)
        else:
            q = self.quantization_range
        if not isinstance(q, int) or q < 2:
            raise ValueError(f"quantization_range={q!r} must be an integer >= 2")
        if q >= 2 ** 31:
            raise ValueError(f"quantization_range={q} >= 2^31: Flower casts quantized values to int32; "
                             "use at most 2**30")
        if n * q >= self.modulus_range:
            raise ValueError(f"{n} clients x quantization_range={q} >= modulus_range={self.modulus_range}: "
                             "the sum would wrap and decode wrongly; lower quantization_range to "
                             f"<= {(self.modulus_range - 1) // n} or raise modulus_range")
        return q

    def resolution(self, n: int) -> float:
        """Quantum 2c/Q of one coordinate of one client's input."""
        return 2.0 * self.clipping_range / self.q(n)

    def workflow(self, n: int) -> SecAggPlusWorkflow:
        # max_weight=1 with num_examples=1: Flower's own weight factor is exactly 1.
        return SecAggPlusWorkflow(num_shares=self.num_shares, reconstruction_threshold=self.reconstruction_threshold,
                                  max_weight=1.0, clipping_range=float(self.clipping_range),
                                  quantization_range=self.q(n), modulus_range=self.modulus_range,
                                  timeout=self.timeout)


# --------------------------------------------------------------------------- helpers


def _to_flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0)


def _shapes_of(model: torch.nn.Module) -> List[Tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]


def _unflatten(flat: np.ndarray, shapes: Sequence[Tuple[int, ...]]) -> List[np.ndarray]:
    out, off = [], 0
    for s in shapes:
        k = int(np.prod(s)) if s else 1
        out.append(flat[off:off + k].reshape(s))
        off += k
    if off != flat.size:
        raise ValueError(f"a flat vector of {flat.size} values does not fit parameter shapes {list(shapes)}")
    return out


def replay_generator(seed: int, sizes: Sequence[int], epochs: int, rnd: int, client: int) -> torch.Generator:
    """The generator state :class:`Simulation` has when it draws client ``client``'s batch
    schedule in round ``rnd`` (all clients every round, no attack, no root data).

    The simulation draws one ``torch.randperm(size_j)`` per client j and epoch, clients in
    index order, rounds in order, from one generator seeded with ``seed``
    (:func:`protocols.clients.batch_schedule`); replaying the draws before client k lets a
    Flower client train on exactly the batches the simulation would give it.
    """
    if not 0 <= client < len(sizes):
        raise ValueError(f"client={client} outside [0, {len(sizes)})")
    g = torch.Generator().manual_seed(seed)
    for _ in range(rnd):
        for s in sizes:
            for _ in range(epochs):
                torch.randperm(s, generator=g)
    for s in sizes[:client]:
        for _ in range(epochs):
            torch.randperm(s, generator=g)
    return g


def rfa_client_weight(update: Tensor, v: Tensor, n_examples: float, max_examples: float, nu: float) -> Tensor:
    """u_i = (N_i / N_max) * nu / max(nu, ||v - w_i||) in [0, 1]: the client's Weiszfeld weight.

    RFA Algorithm 2 weights beta_i = alpha_i / max(nu, ||v - w_i||), alpha_i = N_i / N;
    u_i is beta_i times the public constant nu N / N_max (the ``"nu"`` encoding of
    :mod:`rfa.weiszfeld`, with the public bound N_max >= N_i in place of alpha_max), so
    every u_i <= 1 and the average sum u_i w_i / sum u_i is Algorithm 2's.
    """
    dist = torch.linalg.vector_norm(update - v)
    return (n_examples / max_examples) * (nu / torch.clamp(dist, min=nu))


def check_rfa_config(cfg: RunConfig) -> None:
    """Refuse a :class:`RunConfig` whose simulation the Flower RFA run cannot reproduce."""
    cfg.validate()
    bad = []
    if cfg.protocol != "params":
        bad.append(f"protocol={cfg.protocol!r} (use 'params')")
    if cfg.rule != "rfa":
        bad.append(f"rule={cfg.rule!r} (use 'rfa')")
    if cfg.clients_per_round not in (None, cfg.clients):
        bad.append(f"clients_per_round={cfg.clients_per_round} (Flower samples every client here)")
    if cfg.attack is not None or cfg.corrupt:
        bad.append("an attack (run attacks in fedaudit's own simulation)")
    if cfg.dp is not None:
        bad.append(f"dp={cfg.dp!r}")
    if cfg.personalize or cfg.client_holdout:
        bad.append("personalization / client_holdout")
    if cfg.adv_reg:
        bad.append("adv_reg")
    if cfg.rule_args.get("v0", "mean") != "mean" or cfg.rule_args.get("track_objective", False):
        bad.append("rule_args v0 != 'mean' or track_objective=True")
    wb = cfg.rule_args.get("weight_bound", "auto")
    if wb != "nu":
        bad.append(f"rule_args weight_bound={wb!r} (Flower's RFA uses the public 'nu' encoding: "
                   "set rule_args['weight_bound']='nu')")
    if bad:
        raise ValueError("the Flower RFA workflow reproduces plain RFA runs only; unsupported: " + "; ".join(bad))


# --------------------------------------------------------------------------- client side


class FedauditNumPyClient(NumPyClient):
    """A Flower client that trains with fedaudit's local training (:mod:`protocols.clients`).

    Client k holds partition k of ``Simulation(cfg)`` and, in round r, trains with the
    generator of :func:`replay_generator` (the simulation's stream). ``fit`` answers:

    - ``fedaudit-stage = "train"`` (:class:`FedauditStrategy`): returns its local model,
      weight ``num_examples`` = N_k.
    - ``"rfa-v0"`` (:class:`RFASecAggPlusWorkflow`): trains from the broadcast global model,
      keeps its update w_k in the node's Flower state, returns [u w_k, u] with
      u = N_k / N_max (the weighted mean, RFA's v^(0)) and ``num_examples`` = 1.
    - ``"rfa-w"``: reads the broadcast v^(r) and returns [u w_k, u] with
      u = :func:`rfa_client_weight` (w_k, v^(r)).

    Every returned coordinate must lie in [-c, c] (Flower's clipping range, sent in the
    config): a larger one raises ``ValueError`` instead of being clipped by Flower.
    """

    def __init__(self, sim: Simulation, client: int, context: Context):
        self.sim, self.k, self.ctx = sim, int(client), context

    @property
    def n_examples(self) -> int:
        return len(self.sim.client_indices[self.k])

    def _train(self, start: np.ndarray, rnd: int) -> Tensor:
        sim, cfg = self.sim, self.sim.cfg
        sizes = [len(ix) for ix in sim.client_indices]
        g = replay_generator(cfg.seed, sizes, cfg.local_epochs, rnd, self.k)
        with torch.no_grad():
            set_flat_params(sim.model, torch.as_tensor(start, dtype=torch.float32, device=sim.device))
        return sim.trainer(sim.model, sim.data.x_train, sim.data.y_train, [sim.client_indices[self.k]],
                           sim.local, g, client_ids=torch.tensor([self.k]))[0]

    def _payload(self, u: Tensor, w: Tensor, clip: float) -> List[np.ndarray]:
        vec = torch.mul(w, u)                   # float32, as fedaudit's oracle payload
        big = float(vec.abs().max()) if vec.numel() else 0.0
        if big > clip or float(u) > clip:
            raise ValueError(f"client {self.k}: a coordinate of u*w has magnitude {big:.4g} > Flower's "
                             f"clipping_range={clip}; Flower would clip it silently. Raise clipping_range "
                             "(FlowerSecAgg(clipping_range=...)) or shrink the updates (lower lr)")
        return [vec.double().cpu().numpy(), np.array([float(u)], dtype=np.float64)]

    def fit(self, parameters, config):
        stage = config.get(_STAGE, "train")
        rnd = int(config.get("fedaudit-round", 0))
        if stage == "train":
            start = _to_flat(parameters)
            delta = self._train(start, rnd)
            local = torch.as_tensor(start, dtype=torch.float32) + delta.cpu()
            return _unflatten(local.numpy(), [tuple(np.shape(a)) for a in parameters]), self.n_examples, {}
        clip = float(config["fedaudit-clip"])
        n_max = float(config["fedaudit-max-examples"])
        if self.n_examples > n_max:
            raise ValueError(f"client {self.k} holds {self.n_examples} examples > the public bound "
                             f"max_examples={n_max:g}; raise max_examples")
        if stage == "rfa-v0":
            w = self._train(_to_flat(parameters), rnd)
            self.ctx.state.array_records[_STATE] = ArrayRecord([w.cpu().numpy()])
            self.ctx.state.config_records[_STATE + "-round"] = ConfigRecord({"round": rnd})
            u = torch.tensor(self.n_examples / n_max, dtype=w.dtype)
        elif stage == "rfa-w":
            records = self.ctx.state.config_records
            if _STATE + "-round" not in records or records[_STATE + "-round"]["round"] != rnd:
                # it missed this round's training call: its update would be stale
                raise ValueError(f"client {self.k} holds no update for round {rnd} (it did not take part "
                                 "in the round's first call); it sits this call out")
            w = torch.as_tensor(self.ctx.state.array_records[_STATE].to_numpy_ndarrays()[0])
            v = torch.as_tensor(parameters[0], dtype=w.dtype)
            u = rfa_client_weight(w, v, float(self.n_examples), n_max, float(config["fedaudit-nu"]))
        else:
            raise ValueError(f"unknown {_STAGE}={stage!r}")
        return self._payload(u, w, clip), 1, {}

    def evaluate(self, parameters, config):
        raise NotImplementedError("fedaudit evaluates centrally on the server (strategy.evaluate)")


def make_client_app(cfg: RunConfig, *, secure: bool = True, dataset=None) -> ClientApp:
    """A ``ClientApp`` whose node with ``partition-id`` k is :class:`FedauditNumPyClient` k.

    ``secure``: add Flower's ``secaggplus_mod`` (needed by ``SecAggPlusWorkflow``).
    Each node builds ``Simulation(cfg)`` once (data, partitions, initial model) and caches it.
    """
    cache: Dict[str, Simulation] = {}

    def client_fn(context: Context):
        if "sim" not in cache:
            cache["sim"] = Simulation(cfg, dataset=dataset)
        k = int(context.node_config["partition-id"])
        return FedauditNumPyClient(cache["sim"], k, context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure else [])


# --------------------------------------------------------------------------- strategy adapter


class _FlowerSecureAverage(ClientUpdates):
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
                "protocols.flower.RFASecAggPlusWorkflow for RFA, or run without secure aggregation")
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
        self.global_flat = torch.as_tensor(_to_flat(initial_parameters), dtype=torch.float32)
        self.min_clients, self.server_lr = min_clients, float(server_lr)
        self.oracle = oracle if oracle is not None else PlaintextOracle()
        self.evaluate_fn, self.fit_config = evaluate_fn, dict(fit_config or {})
        self.transcript = Transcript()

    def __repr__(self) -> str:
        return f"FedauditStrategy(rule={self.rule.name!r}, secure={self.secure})"

    def _params(self) -> Parameters:
        return ndarrays_to_parameters(_unflatten(self.global_flat.numpy(), self.shapes))

    def initialize_parameters(self, client_manager: ClientManager) -> Optional[Parameters]:
        return self._params()

    def configure_fit(self, server_round, parameters, client_manager):
        clients = client_manager.sample(num_clients=max(self.min_clients, client_manager.num_available()),
                                        min_num_clients=self.min_clients)
        config = {_STAGE: "train", "fedaudit-round": server_round - 1, **self.fit_config}
        return [(c, FitIns(parameters, dict(config))) for c in sorted(clients, key=lambda c: c.cid)]

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            raise ValueError(f"round {server_round}: no fit results ({len(failures)} failures); "
                             "nothing to aggregate")
        self.transcript.round = server_round - 1
        counts = torch.tensor([float(r.num_examples) for _, r in results])
        context = {"round": server_round - 1, "global_params": self.global_flat}
        if self.secure:
            avg = torch.as_tensor(_to_flat(parameters_to_ndarrays(results[0][1].parameters)), dtype=torch.float32)
            handle = _FlowerSecureAverage(avg - self.global_flat, len(results), self.rule.name, counts,
                                          self.transcript, context)
        else:
            models = torch.stack([torch.as_tensor(_to_flat(parameters_to_ndarrays(r.parameters)),
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


# --------------------------------------------------------------------------- RFA over SecAgg+


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
        return ndarrays_to_parameters(_unflatten(self.owner.global_flat.numpy(), self.owner.shapes))

    def configure_fit(self, server_round, parameters, client_manager):
        n = self.owner.n_clients
        client_manager.wait_for(n, timeout=60)
        clients = client_manager.sample(num_clients=n, min_num_clients=n)
        ins = FitIns(ndarrays_to_parameters(self.broadcast), dict(self.config))
        return [(c, ins) for c in clients]

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            self.owner.failures += len(failures)
        self.result = _to_flat(parameters_to_ndarrays(results[0][1].parameters)) if results else None
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
        self.shapes = _shapes_of(self.sim.model)
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
            set_flat_params(model, torch.as_tensor(_to_flat(parameters_to_ndarrays(parameters)),
                                                   dtype=torch.float32, device=self.sim.device))
        acc, loss = evaluate(model, self.sim.data.x_test, self.sim.data.y_test)
        return loss, {"accuracy": acc}

    def _call(self, grid: Grid, context: LegacyContext, stage: str, broadcast: Tensor, rnd: int) -> Tensor:
        st = self.strategy
        st.broadcast = [broadcast.detach().cpu().numpy().astype(np.float32)]
        st.config = {_STAGE: stage, "fedaudit-round": rnd, "fedaudit-clip": float(self.secagg.clipping_range),
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
            ndarrays_to_parameters(_unflatten(self.global_flat.numpy(), self.shapes)), True)
        self.history.append({"round": rnd, "calls": self._calls, "seconds": time.perf_counter() - t0,
                             "aggregate_error_bound": self._calls[-1]["error_bound"]})


# --------------------------------------------------------------------------- in-process grid


class InProcessGrid(Grid):
    """A Flower ``Grid`` that delivers each message to a ``ClientApp`` in this process.

    Every node n has its own ``Context`` (``node_config`` ``partition-id`` = n - 1, its
    state persisting across messages), as on Flower's simulation engine, without Ray,
    threads or serialization: the benchmark uses it to time SecAgg+'s computation, and
    fast tests to run workflows. ``drop`` maps a SecAgg+ stage name to nodes that fail to
    answer from that stage on (dropouts).
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, *, run_id: int = 1):
        from flwr.supercore.run import Run
        from flwr.supercore.task_identity import TaskIdentity
        # Messages read the process's task identity (set by Flower's own runtimes); this
        # grid is the runtime here, so it sets one if none is set.
        for attr, value in (("_run_id", run_id), ("_task_id", run_id), ("_node_id", 0)):
            if getattr(TaskIdentity, attr) is None:
                setattr(TaskIdentity, attr, value)
        self.client_app = client_app
        self._run = Run.create_empty(run_id) if hasattr(Run, "create_empty") else None
        self.node_ids = list(range(1, num_nodes + 1))
        self.contexts = {nid: Context(run_id=run_id, node_id=nid,
                                      node_config={"partition-id": nid - 1, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config={}) for nid in self.node_ids}
        self._replies: Dict[str, Message] = {}
        self.dropped: set = set()

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_src_node_id"] = 0
            nid = msg.metadata.dst_node_id
            if nid in self.dropped:
                continue
            # A copy per node, as after serialization: secaggplus_mod pops keys of its config.
            self._replies[mid] = self.client_app(copy.deepcopy(msg), self.contexts[nid])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


# --------------------------------------------------------------------------- runners


def _run_server(server_fn, client_app: ClientApp, cfg: RunConfig, engine: str,
                backend_config: Optional[Dict[str, Any]], verbose: bool) -> None:
    """Run ``server_fn(grid, legacy_context)`` against ``client_app`` on ``engine``."""
    if engine == "simulation":
        from flwr.simulation import run_simulation
        app = ServerApp()

        @app.main()
        def main(grid, context):
            server_fn(grid, context)

        if backend_config is None:
            backend_config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                              "init_args": {"num_cpus": max(1, min(2, os.cpu_count() or 1)),
                                            "include_dashboard": False, "log_to_driver": verbose}}
        run_simulation(app, client_app, num_supernodes=cfg.clients, backend_config=backend_config,
                       verbose_logging=verbose)
    elif engine == "inprocess":
        server_fn(InProcessGrid(client_app, cfg.clients),
                  Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    else:
        raise ValueError(f"engine={engine!r}; choose 'simulation' (Flower + Ray) or 'inprocess'")


def run_strategy(cfg: RunConfig, *, secagg: Optional[FlowerSecAgg] = None, engine: str = "inprocess",
                 backend_config: Optional[Dict[str, Any]] = None, verbose: bool = False) -> FedauditStrategy:
    """Train ``cfg`` with Flower and :class:`FedauditStrategy` (rule ``cfg.rule``): Flower's
    default fit workflow, or ``SecAggPlusWorkflow`` when ``secagg`` is given. Clients are
    :class:`FedauditNumPyClient` (fedaudit's local training on the simulation's partitions).
    Returns the strategy (``global_flat``: the final model)."""
    cfg.validate()
    sim = Simulation(cfg)
    init = _unflatten(flat_params(sim.model).cpu().numpy(), _shapes_of(sim.model))

    def evaluate_fn(rnd, arrays):
        with torch.no_grad():
            set_flat_params(sim.model, torch.as_tensor(_to_flat(arrays), dtype=torch.float32, device=sim.device))
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

    _run_server(server_fn, make_client_app(cfg, secure=secagg is not None), cfg, engine, backend_config,
                verbose)
    return strategy


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
    if engine not in ("simulation", "inprocess"):
        raise ValueError(f"engine={engine!r}; choose 'simulation' (Flower + Ray) or 'inprocess'")
    wf = RFASecAggPlusWorkflow(cfg, secagg, max_examples=max_examples)

    def server_fn(grid, context):
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds), strategy=wf.strategy)
        DefaultWorkflow(fit_workflow=wf, evaluate_workflow=lambda g, c: None)(grid, legacy)
        wf.flower_history = legacy.history

    t0 = time.perf_counter()
    _run_server(server_fn, make_client_app(cfg, secure=True), cfg, engine, backend_config, verbose)
    secs = time.perf_counter() - t0
    if len(wf.history) != cfg.rounds:
        raise RuntimeError(f"the Flower run completed {len(wf.history)} of {cfg.rounds} rounds; see Flower's log")
    set_flat_params(wf.sim.model, wf.global_flat.to(wf.sim.device))
    acc, loss = evaluate(wf.sim.model, wf.sim.data.x_test, wf.sim.data.y_test)
    return FlowerRFAResult(global_params=wf.global_flat, global_history=wf.global_history, history=wf.history,
                           test_accuracy=acc, test_loss=loss, seconds=secs, engine=engine,
                           extra={"quantization_range": wf.secagg.q(cfg.clients),
                                  "resolution": wf.secagg.resolution(cfg.clients), "failures": wf.failures})
