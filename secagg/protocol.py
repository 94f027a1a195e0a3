"""The masked secure-aggregation protocol: SecAgg (Bonawitz et al. 2017) and SecAgg+.

A faithful single-process simulation of Practical Secure Aggregation (Bonawitz et
al., CCS 2017, Fig. 4; the red/underlined parts of the active model with
``active_security=True``) on the complete graph, and of its sparse-graph variant SecAgg+ (Bell et al.,
CCS 2020) on a random k-regular graph. Its output is exactly the sum mod M = 2^bits
of the inputs of the clients whose masked input arrived (U3), or an abort.

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
   (Active model only: ``consistency_check``, U3 is signed; see below.)
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

Threat models (docs/security.md has the full table):

- ``active_security=False`` (default): honest-but-curious server and clients
  (Bonawitz et al. 2017, Sec. 6.1; t > n/2): everyone follows the protocol and the
  server records everything it sees (the server view in :class:`ProtocolResult`).
  The honest-client refusal of a double reveal is implemented nonetheless. Share
  ciphertexts are end-to-end AES-GCM: a tampered one is a dropped share.
- ``active_security=True``: the variant against an actively malicious server (Fig. 4
  with the red/underlined parts, Sec. 6.2; t > 2n/3 with fewer than n/3 corrupt
  clients). Clients sign c_u^PK || s_u^PK with long-term Ed25519 keys registered in a
  simulated PKI (:mod:`secagg.pki`); a ConsistencyCheck round follows the masked
  inputs: the server sends U3, each survivor checks it and returns SIG.sign(d_u^SK,
  U3); before unmasking each client requires at least t valid signatures on the U3
  it signed and a request that matches it. Every failed check aborts that client with
  :class:`ProtocolViolationDetected` naming the check and the party at fault; the
  instance then raises it. A share ciphertext that fails authentication is a detected
  violation here, not a dropped share.

Malicious servers (:mod:`secagg.adversary`, ``run_protocol(adversary=...)``) override
the server hooks of :class:`SecAggProtocol`; a faulty network (:mod:`secagg.faults`)
carries every message when ``network`` is given. Client <-> server links are assumed
authenticated (TLS), as in Bonawitz et al.

Simulation choices (none changes any value computed):

- The control plane (keys, shares, dropouts, requests, reconstruction) runs first,
  then the data plane computes masked inputs and the unmasked sum together chunk by
  chunk of coordinates. The server's requests depend only on who sent what, so the
  result is identical to running the rounds strictly in order.
- Both ends of an edge derive the same X25519 secret; the simulation computes it
  once per edge and kind, and each pairwise keystream once, adding it to one end
  and subtracting it from the other in bulk (numpy views of the keystream bytes,
  unsigned wrap-around arithmetic, bounded memory per chunk).
- The server's unmasking regenerates every mask it removes from the reconstructed
  secrets, as a real server must.
- Active model: every client verifies the same (signer, message, signature) triples;
  each distinct triple is verified once per instance and the verdict reused
  (:class:`secagg.pki.SimulatedPKI`). A client that aborts stops sending; the others
  carry on until the unmasking round, so an adversarial server gets everything the
  non-aborting clients would send before the instance raises.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from cryptography.exceptions import InvalidTag

from . import crypto, graph as graphs, shamir
from .encoding import wrap_mod
from .errors import ProtocolViolationDetected, SecureAggregationAborted
from .pki import (SIGNATURE_BYTES, SimulatedPKI, decode_signatures, encode_clients, encode_signatures, key_message,
                  survivors_message)
from .pki import decode_clients as pki_decode

Tensor = torch.Tensor

__all__ = ["ROUNDS", "ACTIVE_ROUNDS", "ADVERSARIES", "ProtocolResult", "SecAggClient", "SecAggProtocol",
           "UnmaskingRefused", "ProtocolViolationDetected", "run_protocol"]

ROUNDS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
# The actively secure variant adds ConsistencyCheck before unmasking (Bonawitz et al. 2017, Fig. 4).
ACTIVE_ROUNDS = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
ADVERSARIES = ("double-reveal", "inconsistent-survivors", "key-substitution", "replay", "drop-and-unmask")

_CHUNK_BYTES = 1 << 16   # keystream bytes per cipher call and row: near peak cipher speed
_GROUP = 16              # keystreams per block: 16 x 64 KiB stays in a core's L2
_LITTLE = sys.byteorder == "little"
# CPU inputs: accumulate x_u and the masks in one numpy buffer. Off: the device path
# (masks made on the CPU, moved, added to x_u where it lives); tests flip it on CPU.
_HOST_FAST_PATH = True


class UnmaskingRefused(SecureAggregationAborted):
    """An honest client refused to reveal both shares (b and s^SK) of one client.

    Bonawitz et al. 2017, Fig. 4, Round 3: revealing both the self-mask seed b_v
    and the mask key s_v^SK of a client v would let the server unmask y_v alone.
    """


def _reduce(y: np.ndarray, bits: int) -> np.ndarray:
    return y if bits == 64 else y & np.uint64((1 << bits) - 1)


def _aborted(round_name: str, message: str, **info) -> SecureAggregationAborted:
    exc = SecureAggregationAborted(message)
    exc.round = round_name
    for k, v in info.items():
        setattr(exc, k, v)
    return exc


def _violation(rnd: str, check: str, by: int, message: str, party: Any = "server",
               subject: Optional[int] = None) -> ProtocolViolationDetected:
    who = "the server" if party == "server" else f"client {party}"
    return ProtocolViolationDetected(
        f"client {by} detected a protocol violation by {who} in round {rnd!r} (check: {check}): {message} "
        "(Bonawitz et al. 2017, Fig. 4, active-security checks); it aborts and reveals nothing more",
        round=rnd, check=check, party=party, detected_by=by, subject=subject)


@lru_cache(maxsize=None)
def _u32(x: int) -> bytes:
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
class _Public:
    """Public parameters every client knows before the protocol (Bonawitz et al. 2017, Fig. 4):
    n, t, the graph (Bell et al. 2020) and, in the active model, the PKI."""

    n: int
    threshold: int
    share_threshold: int
    complete: bool
    graph: List[List[int]]
    pki: Optional[SimulatedPKI] = None


class SecAggClient:
    """One honest client of the protocol (Bonawitz et al. 2017, Fig. 4, "User").

    All its randomness (two X25519 key pairs, the self-mask seed b_u, the Shamir
    coefficients) comes from a DRBG keyed by the instance's root key and its index,
    so every protocol instance has fresh keys and masks. With ``public.pki`` set it
    runs the actively secure variant (the red/underlined parts of Fig. 4): it signs
    its keys and U3 and checks everything the server sends, raising
    :class:`ProtocolViolationDetected` on the first failed check.
    """

    def __init__(self, index: int, root_key: bytes, instance_tag: bytes,
                 agreement_cache: Optional[dict] = None, public: Optional[_Public] = None):
        self.index = index
        self._tag = instance_tag
        self._drbg = crypto.Drbg(crypto.hkdf(root_key, info=b"client/" + _u32(index)))
        self._c_raw = self._drbg.read(crypto.KEY_BYTES)
        self._s_raw = self._drbg.read(crypto.KEY_BYTES)
        self._c = crypto.X25519PrivateKey.from_private_bytes(self._c_raw)
        self._s = crypto.X25519PrivateKey.from_private_bytes(self._s_raw)
        self._b = self._drbg.read(shamir.SECRET_BYTES)
        self._cache = agreement_cache
        self._params = public
        self._pki = public.pki if public is not None else None
        self._public: Dict[int, Tuple[bytes, bytes]] = {}
        self._own_pub: Optional[Tuple[bytes, bytes]] = None
        self._own_shares: Optional[Tuple[int, int]] = None
        self._inbox: Dict[int, bytes] = {}
        self._u2: Set[int] = set()
        self._u3: Optional[Tuple[int, ...]] = None
        self._u3_msg: Optional[bytes] = None
        self._revealed: Dict[int, str] = {}

    @property
    def active(self) -> bool:
        return self._pki is not None

    # -- Round 0: AdvertiseKeys -------------------------------------------------------
    def advertise_keys(self) -> Tuple[bytes, bytes]:
        """(c_u^PK, s_u^PK) (Fig. 4, Round 0)."""
        if self._own_pub is None:
            self._own_pub = (crypto.public_bytes(self._c), crypto.public_bytes(self._s))
        return self._own_pub

    def advertisement(self) -> bytes:
        """The Round 0 message: c_u^PK || s_u^PK, and in the active model || sigma_u =
        SIG.sign(d_u^SK, c_u^PK || s_u^PK) (Fig. 4, Round 0, red part)."""
        c, s = self.advertise_keys()
        if not self.active:
            return c + s
        return c + s + self._pki.sign(self.index, key_message(self._tag, self.index, c, s))

    def accept_keys(self, keys: Mapping[int, bytes]) -> List[int]:
        """Receive the server's list of advertised keys (Fig. 4, Round 1, first step) and return
        the share holders (u and the neighbours listed).

        Active model: assert every signature verifies under the PKI, the keys are pairwise
        distinct, u's own keys are unaltered, only graph neighbours are listed and at least
        t (complete graph) or the per-client threshold (SecAgg+) of them.
        """
        u, rnd, p = self.index, "share_keys", self._params
        parsed: Dict[int, Tuple[bytes, bytes]] = {}
        size = 2 * crypto.KEY_BYTES + (SIGNATURE_BYTES if self.active else 0)
        for v in sorted(keys):
            blob = keys[v]
            if not isinstance(blob, (bytes, bytearray)) or len(blob) != size:
                if self.active:
                    raise _violation(rnd, "malformed advertised keys", u,
                                     f"the keys of client {v} are not {size} bytes", subject=v)
                raise _aborted(rnd, f"client {u} received malformed keys for client {v}", client=u)
            c, s = bytes(blob[:32]), bytes(blob[32:64])
            if self.active:
                if v != u and p is not None and not p.complete and v not in p.graph[u]:
                    raise _violation(rnd, "neighbourhood", u, f"client {v} is not a neighbour of client {u} in "
                                     "the public graph", subject=v)
                if not self._pki.verify(v, key_message(self._tag, v, c, s), bytes(blob[64:])):
                    raise _violation(rnd, "advertised-key signature", u,
                                     f"the keys relayed for client {v} do not carry client {v}'s signature "
                                     "(substituted or corrupted keys)", subject=v)
            parsed[v] = (c, s)
        if self.active:
            if parsed.get(u) != self.advertise_keys():
                raise _violation(rnd, "own advertised keys", u, "the server did not relay client "
                                 f"{u}'s own keys unaltered", subject=u)
            flat = [k for pair in parsed.values() for k in pair]
            if len(set(flat)) != len(flat):
                raise _violation(rnd, "distinct keys", u, "two advertised public keys are equal")
            need = p.threshold if p.complete else p.share_threshold
            if len(parsed) < need:
                raise _violation(rnd, "enough clients", u, f"only {len(parsed)} clients' keys were listed, "
                                 f"fewer than {need}")
        self._public.update(parsed)
        return sorted(parsed)

    def _derived(self, kind: str, v: int):
        # Both ends of an edge derive the same key from X25519; the simulation derives
        # it once per edge, kind and pair of public keys (shared by the clients of one
        # instance). Keys are part of the memo key, so a server that substitutes keys
        # (the two ends then hold different keys) gets no shortcut.
        i = 0 if kind == "channel" else 1
        a, b = min(self.index, v), max(self.index, v)
        pa = (self.advertise_keys() if a == self.index else self._public[a])[i]
        pb = (self.advertise_keys() if b == self.index else self._public[b])[i]
        key = (kind, a, b, pa, pb)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        if kind == "channel":
            out = crypto.channel_cipher(crypto.agree(self._c, self._public[v][0]))
        else:
            out = crypto.mask_key(crypto.agree(self._s, self._public[v][1]), "pair")
        if self._cache is not None:
            self._cache[key] = out
        return out

    def _share_ad(self, sender: int, recipient: int) -> Tuple[bytes, bytes]:
        # The channel key serves both directions, so the nonce names the direction.
        su, rv = _u32(sender), _u32(recipient)
        return b"\x01" + su + rv + b"\x00" * 3, b"fedaudit/secagg|share_keys|" + self._tag + su + rv

    # -- Round 1: ShareKeys ---------------------------------------------------------
    def share_keys(self, public_keys: Mapping[int, Tuple[bytes, bytes]], holders: Sequence[int],
                   share_threshold: int) -> Dict[int, bytes]:
        """Shamir-share s_u^SK and b_u among ``holders`` and encrypt each neighbour's pair of
        shares (Fig. 4, Round 1). Returns {recipient: ciphertext}; u keeps its own share."""
        u = self.index
        self._public.update(public_keys)
        coeffs = self._drbg.field_elements(shamir.PRIME, 2 * (share_threshold - 1))
        s_sh = shamir.share(shamir.secret_to_int(self._s_raw), share_threshold, holders,
                            coeffs[:share_threshold - 1])
        b_sh = shamir.share(shamir.secret_to_int(self._b), share_threshold, holders,
                            coeffs[share_threshold - 1:])
        out = {}
        for v in holders:
            if v == u:
                self._own_shares = (s_sh[v], b_sh[v])
                continue
            plaintext = (_u32(u) + _u32(v) + s_sh[v].to_bytes(shamir.SHARE_BYTES, "big")
                         + b_sh[v].to_bytes(shamir.SHARE_BYTES, "big"))
            nonce, ad = self._share_ad(u, v)
            out[v] = self._derived("channel", v).encrypt(nonce, plaintext, ad)
        return out

    # -- Round 2: MaskedInputCollection (control part) ---------------------------------
    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Store the ciphertexts relayed to u (Fig. 4, Round 2; decrypted only when needed,
        in the unmasking round) and infer U2 (the senders, and u).

        Active model: assert the senders are clients whose keys u accepted and that there
        are at least t (complete graph) or the per-client threshold (SecAgg+) of them.
        """
        u = self.index
        if self.active:
            p = self._params
            for v in ciphertexts:
                if v == u or v not in self._public:
                    raise _violation("masked_input", "unexpected share sender", u,
                                     f"a share ciphertext is attributed to client {v}, whose keys client {u} "
                                     "never accepted", subject=v if isinstance(v, int) else None)
            need = p.threshold if p.complete else p.share_threshold
            if len(ciphertexts) + 1 < need:
                raise _violation("masked_input", "enough clients", u, f"only {len(ciphertexts) + 1} clients "
                                 f"(with u) are in U2, fewer than {need}")
        self._inbox = dict(ciphertexts)
        self._u2 = set(self._inbox) | {u}

    def pairwise_mask_key(self, v: int) -> bytes:
        """PRG key of the pairwise mask with v: s_uv = HKDF(X25519(s_u^SK, s_v^PK)) (Fig. 4, Round 2)."""
        return self._derived("mask", v)

    def self_mask_key(self) -> bytes:
        """PRG key of the self mask PRG(b_u) (Fig. 4, Round 2; the double masking of Sec. 4)."""
        return crypto.mask_key(self._b, "self")

    # -- Round 3 (active model): ConsistencyCheck ----------------------------------------
    def consistency_check(self, survivors_blob: bytes) -> bytes:
        """Receive U3 and return sigma'_u = SIG.sign(d_u^SK, U3) (Fig. 4, ConsistencyCheck round).

        Asserts U3 is a well-formed set containing u (u sent its masked input), within U2
        as far as u can see (its share holders), and of size >= t.
        """
        u, rnd, p = self.index, "consistency_check", self._params
        if not self.active:
            raise RuntimeError("the consistency check belongs to the actively secure variant (active_security=True)")
        try:
            U3 = pki_decode(survivors_blob, p.n)
        except ValueError as exc:
            raise _violation(rnd, "malformed survivor set", u, str(exc)) from None
        S = set(U3)
        if u not in S:
            raise _violation(rnd, "own masked input", u, f"client {u} sent its masked input but is not in U3")
        outside = sorted(v for v in self._public if v in S and v not in self._u2)
        if outside:
            raise _violation(rnd, "survivors within U2", u, f"U3 lists client(s) {outside[:10]} whose shares never "
                             "reached u (not in U2)", subject=outside[0])
        if len(S) < p.threshold:
            raise _violation(rnd, "survivor set size", u, f"|U3| = {len(S)} < t = {p.threshold}")
        self._u3 = U3
        self._u3_msg = survivors_message(self._tag, bytes(survivors_blob))
        return self._pki.sign(u, self._u3_msg)

    # -- Unmasking ----------------------------------------------------------------------
    def _open(self, v: int) -> Optional[Tuple[int, int]]:
        if v == self.index:
            return self._own_shares
        ct = self._inbox.get(v)
        if ct is None:
            return None
        nonce, ad = self._share_ad(v, self.index)
        try:
            pt = self._derived("channel", v).decrypt(nonce, ct, ad)
        except InvalidTag:
            return None
        if pt[:8] != _u32(v) + _u32(self.index):   # Fig. 4: assert u = u' and v = v'
            return None
        k = shamir.SHARE_BYTES
        return int.from_bytes(pt[8:8 + k], "big"), int.from_bytes(pt[8 + k:8 + 2 * k], "big")

    def _signature_verdict(self, blob: bytes):
        # None if the list holds >= t valid signatures on u's U3 from clients of U3, else
        # (check, message, subject). A function of (U3 message, list bytes) only.
        S, p = set(self._u3), self._params
        digest = hashlib.sha256(self._u3_msg).digest()
        try:
            entries = decode_signatures(blob)
        except ValueError as exc:
            return "malformed signature list", str(exc), None
        for v, sig in entries:
            if v not in S:
                return "signers within U3", f"a consistency signature comes from client {v}, not in U3", v
            if not self._pki.verify(v, self._u3_msg, sig, digest):
                return ("consistency signature", f"client {v}'s signature does not verify on the U3 that u "
                        "signed: the server told clients different survivor sets, or a signature was altered", v)
        if len(entries) < p.threshold:
            return ("consistency threshold", f"only {len(entries)} valid signatures on u's U3, fewer than "
                    f"t = {p.threshold}", None)
        return None

    def _check_signatures(self, signatures) -> None:
        # Fig. 4, Unmasking (red part): U4 within U3, |U4| >= t, every sigma'_v verifies on U3.
        u, rnd = self.index, "unmasking"
        if self._u3 is None:
            raise _violation(rnd, "consistency check first", u, "asked to unmask before signing a survivor set")
        if isinstance(signatures, Mapping):
            try:
                signatures = encode_signatures(signatures)
            except (TypeError, ValueError, OverflowError):
                signatures = b"\x00"      # not encodable: malformed
        if not isinstance(signatures, (bytes, bytearray)):
            raise _violation(rnd, "malformed signature list", u, "the consistency signatures are not a list")
        # Every client that signed the same U3 and got the same list reaches the same verdict.
        key = (hashlib.sha256(self._u3_msg).digest(), bytes(signatures))
        cache = self._pki.list_verdicts
        if key not in cache:
            cache[key] = self._signature_verdict(bytes(signatures))
        bad = cache[key]
        if bad is not None:
            raise _violation(rnd, bad[0], u, bad[1], subject=bad[2])

    def unmask(self, survivors: Iterable[int], dropped: Iterable[int],
               signatures: Optional[Mapping[int, bytes]] = None) -> Dict[str, Any]:
        """Answer the server's unmasking request (Fig. 4, Unmasking round).

        Returns {"b": {v: share of b_v} for v in ``survivors``, "s": {v: share of
        s_v^SK} for v in ``dropped``, "failed": [v whose ciphertext failed
        authentication]}, covering the clients whose shares u holds.

        Raises :class:`UnmaskingRefused` if one client is in both sets, or if a client
        whose other share u already revealed in this instance is requested. In the
        active model it first checks ``signatures`` ({v: sigma'_v} or its wire encoding, at least t valid
        signatures on the U3 u signed), that ``survivors`` is that U3, and it aborts
        with :class:`ProtocolViolationDetected` on a ciphertext that fails authentication.
        """
        u = self.index
        surv, drop = {int(v) for v in survivors}, {int(v) for v in dropped}
        if self.active:
            self._check_signatures(signatures if signatures is not None else {})
            if surv != set(self._u3):
                raise _violation("unmasking", "request matches the signed U3", u,
                                 "the survivors in the unmasking request differ from the U3 that u signed")
            if surv & drop:
                raise _violation("unmasking", "double reveal", u, f"asked for both shares of client(s) "
                                 f"{sorted(surv & drop)[:10]}", subject=min(surv & drop))
        both = surv & drop
        both |= {v for v in surv if self._revealed.get(v) == "s"}
        both |= {v for v in drop if self._revealed.get(v) == "b"}
        if both:
            exc = UnmaskingRefused(
                f"client {self.index} refuses to unmask: asked for both the self-mask seed share and the "
                f"mask-key share of client(s) {sorted(both)}, which would reveal their input "
                "(Bonawitz et al. 2017, Fig. 4, Round 3)")
            exc.round, exc.client, exc.subject = "unmasking", self.index, min(both)
            raise exc
        out: Dict[str, Any] = {"b": {}, "s": {}, "failed": []}
        for kind, wanted in (("b", surv), ("s", drop)):
            for v in sorted(wanted):
                if v != self.index and v not in self._inbox:
                    continue                       # u holds no share of v
                opened = self._open(v)
                if opened is None:
                    if self.active:
                        raise _violation("unmasking", "share ciphertext authentication", u,
                                         f"the ciphertext relayed as client {v}'s shares fails AES-GCM "
                                         "(tampered, replayed or misrouted)", subject=v)
                    out["failed"].append(v)        # tampered: a dropped share, never a wrong one
                    continue
                out[kind][v] = opened[1] if kind == "b" else opened[0]
                self._revealed[v] = kind
        return out


@dataclass
class _Job:
    """A block of keystreams applied together in the data plane."""

    encs: list
    minus: Optional[int] = None   # client side: row that subtracts the block's sum
    plus: Any = None              # client side: slice or list of rows, each adding one keystream
    sign: int = 0                 # server side: +1 / -1 to add / subtract the block's sum


def _check_threshold(t, n: int, allow: bool, name: str, holders: str = "clients") -> int:
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


def _parse_dropouts(dropouts, n: int, rounds: Tuple[str, ...] = ROUNDS) -> Dict[str, Set[int]]:
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


class SecAggProtocol:
    """One instance of SecAgg / SecAgg+ between n simulated clients and a server
    (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020), honest-but-curious by default.

    Use :func:`run_protocol`; this class exists so a test, an audit or
    :mod:`secagg.adversary` can override the server's points of contact with the
    clients (each honest here):

    - :meth:`keys_for` (Round 0 -> 1): the advertised keys listed to a client;
    - :meth:`relay` (Round 1 -> 2): what the server forwards for each ciphertext;
    - :meth:`survivors_for` (Round 2 -> 3): the U3 told to a client;
    - :meth:`unmask_request` (unmasking): the (survivors, dropped) sets sent to a client;
    - :meth:`signatures_for` (active model): the consistency signatures sent to a client.

    ``network`` (see :mod:`secagg.faults`) carries every client <-> server message; None
    is a perfect network.
    """

    def __init__(self, values: Tensor, *, modulus_bits: int, threshold: int, neighbors=None,
                 share_threshold: Optional[int] = None, dropouts=None, seed: int = 0,
                 instance: int = 0, allow_insecure_threshold: bool = False,
                 tamper: Optional[Iterable[Tuple[int, int]]] = None, overwrite: bool = False,
                 active_security: bool = False, network=None, keep_masked_inputs: bool = True):
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
        if not isinstance(active_security, bool):
            raise TypeError(f"active_security={active_security!r} must be True or False")
        self.values, self.n, self.d, self.bits = values, n, d, modulus_bits
        self.active = active_security
        self.rounds_used = ACTIVE_ROUNDS if active_security else ROUNDS
        self.threshold = _check_threshold(threshold, n, allow_insecure_threshold, "threshold")
        self.drops = _parse_dropouts(dropouts, n, self.rounds_used)
        self.seed, self.instance = seed, instance
        self.overwrite = bool(overwrite)
        self.keep_masked_inputs = bool(keep_masked_inputs)
        if not self.keep_masked_inputs and self.overwrite:
            raise ValueError("overwrite=True stores the masked inputs over values; it needs keep_masked_inputs=True")
        self.tamper = {(int(a), int(b)) for a, b in (tamper or ())}
        self.network = network

        root = crypto.instance_key(seed, instance)
        self._root = root
        self.tag = crypto.hkdf(root, info=b"instance-tag", length=16)
        rng = np.random.default_rng(int.from_bytes(crypto.hkdf(root, info=b"graph", length=16), "big"))
        if isinstance(neighbors, str):
            if neighbors != "auto":
                raise ValueError(f"neighbors={neighbors!r}; use None, an int k, 'auto' or an explicit graph")
            k = graphs.default_degree(n)
            neighbors = None if k >= n - 1 else k
        if neighbors is None:
            self.graph = graphs.complete_graph(n)
            self.complete = True
        elif isinstance(neighbors, (int, np.integer)) and not isinstance(neighbors, bool):
            self.graph = graphs.random_regular_graph(n, int(neighbors), rng)
            self.complete = graphs.is_complete(self.graph)
        else:
            self.graph = graphs.adjacency_from(neighbors, n)
            self.complete = graphs.is_complete(self.graph)
        self.protocol = "secagg" if neighbors is None else "secagg+"
        sizes = [len(nb) + 1 for nb in self.graph]   # share holders: the client and its neighbours
        if share_threshold is None:
            share_threshold = self.threshold if self.complete else graphs.default_share_threshold(max(sizes))
        if share_threshold > min(sizes):
            raise ValueError(f"share_threshold={share_threshold} exceeds the {min(sizes)} share holders of the "
                             "least connected client; use a denser graph or a smaller share_threshold")
        self.share_threshold = _check_threshold(share_threshold, max(sizes), allow_insecure_threshold,
                                                "share_threshold", "share holders per client")
        self.pki = SimulatedPKI(seed, n) if active_security else None
        self._params = _Public(n, self.threshold, self.share_threshold, self.complete, self.graph, self.pki)
        self._agreements: dict = {}
        self.clients = [SecAggClient(u, root, self.tag, self._agreements, self._params) for u in range(n)]
        self.incidents: List[SecureAggregationAborted] = []   # honest clients' refusals and detections
        self.recovered: Dict[int, Tensor] = {}                 # filled by adversarial servers only
        self._all_sigs: Optional[Dict[int, bytes]] = None

    # -- server hooks (honest) --------------------------------------------------------
    def keys_for(self, client: int, keys: Dict[int, bytes]) -> Dict[int, bytes]:
        """The advertised keys {v: c_v^PK || s_v^PK [|| sigma_v]} listed to ``client`` at the start of
        Fig. 4, Round 1 (honest: unchanged)."""
        return keys

    def relay(self, sender: int, recipient: int, ciphertext: bytes) -> bytes:
        """What the server forwards from ``sender`` to ``recipient`` in Fig. 4, Round 1 -> 2
        (honest: unchanged; pairs in ``tamper`` get one bit flipped, as by a faulty network)."""
        if (sender, recipient) in self.tamper:
            return bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        return ciphertext

    def survivors_for(self, client: int, survivors: List[int]) -> List[int]:
        """The U3 the server tells ``client`` (Fig. 4; honest: the same U3 to everyone)."""
        return survivors

    def unmask_request(self, client: int, survivors: List[int], dropped: List[int]) -> Tuple[List[int], List[int]]:
        """The unmasking request sent to ``client`` (Fig. 4; honest: U3 and U2 \\ U3)."""
        return survivors, dropped

    def signatures_for(self, client: int, survivors: List[int],
                       collected: Dict[int, Tuple[Tuple[int, ...], bytes]]) -> Dict[int, bytes]:
        """Active model: the list {v: sigma'_v} sent to ``client`` before unmasking (Fig. 4,
        Unmasking round). ``collected`` maps each signer to (the U3 it was told, its signature).
        Honest: every signature collected (one list, the same for everyone)."""
        if self._all_sigs is None:
            self._all_sigs = {v: sig for v, (_, sig) in collected.items()}
        return self._all_sigs

    def after_unmasking(self, state: Dict[str, Any]) -> None:
        """Called with everything the server holds after the unmasking round (honest: nothing to do;
        :mod:`secagg.adversary` tries to unmask individual inputs here)."""

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

    # -- helpers ---------------------------------------------------------------------
    def _check_round(self, rnd: str, alive: Set[int], holders: Dict[int, List[int]]) -> None:
        n, t, tl = self.n, self.threshold, self.share_threshold
        if len(alive) < t:
            gone = sorted(set(range(n)) - alive)
            raise _aborted(rnd, f"secure aggregation aborted in round {rnd!r}: only {len(alive)} of {n} clients "
                                f"remain, fewer than the threshold t={t} (missing: {gone[:20]}"
                                f"{'...' if len(gone) > 20 else ''})", alive=len(alive), threshold=t)
        for u in sorted(alive):
            live = len(alive) if self.complete else sum(1 for v in holders[u] if v in alive)
            if live < tl:
                raise _aborted(rnd, f"secure aggregation aborted in round {rnd!r}: client {u} has only {live} live "
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
        n, drops, clients, active = self.n, self.drops, self.clients, self.active
        step = self._client_step

        # Round 0: AdvertiseKeys (active: keys signed under the PKI).
        rnd = "advertise_keys"
        got = self._up(rnd, {u: clients[u].advertisement() for u in range(n) if u not in drops[rnd]})
        U1 = set(got)
        adverts = {u: got[u] for u in U1}
        public = {u: (bytes(b[:32]), bytes(b[32:64])) for u, b in adverts.items()}
        holders = {u: sorted(v for v in [u] + self.graph[u] if v in U1) for u in U1}
        self._check_round(rnd, U1, holders)

        # Round 1: ShareKeys; clients check the key list, then the server relays ciphertexts.
        rnd = "share_keys"
        lists = {u: self.keys_for(u, {v: self._tap("keys", u, adverts[v]) for v in holders[u]}) for u in sorted(U1)}
        lists = self._down(rnd, lists)
        sent: Dict[int, Dict[int, bytes]] = {}
        for u in sorted(lists):
            if u in drops[rnd]:
                continue
            ok, mine = step(clients[u].accept_keys, lists[u])
            if ok:
                ok, cts = step(clients[u].share_keys, {}, mine, self.share_threshold)
                if ok:
                    sent[u] = cts
        got = self._up(rnd, sent)
        U2 = set(got)
        self._check_round(rnd, U2, holders)

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
            if v in drops[rnd]:
                continue
            ok, _ = step(clients[v].receive_shares, inbox[v])
            if ok:
                sent_y[v] = b"y"   # y_v itself is computed by the data plane, below
        U3 = set(self._up(rnd, sent_y))
        self._check_round(rnd, U3, holders)
        survivors, dropped = sorted(U3), sorted(U2 - U3)

        # Active model, ConsistencyCheck: every survivor signs the U3 it was told.
        stories: Dict[int, List[int]] = {u: sorted(self.survivors_for(u, list(survivors))) for u in sorted(U3)}
        collected: Dict[int, Tuple[Tuple[int, ...], bytes]] = {}
        askers = set(U3)
        if active:
            rnd = "consistency_check"
            encoded: Dict[tuple, bytes] = {}
            for u in sorted(U3):
                key = tuple(stories[u])
                if key not in encoded:
                    encoded[key] = encode_clients(key)
            told = self._down(rnd, {u: self._tap("survivors", u, encoded[tuple(stories[u])]) for u in sorted(U3)})
            sigs: Dict[int, bytes] = {}
            for u in sorted(told):
                if u in drops[rnd]:
                    continue
                ok, sig = step(clients[u].consistency_check, told[u])
                if ok:
                    sigs[u] = sig
            sigs = self._up(rnd, sigs)
            collected = {u: (tuple(stories[u]), sigs[u]) for u in sigs}
            askers = set(collected)
            if len(askers) < self.threshold:
                raise _aborted(rnd, f"secure aggregation aborted in round {rnd!r}: only {len(askers)} of {n} "
                                    f"clients signed U3, fewer than the threshold t={self.threshold}",
                               alive=len(askers), threshold=self.threshold)

        # Unmasking: b-shares of U3, s^SK-shares of U2 \ U3.
        rnd = "unmasking"
        requests = {}
        lists_sent: Dict[int, Tuple[dict, bytes]] = {}
        for u in sorted(askers):
            told_u = stories[u]
            req_s, req_d = self.unmask_request(u, list(told_u), sorted(U2 - set(told_u)))
            sig_list = None
            if active:
                chosen = self.signatures_for(u, list(told_u), collected)
                if id(chosen) not in lists_sent:      # one encoding per distinct list
                    lists_sent[id(chosen)] = (chosen, encode_signatures(chosen))
                sig_list = self._tap("signature", u, lists_sent[id(chosen)][1])
            requests[u] = (list(req_s), list(req_d), sig_list)
        requests = self._down(rnd, requests)
        answers = {}
        for u in sorted(requests):
            if u in drops[rnd]:
                continue
            ok, resp = step(clients[u].unmask, *requests[u])
            if ok:
                answers[u] = resp
        answers = self._up(rnd, answers)
        U5 = set(answers)
        b_shares: Dict[int, Dict[int, int]] = {v: {} for v in survivors}
        s_shares: Dict[int, Dict[int, int]] = {v: {} for v in dropped}
        failed: List[Tuple[int, int]] = []
        for u in sorted(U5):
            resp = answers[u]
            for v, sh in resp["b"].items():
                if v in b_shares:
                    b_shares[v][u] = sh
            for v, sh in resp["s"].items():
                if v in s_shares:
                    s_shares[v][u] = sh
            failed += [(v, u) for v in resp["failed"]]
        self.after_unmasking({"U1": U1, "U2": U2, "U3": U3, "public": public, "answers": answers,
                              "stories": stories, "collected": collected})
        if len(U5) < self.threshold:
            raise _aborted(rnd, f"secure aggregation aborted in round 'unmasking': only {len(U5)} of {n} "
                                f"clients answered, fewer than the threshold t={self.threshold}",
                           alive=len(U5), threshold=self.threshold)
        pos = {u: i for i, u in enumerate(survivors)}
        needs_key = [v for v in dropped if any(w in pos for w in self.graph[v])]
        b_hat = {v: self._reconstruct(v, b_shares[v], "self-mask seed b", failed) for v in survivors}
        s_hat = {v: self._reconstruct(v, s_shares[v], "mask key s^SK", failed) for v in needs_key}
        for v, key in s_hat.items():
            if crypto.public_bytes(crypto.X25519PrivateKey.from_private_bytes(key)) != public[v][1]:
                raise _aborted("unmasking", f"the reconstructed mask key of client {v} does not match its "
                                            "advertised public key: the shares are inconsistent", client=v)
        if self.incidents:
            raise self._outcome(None)   # a client aborted: do not spend the data plane

        total, masked, nbytes = self._data_plane(survivors, U2, b_hat, s_hat, public)
        rounds = {"advertise_keys": sorted(U1), "share_keys": sorted(U2), "masked_input": survivors}
        if active:
            rounds["consistency_check"] = sorted(askers)
        rounds["unmasking"] = sorted(U5)
        return ProtocolResult(
            total=total, survivors=survivors, masked_inputs=masked, public_keys=public,
            ciphertexts=relayed, reconstructed_seeds=b_hat, reconstructed_keys=s_hat,
            failed_shares=sorted(failed), rounds=rounds,
            graph=self.graph, threshold=self.threshold, share_threshold=self.share_threshold,
            modulus_bits=self.bits, protocol=self.protocol, keystream_bytes=nbytes,
            active_security=active, signatures={u: s for u, (_, s) in collected.items()})

    def _reconstruct(self, v: int, shares: Dict[int, int], what: str, failed) -> bytes:
        if len(shares) < self.share_threshold:
            bad = sum(1 for s, _ in failed if s == v)
            raise _aborted("unmasking", f"secure aggregation aborted in round 'unmasking': only {len(shares)} valid "
                                        f"share(s) of client {v}'s {what} reached the server ({bad} failed "
                                        f"authentication), fewer than the threshold {self.share_threshold}",
                           alive=len(shares), threshold=self.share_threshold, client=v)
        try:
            return shamir.int_to_secret(shamir.reconstruct(shares, self.share_threshold))
        except ValueError as exc:
            raise _aborted("unmasking", f"client {v}'s {what} could not be reconstructed: {exc}", client=v) from None

    def masked_row(self, u: int, U2: Iterable[int]) -> np.ndarray:
        """y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod M over u's
        neighbours in U2 (Fig. 4, Round 2), computed naively for one client (uint64 residues).
        What the server receives from u; used by adversaries and tests, not by the bulk path."""
        U2 = set(U2)
        c = self.clients[u]
        y = self.values[u].cpu().numpy().astype(np.uint64)
        terms = [(+1, c.self_mask_key())] + [(+1 if v < u else -1, c.pairwise_mask_key(v))
                                              for v in self.graph[u] if v in U2]
        for sign, key in terms:
            w = crypto.prg_words(key, self.d, self.bits).astype(np.uint64)
            y = y + w if sign > 0 else y - w
        return _reduce(y, self.bits)

    # -- data plane ------------------------------------------------------------------
    def _jobs(self, survivors: List[int], U2: Set[int], b_hat, s_hat, public):
        """Blocks of keystreams: client masks (self, pairwise) and the server's unmasking."""
        G, clients = _GROUP, self.clients
        pos = {u: i for i, u in enumerate(survivors)}
        n3 = len(survivors)
        client_jobs: List[_Job] = []
        for i0 in range(0, n3, G):
            grp = survivors[i0:i0 + G]
            client_jobs.append(_Job([crypto.prg_encryptor(clients[u].self_mask_key()) for u in grp],
                                    plus=slice(i0, i0 + len(grp))))
        # Each edge's key is derived by an endpoint that really sends a masked input.
        def key(a, b):
            return clients[a].pairwise_mask_key(b) if a in pos else clients[b].pairwise_mask_key(a)

        # Pairwise masks, ordered by blocks of G receiving rows so that the block being
        # added to stays in cache while every sender u < v streams through it.
        by_block: Dict[int, List[Tuple[int, List[int]]]] = {}
        for u in sorted(U2):
            later = [v for v in self.graph[u] if v > u and v in U2]
            alive = [v for v in later if v in pos]
            for blk in sorted({pos[v] // G for v in alive}):
                by_block.setdefault(blk, []).append((u, [v for v in alive if pos[v] // G == blk]))
            if u in pos:   # partners that dropped: only u's own (minus) side remains
                gone = [v for v in later if v not in pos]
                for i0 in range(0, len(gone), G):
                    grp = gone[i0:i0 + G]
                    client_jobs.append(_Job([crypto.prg_encryptor(key(u, v)) for v in grp], minus=pos[u]))
        for blk in sorted(by_block):
            for u, grp in by_block[blk]:
                rows = [pos[v] for v in grp]
                contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
                client_jobs.append(_Job([crypto.prg_encryptor(key(u, v)) for v in grp], minus=pos.get(u),
                                        plus=slice(rows[0], rows[0] + len(rows)) if contiguous else rows))
        server_jobs: List[_Job] = []
        for i0 in range(0, n3, G):
            grp = survivors[i0:i0 + G]
            server_jobs.append(_Job([crypto.prg_encryptor(crypto.mask_key(b_hat[u], "self")) for u in grp], sign=-1))
        for v, sk in sorted(s_hat.items()):
            keys = {u: crypto.mask_key(crypto.agree(sk, public[u][1]), "pair") for u in self.graph[v] if u in pos}
            # y_u carries +PRG(s_uv) if v < u and -PRG(s_uv) if v > u: cancel it.
            for sign, part in ((-1, [u for u in keys if u > v]), (+1, [u for u in keys if u < v])):
                for i0 in range(0, len(part), G):
                    server_jobs.append(_Job([crypto.prg_encryptor(keys[u]) for u in part[i0:i0 + G]], sign=sign))
        return client_jobs, server_jobs

    def _data_plane(self, survivors, U2, b_hat, s_hat, public):
        """Masked inputs of U3 and the unmasked sum, chunk by chunk of coordinates.

        Per chunk: each block of keystreams is generated once into K (numpy words
        viewed as bytes), then summed into the sender's row with one sign and added to
        the receivers' rows with the other; arithmetic is unsigned numpy wrap-around
        (mod 2^32 or 2^64), reduced mod 2^bits at the end. Memory: O((n + G) * chunk).
        """
        X, bits, d = self.values, self.bits, self.d
        device = X.device
        n3 = len(survivors)
        client_jobs, server_jobs = self._jobs(survivors, U2, b_hat, s_hat, public)
        W = crypto.word_dtype(bits)
        wb = np.dtype(W).itemsize
        signed = np.int32 if wb == 4 else np.int64
        mask = None if bits in (32, 64) else W((1 << bits) - 1)
        C = _CHUNK_BYTES // wb
        cpu = device.type == "cpu" and _HOST_FAST_PATH
        all_rows = survivors == list(range(self.n))
        rows_t = torch.as_tensor(survivors, dtype=torch.long, device=device)

        keep = self.keep_masked_inputs
        if self.overwrite:
            masked = X[:n3]   # rows of U3 are compacted to the front, chunk by chunk
        elif keep:
            masked = torch.empty((n3, d), dtype=torch.int64, device=device)
        else:
            masked = torch.empty((n3, 0), dtype=torch.int64, device=device)   # not kept: O(n * chunk) memory
        total = torch.empty(d, dtype=torch.int64, device=device)
        if cpu:
            Xn, Yn, Tn = X.numpy(), masked.numpy(), total.numpy()
            if wb == 8:
                Xn, Yn, Tn = Xn.view(np.uint64), Yn.view(np.uint64), Tn.view(np.uint64)
        rows_np = np.asarray(survivors)

        M = np.empty((n3, C), W)
        K = np.empty((_GROUP, C), W)
        s = np.empty(C, W)
        acc = np.empty(C, W)
        zeros = bytes(C * wb)
        add, sub, reduce = np.add, np.subtract, np.add.reduce
        swap = not _LITTLE   # the PRG is defined on little-endian words

        def compile_jobs(w: int):
            # Views are built once per chunk width, so the hot loop only calls.
            kv = [memoryview(K[i, :w]).cast("B") for i in range(_GROUP)]
            Mw = M[:, :w]
            cj, sj = [], []
            for job in client_jobs:
                g = len(job.encs)
                calls = [(e.update_into, kv[i]) for i, e in enumerate(job.encs)]
                minus = Mw[job.minus] if job.minus is not None else None
                if isinstance(job.plus, slice):
                    plus = [(Mw[job.plus], K[:g, :w])]
                elif job.plus is not None:
                    plus = [(Mw[r], K[i, :w]) for i, r in enumerate(job.plus)]
                else:
                    plus = []
                cj.append((calls, K[:g, :w], K[0, :w] if g == 1 else None, minus, plus))
            for job in server_jobs:
                g = len(job.encs)
                calls = [(e.update_into, kv[i]) for i, e in enumerate(job.encs)]
                sj.append((calls, K[:g, :w], K[0, :w] if g == 1 else None, job.sign > 0))
            return cj, sj, memoryview(zeros)[:w * wb]

        compiled = {}
        for c0 in range(0, d, C):
            w = min(C, d - c0)
            if w not in compiled:
                compiled = {w: compile_jobs(w)}
            cj, sj, z = compiled[w]
            Mw, sw, aw = M[:, :w], s[:w], acc[:w]
            # Clients: y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv).
            if cpu:
                src = Xn[:, c0:c0 + w] if all_rows else Xn[rows_np, c0:c0 + w]
                np.copyto(Mw, src, casting="unsafe")   # residues < 2^bits: exact in W
            else:
                Mw.fill(0)                             # masks only; x_u stays on its device
            for calls, Kg, K0, minus, plus in cj:
                for f, v in calls:
                    f(z, v)
                if swap:
                    Kg.byteswap(inplace=True)
                if minus is not None:
                    if K0 is not None:
                        sub(minus, K0, out=minus)
                    else:
                        reduce(Kg, axis=0, out=sw)
                        sub(minus, sw, out=minus)
                for dst, srcK in plus:
                    add(dst, srcK, out=dst)
            if mask is not None:
                np.bitwise_and(Mw, mask, out=Mw)
            # Server: sum of the masked inputs, minus the masks it can now regenerate.
            if cpu:
                if keep:
                    Yn[:, c0:c0 + w] = Mw
                reduce(Mw, axis=0, out=aw)
            else:
                m_t = torch.from_numpy(Mw.view(signed)).to(device).to(torch.int64)
                if wb == 4:
                    m_t &= 0xFFFFFFFF
                xs = X[:, c0:c0 + w] if all_rows else X[:, c0:c0 + w].index_select(0, rows_t)
                y = wrap_mod(xs + m_t, bits)
                if keep:
                    masked[:, c0:c0 + w] = y
                ysum = y.sum(dim=0)
                aw.fill(0)
            for calls, Kg, K0, plus_sign in sj:
                for f, v in calls:
                    f(z, v)
                if swap:
                    Kg.byteswap(inplace=True)
                if K0 is None:
                    reduce(Kg, axis=0, out=sw)
                    part = sw
                else:
                    part = K0
                (add if plus_sign else sub)(aw, part, out=aw)
            if mask is not None:
                np.bitwise_and(aw, mask, out=aw)
            if cpu:
                Tn[c0:c0 + w] = aw
            else:
                a_t = torch.from_numpy(aw.view(signed).copy()).to(device).to(torch.int64)
                if wb == 4:
                    a_t &= 0xFFFFFFFF
                total[c0:c0 + w] = wrap_mod(ysum + a_t, bits)
        nstreams = sum(len(j.encs) for j in client_jobs) + sum(len(j.encs) for j in server_jobs)
        return total, masked, nstreams * d * wb


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
        :mod:`secagg.adversary`); ``adversary_options`` go to its constructor (e.g.
        ``target``, ``corrupt``). What it unmasked alone ends in ``.recovered`` (or in
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
    from .adversary import make_adversary   # the strategies build on this module
    return make_adversary(adversary, values, options=adversary_options, **kw).run()
