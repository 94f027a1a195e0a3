"""Every secret of the masked protocol is drawn here, and nowhere else.

Bonawitz et al. 2017, Fig. 4 and Sec. 3: each party draws its own randomness (KA.gen
key pairs, the self-mask seed b_u, the random coefficients of SS.share; in the active
model, Sec. 6.2, long-term SIG.gen signing keys). By default all of it comes from the
operating system's CSPRNG, fresh per protocol instance (``X25519PrivateKey.generate``,
``Ed25519PrivateKey.generate``, ``os.urandom``): nothing secret can be derived from the
run's configuration, its seed, the oracle's call counter or anything in the transcript.

``insecure_reproducible=True`` (:func:`instance_randomness`, ``SimulatedPKI(insecure_seed=...)``)
keeps the old derivation for debugging a failing case: every secret of an instance comes
from an AES-CTR DRBG keyed by HKDF(seed, instance), so anyone holding the configuration
rebuilds every key, mask and input (``tests/test_secagg_secrecy.py`` does exactly that).
Results of that mode carry :data:`INSECURE_WARNING`. Callers keep the order of the draws of
one source in both modes (a DRBG's bytes depend on it).

Public randomness is drawn here too: the instance tag (binds signatures and ciphertexts to
the instance) and the coin of the SecAgg+ graph (Bell et al. 2020). Neither is secret, but
both are drawn fresh per instance unless the run is reproducible: a graph predictable from
the configuration would let an adversary corrupt a target's neighbours before the instance.
"""
from __future__ import annotations

import os
import secrets as _os_secrets
from functools import lru_cache
from typing import List, Optional, Tuple, Union

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import crypto, shamir

__all__ = ["INSECURE_WARNING", "instance_root", "ClientSecretSource", "OsClientSecrets", "client_secrets",
           "InstanceRandomness", "instance_randomness", "long_term_signing_key", "fresh_signing_key",
           "server_key_pairs", "check_flag"]

INSECURE_WARNING = ("INSECURE: insecure_reproducible=True derives every key, self-mask seed and Shamir "
                    "coefficient of this run from the public seed and the call counter; anyone holding the "
                    "configuration and the transcript can unmask every input. For debugging only.")


def check_flag(name: str, value) -> bool:
    """``value`` as a bool; TypeError naming ``name`` unless it is True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False")
    return value


# -- the insecure, reproducible derivation ----------------------------------------------


def instance_root(seed: int, instance: int) -> bytes:
    """INSECURE derivation: the root key of instance (seed, instance) from which an
    ``insecure_reproducible`` run derives every secret of the instance. Public inputs only:
    use it to reproduce a run, or (tests) to show what a seeded run leaks."""
    return crypto.instance_key(seed, instance)


class ClientSecretSource:
    """INSECURE: the randomness of client u in a reproducible instance (Bonawitz et al. 2017,
    Fig. 4, "User"): a DRBG keyed by HKDF(root, "client/" || u), read in protocol order."""

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
    """INSECURE: the reproducible secret source of client ``index`` under ``root_key``
    (:func:`instance_root`)."""
    return ClientSecretSource(root_key, index)


@lru_cache(maxsize=4096)
def long_term_signing_key(seed: int, client: int) -> Tuple[Ed25519PrivateKey, bytes]:
    """INSECURE: (d_u^SK, raw d_u^PK) derived from (seed, u), the long-term Ed25519 key of
    client u in a PKI built with ``insecure_seed=seed`` (Bonawitz et al. 2017, Sec. 6.2)."""
    raw = crypto.hkdf(f"pki;seed={seed};client={client}".encode(), info=b"pki/ed25519")
    key = Ed25519PrivateKey.from_private_bytes(raw)
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# -- the default: the operating system's CSPRNG ------------------------------------------


class OsClientSecrets:
    """The randomness of client u in one instance, from the OS CSPRNG (Bonawitz et al. 2017,
    Fig. 4, "User": KA.gen twice, b_u, the coefficients of SS.share). Same interface as
    :class:`ClientSecretSource`."""

    def x25519_private_bytes(self) -> bytes:
        """A fresh X25519 secret key (KA.gen, Sec. 3), as its 32 raw bytes."""
        return crypto.private_bytes(X25519PrivateKey.generate())

    def self_mask_seed(self) -> bytes:
        """b_u: 32 bytes from the OS CSPRNG (Fig. 4, Round 1)."""
        return _os_secrets.token_bytes(shamir.SECRET_BYTES)

    def shamir_coefficients(self, count: int) -> List[int]:
        """``count`` elements of Z_p from one ``os.urandom`` read (statistically uniform, see
        :func:`secagg.crypto.field_elements_from`)."""
        return crypto.field_elements_from(os.urandom, shamir.PRIME, count)


_OS_SOURCE = OsClientSecrets()   # stateless: every call reads the OS CSPRNG


class InstanceRandomness:
    """All the randomness of one protocol instance (Bonawitz et al. 2017, Fig. 4; Bell et al.
    2020 for the graph): each client's secret source, the public instance tag and the public
    coin of the SecAgg+ graph. Fresh from the OS CSPRNG unless ``reproducible`` (then derived
    from (seed, instance), INSECURE)."""

    def __init__(self, seed: Optional[int] = None, instance: Optional[int] = None, *, reproducible: bool = False):
        self.reproducible = bool(reproducible)
        self._root = instance_root(seed, instance) if self.reproducible else None
        # The tag is public (it names the instance in signatures and AES-GCM associated data).
        self.tag = (crypto.hkdf(self._root, info=b"instance-tag", length=16) if self.reproducible
                    else os.urandom(16))

    def client(self, index: int) -> Union[ClientSecretSource, OsClientSecrets]:
        """Client ``index``'s secret source for this instance."""
        return client_secrets(self._root, index) if self.reproducible else _OS_SOURCE

    def graph_rng(self) -> np.random.Generator:
        """The public coin of the SecAgg+ graph: unpredictable before the instance (a 128-bit
        seed from the OS CSPRNG), or derived from (seed, instance) when reproducible."""
        if self.reproducible:
            return np.random.default_rng(int.from_bytes(crypto.hkdf(self._root, info=b"graph", length=16), "big"))
        return np.random.default_rng(_os_secrets.randbits(128))


def instance_randomness(seed: int = 0, instance: int = 0, insecure_reproducible: bool = False) -> InstanceRandomness:
    """The randomness of one protocol instance: OS CSPRNG by default; with
    ``insecure_reproducible`` derived from (seed, instance) (see :data:`INSECURE_WARNING`)."""
    check_flag("insecure_reproducible", insecure_reproducible)
    if insecure_reproducible:
        return InstanceRandomness(seed, instance, reproducible=True)
    return InstanceRandomness()


def fresh_signing_key() -> Ed25519PrivateKey:
    """A long-term Ed25519 key d_u from the OS CSPRNG (SIG.gen, Bonawitz et al. 2017, Sec. 6.2)."""
    return Ed25519PrivateKey.generate()


def server_key_pairs(n: int, *, seed: Optional[int] = None, instance: Optional[int] = None) -> List[X25519PrivateKey]:
    """n X25519 key pairs of a malicious server that substitutes clients' channel keys (the man
    in the middle that Sec. 6.2's signed keys stop): the server's own randomness, from the OS
    CSPRNG, or derived from (seed, instance) for a reproducible run."""
    if seed is None:
        return [X25519PrivateKey.generate() for _ in range(n)]
    drbg = crypto.Drbg(crypto.hkdf(instance_root(seed, instance), info=b"adversary/fake-keys"))
    return [crypto.keypair(drbg) for _ in range(n)]
