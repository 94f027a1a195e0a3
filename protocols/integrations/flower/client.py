"""The client side of the Flower integration: :class:`FedauditNumPyClient` and :func:`make_client_app`.

Clients train with fedaudit's own local training (:mod:`protocols.clients`) on the
partitions of :class:`protocols.simulation.Simulation` for the same :class:`RunConfig`,
with the generator stream the simulation would use (:func:`replay_generator`), so a
Flower run and ``Simulation(cfg)`` with ``secagg="quantized"`` agree to the quantization
bound (tests/test_flower.py). Under RFA (:mod:`protocols.integrations.flower.rfa`) each
client computes its own Weiszfeld weight (:func:`rfa_client_weight`): its sample count
never leaves it.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod

from protocols.integrations.flower.common import (STAGE_KEY, STATE_KEY, replay_generator, rfa_client_weight,
                                                  to_flat, unflatten)
from protocols.models import set_flat_params
from protocols.simulation import RunConfig, Simulation

Tensor = torch.Tensor

__all__ = ["FedauditNumPyClient", "make_client_app"]


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
        stage = config.get(STAGE_KEY, "train")
        rnd = int(config.get("fedaudit-round", 0))
        if stage == "train":
            start = to_flat(parameters)
            delta = self._train(start, rnd)
            local = torch.as_tensor(start, dtype=torch.float32) + delta.cpu()
            return unflatten(local.numpy(), [tuple(np.shape(a)) for a in parameters]), self.n_examples, {}
        clip = float(config["fedaudit-clip"])
        n_max = float(config["fedaudit-max-examples"])
        if self.n_examples > n_max:
            raise ValueError(f"client {self.k} holds {self.n_examples} examples > the public bound "
                             f"max_examples={n_max:g}; raise max_examples")
        if stage == "rfa-v0":
            w = self._train(to_flat(parameters), rnd)
            self.ctx.state.array_records[STATE_KEY] = ArrayRecord([w.cpu().numpy()])
            self.ctx.state.config_records[STATE_KEY + "-round"] = ConfigRecord({"round": rnd})
            u = torch.tensor(self.n_examples / n_max, dtype=w.dtype)
        elif stage == "rfa-w":
            records = self.ctx.state.config_records
            if STATE_KEY + "-round" not in records or records[STATE_KEY + "-round"]["round"] != rnd:
                # it missed this round's training call: its update would be stale
                raise ValueError(f"client {self.k} holds no update for round {rnd} (it did not take part "
                                 "in the round's first call); it sits this call out")
            w = torch.as_tensor(self.ctx.state.array_records[STATE_KEY].to_numpy_ndarrays()[0])
            v = torch.as_tensor(parameters[0], dtype=w.dtype)
            u = rfa_client_weight(w, v, float(self.n_examples), n_max, float(config["fedaudit-nu"]))
        else:
            raise ValueError(f"unknown {STAGE_KEY}={stage!r}")
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
