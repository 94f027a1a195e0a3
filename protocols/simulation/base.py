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
from secagg.protocol.messages import DEFAULT_CORRUPT_FRACTION

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


# The complete graph (SecAgg) expands n(n-1)/2 pairwise masks per oracle call: refused above
# this many (n = 1000 gives 499,500, hours of keystream per round at d ~ 1e6); SecAgg+ scales.
COMPLETE_GRAPH_MAX_PAIRS = 200_000


STARTUP_THREADS = torch.get_num_threads()   # torch's count when fedaudit was imported
_threads_applied: Dict[str, int] = {}


def apply_threads(threads: Optional[int] = None) -> int:
    """Set torch's CPU threads for a run; return the count. ``threads`` None: the idle cores,
    i.e. this process's cores minus the last minute's load average (other jobs), at least 1.
    A count the user chose is kept: ``OMP_NUM_THREADS`` in the environment, or a
    ``torch.set_num_threads`` made by the calling program (e.g. a tradeoff cell's). More
    threads than idle cores make OpenMP spin against the other jobs (`fedaudit bench run`:
    2 threads took 4-15x as long as 1 on the shared 2-core box, docs/bench-cpu.md)."""
    import os
    from secagg.keystream import available_cores
    if threads is None:
        now = torch.get_num_threads()
        if os.environ.get("OMP_NUM_THREADS") or now not in (STARTUP_THREADS, _threads_applied.get("auto")):
            return now
        cores = available_cores()
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):    # pragma: no cover - not on every OS
            load = 0.0
        threads = max(1, min(cores, int(cores - load + 0.5)))
        _threads_applied["auto"] = threads
    torch.set_num_threads(int(threads))
    return int(threads)


def make_oracle(cfg: RunConfig, n_clients: int) -> Optional[secagg.SecureAverageOracle]:
    """The oracle for ``cfg.secagg`` (None for "off": rules see plaintext updates)."""
    if cfg.secagg == "masked" and cfg.neighbors is None and n_clients * (n_clients - 1) // 2 > COMPLETE_GRAPH_MAX_PAIRS:
        pairs = n_clients * (n_clients - 1) // 2
        raise ValueError(f"secagg=masked on the complete graph with {n_clients} clients expands {pairs:,} pairwise "
                         f"masks of d coordinates in every oracle call (more than {COMPLETE_GRAPH_MAX_PAIRS:,}); "
                         "use the SecAgg+ graph (--neighbors auto or --neighbors K) or fewer clients")
    if cfg.secagg in ("off", "plaintext"):
        return PlaintextOracle()
    if cfg.secagg == "quantized":
        return QuantizedOracle(bits=cfg.bits, clip=cfg.clip, overflow=cfg.overflow, seed=cfg.seed)
    if not hasattr(secagg, "MaskedOracle"):
        raise ValueError("secagg='masked' needs secagg.MaskedOracle, which this build lacks")
    threshold = cfg.threshold
    # gamma of the SecAgg+ bound: the run's own poisoning clients may collude with the server.
    gamma = cfg.corrupt_fraction if cfg.corrupt_fraction is not None else max(DEFAULT_CORRUPT_FRACTION, cfg.corrupt)
    kwargs = {"bits": cfg.bits, "clip": cfg.clip, "overflow": cfg.overflow, "seed": cfg.seed,
              "neighbors": cfg.neighbors, "dropout_rate": cfg.dropout_rate, "corrupt_fraction": gamma,
              "dropout_fraction": cfg.dropout_fraction,
              # no audit reads the masked inputs: never the [n, d] integers per call in the transcript
              "keep_masked_inputs": False}
    if threshold is not None:
        kwargs["threshold"] = threshold
    oracle = secagg.MaskedOracle(**kwargs)
    if cfg.dropout_rate > 0:
        oracle.check_dropouts(n_clients)
    return oracle


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
    aborted: Optional[str] = None            # why secure aggregation aborted this round (the model
                                             # kept its previous value); None: it completed
