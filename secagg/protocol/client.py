"""The honest client of the masked protocol (Bonawitz et al. 2017, Fig. 4, "User").

Round by round: advertise two X25519 public keys (Round 0); Shamir-share b_u and
s_u^SK among its share holders and encrypt the shares to each neighbour under
AES-GCM (Round 1); store the ciphertexts relayed to it (Round 2; its masked input
y_u itself is computed by :mod:`.dataplane` from the keys this client derives); in
the active model sign U3 (ConsistencyCheck); answer the unmasking request (Round 3),
refusing a double reveal. Its secrets come from :mod:`secagg.secrets` (the OS CSPRNG by
default); its active-model checks are :mod:`.active`. Its view of U2 (the senders of the
share ciphertexts it received) decides which pairwise masks it adds (Fig. 4, Round 2).

Simulation choice: both ends of an edge derive the same X25519 secret; the clients of
one instance share a memo so it is computed once per edge, kind and pair of keys.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from cryptography.exceptions import InvalidTag

from .. import crypto, shamir
from ..pki import SIGNATURE_BYTES, key_message, survivors_message
from . import active
from .messages import PublicParams, UnmaskingRefused, aborted, u32, violation

__all__ = ["SecAggClient", "share_channel_context"]


def share_channel_context(tag: bytes, sender: int, recipient: int) -> Tuple[bytes, bytes]:
    """(nonce, associated data) of the AES-GCM ciphertext carrying ``sender``'s shares to
    ``recipient`` (Fig. 4, Round 1): the data binds the instance, the round, u and v."""
    # The channel key serves both directions, so the nonce names the direction.
    su, rv = u32(sender), u32(recipient)
    return b"\x01" + su + rv + b"\x00" * 3, b"fedaudit/secagg|share_keys|" + tag + su + rv


class SecAggClient:
    """One honest client of the protocol (Bonawitz et al. 2017, Fig. 4, "User").

    All its randomness (two X25519 key pairs, the self-mask seed b_u, the Shamir
    coefficients) comes from ``secrets``, its source in
    :class:`secagg.secrets.InstanceRandomness` (the OS CSPRNG unless the run is insecure
    and reproducible), so every protocol instance has fresh keys and masks. With
    ``public.pki`` set it runs the actively secure variant (the red/underlined parts of
    Fig. 4): it signs its keys and U3 and checks everything the server sends, raising
    :class:`ProtocolViolationDetected` on the first failed check.
    """

    def __init__(self, index: int, secrets, instance_tag: bytes,
                 agreement_cache: Optional[dict] = None, public: Optional[PublicParams] = None):
        self.index = index
        self._tag = instance_tag
        self._secrets = secrets
        self._c_raw = self._secrets.x25519_private_bytes()
        self._s_raw = self._secrets.x25519_private_bytes()
        self._c = crypto.X25519PrivateKey.from_private_bytes(self._c_raw)
        self._s = crypto.X25519PrivateKey.from_private_bytes(self._s_raw)
        self._b = self._secrets.self_mask_seed()
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

        Active model (:mod:`.active`): assert every signature verifies under the PKI, the keys
        are pairwise distinct, u's own keys are unaltered, only graph neighbours are listed and
        at least t (complete graph) or the per-client threshold (SecAgg+) of them.
        """
        u, rnd, p = self.index, "share_keys", self._params
        parsed: Dict[int, Tuple[bytes, bytes]] = {}
        size = 2 * crypto.KEY_BYTES + (SIGNATURE_BYTES if self.active else 0)
        for v in sorted(keys):
            blob = keys[v]
            if not isinstance(blob, (bytes, bytearray)) or len(blob) != size:
                if self.active:
                    raise violation(rnd, "malformed advertised keys", u,
                                    f"the keys of client {v} are not {size} bytes", subject=v)
                raise aborted(rnd, f"client {u} received malformed keys for client {v}", client=u)
            c, s = bytes(blob[:32]), bytes(blob[32:64])
            if self.active:
                active.check_advertised_key(p, self._tag, u, v, c, s, bytes(blob[64:]))
            parsed[v] = (c, s)
        if self.active:
            active.check_key_list(p, u, parsed, self.advertise_keys())
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

    # -- Round 1: ShareKeys ---------------------------------------------------------
    def share_keys(self, public_keys: Mapping[int, Tuple[bytes, bytes]], holders: Sequence[int],
                   share_threshold: int) -> Dict[int, bytes]:
        """Shamir-share s_u^SK and b_u among ``holders`` and encrypt each neighbour's pair of
        shares (Fig. 4, Round 1). Returns {recipient: ciphertext}; u keeps its own share."""
        u = self.index
        self._public.update(public_keys)
        coeffs = self._secrets.shamir_coefficients(2 * (share_threshold - 1))
        s_sh = shamir.share(shamir.secret_to_int(self._s_raw), share_threshold, holders,
                            coeffs[:share_threshold - 1])
        b_sh = shamir.share(shamir.secret_to_int(self._b), share_threshold, holders,
                            coeffs[share_threshold - 1:])
        out = {}
        for v in holders:
            if v == u:
                self._own_shares = (s_sh[v], b_sh[v])
                continue
            plaintext = (u32(u) + u32(v) + s_sh[v].to_bytes(shamir.SHARE_BYTES, "big")
                         + b_sh[v].to_bytes(shamir.SHARE_BYTES, "big"))
            nonce, ad = share_channel_context(self._tag, u, v)
            out[v] = self._derived("channel", v).encrypt(nonce, plaintext, ad)
        return out

    # -- Round 2: MaskedInputCollection (control part) ---------------------------------
    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Store the ciphertexts relayed to u (Fig. 4, Round 2; decrypted only when needed,
        in the unmasking round) and infer U2 (the senders, and u).

        Active model: assert the senders are clients whose keys u accepted and that there
        are at least t (complete graph) or the per-client threshold (SecAgg+) of them.
        """
        if self.active:
            active.check_share_senders(self._params, self.index, ciphertexts, self._public)
        self._inbox = dict(ciphertexts)
        self._u2 = set(self._inbox) | {self.index}

    def u2_view(self) -> frozenset:
        """U2 as u sees it: the senders of the share ciphertexts relayed to u, and u (Fig. 4,
        Round 2). u adds the pairwise mask with a neighbour v iff v is in it."""
        return frozenset(self._u2)

    def self_mask_commitment(self) -> bytes:
        """Sent with u's Round 1 shares: a hash commitment to b_u bound to the instance and u
        (:func:`secagg.crypto.commit_secret`), against which the server checks the b_u it
        reconstructs, so a wrong share aborts instead of skewing the sum."""
        return crypto.commit_secret(self._b, self._tag + u32(self.index))

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
        if not self.active:
            raise RuntimeError("the consistency check belongs to the actively secure variant (active_security=True)")
        self._u3 = active.check_survivor_set(self._params, self.index, survivors_blob, self._public, self._u2)
        self._u3_msg = survivors_message(self._tag, bytes(survivors_blob))
        return self._pki.sign(self.index, self._u3_msg)

    # -- Unmasking ----------------------------------------------------------------------
    def _open(self, v: int) -> Optional[Tuple[int, int]]:
        if v == self.index:
            return self._own_shares
        ct = self._inbox.get(v)
        if ct is None:
            return None
        nonce, ad = share_channel_context(self._tag, v, self.index)
        try:
            pt = self._derived("channel", v).decrypt(nonce, ct, ad)
        except InvalidTag:
            return None
        if pt[:8] != u32(v) + u32(self.index):   # Fig. 4: assert u = u' and v = v'
            return None
        k = shamir.SHARE_BYTES
        return int.from_bytes(pt[8:8 + k], "big"), int.from_bytes(pt[8 + k:8 + 2 * k], "big")

    def held_shares(self) -> Dict[int, Tuple[int, int]]:
        """Every share pair u holds, opened: {v: (share of s_v^SK, share of b_v)} for each v
        whose ciphertext decrypts, then u itself. Not part of the honest protocol: what a
        corrupt client hands a colluding server (Bonawitz et al. 2017, Sec. 6.2)."""
        out = {}
        for v in list(self._inbox) + [self.index]:
            opened = self._open(v)
            if opened is not None:
                out[v] = opened
        return out

    def mask_secret(self) -> bytes:
        """s_u^SK. Not part of the honest protocol: what a corrupt client hands a colluding server
        (Bonawitz et al. 2017, Sec. 6.2)."""
        return self._s_raw

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
            active.check_signatures(self._params, u, self._u3, self._u3_msg,
                                    signatures if signatures is not None else {})
            active.check_unmask_request(u, surv, drop, self._u3)
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
                        raise violation("unmasking", "share ciphertext authentication", u,
                                        f"the ciphertext relayed as client {v}'s shares fails AES-GCM "
                                        "(tampered, replayed or misrouted)", subject=v)
                    out["failed"].append(v)        # tampered: a dropped share, never a wrong one
                    continue
                out[kind][v] = opened[1] if kind == "b" else opened[0]
                self._revealed[v] = kind
        return out
