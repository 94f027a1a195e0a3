"""The entry point of the masked protocol: one instance, honest or against a named malicious server.

:func:`run_protocol` builds a :class:`SecAggProtocol` (Bonawitz et al. 2017, Fig. 4;
Bell et al. 2020) with the honest server or, for ``adversary=NAME``, the strategy of
:mod:`.adversary`, and runs it. It sits above the server and the adversaries, so the
server never imports them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Tuple

from torch import Tensor

from .adversary import ADVERSARIES, make_adversary
from .messages import ProtocolResult
from .server import SecAggProtocol

__all__ = ["run_protocol"]


def run_protocol(values: Tensor, *, modulus_bits: int, threshold: int, neighbors=None,
                 dropouts: Optional[Mapping[str, Iterable[int]]] = None, seed: int = 0,
                 instance: int = 0, share_threshold: Optional[int] = None,
                 allow_insecure_threshold: bool = False,
                 tamper: Optional[Iterable[Tuple[int, int]]] = None,
                 overwrite: bool = False, active_security: bool = False,
                 adversary: Optional[str] = None, adversary_options: Optional[Mapping[str, Any]] = None,
                 network=None, keep_masked_inputs: bool = True) -> ProtocolResult:
    """Run one instance of SecAgg (Bonawitz et al. 2017, Fig. 4) or SecAgg+ (Bell et al. 2020).

    Parameters
    ----------
    values : int64 Tensor [n, d]
        Client u's input is row u, entries in [0, 2^modulus_bits) (for 64 bits any
        int64, read as its two's complement residue). Stays on its device.
    modulus_bits : int
        M = 2^modulus_bits, 1..64, with M > n.
    threshold : int
        t: the protocol aborts in any round where fewer than t clients remain. Must
        satisfy n/2 < t <= n (t <= n/2 only with ``allow_insecure_threshold``). Against
        an active server colluding with up to n_C < n/3 clients, Bonawitz et al. take
        t > 2n/3 (see docs/security.md).
    neighbors : None, int, "auto" or graph
        None: the complete graph (SecAgg). An int k: a random k-regular graph
        (SecAgg+, the Harary graph H_{k,n} under a random relabelling). "auto": k =
        :func:`secagg.graph.default_degree` (n) = 2 ceil(log2 n), or the complete graph
        when that is n - 1 or more. Or an explicit graph: an [n, n] symmetric 0/1
        matrix with zero diagonal, or a list of n neighbour lists.
    dropouts : {round: clients}
        Clients that drop in ``"advertise_keys"``, ``"share_keys"``, ``"masked_input"``,
        ``"consistency_check"`` (active only) or ``"unmasking"`` (each client at most
        once). A client dropping after ``"masked_input"`` has sent its masked input and
        is in the sum.
    seed, instance : int
        All keys, seeds, Shamir coefficients and the graph derive from (seed,
        instance); use a new ``instance`` for every aggregation (fresh masks). The
        long-term signing keys of the active model derive from ``seed`` alone.
    share_threshold : int, optional
        Per-client Shamir threshold. Default: t for the complete graph, else a strict
        majority of a client's k + 1 share holders (Bell et al. 2020).
    allow_insecure_threshold : bool
        Permit t <= n/2 (or share_threshold <= holders/2), e.g. to study it.
    tamper : pairs (sender, recipient)
        Ciphertexts the network corrupts (one bit flipped) in transit; AES-GCM rejects
        them: a dropped share (honest-but-curious) or a detected violation (active).
    overwrite : bool
        Write the masked inputs over ``values`` (rows of U3 moved to the front)
        instead of allocating a new [|U3|, d] tensor; for callers that own ``values``.
    active_security : bool
        The variant secure against an actively malicious server (Fig. 4 with the
        red/underlined parts): Ed25519 signatures under a simulated PKI on the advertised
        keys, the ConsistencyCheck round (clients sign U3; each checks >= t valid
        signatures on the same U3 before unmasking) and every honest client's checks,
        which abort with :class:`ProtocolViolationDetected`.
    adversary : str, optional
        Run against a malicious server: one of ``ADVERSARIES`` (see
        :mod:`secagg.protocol.adversary`), given to :class:`SecAggProtocol` as its server
        strategy; ``adversary_options`` go to its constructor (``target``, ``corrupt``). What it unmasked alone ends in ``.recovered`` (or in
        ``exc.server_recovered`` when the run raises).
    network : optional
        Carries every client <-> server message (:class:`secagg.faults.FaultyNetwork`);
        None is a perfect network.
    keep_masked_inputs : bool
        False: do not keep the [|U3|, d] masked inputs (``.masked_inputs`` is [|U3|, 0]);
        memory stays O(n * chunk) beyond ``values``.

    Returns
    -------
    ProtocolResult
        ``.total`` (int64 [d], sum of the U3 inputs mod M), ``.survivors`` (U3 sorted)
        and the server view (masked inputs, relayed ciphertexts, reconstructed seeds and
        keys, rounds, graph, consistency signatures).

    Raises
    ------
    SecureAggregationAborted
        A round falls below the threshold (the message names the round and counts).
    UnmaskingRefused
        An honest client was asked for both shares of one client.
    ProtocolViolationDetected
        (active) An honest client's check failed; names the check and the party.
    """
    kw = dict(modulus_bits=modulus_bits, threshold=threshold, neighbors=neighbors,
              share_threshold=share_threshold, dropouts=dropouts, seed=seed, instance=instance,
              allow_insecure_threshold=allow_insecure_threshold, tamper=tamper, overwrite=overwrite,
              active_security=active_security, network=network, keep_masked_inputs=keep_masked_inputs)
    if adversary is None:
        if adversary_options:
            raise ValueError("adversary_options given without an adversary; pass adversary=NAME, one of "
                             f"{ADVERSARIES}")
        return SecAggProtocol(values, **kw).run()
    return SecAggProtocol(values, server=make_adversary(adversary, adversary_options), **kw).run()
