"""Every secret of the masked protocol is generated here, and nowhere else.

Bonawitz et al. 2017, Fig. 4 and Sec. 3: each party draws its own randomness (KA.gen
key pairs, the self-mask seed b_u, the Shamir coefficients of SS.share; in the active
model, Sec. 6.2, long-term SIG.gen signing keys). This simulation derives all of it
from (seed, instance) so a run is reproducible; a deployment draws it from the OS
CSPRNG instead, and switching is a change to this module only. Callers must keep the
order of the draws of one source (the bytes of a DRBG depend on it).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import crypto, shamir

__all__ = ["instance_root", "ClientSecretSource", "client_secrets", "long_term_signing_key",
           "server_key_pairs"]


def instance_root(seed: int, instance: int) -> bytes:
    """Root key of one protocol instance (fresh per aggregation, Bonawitz et al. 2017, Sec. 4);
    the clients' secrets, the instance tag and the SecAgg+ graph derive from it."""
    return crypto.instance_key(seed, instance)


class ClientSecretSource:
    """The private randomness of client u in one instance (Bonawitz et al. 2017, Fig. 4, "User"):
    a DRBG keyed by HKDF(root, "client/" || u), read in protocol order."""

    def __init__(self, root_key: bytes, index: int):
        self._drbg = crypto.Drbg(crypto.hkdf(root_key, info=b"client/" + int(index).to_bytes(4, "big")))

    def x25519_private_bytes(self) -> bytes:
        """32 bytes of an X25519 secret key (KA.gen, Sec. 3): c_u^SK, then s_u^SK (Fig. 4, Round 0)."""
        return self._drbg.read(crypto.KEY_BYTES)

    def self_mask_seed(self) -> bytes:
        """b_u, the PRG seed of u's self mask (Fig. 4, Round 1; the double masking of Sec. 4)."""
        return self._drbg.read(shamir.SECRET_BYTES)

    def shamir_coefficients(self, count: int) -> List[int]:
        """``count`` uniform elements of Z_p: the random coefficients of SS.share (Sec. 3)."""
        return self._drbg.field_elements(shamir.PRIME, count)


def client_secrets(root_key: bytes, index: int) -> ClientSecretSource:
    """The secret source of client ``index`` in the instance with root ``root_key``."""
    return ClientSecretSource(root_key, index)


@lru_cache(maxsize=4096)
def long_term_signing_key(seed: int, client: int) -> Tuple[Ed25519PrivateKey, bytes]:
    """(d_u^SK, raw d_u^PK): client u's long-term Ed25519 key registered with the PKI
    (Bonawitz et al. 2017, Sec. 6.2); the same for every instance of one ``seed``."""
    raw = crypto.hkdf(f"pki;seed={seed};client={client}".encode(), info=b"pki/ed25519")
    key = Ed25519PrivateKey.from_private_bytes(raw)
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def server_key_pairs(seed: int, instance: int, n: int) -> List[X25519PrivateKey]:
    """n X25519 key pairs of a malicious server that substitutes clients' channel keys in
    instance (seed, instance) (the man in the middle that Sec. 6.2's signed keys stop)."""
    drbg = crypto.Drbg(crypto.hkdf(instance_root(seed, instance), info=b"adversary/fake-keys"))
    return [crypto.keypair(drbg) for _ in range(n)]
