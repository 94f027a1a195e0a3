"""Cryptographic building blocks of the masked protocol, all from ``cryptography``.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS), Sec. 3 lists the primitives; this module instantiates
them (nothing here is a home-made cipher):

- key agreement KA: X25519 (Sec. 3, "Key Agreement"); private keys come from
  :mod:`secagg.secrets` (the OS CSPRNG, or seeded bytes in the insecure reproducible
  mode) through ``X25519PrivateKey.from_private_bytes``;
- key derivation: HKDF-SHA256 with a distinct ``info`` label per use, so one
  shared secret never keys two primitives;
- authenticated encryption AE: AES-256-GCM (Sec. 3, "Authenticated Encryption");
- pseudorandom generator PRG: the ChaCha20 keystream (RFC 8439; a fresh 256-bit key
  per stream, nonce zero, block counter from zero) read as little-endian uint32 words
  (modulus bits <= 32) or uint64 words (bits > 32) and reduced mod M = 2^bits, which is
  exactly uniform on Z_M because M divides 2^32 (resp. 2^64) (Sec. 3, "PRG"). On the
  host it is OpenSSL's (``cryptography``, on every core: :mod:`secagg.keystream`); on an
  accelerator :mod:`secagg.chacha20` computes the same words where the inputs live, so a
  client's masked input is the same integers on either. ChaCha20 rather than AES-128-CTR
  (1.5x faster per core on AES-NI/VAES CPUs, ``fedaudit bench keystream``) because it
  is add-rotate-xor on 32-bit words, which an accelerator runs natively (docs/bench-cpu.md);
- :class:`Drbg`: the deterministic randomness of one party in the insecure reproducible
  mode only (AES-256-CTR keystream under a key derived from the run seed and the
  protocol instance);
- a commitment to the self-mask seed b_u (SHA-256, :func:`commit_secret`) that lets the
  server check a reconstructed b_u (a wrong share never yields a wrong sum).
"""
from __future__ import annotations

from typing import Union

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .keystream import DEFAULT_PRG, mask_encryptor
from .keystream import keystream_seconds as _threaded_seconds

__all__ = [
    "PRG_CIPHER", "KEY_BYTES", "Drbg", "field_elements_from", "commit_secret", "instance_key", "hkdf", "keypair",
    "public_bytes",
    "private_bytes", "agree", "channel_key", "channel_cipher", "mask_key", "seal", "open_sealed", "prg_encryptor",
    "prg_words", "word_dtype", "keystream_seconds", "PRG",
]

PRG = DEFAULT_PRG         # secagg.keystream's name of the masks' PRG ("chacha20")
PRG_CIPHER = "ChaCha20"
KEY_BYTES = 32            # X25519 keys, self-mask seeds b_u, shared secrets
_PRG_KEY_BYTES = 32       # ChaCha20's 256-bit key; nonce zero, safe because every PRG key is used once
_ZERO_BLOCK = bytes(16)   # initial CTR counter block of the Drbg (one key per party)
_SALT = b"fedaudit/secagg/v1"


def hkdf(ikm: bytes, *, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``ikm`` with a fixed salt and a per-use ``info`` label.

    Bonawitz et al. 2017, Sec. 3: KA outputs are hashed before use as keys.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(ikm)


def instance_key(seed: int, instance: int) -> bytes:
    """A key derived from public (seed, instance) values: never secret.

    Roots the insecure reproducible mode of :mod:`secagg.secrets` (anyone with the
    configuration can recompute it) and seeds simulated, non-secret randomness such as
    the oracle's dropouts.
    """
    if not isinstance(seed, int) or not isinstance(instance, int):
        raise TypeError(f"seed and instance must be integers, got {seed!r}, {instance!r}")
    return hkdf(f"seed={seed};instance={instance}".encode(), info=b"instance")


def field_elements_from(read, prime: int, count: int) -> list:
    """``count`` elements of Z_prime from ``read(nbytes)`` (``os.urandom`` or a DRBG's read).

    Each element reduces 128 bits more than p has, so the reduction mod p is statistically
    uniform (bias < 2^-128); one read serves all ``count`` elements.
    """
    nbytes = (prime.bit_length() + 7) // 8 + 16
    raw = read(nbytes * count)
    return [int.from_bytes(raw[i:i + nbytes], "big") % prime for i in range(0, nbytes * count, nbytes)]


def commit_secret(secret: bytes, context: bytes) -> bytes:
    """SHA-256(label || context || secret): u's Round 1 commitment to its self-mask seed b_u.

    Binding (collision resistance) lets the server check the b_u it reconstructs from the
    Shamir shares, even from exactly t of them; hiding because b_u is 256 uniform bits.
    ``context`` binds the instance tag and u. (s_u^SK needs none: s_u^PK commits to it.)
    """
    h = hashes.Hash(hashes.SHA256())
    h.update(b"fedaudit/secagg|b-commitment|" + context + secret)
    return h.finalize()


class Drbg:
    """Deterministic random bytes: the AES-256-CTR keystream under ``key``.

    INSECURE reproducible mode only: stands in for each party's randomness of Bonawitz et
    al. 2017, Fig. 4 (key pairs, b_u, Shamir coefficients), keyed from (seed, instance) by
    :mod:`secagg.secrets`. One per party, so parties never share randomness.
    """

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError(f"Drbg needs a 32-byte key, got {len(key)} bytes")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(_ZERO_BLOCK)).encryptor()

    def read(self, n: int) -> bytes:
        return self._enc.update(bytes(n))

    def field_elements(self, prime: int, count: int) -> list:
        """``count`` statistically uniform elements of Z_prime (:func:`field_elements_from`)."""
        return field_elements_from(self.read, prime, count)


def keypair(drbg: Drbg) -> X25519PrivateKey:
    """KA.gen (Bonawitz et al. 2017, Sec. 3) from 32 DRBG bytes (X25519 clamps them itself);
    the insecure reproducible mode only."""
    return X25519PrivateKey.from_private_bytes(drbg.read(KEY_BYTES))


def public_bytes(key: Union[X25519PrivateKey, X25519PublicKey]) -> bytes:
    """Raw 32-byte X25519 public key, as advertised in Round 0 (Bonawitz et al. 2017, Fig. 4)."""
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 private key: the secret s_u^SK Shamir-shares (Bonawitz et al. 2017, Fig. 4)."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def agree(private: Union[X25519PrivateKey, bytes], peer_public: bytes) -> bytes:
    """KA.agree (Bonawitz et al. 2017, Sec. 3): the raw X25519 shared secret (hash it with
    :func:`hkdf` before use)."""
    if isinstance(private, (bytes, bytearray)):
        private = X25519PrivateKey.from_private_bytes(bytes(private))
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def channel_key(shared: bytes) -> bytes:
    """AES-256-GCM key of the channel between two clients: HKDF(X25519(c_u, c_v))
    (Bonawitz et al. 2017, Fig. 4, Round 1)."""
    return hkdf(shared, info=b"channel/aes-256-gcm")


def mask_key(secret: bytes, kind: str) -> bytes:
    """PRG key for a self mask (``kind='self'``, secret b_u) or a pairwise mask
    (``kind='pair'``, secret X25519(s_u, s_v)), i.e. s_uv = HKDF(X25519(s_u, s_v))
    (Bonawitz et al. 2017, Fig. 4, Round 2)."""
    if kind not in ("self", "pair"):
        raise ValueError(f"kind={kind!r}; choose 'self' or 'pair'")
    return hkdf(secret, info=b"prg/" + kind.encode(), length=_PRG_KEY_BYTES)


def channel_cipher(shared: bytes) -> AESGCM:
    """AE for the channel between two clients (Bonawitz et al. 2017, Sec. 3 and Fig. 4, Round 1):
    AES-256-GCM under HKDF(X25519(c_u, c_v))."""
    return AESGCM(channel_key(shared))


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AE.enc (Bonawitz et al. 2017, Sec. 3): AES-256-GCM; the caller makes (key, nonce)
    unique per message."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """AE.dec (Bonawitz et al. 2017, Sec. 3): raises ``cryptography.exceptions.InvalidTag`` on
    any tampering."""
    return AESGCM(key).decrypt(nonce, ciphertext, associated_data)


def prg_encryptor(key: bytes, first_word: int = 0, bits: int = 32):
    """A fresh ChaCha20 encryptor (OpenSSL's, through ``cryptography``) whose keystream
    (``update_into`` of zeros) is PRG(key) (Bonawitz et al. 2017, Sec. 3, "Pseudorandom
    Generator") from word ``first_word`` of Z_{2^bits} (a multiple of 16 words of 4 bytes or
    8 of 8 bytes: a ChaCha20 block)."""
    return mask_encryptor(key, first_word * np.dtype(word_dtype(bits)).itemsize, PRG)


def word_dtype(bits: int):
    """Machine word holding one element of Z_{2^bits}: uint32 up to 32 bits, else uint64
    (the PRG's expansion into Z_R of Bonawitz et al. 2017, Sec. 3, with R = 2^bits)."""
    return np.uint32 if bits <= 32 else np.uint64


def prg_words(key: bytes, length: int, bits: int) -> np.ndarray:
    """PRG(key) expanded into ``length`` elements of Z_{2^bits} (reference expansion of the
    masks of Bonawitz et al. 2017, Fig. 4, Round 2).

    The bulk protocol produces the same words chunk by chunk; this one-shot form is
    for small uses and tests.
    """
    dt = np.dtype(word_dtype(bits)).newbyteorder("<")
    raw = prg_encryptor(key, 0, bits).update(bytes(length * dt.itemsize))
    words = np.frombuffer(raw, dtype=dt).astype(word_dtype(bits))
    if bits not in (32, 64):
        words &= word_dtype(bits)((1 << bits) - 1)
    return words


def keystream_seconds(nbytes: int, workers: int = 1) -> float:
    """Wall time for this machine's PRG (:data:`PRG_CIPHER`) to produce ``nbytes`` of keystream
    on ``workers`` threads (each its share under one key, 64 KiB calls, no other work).

    The lower bound for the masked protocol's data plane on as many threads, whose O(n^2 d)
    PRG expansion dominates the cost analysis of Bonawitz et al. 2017. Used by
    ``fedaudit bench secagg``.
    """
    return _threaded_seconds(nbytes, prg=PRG, workers=workers)
