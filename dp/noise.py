"""Where the randomness of the DP mechanisms comes from: the OS CSPRNG, unless asked otherwise.

A DP guarantee holds only against an adversary who cannot predict the noise (or, with
sampling, who was sampled). Every random draw a mechanism's guarantee rests on (the
discrete Gaussian noise of :class:`dp.CentralDPOracle` and :class:`dp.DistributedDPOracle`,
the Poisson cohort of user-level DP, DP-SGD's noise and lots) therefore comes by default
from the operating system's CSPRNG (``os.urandom``: getrandom(2) on Linux, a ChaCha20 DRBG
seeded from the kernel's entropy pool):

- :class:`SecureRandom` gives exactly uniform integers from ``os.urandom`` (rejection
  sampling on masked 64-bit words, no modulo bias) with the ``integers`` method of a
  ``numpy.random.Generator``, so the exact samplers of :mod:`dp.discrete_gaussian` run on it
  unchanged.
- :func:`os_seeded_torch_generator` is a ``torch.Generator`` seeded with 63 fresh bits from
  ``os.urandom``, for the one place that needs a torch generator (Opacus's DP-SGD noise and
  Poisson lots, :mod:`dp.record_level`). It is *not* a CSPRNG (CPU: MT19937; CUDA: Philox);
  :class:`dp.RecordLevelClient` reseeds it before every optimizer step, so predicting one
  step's draws means guessing that step's 63-bit seed.

Seeded noise (``seeded=True``, the run's ``--dp-seeded-noise``) is for paired experiments
only: :func:`noise_rng` then returns ``numpy.random.default_rng([seed, stream, round,
call])``, a stream that depends on the run seed, the mechanism's stream tag, the round and
the oracle call within the round, and on nothing else (not on the secure-aggregation
mode). Anyone who knows the seed knows the noise and can subtract it: :data:`SEEDED_LABEL`
is what ``result.json`` says then.
"""
from __future__ import annotations

import os
from numbers import Integral
from typing import Sequence, Tuple, Union

import numpy as np
import torch

CSPRNG_LABEL = "csprng"
SEEDED_LABEL = "seeded: the reported epsilon does not hold against anyone who knows the seed"

# Stream tags of :func:`noise_rng`: one per kind of draw, so that streams never overlap.
STREAM_CENTRAL = 1
STREAM_DISTRIBUTED = 2
STREAM_COHORT = 3

Size = Union[None, int, Tuple[int, ...]]


class SecureRandom:
    """Uniform integers from the OS CSPRNG (``os.urandom``), with numpy's ``Generator.integers`` signature.

    ``integers(low, high, size, dtype)`` draws from [low, high) (``endpoint=True``: [low, high])
    exactly uniformly: 64-bit words from ``os.urandom``, masked to the bit length of the range
    and rejected when out of range (each word is kept with probability > 1/2). It cannot be
    seeded; that is its purpose.
    """

    name = "os.urandom"
    _BUFFER_WORDS = 8192       # read os.urandom 64 KiB at a time (the samplers ask for small batches)

    def __init__(self):
        self._buf = np.empty(0, dtype=np.uint64)

    def _words(self, k: int) -> np.ndarray:
        if self._buf.size < k:
            fresh = np.frombuffer(os.urandom(8 * max(k, self._BUFFER_WORDS)), dtype=np.uint64)
            self._buf = np.concatenate([self._buf, fresh])
        out, self._buf = self._buf[:k], self._buf[k:]
        return out

    def integers(self, low, high=None, size: Size = None, dtype=np.int64, endpoint: bool = False):
        if high is None:
            low, high = 0, low
        low, high = int(low), int(high) + (1 if endpoint else 0)
        n = high - low
        if n < 1:
            raise ValueError(f"integers: empty range [{low}, {high})")
        if n > 1 << 63:
            raise ValueError(f"integers: range of {n} values exceeds 2^63")
        if dtype not in (np.int64, "int64"):
            raise TypeError(f"SecureRandom.integers draws int64 only, got dtype={dtype!r}")
        shape = () if size is None else ((size,) if isinstance(size, Integral) else tuple(size))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        bits = (n - 1).bit_length()
        mask = np.uint64((1 << bits) - 1)
        out = np.empty(count, dtype=np.uint64)
        filled = 0
        while filled < count:
            need = count - filled
            words = need + need // 2 + 8
            raw = self._words(words) & mask       # each word is used once
            ok = raw[raw < np.uint64(n)]
            take = min(ok.size, need)
            out[filled:filled + take] = ok[:take]
            filled += take
        res = out.astype(np.int64) + np.int64(low)
        return res[0] if size is None else res.reshape(shape)

    def __repr__(self) -> str:
        return "SecureRandom(os.urandom)"


def noise_rng(seeded: bool, seed: int, stream: int, *key: int):
    """The generator of one group of draws: :class:`SecureRandom` (default), or, when
    ``seeded``, ``numpy.random.default_rng([seed, stream, *key])`` (key = (round, call))."""
    if not seeded:
        return SecureRandom()
    return np.random.default_rng([int(seed) & (2 ** 63 - 1), int(stream), *[int(k) for k in key]])


def noise_label(seeded: bool) -> str:
    """What ``result.json``'s "dp" section says about the noise source."""
    return SEEDED_LABEL if seeded else CSPRNG_LABEL


def os_seed() -> int:
    """63 fresh bits from ``os.urandom`` (a torch seed)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def os_seeded_torch_generator(device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``os.urandom`` (not a CSPRNG; reseed per use)."""
    return torch.Generator(device=device).manual_seed(os_seed())


def bernoulli_cohort(n_clients: int, m: int, rng) -> torch.Tensor:
    """Poisson cohort of rate q = m / n_clients: each client independently with probability
    exactly m / n (uniform integer in [0, n) below m), from ``rng`` (:func:`noise_rng`).
    Sorted client indices; may be empty."""
    if not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
    if not isinstance(m, int) or not 1 <= m <= n_clients:
        raise ValueError(f"m={m!r} (expected cohort size) must lie in [1, n_clients={n_clients}]")
    u = rng.integers(0, n_clients, size=n_clients, dtype=np.int64)
    return torch.from_numpy(np.nonzero(u < m)[0].astype(np.int64))


def check_seeded(seeded: bool, name: str = "seeded_noise") -> bool:
    if not isinstance(seeded, bool):
        raise TypeError(f"{name}={seeded!r} must be True or False")
    return seeded


__all__: Sequence[str] = ["SecureRandom", "noise_rng", "noise_label", "os_seed", "os_seeded_torch_generator",
                          "bernoulli_cohort", "CSPRNG_LABEL", "SEEDED_LABEL", "STREAM_CENTRAL",
                          "STREAM_DISTRIBUTED", "STREAM_COHORT"]
