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

from .. import graph as graphs
from ..errors import ProtocolViolationDetected, SecureAggregationAborted
from ..pki import PKISession

Tensor = torch.Tensor

__all__ = ["ROUNDS", "ACTIVE_ROUNDS", "DEFAULT_CORRUPT_FRACTION", "DEFAULT_DROPOUT_FRACTION", "ProtocolResult",
           "PublicParams", "UnmaskingRefused", "aborted", "violation", "check_inputs", "choose_graph",
           "check_threshold", "check_active_threshold", "parse_dropouts", "u32"]

ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
# The actively secure variant adds ConsistencyCheck before unmasking (Bonawitz et al. 2017, Fig. 4).
ACTIVE_ROUNDS = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
# The threat model the SecAgg+ bound is computed for when the caller names none (Bell et al. 2020):
# up to 10% of the clients colluding with the server, up to 10% dropping in one instance.
DEFAULT_CORRUPT_FRACTION = 0.1
DEFAULT_DROPOUT_FRACTION = 0.1


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
    inputs it managed to unmask alone, {client: int64 [d]}. ``bound`` is the graph's
    security label (:class:`secagg.graph.GraphParameters`: k, t_s, the fractions and
    what Bell et al.'s bound says of them); ``insecure_reproducible`` and ``warning`` say
    whether every secret was derived from the seed (see :mod:`secagg.secrets`).
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
    commitments: Dict[int, bytes] = field(default_factory=dict)  # u -> Round 1 commitment to b_u
    bound: Dict[str, Any] = field(default_factory=dict)          # GraphParameters.as_dict()
    insecure_reproducible: bool = False
    warning: Optional[str] = None                                 # set when insecure_reproducible

    def server_view(self) -> Dict[str, Any]:
        """Everything the server saw or reconstructed (Bonawitz et al. 2017, Sec. 6), for the transcript."""
        view = {
            "protocol": self.protocol, "modulus_bits": self.modulus_bits,
            "threshold": self.threshold, "share_threshold": self.share_threshold,
            "graph": self.graph, "rounds": self.rounds, "public_keys": self.public_keys,
            "ciphertexts": self.ciphertexts, "masked_inputs": self.masked_inputs,
            "reconstructed_seeds": self.reconstructed_seeds,
            "reconstructed_keys": self.reconstructed_keys, "failed_shares": self.failed_shares,
            "active_security": self.active_security, "commitments": self.commitments, "bound": self.bound,
            "insecure_reproducible": self.insecure_reproducible, "warning": self.warning,
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
    pki: Optional[PKISession] = None
    memo: Dict[Any, Any] = field(default_factory=dict)   # verdicts every client would reach alike


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


def _refuse_auto(n: int, t: int, p: graphs.GraphParameters, active: bool) -> ValueError:
    c, d = p.corrupt_clients, p.dropout_clients
    why = (f"the complete graph needs c < t <= n - d, here c={c}, t={t}, n - d={n - d}" if not p.meets else
           f"active security also needs fewer than n/3 corrupt clients (Bonawitz et al. 2017, Sec. 6.2), "
           f"here c={c} >= {n}/3")
    return ValueError(
        f"neighbors='auto': no communication graph meets Bell et al.'s bound for n={n} clients, "
        f"corrupt_fraction gamma={p.corrupt_fraction:g} ({c} clients), dropout_fraction delta="
        f"{p.dropout_fraction:g} ({d} clients), sigma={p.sigma}, eta={p.eta}: a sparse Erdos-Renyi graph "
        f"would need k >= n - 1 = {n - 1} and {why}; lower corrupt_fraction / dropout_fraction or choose a "
        f"threshold in ({c}, {n - d}]")


def choose_graph(neighbors, n: int, rng: np.random.Generator, *, threshold: int, corrupt_fraction: float,
                 dropout_fraction: float, active: bool):
    """(graph, complete?, "secagg" or "secagg+", default t_s, :class:`secagg.graph.GraphParameters`).

    None: the complete graph (Bonawitz et al. 2017), t_s = t. "auto": the Erdős–Rényi graph and
    t_s that meet Bell et al.'s bound for the fractions (:func:`secagg.graph.secagg_plus_parameters`),
    or the complete graph when no sparse one does; ValueError when none does. An int k: a random
    k-regular graph, t_s a majority of the k + 1 holders, labelled as not checked against the
    bound. Anything else: an explicit graph, labelled likewise. ``rng`` is the instance's
    public graph coin (:meth:`secagg.secrets.InstanceRandomness.graph_rng`).
    """
    auto = graphs.secagg_plus_parameters(n, corrupt_fraction, dropout_fraction, threshold=threshold)
    k_needed = auto.k if auto.graph == "erdos-renyi" else None
    c = auto.corrupt_clients
    if isinstance(neighbors, str):
        if neighbors != "auto":
            raise ValueError(f"neighbors={neighbors!r}; use None, an int k, 'auto' or an explicit graph")
        if not auto.meets or (active and 3 * c >= n):
            raise _refuse_auto(n, threshold, auto, active)
        if auto.graph == "complete":
            return graphs.complete_graph(n), True, "secagg", threshold, auto
        for _ in range(32):
            # Degrees below t_s have probability < 2^-eta (the correctness bound); redraw if one occurs.
            graph = graphs.erdos_renyi_graph(n, auto.k / (n - 1), rng)
            if min(len(nb) for nb in graph) >= auto.share_threshold:
                return graph, graphs.is_complete(graph), "secagg+", auto.share_threshold, auto
        raise RuntimeError(f"32 Erdos-Renyi graphs in a row left a client with fewer than t_s="
                           f"{auto.share_threshold} neighbours; the bound says this has probability < 2^-{auto.eta}")
    if neighbors is None:
        label = graphs.complete_graph_parameters(n, threshold, corrupt_fraction, dropout_fraction, k_needed=k_needed)
        return graphs.complete_graph(n), True, "secagg", threshold, label
    if isinstance(neighbors, (int, np.integer)) and not isinstance(neighbors, bool):
        graph, kind, k = graphs.random_regular_graph(n, int(neighbors), rng), "k-regular", int(neighbors)
    else:
        graph, kind, k = graphs.adjacency_from(neighbors, n), "explicit", None
    complete = graphs.is_complete(graph)
    ts = threshold if complete else graphs.default_share_threshold(max(len(nb) + 1 for nb in graph))
    label = graphs.GraphParameters(kind, n, k, ts, threshold, float(corrupt_fraction), float(dropout_fraction), c,
                                   auto.dropout_clients, graphs.SIGMA, graphs.ETA, None, None, None, k_needed,
                                   "not checked against Bell et al.'s bound; neighbors='auto' derives k and t_s")
    return graph, complete, "secagg+", ts, label


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


def check_active_threshold(t: int, n: int, allow: bool) -> None:
    """The actively secure variant needs t > 2n/3 strictly (Bonawitz et al. 2017, Sec. 6.2: with
    fewer than n/3 corrupt clients no two survivor sets can both gather t signatures)."""
    if 3 * t <= 2 * n and not allow:
        raise ValueError(f"active_security=True with threshold={t} <= 2n/3 for n={n} clients: two disjoint "
                         "stories about the survivors could each gather t consistency signatures (Bonawitz et "
                         f"al. 2017, Sec. 6.2 need t > 2n/3); use threshold >= {2 * n // 3 + 1} or pass "
                         "allow_insecure_threshold=True")


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
