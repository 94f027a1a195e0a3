"""What the parties of the masked protocol agree on: round names, public parameters, results, errors.

Bonawitz et al. 2017, Fig. 4: the rounds, the public parameters every client knows
before the protocol (n, t, and for SecAgg+ of Bell et al. 2020 the graph), the
server's output and view, and the ways an instance stops (an abort below the
threshold, an honest client's refusal, an active-model detection). Also the checks of
the caller's threshold and dropout arguments. Imports no other module of the protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import torch

from .. import crypto, graph as graphs
from ..errors import ProtocolViolationDetected, SecureAggregationAborted
from ..pki import SimulatedPKI

Tensor = torch.Tensor

__all__ = ["ROUNDS", "ACTIVE_ROUNDS", "ProtocolResult", "PublicParams", "UnmaskingRefused", "aborted", "violation",
           "check_inputs", "public_graph", "check_threshold", "parse_dropouts", "u32"]

ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
# The actively secure variant adds ConsistencyCheck before unmasking (Bonawitz et al. 2017, Fig. 4).
ACTIVE_ROUNDS = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")


class UnmaskingRefused(SecureAggregationAborted):
    """An honest client refused to reveal both shares (b and s^SK) of one client.

    Bonawitz et al. 2017, Fig. 4, Round 3: revealing both the self-mask seed b_v
    and the mask key s_v^SK of a client v would let the server unmask y_v alone.
    """


def aborted(round_name: str, message: str, **info) -> SecureAggregationAborted:
    """The abort of an instance in ``round_name`` (Fig. 4: fewer than t clients, or an
    unrecoverable secret); ``info`` (alive, threshold, client) becomes attributes."""
    exc = SecureAggregationAborted(message)
    exc.round = round_name
    for k, v in info.items():
        setattr(exc, k, v)
    return exc


def violation(rnd: str, check: str, by: int, message: str, party: Any = "server",
              subject: Optional[int] = None) -> ProtocolViolationDetected:
    """Client ``by``'s detection of a failed active-model check (Fig. 4, red parts)."""
    who = "the server" if party == "server" else f"client {party}"
    return ProtocolViolationDetected(
        f"client {by} detected a protocol violation by {who} in round {rnd!r} (check: {check}): {message} "
        "(Bonawitz et al. 2017, Fig. 4, active-security checks); it aborts and reveals nothing more",
        round=rnd, check=check, party=party, detected_by=by, subject=subject)


@lru_cache(maxsize=None)
def u32(x: int) -> bytes:
    """A client index on the wire: 4 bytes, big-endian."""
    return int(x).to_bytes(4, "big")


@dataclass
class ProtocolResult:
    """Outcome of one protocol instance (Bonawitz et al. 2017, Fig. 4) and the server's view.

    ``total`` is sum_{u in U3} x_u mod 2^modulus_bits as int64 residues (what
    :func:`secagg.wrap_mod` gives; for 64 bits the two's complement int64), on the
    device of the inputs. ``survivors`` is U3, sorted. Everything else except
    ``keystream_bytes`` is what the server saw or computed. ``recovered`` is filled
    only by an adversarial server (``run_protocol(adversary=...)``): the individual
    inputs it managed to unmask alone, {client: int64 [d]}.
    """

    total: Tensor
    survivors: List[int]
    masked_inputs: Tensor                          # int64 [|U3|, d], row i = y_{survivors[i]}
    public_keys: Dict[int, Tuple[bytes, bytes]]    # u -> (c_u^PK, s_u^PK)
    ciphertexts: Dict[Tuple[int, int], bytes]      # (sender, recipient) -> relayed AES-GCM ciphertext
    reconstructed_seeds: Dict[int, bytes]          # b_u for u in U3
    reconstructed_keys: Dict[int, bytes]           # s_v^SK for dropped v with a neighbour in U3
    failed_shares: List[Tuple[int, int]]           # (sender, recipient) whose ciphertext failed AES-GCM
    rounds: Dict[str, List[int]]                   # round -> clients that completed it (U1..U4, U5 if active)
    graph: List[List[int]]
    threshold: int
    share_threshold: int
    modulus_bits: int
    protocol: str                                  # "secagg" (complete graph) or "secagg+"
    keystream_bytes: int = 0                       # PRG output produced (clients + server)
    active_security: bool = False
    signatures: Dict[int, bytes] = field(default_factory=dict)   # consistency-check signatures on U3
    recovered: Dict[int, Tensor] = field(default_factory=dict)   # adversarial server only

    def server_view(self) -> Dict[str, Any]:
        """Everything the server saw or reconstructed (Bonawitz et al. 2017, Sec. 6), for the transcript."""
        view = {
            "protocol": self.protocol, "modulus_bits": self.modulus_bits,
            "threshold": self.threshold, "share_threshold": self.share_threshold,
            "graph": self.graph, "rounds": self.rounds, "public_keys": self.public_keys,
            "ciphertexts": self.ciphertexts, "masked_inputs": self.masked_inputs,
            "reconstructed_seeds": self.reconstructed_seeds,
            "reconstructed_keys": self.reconstructed_keys, "failed_shares": self.failed_shares,
            "active_security": self.active_security,
        }
        if self.active_security:
            view["consistency_signatures"] = self.signatures
        return view


@dataclass
class PublicParams:
    """Public parameters every client knows before the protocol (Bonawitz et al. 2017, Fig. 4):
    n, t, the graph (Bell et al. 2020) and, in the active model, the PKI."""

    n: int
    threshold: int
    share_threshold: int
    complete: bool
    graph: List[List[int]]
    pki: Optional[SimulatedPKI] = None


def check_inputs(values, modulus_bits) -> Tuple[int, int]:
    """(n, d) of the clients' inputs ``values``, int64 residues mod M = 2^modulus_bits with M > n."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be an int64 torch tensor [n, d], got {type(values).__name__}")
    if values.dtype != torch.int64:
        raise TypeError(f"values must be int64 residues mod 2^modulus_bits, got dtype {values.dtype}")
    if values.ndim != 2:
        raise ValueError(f"values must be a [n_clients, d] matrix, got shape {tuple(values.shape)}")
    n, d = values.shape
    if n < 1:
        raise ValueError("values has no rows: the protocol needs at least one client")
    if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 64:
        raise ValueError(f"modulus_bits={modulus_bits!r} must be an int in [1, 64] (M = 2^modulus_bits)")
    if (1 << modulus_bits) <= n:
        need = n.bit_length()
        raise ValueError(f"modulus M = 2^{modulus_bits} is too small for n={n} clients: the sum could not even "
                         f"count them; use modulus_bits >= {need}")
    if modulus_bits < 64 and values.numel():
        lo, hi = torch.aminmax(values)
        if int(lo) < 0 or int(hi) >= (1 << modulus_bits):
            bad = ((values < 0) | (values >= (1 << modulus_bits))).nonzero()[0].tolist()
            raise ValueError(f"values must lie in [0, 2^{modulus_bits}) (residues mod M); found "
                             f"{int(lo) if int(lo) < 0 else int(hi)} (first at index {bad}); "
                             "reduce them with secagg.wrap_mod")
    return n, d


def public_graph(neighbors, n: int, root: bytes) -> Tuple[List[List[int]], bool, str]:
    """(graph, complete?, "secagg" or "secagg+"): the complete graph (Bonawitz et al. 2017) or the
    SecAgg+ graph of Bell et al. 2020 (random k-regular, drawn from the instance root)."""
    rng = np.random.default_rng(int.from_bytes(crypto.hkdf(root, info=b"graph", length=16), "big"))
    if isinstance(neighbors, str):
        if neighbors != "auto":
            raise ValueError(f"neighbors={neighbors!r}; use None, an int k, 'auto' or an explicit graph")
        k = graphs.default_degree(n)
        neighbors = None if k >= n - 1 else k
    if neighbors is None:
        graph = graphs.complete_graph(n)
        complete = True
    elif isinstance(neighbors, (int, np.integer)) and not isinstance(neighbors, bool):
        graph = graphs.random_regular_graph(n, int(neighbors), rng)
        complete = graphs.is_complete(graph)
    else:
        graph = graphs.adjacency_from(neighbors, n)
        complete = graphs.is_complete(graph)
    protocol = "secagg" if neighbors is None else "secagg+"
    return graph, complete, protocol


def check_threshold(t, n: int, allow: bool, name: str, holders: str = "clients") -> int:
    """``t`` as an int in [1, n] with t > n/2 unless ``allow`` (Bonawitz et al. 2017, Sec. 6)."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise TypeError(f"{name}={t!r} must be an int")
    t = int(t)
    if t < 1:
        raise ValueError(f"{name}={t} must be >= 1")
    if t > n:
        raise ValueError(f"{name}={t} exceeds the {n} {holders}: the protocol could never complete; "
                         f"use {name} <= {n}")
    if 2 * t <= n and not allow:
        raise ValueError(
            f"{name}={t} <= {n}/2 {holders}: two disjoint halves could each reach the threshold, so one "
            "client's self-mask seed and mask key could both be reconstructed (Bonawitz et al. 2017, "
            f"Sec. 6 take t > n/2); use {name} >= {n // 2 + 1} or pass allow_insecure_threshold=True")
    return t


def parse_dropouts(dropouts, n: int, rounds: Tuple[str, ...] = ROUNDS) -> Dict[str, Set[int]]:
    """{round: clients dropping there} for every round of :data:`ACTIVE_ROUNDS`, checked:
    ``rounds`` are the ones the variant has, and a client drops at most once."""
    out: Dict[str, Set[int]] = {r: set() for r in ACTIVE_ROUNDS}
    if dropouts is None:
        return out
    if not isinstance(dropouts, Mapping):
        raise TypeError(f"dropouts must map a round name {rounds} to client indices, got {type(dropouts).__name__}")
    where: Dict[int, str] = {}
    for rnd, clients in dropouts.items():
        if rnd not in rounds:
            hint = " (that round exists only with active_security=True)" if rnd in ACTIVE_ROUNDS else ""
            raise ValueError(f"unknown round {rnd!r} in dropouts; rounds are {rounds}{hint}")
        if isinstance(clients, torch.Tensor):
            clients = clients.tolist()
        for u in clients:
            if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
                raise TypeError(f"dropouts[{rnd!r}] holds {u!r}; client indices are ints")
            u = int(u)
            if not 0 <= u < n:
                raise ValueError(f"dropouts[{rnd!r}] names client {u}, outside [0, {n})")
            if u in where and where[u] != rnd:
                raise ValueError(f"client {u} drops in both {where[u]!r} and {rnd!r}; a client drops once")
            where[u] = rnd
            out[rnd].add(u)
    return out
