"""A simulated public-key infrastructure: long-term Ed25519 signing keys per client.

Bonawitz et al. 2017, Fig. 4 (red parts) and Sec. 6.2: in the active-adversary model
every client u holds a signing key d_u^SK whose verification key d_u^PK every other
client obtained from a trusted third party before the protocol (the PKI). Clients sign
their advertised keys (Round 0) and the survivor set U3 (ConsistencyCheck), so the
server can neither substitute keys nor tell different clients different stories.

The "trusted third party" here is :class:`SimulatedPKI`: each client's long-term key is
drawn from the OS CSPRNG the first time the client is registered
(:func:`secagg.secrets.fresh_signing_key`) and kept for the PKI's life, i.e. for every
protocol instance of one ``MaskedOracle`` or ``run_protocol`` call (long-term keys are
not per instance; what they sign binds the instance). ``insecure_seed=`` derives them
from (seed, u) instead, for the insecure reproducible mode only. Signatures are Ed25519
from ``cryptography``.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .secrets import fresh_signing_key, long_term_signing_key

__all__ = ["SimulatedPKI", "PKISession", "SIGNATURE_BYTES", "key_message", "survivors_message", "encode_clients",
           "decode_clients", "encode_signatures", "decode_signatures"]

SIGNATURE_BYTES = 64


def _u32(x: int) -> bytes:
    return int(x).to_bytes(4, "big")


def key_message(tag: bytes, client: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What u signs in Round 0: c_u^PK || s_u^PK (Bonawitz et al. 2017, Fig. 4), bound to the
    instance tag and to u so a signature cannot be replayed in another instance or for another client."""
    return b"fedaudit/secagg|advertise_keys|" + tag + _u32(client) + c_pk + s_pk


def encode_clients(clients: Iterable[int]) -> bytes:
    """Canonical encoding of a client set: sorted 4-byte big-endian indices."""
    return b"".join(_u32(u) for u in sorted(set(int(u) for u in clients)))


@lru_cache(maxsize=64)
def decode_clients(blob: bytes, n: int) -> Tuple[int, ...]:
    """Inverse of :func:`encode_clients`; ValueError unless ``blob`` is a canonical set of indices < n.
    (Memoized: every client of an instance decodes the same U3.)"""
    if not isinstance(blob, bytes) or len(blob) % 4:
        raise ValueError("a client set is a multiple of 4 bytes")
    out = tuple(int.from_bytes(blob[i:i + 4], "big") for i in range(0, len(blob), 4))
    if any(b <= a for a, b in zip(out, out[1:])) or (out and out[-1] >= n):
        raise ValueError(f"a client set is strictly increasing indices in [0, {n})")
    return out


def encode_signatures(signatures: Mapping[int, bytes]) -> bytes:
    """The signature list {v: sigma'_v} as sent before unmasking: (4-byte v || 64-byte sigma'_v)
    sorted by v (Bonawitz et al. 2017, Fig. 4, Unmasking round)."""
    return b"".join(_u32(v) + bytes(signatures[v]) for v in sorted(signatures))


def decode_signatures(blob: bytes) -> Tuple[Tuple[int, bytes], ...]:
    """Inverse of :func:`encode_signatures`; ValueError unless ``blob`` is well formed."""
    step = 4 + SIGNATURE_BYTES
    if not isinstance(blob, (bytes, bytearray)) or len(blob) % step:
        raise ValueError(f"a signature list is a multiple of {step} bytes")
    out = tuple((int.from_bytes(blob[i:i + 4], "big"), bytes(blob[i + 4:i + step]))
                for i in range(0, len(blob), step))
    if any(b[0] <= a[0] for a, b in zip(out, out[1:])):
        raise ValueError("a signature list has strictly increasing signers")
    return out


def survivors_message(tag: bytes, survivors_blob: bytes) -> bytes:
    """What u signs in the ConsistencyCheck round: U3 (Bonawitz et al. 2017, Fig. 4, Round 3),
    bound to the instance tag."""
    return b"fedaudit/secagg|consistency_check|" + tag + survivors_blob


class SimulatedPKI:
    """The long-term keys d_u of the clients (Bonawitz et al. 2017, Sec. 6.2, "PKI").

    A client is registered (its d_u drawn from the OS CSPRNG, or derived from
    ``insecure_seed``) the first time any of its keys is asked for; the registry is then
    fixed: the server cannot alter it. One protocol instance uses it through a
    :meth:`session` (its own verification caches and counters).
    """

    def __init__(self, *, insecure_seed: Optional[int] = None):
        if insecure_seed is not None and (isinstance(insecure_seed, bool) or not isinstance(insecure_seed, int)):
            raise TypeError(f"insecure_seed={insecure_seed!r} must be an int or None")
        self.insecure_seed = insecure_seed
        self._keys: Dict[int, Ed25519PrivateKey] = {}

    @property
    def reproducible(self) -> bool:
        """Whether the keys derive from a seed (INSECURE: anyone with the seed can sign as anyone)."""
        return self.insecure_seed is not None

    def signing_key(self, client: int) -> Ed25519PrivateKey:
        """d_u^SK of ``client``: only the client itself signs with it (the simulation holds all)."""
        key = self._keys.get(client)
        if key is None:
            if isinstance(client, bool) or not isinstance(client, int) or client < 0:
                raise ValueError(f"client {client!r} is not a client index")
            key = (long_term_signing_key(self.insecure_seed, client)[0] if self.reproducible
                   else fresh_signing_key())
            self._keys[client] = key
        return key

    def verification_key(self, client: int) -> Ed25519PublicKey:
        """d_u^PK of ``client`` as registered before the protocol."""
        return self.signing_key(client).public_key()

    def session(self, n: int) -> "PKISession":
        """The PKI as seen by one protocol instance among clients 0..n-1."""
        return PKISession(self, n)


class PKISession:
    """One instance's use of a :class:`SimulatedPKI` among clients 0..n-1 (Bonawitz et al.
    2017, Sec. 6.2).

    ``sign`` is what client u does with its own d_u^SK; ``verify`` checks a signature
    against the registered d_u^PK. Every honest client verifies the same (signer, message,
    signature) triples; a verification is deterministic, so the session computes each
    distinct triple once and reuses the verdict (like the shared X25519 agreements). A
    tampered message or signature is a different triple and is verified on its own.
    """

    def __init__(self, registry: SimulatedPKI, n: int):
        self.registry, self.n = registry, int(n)
        self._verdicts: Dict[Tuple[int, bytes, bytes], bool] = {}
        self.list_verdicts: Dict[Tuple[bytes, bytes], Any] = {}   # (digest of U3 message, signature list) -> verdict
        self.signatures = 0
        self.verifications = 0
        self.checks = 0

    def _check(self, client: int) -> None:
        if not 0 <= client < self.n:
            raise ValueError(f"client {client} is not registered (clients are 0..{self.n - 1})")

    def verification_key(self, client: int) -> Ed25519PublicKey:
        """d_u^PK of ``client`` as registered before the protocol."""
        self._check(client)
        return self.registry.verification_key(client)

    def sign(self, client: int, message: bytes) -> bytes:
        """SIG.sign(d_u^SK, message) (Bonawitz et al. 2017, Sec. 3, "Signature scheme")."""
        self._check(client)
        self.signatures += 1
        return self.registry.signing_key(client).sign(message)

    def verify(self, client: int, message: bytes, signature: bytes, digest: bytes = None) -> bool:
        """SIG.ver(d_u^PK, message, signature); ``digest`` (sha256 of ``message``) may be passed when
        the caller checks many signatures on one message."""
        self.checks += 1
        if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES \
                or not 0 <= client < self.n:
            return False
        key = (client, bytes(signature), digest or hashlib.sha256(message).digest())
        hit = self._verdicts.get(key)
        if hit is None:
            self.verifications += 1
            try:
                self.verification_key(client).verify(bytes(signature), message)
                hit = True
            except InvalidSignature:
                hit = False
            self._verdicts[key] = hit
        return hit
