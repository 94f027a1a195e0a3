"""What every federated protocol shares: the round record, the oracle for ``cfg.secagg``,
the client partition, and the registry of protocols (name -> simulation class).

A protocol is a class built as ``cls(cfg, dataset=None)`` with ``run(progress)``,
``history``, ``transcript`` and ``result()``; it registers with :func:`register_protocol`.
``protocols.runner.make_simulation`` picks one by ``cfg.protocol``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch

import secagg
from secagg import PlaintextOracle, QuantizedOracle

from protocols.data import Dataset, partition
from protocols.simulation.config import RunConfig

PROTOCOLS: Dict[str, Callable[..., Any]] = {}


def register_protocol(name: str):
    """Class decorator: register a simulation class under ``name`` (``RunConfig.protocol``)."""
    def deco(cls):
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = cls
        cls.protocol_name = name
        return cls
    return deco


def partition_pool(ds: Dataset, pool: torch.Tensor, cfg: RunConfig, scheme: str) -> List[torch.Tensor]:
    """Split the training indices ``pool`` across ``cfg.clients`` clients with the partition
    ``scheme`` (already resolved from "auto") and its parameters in ``cfg``."""
    pkw: Dict[str, Any] = {"alpha": cfg.alpha} if scheme == "dirichlet" else \
        {"labels_per_client": cfg.labels_per_client} if scheme == "shards" else \
        {"users": ds.meta["users_train"][pool]} if scheme == "natural" and "users_train" in ds.meta else {}
    pkw.update(cfg.partition_args)
    return [pool[ix] for ix in partition(ds.y_train[pool], cfg.clients, scheme, seed=cfg.seed, **pkw)]


def make_oracle(cfg: RunConfig, n_clients: int) -> Optional[secagg.SecureAverageOracle]:
    """The oracle for ``cfg.secagg`` (None for "off": rules see plaintext updates)."""
    if cfg.secagg in ("off", "plaintext"):
        return PlaintextOracle()
    if cfg.secagg == "quantized":
        return QuantizedOracle(bits=cfg.bits, clip=cfg.clip, overflow=cfg.overflow, seed=cfg.seed)
    if not hasattr(secagg, "MaskedOracle"):
        raise ValueError("secagg='masked' needs secagg.MaskedOracle, which this build lacks")
    threshold = cfg.threshold
    kwargs = {"bits": cfg.bits, "clip": cfg.clip, "overflow": cfg.overflow, "seed": cfg.seed,
              "neighbors": cfg.neighbors, "dropout_rate": cfg.dropout_rate}
    if threshold is not None:
        kwargs["threshold"] = threshold
    return secagg.MaskedOracle(**kwargs)


@dataclass
class RoundRecord:
    round: int
    test_accuracy: float
    test_loss: float
    oracle_calls: int
    clients: int
    seconds: float
    corrupted: int = 0
    attack_clipped: int = 0   # coordinates of corrupted updates clipped to the encoding bound
    clipped: int = 0          # coordinates clipped by the encoding (overflow="clip")
    attack_success: Optional[float] = None   # backdoor ASR / targeted flip rate, where it applies
    client_accuracy: Optional[float] = None  # mean over clients of accuracy on their own held-out
                                             # data (personalized model w + u_i when personalized)
    # DP (None when off). record: epsilon = max over clients, epsilon_mean = mean over the
    # clients trained so far; user-level: epsilon of the run so far (q = clients_per_round /
    # clients), epsilon_without_sampling against an observer who knows each cohort.
    epsilon: Optional[float] = None
    epsilon_mean: Optional[float] = None
    epsilon_without_sampling: Optional[float] = None
    delta: Optional[float] = None
    dp_clipped: Optional[int] = None         # user-level: clients whose update was clipped to dp_clip
    round_noise_multiplier: Optional[float] = None  # user-level: this round's composed z
