"""The control plane of the masked protocol: one instance, its rounds, run by the server.

A faithful single-process simulation of Practical Secure Aggregation (Bonawitz et al.,
CCS 2017, Fig. 4; the red/underlined parts of the active model with
``active_security=True``) on the complete graph, and of its sparse-graph variant
SecAgg+ (Bell et al., CCS 2020) on a random k-regular graph. Its output is exactly
the sum mod M = 2^bits of the inputs of the clients whose masked input arrived (U3),
or an abort.

Rounds (Fig. 4; U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients that completed each round):

0. ``advertise_keys``: client u makes two X25519 key pairs, (c_u^PK, c_u^SK) for
   channels and (s_u^PK, s_u^SK) for masks, and sends both public keys.
1. ``share_keys``: u draws a self-mask seed b_u, Shamir-shares b_u and s_u^SK
   t-out-of-|holders| among its holders (itself and its neighbours in U1) and sends
   each neighbour v its two shares under AES-GCM with key HKDF(X25519(c_u^SK, c_v^PK));
   the associated data binds the instance, the round, u and v. The server only
   relays ciphertexts.
2. ``masked_input``: u sends y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv)
   - sum_{v>u} PRG(s_uv) mod M over its neighbours v in U2, where
   s_uv = HKDF(X25519(s_u^SK, s_v^PK)) (the same for both ends).
   (Active model only: ``consistency_check``, U3 is signed; see :mod:`.active`.)
3. ``unmasking``: each u in U4, told U3 and the dropped set U2 \\ U3, decrypts the
   ciphertexts it holds and returns b-shares of survivors and s^SK-shares of dropped
   clients, refusing (:class:`UnmaskingRefused`) if asked for both kinds of share of
   one client. The server reconstructs b_u (u in U3) and s_v^SK (v dropped), removes
   the self masks and the dangling pairwise masks, and outputs sum_{u in U3} x_u mod M.
   A client dropping in this round is still in the sum.

Fewer than ``threshold`` clients in any round, or (SecAgg+) fewer than the
per-client threshold among a client's live share holders, aborts with
:class:`SecureAggregationAborted` naming the round and the counts. A ciphertext that
fails authentication is a dropped share (a detected violation with active security),
never a wrong sum.

The server's hooks between rounds belong to a strategy (:mod:`.strategy`; malicious
ones in :mod:`.adversary`) passed as ``server=``; a faulty network (:mod:`secagg.faults`)
carries every message when ``network`` is given. Client <-> server links are assumed
authenticated (TLS), as in Bonawitz et al.

Simulation choices (none changes any value computed): this control plane (keys,
shares, dropouts, requests, reconstruction) runs first, then :mod:`.dataplane`
computes the masked inputs and the unmasked sum together. An honest client that
refuses or (active model) detects a violation stops sending; the others carry on
until the unmasking round, so an adversarial server gets everything the non-aborting
clients would send before the instance raises.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import torch

from .. import crypto, graph as graphs, shamir
from ..errors import ProtocolViolationDetected, SecureAggregationAborted
from ..pki import SimulatedPKI, encode_clients, encode_signatures
from ..secrets import instance_root
from . import dataplane
from .client import SecAggClient
from .messages import (ACTIVE_ROUNDS, ROUNDS, ProtocolResult, PublicParams, UnmaskingRefused, aborted,
                       check_inputs, check_threshold, parse_dropouts, public_graph)
from .strategy import HonestServer

Tensor = torch.Tensor

__all__ = ["SecAggProtocol"]

Holders = Dict[int, List[int]]


class SecAggProtocol:
    """One instance of SecAgg / SecAgg+ between n simulated clients and a server
    (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020), honest-but-curious by default.

    Use :func:`secagg.run_protocol`; this class exists so a test, an audit or
    :mod:`.adversary` can change the server's points of contact with the clients:
    pass a strategy ``server`` (default :class:`HonestServer`; see :mod:`.strategy` for
    the hooks ``keys_for``, ``relay``, ``survivors_for``, ``unmask_request``,
    ``signatures_for``, ``after_unmasking``), or override the same-named methods here,
    which call the strategy.

    ``network`` (see :mod:`secagg.faults`) carries every client <-> server message; None
    is a perfect network.
    """

    def __init__(self, values: Tensor, *, modulus_bits: int, threshold: int, neighbors=None,
                 share_threshold: Optional[int] = None, dropouts=None, seed: int = 0,
                 instance: int = 0, allow_insecure_threshold: bool = False,
                 tamper: Optional[Iterable[Tuple[int, int]]] = None, overwrite: bool = False,
                 active_security: bool = False, network=None, keep_masked_inputs: bool = True,
                 server: Optional[HonestServer] = None):
        n, d = check_inputs(values, modulus_bits)
        if not isinstance(active_security, bool):
            raise TypeError(f"active_security={active_security!r} must be True or False")
        self.values, self.n, self.d, self.bits = values, n, d, modulus_bits
        self.active = active_security
        self.rounds_used = ACTIVE_ROUNDS if active_security else ROUNDS
        self.threshold = check_threshold(threshold, n, allow_insecure_threshold, "threshold")
        self.drops = parse_dropouts(dropouts, n, self.rounds_used)
        self.seed, self.instance = seed, instance
        self.overwrite = bool(overwrite)
        self.keep_masked_inputs = bool(keep_masked_inputs)
        if not self.keep_masked_inputs and self.overwrite:
            raise ValueError("overwrite=True stores the masked inputs over values; it needs keep_masked_inputs=True")
        self.tamper = {(int(a), int(b)) for a, b in (tamper or ())}
        self.network = network

        root = instance_root(seed, instance)
        self.tag = crypto.hkdf(root, info=b"instance-tag", length=16)
        self.graph, self.complete, self.protocol = public_graph(neighbors, n, root)
        sizes = [len(nb) + 1 for nb in self.graph]   # share holders: the client and its neighbours
        if share_threshold is None:
            share_threshold = self.threshold if self.complete else graphs.default_share_threshold(max(sizes))
        if share_threshold > min(sizes):
            raise ValueError(f"share_threshold={share_threshold} exceeds the {min(sizes)} share holders of the "
                             "least connected client; use a denser graph or a smaller share_threshold")
        self.share_threshold = check_threshold(share_threshold, max(sizes), allow_insecure_threshold,
                                               "share_threshold", "share holders per client")
        self.pki = SimulatedPKI(seed, n) if active_security else None
        self._params = PublicParams(n, self.threshold, self.share_threshold, self.complete, self.graph, self.pki)
        self._agreements: dict = {}
        self.clients = [SecAggClient(u, root, self.tag, self._agreements, self._params) for u in range(n)]
        self.incidents: List[SecureAggregationAborted] = []   # honest clients' refusals and detections
        self.server = server if server is not None else HonestServer()
        self.server.attach(self)

    @property
    def recovered(self) -> Dict[int, Tensor]:
        """Inputs the server unmasked alone ({client: int64 [d]}; adversarial servers only)."""
        return self.server.recovered

    # -- server hooks: the strategy's (see .strategy) ---------------------------------
    def keys_for(self, client: int, keys: Dict[int, bytes]) -> Dict[int, bytes]:
        return self.server.keys_for(client, keys)

    def relay(self, sender: int, recipient: int, ciphertext: bytes) -> bytes:
        return self.server.relay(sender, recipient, ciphertext)

    def survivors_for(self, client: int, survivors: List[int]) -> List[int]:
        return self.server.survivors_for(client, survivors)

    def unmask_request(self, client: int, survivors: List[int], dropped: List[int]) -> Tuple[List[int], List[int]]:
        return self.server.unmask_request(client, survivors, dropped)

    def signatures_for(self, client: int, survivors: List[int],
                       collected: Dict[int, Tuple[Tuple[int, ...], bytes]]) -> Dict[int, bytes]:
        return self.server.signatures_for(client, survivors, collected)

    def after_unmasking(self, state: Dict[str, Any]) -> None:
        self.server.after_unmasking(state)

    # -- network ---------------------------------------------------------------------
    def _up(self, rnd: str, msgs: Dict[int, Any]) -> Dict[int, Any]:
        # Client -> server messages of one round; keyed by sender.
        return msgs if self.network is None else self.network.transmit(self, rnd, "up", msgs)

    def _down(self, rnd: str, msgs: Dict[int, Any]) -> Dict[int, Any]:
        # Server -> client messages of one round; keyed by recipient.
        return msgs if self.network is None else self.network.transmit(self, rnd, "down", msgs)

    def _tap(self, kind: str, recipient: int, payload: bytes) -> bytes:
        # End-to-end protected content the server relays (keys, share ciphertexts, U3, signatures).
        if self.network is None:
            return payload
        return self.network.relay(self, kind, recipient, payload)

    def _client_step(self, fn, *args):
        try:
            return True, fn(*args)
        except (ProtocolViolationDetected, UnmaskingRefused) as exc:
            self.incidents.append(exc)      # the client aborts; the rest carry on
            return False, None

    def _check_round(self, rnd: str, alive: Set[int], holders: Holders) -> None:
        n, t, tl = self.n, self.threshold, self.share_threshold
        if len(alive) < t:
            gone = sorted(set(range(n)) - alive)
            raise aborted(rnd, f"secure aggregation aborted in round {rnd!r}: only {len(alive)} of {n} clients "
                               f"remain, fewer than the threshold t={t} (missing: {gone[:20]}"
                               f"{'...' if len(gone) > 20 else ''})", alive=len(alive), threshold=t)
        for u in sorted(alive):
            live = len(alive) if self.complete else sum(1 for v in holders[u] if v in alive)
            if live < tl:
                raise aborted(rnd, f"secure aggregation aborted in round {rnd!r}: client {u} has only {live} live "
                                   f"share holder(s) (itself and its neighbours), fewer than the per-client "
                                   f"threshold {tl}", alive=live, threshold=tl, client=u)

    # -- the protocol ----------------------------------------------------------------
    def run(self) -> ProtocolResult:
        """Run the rounds of Fig. 4 and return the sum of the U3 inputs with the server view.

        An honest client that refuses or detects a violation aborts and the others carry on;
        the instance then raises that :class:`UnmaskingRefused` /
        :class:`ProtocolViolationDetected` (a detection first) even if the server could finish.
        """
        try:
            result = self._run()
        except SecureAggregationAborted as exc:
            raise self._outcome(exc) from None
        if self.incidents:
            raise self._outcome(None)
        result.recovered = dict(self.recovered)
        return result

    def _outcome(self, exc):
        detections = [e for e in self.incidents if isinstance(e, ProtocolViolationDetected)]
        refusals = [e for e in self.incidents if not isinstance(e, ProtocolViolationDetected)]
        chosen = (detections or refusals or [exc])[0]
        chosen.incidents = list(self.incidents)
        chosen.server_recovered = dict(self.recovered)
        if exc is not None and chosen is not exc:
            chosen.__context__ = exc
        return chosen

    def _run(self) -> ProtocolResult:
        U1, adverts, public, holders = self._advertise_keys()
        U2, sent = self._share_keys(U1, adverts, holders)
        U3, relayed = self._masked_input(U2, sent, holders)
        survivors = sorted(U3)
        # What each survivor is told U3 is (honest: U3); the active model has them sign it.
        stories: Dict[int, List[int]] = {u: sorted(self.survivors_for(u, list(survivors))) for u in sorted(U3)}
        collected: Dict[int, Tuple[Tuple[int, ...], bytes]] = {}
        askers = set(U3)
        if self.active:
            collected = self._consistency_check(U3, stories)
            askers = set(collected)
        answers = self._unmasking(askers, stories, collected, U2)
        shares = self._collect_shares(answers, survivors, sorted(U2 - U3))
        self.after_unmasking({"U1": U1, "U2": U2, "U3": U3, "public": public, "answers": answers,
                              "stories": stories, "collected": collected})
        rounds = {"advertise_keys": sorted(U1), "share_keys": sorted(U2), "masked_input": survivors}
        if self.active:
            rounds["consistency_check"] = sorted(askers)
        rounds["unmasking"] = sorted(answers)
        return self._unmask_sum(survivors, U2, shares, public, relayed, rounds, collected)

    def _advertise_keys(self):
        # Round 0: AdvertiseKeys (active: keys signed under the PKI).
        rnd, clients = "advertise_keys", self.clients
        got = self._up(rnd, {u: clients[u].advertisement() for u in range(self.n) if u not in self.drops[rnd]})
        U1 = set(got)
        adverts = {u: got[u] for u in U1}
        public = {u: (bytes(b[:32]), bytes(b[32:64])) for u, b in adverts.items()}
        holders = {u: sorted(v for v in [u] + self.graph[u] if v in U1) for u in U1}
        self._check_round(rnd, U1, holders)
        return U1, adverts, public, holders

    def _share_keys(self, U1: Set[int], adverts: Dict[int, bytes], holders: Holders):
        # Round 1: ShareKeys; clients check the key list, then the server relays ciphertexts.
        rnd, clients, step = "share_keys", self.clients, self._client_step
        lists = {u: self.keys_for(u, {v: self._tap("keys", u, adverts[v]) for v in holders[u]}) for u in sorted(U1)}
        lists = self._down(rnd, lists)
        sent: Dict[int, Dict[int, bytes]] = {}
        for u in sorted(lists):
            if u in self.drops[rnd]:
                continue
            ok, mine = step(clients[u].accept_keys, lists[u])
            if ok:
                ok, cts = step(clients[u].share_keys, {}, mine, self.share_threshold)
                if ok:
                    sent[u] = cts
        got = self._up(rnd, sent)
        U2 = set(got)
        self._check_round(rnd, U2, holders)
        return U2, got

    def _masked_input(self, U2: Set[int], got: Dict[int, Dict[int, bytes]], holders: Holders):
        # Round 2: MaskedInputCollection; recipients in U2 get the ciphertexts from U2.
        rnd = "masked_input"
        relayed: Dict[Tuple[int, int], bytes] = {}
        inbox: Dict[int, Dict[int, bytes]] = {v: {} for v in U2}
        for u in sorted(U2):
            for v, ct in got[u].items():
                relayed[(u, v)] = fwd = self.relay(u, v, ct)
                if v in U2:
                    inbox[v][u] = self._tap("share", v, fwd)
        inbox = self._down(rnd, inbox)
        sent_y: Dict[int, bytes] = {}
        for v in sorted(inbox):
            if v in self.drops[rnd]:
                continue
            ok, _ = self._client_step(self.clients[v].receive_shares, inbox[v])
            if ok:
                sent_y[v] = b"y"   # y_v itself is computed by the data plane
        U3 = set(self._up(rnd, sent_y))
        self._check_round(rnd, U3, holders)
        return U3, relayed

    def _consistency_check(self, U3: Set[int], stories: Dict[int, List[int]]):
        # Active model, ConsistencyCheck (Fig. 4, red): every survivor signs the U3 it was told.
        rnd = "consistency_check"
        encoded: Dict[tuple, bytes] = {}
        for u in sorted(U3):
            key = tuple(stories[u])
            if key not in encoded:
                encoded[key] = encode_clients(key)
        told = self._down(rnd, {u: self._tap("survivors", u, encoded[tuple(stories[u])]) for u in sorted(U3)})
        sigs: Dict[int, bytes] = {}
        for u in sorted(told):
            if u in self.drops[rnd]:
                continue
            ok, sig = self._client_step(self.clients[u].consistency_check, told[u])
            if ok:
                sigs[u] = sig
        sigs = self._up(rnd, sigs)
        collected = {u: (tuple(stories[u]), sigs[u]) for u in sigs}
        if len(collected) < self.threshold:
            raise aborted(rnd, f"secure aggregation aborted in round {rnd!r}: only {len(collected)} of {self.n} "
                               f"clients signed U3, fewer than the threshold t={self.threshold}",
                          alive=len(collected), threshold=self.threshold)
        return collected

    def _unmasking(self, askers: Set[int], stories: Dict[int, List[int]],
                   collected: Dict[int, Tuple[Tuple[int, ...], bytes]], U2: Set[int]) -> Dict[int, Any]:
        # Unmasking: ask for b-shares of U3 and s^SK-shares of U2 \ U3; return the answers.
        rnd = "unmasking"
        requests = {}
        lists_sent: Dict[int, Tuple[dict, bytes]] = {}
        for u in sorted(askers):
            told_u = stories[u]
            req_s, req_d = self.unmask_request(u, list(told_u), sorted(U2 - set(told_u)))
            sig_list = None
            if self.active:
                chosen = self.signatures_for(u, list(told_u), collected)
                if id(chosen) not in lists_sent:      # one encoding per distinct list
                    lists_sent[id(chosen)] = (chosen, encode_signatures(chosen))
                sig_list = self._tap("signature", u, lists_sent[id(chosen)][1])
            requests[u] = (list(req_s), list(req_d), sig_list)
        requests = self._down(rnd, requests)
        answers = {}
        for u in sorted(requests):
            if u in self.drops[rnd]:
                continue
            ok, resp = self._client_step(self.clients[u].unmask, *requests[u])
            if ok:
                answers[u] = resp
        return self._up(rnd, answers)

    @staticmethod
    def _collect_shares(answers: Dict[int, Any], survivors: List[int], dropped: List[int]):
        # The b-shares of U3 and s^SK-shares of U2 \ U3 the answers hold, and the failed ciphertexts.
        b_shares: Dict[int, Dict[int, int]] = {v: {} for v in survivors}
        s_shares: Dict[int, Dict[int, int]] = {v: {} for v in dropped}
        failed: List[Tuple[int, int]] = []
        for u in sorted(answers):
            resp = answers[u]
            for v, sh in resp["b"].items():
                if v in b_shares:
                    b_shares[v][u] = sh
            for v, sh in resp["s"].items():
                if v in s_shares:
                    s_shares[v][u] = sh
            failed += [(v, u) for v in resp["failed"]]
        return b_shares, s_shares, failed

    def _unmask_sum(self, survivors: List[int], U2: Set[int], shares, public, relayed,
                    rounds: Dict[str, List[int]], collected) -> ProtocolResult:
        # Fig. 4, Round 3, server side: reconstruct b_u (U3) and s_v^SK (dropped), then the sum.
        b_shares, s_shares, failed = shares
        answered = len(rounds["unmasking"])
        if answered < self.threshold:
            raise aborted("unmasking", f"secure aggregation aborted in round 'unmasking': only {answered} of "
                                       f"{self.n} clients answered, fewer than the threshold t={self.threshold}",
                          alive=answered, threshold=self.threshold)
        dropped = sorted(s_shares)
        pos = {u: i for i, u in enumerate(survivors)}
        needs_key = [v for v in dropped if any(w in pos for w in self.graph[v])]
        b_hat = {v: self._reconstruct(v, b_shares[v], "self-mask seed b", failed) for v in survivors}
        s_hat = {v: self._reconstruct(v, s_shares[v], "mask key s^SK", failed) for v in needs_key}
        for v, key in s_hat.items():
            if crypto.public_bytes(crypto.X25519PrivateKey.from_private_bytes(key)) != public[v][1]:
                raise aborted("unmasking", f"the reconstructed mask key of client {v} does not match its "
                                           "advertised public key: the shares are inconsistent", client=v)
        if self.incidents:
            raise self._outcome(None)   # a client aborted: do not spend the data plane

        total, masked, nbytes = dataplane.masked_sum(
            self.values, self.bits, self.clients, self.graph, survivors, U2, b_hat, s_hat, public,
            overwrite=self.overwrite, keep_masked_inputs=self.keep_masked_inputs)
        return ProtocolResult(
            total=total, survivors=survivors, masked_inputs=masked, public_keys=public,
            ciphertexts=relayed, reconstructed_seeds=b_hat, reconstructed_keys=s_hat,
            failed_shares=sorted(failed), rounds=rounds,
            graph=self.graph, threshold=self.threshold, share_threshold=self.share_threshold,
            modulus_bits=self.bits, protocol=self.protocol, keystream_bytes=nbytes,
            active_security=self.active, signatures={u: s for u, (_, s) in collected.items()})

    def _reconstruct(self, v: int, shares: Dict[int, int], what: str, failed) -> bytes:
        if len(shares) < self.share_threshold:
            bad = sum(1 for s, _ in failed if s == v)
            raise aborted("unmasking", f"secure aggregation aborted in round 'unmasking': only {len(shares)} valid "
                                       f"share(s) of client {v}'s {what} reached the server ({bad} failed "
                                       f"authentication), fewer than the threshold {self.share_threshold}",
                          alive=len(shares), threshold=self.share_threshold, client=v)
        try:
            return shamir.int_to_secret(shamir.reconstruct(shares, self.share_threshold))
        except ValueError as exc:
            raise aborted("unmasking", f"client {v}'s {what} could not be reconstructed: {exc}", client=v) from None

    def masked_row(self, u: int, U2: Iterable[int]) -> np.ndarray:
        """y_u (Fig. 4, Round 2) computed naively for one client (uint64 residues): what the
        server receives from u. Used by adversaries and tests, not by the bulk path."""
        return dataplane.masked_row(self.values[u], self.clients[u], self.graph[u], U2, self.bits)
