"""The entry point of the masked protocol: one instance, honest or against a named malicious server.

:func:`run_protocol` builds a :class:`SecAggProtocol` (Bonawitz et al. 2017, Fig. 4;
Bell et al. 2020) with the honest server or, for ``adversary=NAME``, the strategy of
:mod:`.adversary`, and runs it. It sits above the server and the adversaries, so the
server never imports them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Tuple

from torch import Tensor

from ..pki import SimulatedPKI
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
                 network=None, keep_masked_inputs: bool = True, corrupt_fraction: Optional[float] = None,
                 dropout_fraction: Optional[float] = None, insecure_reproducible: bool = False,
                 pki: Optional[SimulatedPKI] = None) -> ProtocolResult:
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
        satisfy n/2 < t <= n (t <= n/2 only with ``allow_insecure_threshold``). With
        ``active_security`` t > 2n/3 strictly (Bonawitz et al. 2017, Sec. 6.2, against a
        server colluding with fewer than n/3 clients; refused otherwise unless
        ``allow_insecure_threshold``).
    neighbors : None, int, "auto" or graph
        None: the complete graph (SecAgg). "auto": SecAgg+ on the Erdős–Rényi graph
        G(n, k/(n-1)) with the smallest expected degree k and the share threshold t_s that
        meet Bell et al. 2020's bound (security 2^-40, correctness 2^-30) for
        ``corrupt_fraction`` and ``dropout_fraction``
        (:func:`secagg.graph.secagg_plus_parameters`), or the complete graph when no sparse
        one does; ValueError (naming gamma, delta, n and the k needed) when not even the
        complete graph does. An int k: a random k-regular graph (``networkx``), not checked
        against the bound (``.bound["meets"]`` is None, ``.bound["k_needed"]`` says what
        "auto" would use). Or an explicit graph: an [n, n] symmetric 0/1 matrix with zero
        diagonal, or a list of n neighbour lists (also unchecked). The graph is public and
        drawn per instance from a fresh coin.
    dropouts : {round: clients}
        Clients that drop in ``"advertise_keys"``, ``"share_keys"``, ``"masked_input"``,
        ``"consistency_check"`` (active only) or ``"unmasking"`` (each client at most
        once). A client dropping after ``"masked_input"`` has sent its masked input and
        is in the sum.
    seed, instance : int
        Used only with ``insecure_reproducible=True``: then every key, b_u, Shamir
        coefficient, the instance tag and the graph derive from (seed, instance), and
        the PKI's long-term keys from ``seed``. Otherwise ignored: every secret comes
        from the OS CSPRNG, fresh per call.
    share_threshold : int, optional
        Per-client Shamir threshold. Default: t for the complete graph, the bound's t_s
        for "auto" (which refuses an explicit one), else a strict majority of a client's
        k + 1 share holders.
    corrupt_fraction, dropout_fraction : float, optional
        gamma and delta: at most floor(gamma n) clients collude with the server, at most
        floor(delta n) drop in this instance. "auto" derives the graph from them; every
        result reports them in ``.bound``. Default 0.1 each
        (``secagg.protocol.messages.DEFAULT_CORRUPT_FRACTION`` / ``DEFAULT_DROPOUT_FRACTION``).
    insecure_reproducible : bool
        INSECURE, for debugging a failing case: derive every secret from (seed, instance)
        as described above, so two calls are identical. The result says so
        (``.insecure_reproducible``, ``.warning``, and the server view).
    pki : secagg.pki.SimulatedPKI, optional
        Active model: the long-term keys of the clients (kept across instances, as
        ``MaskedOracle`` does). Default: a fresh PKI for this call.
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
        keys, commitments, rounds, graph, consistency signatures), the graph's security
        label ``.bound`` and the ``.insecure_reproducible`` flag.

    Raises
    ------
    ValueError
        Before any round: bad arguments, including a threshold the variant refuses and
        fractions for which ``neighbors="auto"`` finds no graph meeting the bound.
    SecureAggregationAborted
        A round falls below the threshold (the message names the round and counts), a
        reconstructed secret fails its commitment (a share off the polynomial), or the
        clients' views of U2 disagree.
    UnmaskingRefused
        An honest client was asked for both shares of one client.
    ProtocolViolationDetected
        (active) An honest client's check failed; names the check and the party.
    """
    kw = dict(modulus_bits=modulus_bits, threshold=threshold, neighbors=neighbors,
              share_threshold=share_threshold, dropouts=dropouts, seed=seed, instance=instance,
              allow_insecure_threshold=allow_insecure_threshold, tamper=tamper, overwrite=overwrite,
              active_security=active_security, network=network, keep_masked_inputs=keep_masked_inputs,
              corrupt_fraction=corrupt_fraction, dropout_fraction=dropout_fraction,
              insecure_reproducible=insecure_reproducible, pki=pki)
    if adversary is None:
        if adversary_options:
            raise ValueError("adversary_options given without an adversary; pass adversary=NAME, one of "
                             f"{ADVERSARIES}")
        return SecAggProtocol(values, **kw).run()
    return SecAggProtocol(values, server=make_adversary(adversary, adversary_options), **kw).run()
