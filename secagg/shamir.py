"""Shamir t-out-of-n secret sharing over a prime field (Shamir 1979).

Bonawitz et al. 2017, Sec. 3 ("Secret Sharing"): each client shares its self-mask
seed b_u and its mask secret key s_u^SK, both 32-byte strings, so the field must
hold every 256-bit integer. We use p = 2^256 + 297, the smallest prime above
2^256 (the test suite re-checks primality). Arithmetic is on Python ints.

Shares are points (x, f(x)) of a random polynomial f of degree t - 1 with
f(0) = secret; the x-coordinate of client u is u + 1 (0 is the secret's own
point). Any t shares give the secret by Lagrange interpolation at 0; fewer
reveal nothing about it.

Interpolation alone cannot tell a wrong share: t shares always define some polynomial,
and one altered share moves f(0). The protocol therefore checks every reconstructed
secret against a commitment made before the shares were sent (s_u^SK against s_u^PK,
b_u against its Round 1 hash, :func:`secagg.crypto.commit_secret`), which holds even
when exactly t shares arrive.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Iterable, Mapping, Sequence, Tuple

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "share", "reconstruct", "secret_to_int",
           "int_to_secret", "x_of"]

PRIME = 2 ** 256 + 297
SECRET_BYTES = 32
SHARE_BYTES = (PRIME.bit_length() + 7) // 8   # 33: serialized field element


def x_of(client: int) -> int:
    """Evaluation point of client ``client``'s share (never 0, the secret's point);
    SS.share of Bonawitz et al. 2017, Sec. 3 indexes shares by user."""
    return client + 1


def secret_to_int(secret: bytes) -> int:
    """A 32-byte secret (b_u or s_u^SK, Bonawitz et al. 2017, Fig. 4) as a field element."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    return int.from_bytes(secret, "big")


def int_to_secret(value: int) -> bytes:
    """Inverse of :func:`secret_to_int` for a reconstructed secret (Bonawitz et al. 2017, Fig. 4, Round 3)."""
    if not 0 <= value < 2 ** (8 * SECRET_BYTES):
        # Only a wrong set of shares can interpolate to a value outside the secret range.
        raise ValueError("reconstructed value is not a 32-byte secret: the shares are inconsistent")
    return value.to_bytes(SECRET_BYTES, "big")


def share(secret: int, threshold: int, holders: Iterable[int],
          coefficients: Sequence[int]) -> Dict[int, int]:
    """Split ``secret`` into shares for ``holders`` (client indices), any ``threshold`` of
    which reconstruct it (Shamir 1979; Bonawitz et al. 2017, Sec. 3, SS.share).

    ``coefficients`` are the t - 1 higher coefficients of the polynomial, uniform in
    the field (the caller draws them from :mod:`secagg.secrets`: the OS CSPRNG).
    Returns {holder: f(x_of(holder))}.
    """
    holders = list(holders)
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold={threshold} must be in [1, {len(holders)}] (the number of holders)")
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be a field element in [0, p)")
    coeffs = list(coefficients)
    if len(coeffs) != threshold - 1:
        raise ValueError(f"a {threshold}-out-of-n sharing needs {threshold - 1} random coefficients, "
                         f"got {len(coeffs)}")
    out = {}
    for h in holders:
        x = x_of(h)
        acc = 0
        # Horner without reducing at each step: x is small, so the int grows slowly
        # and one final reduction is cheaper than t of them.
        for c in reversed(coeffs):
            acc = acc * x + c
        out[h] = (acc * x + secret) % PRIME
    return out


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: Tuple[int, ...]) -> Tuple[int, ...]:
    # lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p; cached because the same
    # surviving set reconstructs many secrets in one unmasking round.
    lams = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        lams.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(lams)


def reconstruct(shares: Mapping[int, int], threshold: int) -> int:
    """SS.recon (Bonawitz et al. 2017, Sec. 3): the secret from at least ``threshold``
    shares {holder: value}, by Lagrange interpolation at 0.

    Uses the ``threshold`` shares of the smallest holder indices (any t suffice).
    Raises ValueError with fewer shares.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} share(s) cannot reconstruct a {threshold}-out-of-n secret")
    holders = sorted(shares)[:threshold]
    xs = tuple(x_of(h) for h in holders)
    lams = _lagrange_at_zero(xs)
    return sum(lam * shares[h] for lam, h in zip(lams, holders)) % PRIME

