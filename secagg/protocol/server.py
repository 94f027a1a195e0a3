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
   relays ciphertexts. With them u sends a hash commitment to b_u.
2. ``masked_input``: u sends y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv)
   - sum_{v>u} PRG(s_uv) mod M over its neighbours v in its own view of U2 (the senders
   of the ciphertexts relayed to it), where s_uv = HKDF(X25519(s_u^SK, s_v^PK)) (the
   same for both ends). If the server relayed inconsistent lists (u masks with v, v
   not with u, both in U3) the pairwise mask cannot be removed: the instance aborts.
   (Active model only: ``consistency_check``, U3 is signed; see :mod:`.active`.)
3. ``unmasking``: each u in U4, told U3 and the dropped set U2 \\ U3, decrypts the
   ciphertexts it holds and returns b-shares of survivors and s^SK-shares of dropped
   clients, refusing (:class:`UnmaskingRefused`) if asked for both kinds of share of
   one client. The server reconstructs b_u (u in U3) and s_v^SK (v dropped), checks
   each against its commitment (b_u against the Round 1 hash, s_v^SK against s_v^PK),
   so a share off the polynomial aborts even when exactly t shares arrived, removes the
   self masks and the dangling pairwise masks, and outputs sum_{u in U3} x_u mod M.
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

from .. import crypto, shamir
from ..errors import ProtocolViolationDetected, SecureAggregationAborted
from ..pki import SimulatedPKI, encode_clients, encode_signatures
from ..secrets import INSECURE_WARNING, check_flag, instance_randomness
from . import dataplane
from .client import SecAggClient
from .messages import (ACTIVE_ROUNDS, DEFAULT_CORRUPT_FRACTION, DEFAULT_DROPOUT_FRACTION, ROUNDS, ProtocolResult,
                       PublicParams, UnmaskingRefused, aborted, check_active_threshold, check_inputs,
                       check_threshold, choose_graph, parse_dropouts, u32)
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
    is a perfect network. The other arguments are :func:`secagg.run_protocol`'s.
    """

    def __init__(self, values: Tensor, *, modulus_bits: int, threshold: int, neighbors=None,
                 share_threshold: Optional[int] = None, dropouts=None, seed: int = 0,
                 instance: int = 0, allow_insecure_threshold: bool = False,
                 tamper: Optional[Iterable[Tuple[int, int]]] = None, overwrite: bool = False,
                 active_security: bool = False, network=None, keep_masked_inputs: bool = True,
                 server: Optional[HonestServer] = None, corrupt_fraction: Optional[float] = None,
                 dropout_fraction: Optional[float] = None, insecure_reproducible: bool = False,
                 pki: Optional[SimulatedPKI] = None):
        if isinstance(values, dataplane.EncodedRows):   # inputs encoded on demand, a group at a time
            n, d = check_inputs(torch.zeros((values.shape[0], 0), dtype=torch.int64), modulus_bits)
            d = values.shape[1]
            if overwrite:
                raise ValueError("overwrite=True needs the inputs as a tensor, not EncodedRows")
        else:
            n, d = check_inputs(values, modulus_bits)
        self.active = check_flag("active_security", active_security)
        self.insecure_reproducible = check_flag("insecure_reproducible", insecure_reproducible)
        self.values, self.n, self.d, self.bits = values, n, d, modulus_bits
        self.rounds_used = ACTIVE_ROUNDS if active_security else ROUNDS
        self.threshold = check_threshold(threshold, n, allow_insecure_threshold, "threshold")
        if self.active:
            check_active_threshold(self.threshold, n, allow_insecure_threshold)
        self.drops = parse_dropouts(dropouts, n, self.rounds_used)
        self.seed, self.instance = seed, instance
        self.overwrite = bool(overwrite)
        self.keep_masked_inputs = bool(keep_masked_inputs)
        if not self.keep_masked_inputs and self.overwrite:
            raise ValueError("overwrite=True stores the masked inputs over values; it needs keep_masked_inputs=True")
        self.tamper = {(int(a), int(b)) for a, b in (tamper or ())}
        self.network = network

        rand = instance_randomness(seed, instance, self.insecure_reproducible)
        self.tag = rand.tag
        self.corrupt_fraction = DEFAULT_CORRUPT_FRACTION if corrupt_fraction is None else corrupt_fraction
        self.dropout_fraction = DEFAULT_DROPOUT_FRACTION if dropout_fraction is None else dropout_fraction
        auto = isinstance(neighbors, str)
        if auto and share_threshold is not None:
            raise ValueError(f"share_threshold={share_threshold} with neighbors='auto': 'auto' derives t_s from "
                             "Bell et al.'s bound; drop share_threshold, or give an int degree k")
        self.graph, self.complete, self.protocol, default_ts, params = choose_graph(
            neighbors, n, rand.graph_rng(), threshold=self.threshold, corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_fraction, active=self.active)
        sizes = [len(nb) + 1 for nb in self.graph]   # share holders: the client and its neighbours
        if share_threshold is None:
            share_threshold = default_ts
        if share_threshold > min(sizes):
            raise ValueError(f"share_threshold={share_threshold} exceeds the {min(sizes)} share holders of the "
                             "least connected client; use a denser graph or a smaller share_threshold")
        if auto:   # t_s comes from the bound, which already accounts for the corrupt holders
            self.share_threshold = share_threshold
        else:
            self.share_threshold = check_threshold(share_threshold, max(sizes), allow_insecure_threshold,
                                                   "share_threshold", "share holders per client")
        bound = params.as_dict()
        bound["share_threshold"] = self.share_threshold
        if self.active and bound["meets"] is not None:
            # Sec. 6.2 adds n_C < n/3 and t > 2n/3 to what the graph must meet.
            bound["meets"] = bool(bound["meets"] and 3 * params.corrupt_clients < n and 3 * self.threshold > 2 * n)
        self.bound = bound
        if active_security:
            self.pki_registry = pki if pki is not None else SimulatedPKI(
                insecure_seed=seed if self.insecure_reproducible else None)
            self.pki = self.pki_registry.session(n)
        else:
            self.pki_registry, self.pki = None, None
        self._params = PublicParams(n, self.threshold, self.share_threshold, self.complete, self.graph, self.pki)
        self._agreements: dict = {}
        self.clients = [SecAggClient(u, rand.client(u), self.tag, self._agreements, self._params) for u in range(n)]
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

    def shares_for(self, client: int, ciphertexts: Dict[int, bytes]) -> Dict[int, bytes]:
        return self.server.shares_for(client, ciphertexts)

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
        # After the clients' own checks (active model), before anyone reveals a share.
        views = self._check_views(U3)
        answers = self._unmasking(askers, stories, collected, U2)
        shares = self._collect_shares(answers, survivors, sorted(U2 - U3))
        self.after_unmasking({"U1": U1, "U2": U2, "U3": U3, "public": public, "answers": answers,
                              "stories": stories, "collected": collected})
        rounds = {"advertise_keys": sorted(U1), "share_keys": sorted(U2), "masked_input": survivors}
        if self.active:
            rounds["consistency_check"] = sorted(askers)
        rounds["unmasking"] = sorted(answers)
        commitments = {u: sent[u]["commitment"] for u in U2}
        return self._unmask_sum(survivors, U2, views, shares, public, relayed, rounds, collected, commitments)

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
                    sent[u] = {"shares": cts, "commitment": clients[u].self_mask_commitment()}
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
            for v, ct in got[u]["shares"].items():
                relayed[(u, v)] = fwd = self.relay(u, v, ct)
                if v in U2:
                    inbox[v][u] = self._tap("share", v, fwd)
        inbox = self._down(rnd, {v: self.shares_for(v, inbox[v]) for v in sorted(inbox)})
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

    def _check_views(self, U3: Set[int]) -> Dict[int, frozenset]:
        # Each survivor masked with the neighbours in its own view of U2 (Fig. 4, Round 2). The
        # server knows every view (it relayed the lists); a pair of survivors that disagree about
        # each other leaves a pairwise mask no reconstruction can remove: abort, never a wrong sum.
        views = {u: self.clients[u].u2_view() for u in U3}
        for u in sorted(U3):
            for v in self.graph[u]:
                if v > u and v in U3 and (v in views[u]) != (u in views[v]):
                    a, b = (u, v) if v in views[u] else (v, u)
                    raise aborted("masked_input", f"secure aggregation aborted in round 'masked_input': client {a} "
                                                  f"masked its input with client {b}, but client {b} was not relayed "
                                                  f"client {a}'s shares (inconsistent views of U2): their pairwise "
                                                  "mask cannot be removed", client=b)
        return views

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

    def _unmask_sum(self, survivors: List[int], U2: Set[int], views: Dict[int, frozenset], shares, public, relayed,
                    rounds: Dict[str, List[int]], collected, commitments: Dict[int, bytes]) -> ProtocolResult:
        # Fig. 4, Round 3, server side: reconstruct b_u (U3) and s_v^SK (dropped), check them, then the sum.
        b_shares, s_shares, failed = shares
        answered = len(rounds["unmasking"])
        if answered < self.threshold:
            raise aborted("unmasking", f"secure aggregation aborted in round 'unmasking': only {answered} of "
                                       f"{self.n} clients answered, fewer than the threshold t={self.threshold}",
                          alive=answered, threshold=self.threshold)
        pos = {u: i for i, u in enumerate(survivors)}
        # The dropped clients some survivor masked with, in its own view of U2.
        needs_key = sorted({v for u in survivors for v in self.graph[u] if v not in pos and v in views[u]})
        for v in needs_key:
            if v not in s_shares:
                raise aborted("unmasking", f"a survivor masked its input with client {v}, whose shares never "
                                           "reached the server: that pairwise mask cannot be removed", client=v)
        b_hat = {v: self._reconstruct(v, b_shares[v], "self-mask seed b", failed) for v in survivors}
        s_hat = {v: self._reconstruct(v, s_shares[v], "mask key s^SK", failed) for v in needs_key}
        # Interpolation cannot see a share off the polynomial: check each secret against its commitment.
        for v, b in b_hat.items():
            ok = lambda sec, v=v: crypto.commit_secret(sec, self.tag + u32(v)) == commitments[v]  # noqa: E731
            if not ok(b):
                raise aborted("unmasking", self._bad_share(v, b_shares[v], "self-mask seed b_v",
                                                           "its Round 1 commitment", ok), client=v)
        for v, key in s_hat.items():
            ok = lambda sec, v=v: crypto.public_bytes(  # noqa: E731
                crypto.X25519PrivateKey.from_private_bytes(sec)) == public[v][1]
            if not ok(key):
                raise aborted("unmasking", self._bad_share(v, s_shares[v], "mask key s_v^SK",
                                                           "its advertised public key s_v^PK", ok), client=v)
        if self.incidents:
            raise self._outcome(None)   # a client aborted: do not spend the data plane

        total, masked, nbytes = dataplane.masked_sum(
            self.values, self.bits, self.clients, self.graph, survivors, U2, b_hat, s_hat, public,
            overwrite=self.overwrite, keep_masked_inputs=self.keep_masked_inputs, views=views)
        return ProtocolResult(
            total=total, survivors=survivors, masked_inputs=masked, public_keys=public,
            ciphertexts=relayed, reconstructed_seeds=b_hat, reconstructed_keys=s_hat,
            failed_shares=sorted(failed), rounds=rounds,
            graph=self.graph, threshold=self.threshold, share_threshold=self.share_threshold,
            modulus_bits=self.bits, protocol=self.protocol, keystream_bytes=nbytes,
            active_security=self.active, signatures={u: s for u, (_, s) in collected.items()},
            commitments=commitments, bound=dict(self.bound), insecure_reproducible=self.insecure_reproducible,
            warning=INSECURE_WARNING if self.insecure_reproducible else None)

    def _bad_share(self, v: int, shares: Dict[int, int], what: str, against: str, ok) -> str:
        # The message of a secret that fails its commitment. With a spare share, the culprit is the
        # holder (among the t used) without whose share the reconstruction passes; O(t^3), so only small t.
        t = self.share_threshold
        used = sorted(shares)[:t]
        culprit = None
        if len(shares) > t and t <= 128:
            for h in used:
                try:
                    cand = shamir.int_to_secret(shamir.reconstruct({g: s for g, s in shares.items() if g != h}, t))
                except ValueError:
                    continue
                if ok(cand):
                    culprit = h
                    break
        who = (f"; holder {culprit}'s share is the one off the polynomial" if culprit is not None else
               f"; {len(shares)} share(s) for threshold {t}: the wrong one cannot be named")
        return (f"secure aggregation aborted in round 'unmasking': client {v}'s {what}, reconstructed from the "
                f"shares of holders {used}, does not match {against}: a share is not on the polynomial (its "
                f"holder altered it){who}")

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

    def masked_row(self, u: int, U2: Optional[Iterable[int]] = None) -> np.ndarray:
        """y_u (Fig. 4, Round 2) computed naively for one client (uint64 residues): what the
        server receives from u, masked over u's own view of U2 unless ``U2`` is given. Used by
        adversaries and tests, not by the bulk path."""
        view = self.clients[u].u2_view() if U2 is None else U2
        return dataplane.masked_row(self.values[u], self.clients[u], self.graph[u], view, self.bits)
