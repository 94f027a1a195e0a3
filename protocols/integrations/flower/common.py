"""What the Flower client, strategy and RFA workflow share: the SecAgg+ parameters
(:class:`FlowerSecAgg`), the flat vector <-> Flower ndarray helpers, the generator replay
that makes a Flower client train like :class:`protocols.simulation.Simulation`
(:func:`replay_generator`), RFA's client weight (:func:`rfa_client_weight`), the check of
the runs the Flower RFA workflow reproduces (:func:`check_rfa_config`), and the config and
state keys of the fedaudit messages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from flwr.server.workflow import SecAggPlusWorkflow

from protocols.simulation import RunConfig

Tensor = torch.Tensor

__all__ = ["FlowerSecAgg", "replay_generator", "rfa_client_weight", "check_rfa_config", "to_flat", "shapes_of",
           "unflatten", "STAGE_KEY", "STATE_KEY"]

STAGE_KEY = "fedaudit-stage"    # fit config: what the server asks of the client ("train", "rfa-v0", "rfa-w")
STATE_KEY = "fedaudit-client"   # the client's Flower state: its RFA update w_i between the calls of a round


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


def to_flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Flower's list of ndarrays as one flat vector (fedaudit's parameter order)."""
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0)


def shapes_of(model: torch.nn.Module) -> List[Tuple[int, ...]]:
    """The parameter shapes of ``model``, in the order of :func:`protocols.models.flat_params`."""
    return [tuple(p.shape) for p in model.parameters()]


def unflatten(flat: np.ndarray, shapes: Sequence[Tuple[int, ...]]) -> List[np.ndarray]:
    """A flat vector as Flower's list of ndarrays of ``shapes`` (the inverse of :func:`to_flat`)."""
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
