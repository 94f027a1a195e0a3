"""Keystreams on the host, on every core: OpenSSL's ChaCha20 and AES-128-CTR through ``cryptography``.

Two users:

- the stochastic-rounding bits of :mod:`secagg.encoding`: one ChaCha20 stream per client
  (key K of the call, nonce = the client's index), read as little-endian uint32 words;
  :func:`chacha20_rows_into` fills a block of them. :mod:`secagg.chacha20` computes the
  same words on an accelerator;
- the masks of the masked protocol (Bonawitz et al. 2017, Fig. 4, Round 2: PRG(b_u) and
  PRG(s_uv), expanded with :data:`secagg.crypto.PRG_CIPHER` exactly as
  :func:`secagg.crypto.prg_words`): :func:`expand_masks` (m keystreams as words) and
  :func:`accumulate_masks` (signed sums of keystreams into rows, the data plane's inner
  loop), both split over column ranges on a pool of threads.

Both ciphers are counter modes, so a column range starts anywhere: a worker positions
its own encryptors at its first block and the result does not depend on the split.
``cryptography`` releases the GIL while OpenSSL runs (and numpy in its ufuncs), so
threads scale; ``fedaudit bench keystream`` measures threads against processes.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["PRGS", "available_cores", "default_workers", "parallel_columns", "chacha20_rows_into",
           "chacha20_encryptors", "expand_masks", "accumulate_masks", "MaskJob"]

PRGS = ("aes-128-ctr", "chacha20")
_ALIGN = 64          # column ranges start at multiples of 64 words: whole AES/ChaCha blocks for 4- and 8-byte words
_MIN_WORDS = 1 << 16  # below this many words per worker a second thread costs more than it saves
_COL_BLOCK = 4096    # words per cipher call: 16-32 KiB, near OpenSSL's peak, in L1/L2
_ZEROS = bytes(8 * _COL_BLOCK)
_pools: dict = {}
_pool_lock = threading.Lock()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                 # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Workers for host keystreams: torch's intra-op thread count (which a run sets from its
    ``threads`` option, see ``protocols.simulation.apply_threads``), at most the cores."""
    import torch
    return max(1, min(available_cores(), torch.get_num_threads()))


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="fedaudit-keystream")
        return pool


def parallel_columns(width: int, fn: Callable[[int, int], object], *, workers: Optional[int] = None,
                     min_words: int = _MIN_WORDS) -> List[object]:
    """Run ``fn(start, stop)`` over a split of ``range(width)`` into at most ``workers`` column
    ranges (starts aligned to 64 words), in threads; returns the results in column order.
    One range runs in the calling thread. Exceptions propagate."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if width <= 0:
        return [fn(0, 0)]
    parts = max(1, min(workers, width // max(1, min_words)))
    step = -(-width // parts)
    step = -(-step // _ALIGN) * _ALIGN
    bounds = [(a, min(width, a + step)) for a in range(0, width, step)] or [(0, 0)]
    if len(bounds) == 1:
        return [fn(*bounds[0])]
    futures = [_pool(len(bounds) - 1).submit(fn, a, b) for a, b in bounds[1:]]
    first = fn(*bounds[0])
    return [first] + [f.result() for f in futures]


# ------------------------------------------------------------------ ChaCha20 rows (rounding bits)

def chacha20_encryptors(key: bytes, client_ids: Sequence[int], first_word: int) -> list:
    """One ChaCha20 encryptor per client, positioned at 32-bit word ``first_word`` (a multiple
    of 16: a block boundary) of the stream with nonce = the client's index (12 bytes, little-endian)."""
    if first_word % 16:
        raise ValueError(f"first_word={first_word} must be a multiple of 16 (a ChaCha20 block)")
    ctr = (first_word // 16).to_bytes(4, "little")
    return [Cipher(algorithms.ChaCha20(key, ctr + int(c).to_bytes(12, "little")), None).encryptor()
            for c in client_ids]


def chacha20_rows_into(encryptors: Sequence, out: np.ndarray) -> None:
    """Fill ``out`` (uint32 [rows, w], C-contiguous rows) with the next w words of each row's stream."""
    nb = 4 * out.shape[1]
    z = memoryview(_ZEROS if nb <= len(_ZEROS) else bytes(nb))[:nb]
    for enc, row in zip(encryptors, out):
        enc.update_into(z, memoryview(row).cast("B"))
    if out.dtype.byteorder == ">" or (out.dtype.byteorder == "=" and np.little_endian is False):
        out.byteswap(inplace=True)         # pragma: no cover - big-endian hosts


# ------------------------------------------------------------------ masks (the data plane)

# A keystream and where it goes: (key, [(row, sign), ...]); sign +1 adds it to the row, -1 subtracts it.
MaskJob = Tuple[bytes, Sequence[Tuple[int, int]]]


def _word_dtype(bits: int):
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits={bits!r} must be an integer in [1, 64]")
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def _encryptor(prg: str, key: bytes, first_byte: int):
    if prg == "aes-128-ctr":
        # secagg.crypto.prg_encryptor: CTR from the zero counter block; block j has counter j
        return Cipher(algorithms.AES(key), modes.CTR((first_byte // 16).to_bytes(16, "big"))).encryptor()
    if prg == "chacha20":
        return Cipher(algorithms.ChaCha20(key, (first_byte // 64).to_bytes(4, "little") + bytes(12)),
                      None).encryptor()
    raise ValueError(f"prg={prg!r}; choose one of {PRGS}")


def accumulate_masks(out: np.ndarray, jobs: Sequence[MaskJob], *, bits: int, prg: str = "aes-128-ctr",
                     first_word: int = 0, workers: Optional[int] = None) -> int:
    """``out[row] += sign * PRG(key)[first_word : first_word + w]`` for every job, mod 2^bits.

    The inner loop of the masked protocol's data plane (Bonawitz et al. 2017, Fig. 4: a client's
    y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv); the server's removal of
    the masks it regenerates). ``out``: uint32 (bits <= 32) or uint64 words [rows, w]; each
    keystream is generated once and applied to all its targets. Words are the little-endian
    words of the keystream (as :func:`secagg.crypto.prg_words`); arithmetic wraps mod
    2^32 / 2^64 and ``out`` is reduced mod 2^bits at the end. ``first_word``: where ``out[:, 0]``
    sits in the streams (a multiple of 64), so the caller can go chunk by chunk. Columns are
    split over ``workers`` threads. Returns the keystream bytes produced.
    """
    wd = _word_dtype(bits)
    if out.dtype.kind != "u" or out.dtype.itemsize != wd.itemsize or out.ndim != 2:
        raise ValueError(f"out must be a 2-D {wd.name} array for bits={bits}, got {out.dtype} {out.shape}")
    if first_word % _ALIGN:
        raise ValueError(f"first_word={first_word} must be a multiple of {_ALIGN}")
    rows, width = out.shape
    for key, targets in jobs:
        for r, s in targets:
            if not 0 <= r < rows or s not in (1, -1):
                raise ValueError(f"mask target (row {r}, sign {s}) outside out's {rows} rows or sign not +-1")
    size = wd.itemsize

    def work(a: int, b: int) -> None:
        encs = [_encryptor(prg, key, (first_word + a) * size) for key, _ in jobs]
        buf = np.empty(_COL_BLOCK, dtype=wd)
        view = memoryview(buf).cast("B")
        for c0 in range(a, b, _COL_BLOCK):
            c1 = min(b, c0 + _COL_BLOCK)
            w = c1 - c0
            z = memoryview(_ZEROS)[:w * size]
            k = buf[:w]
            for enc, (_, targets) in zip(encs, jobs):
                enc.update_into(z, view[:w * size])
                for r, s in targets:
                    dst = out[r, c0:c1]
                    (np.add if s > 0 else np.subtract)(dst, k, out=dst)
        if bits not in (32, 64):
            np.bitwise_and(out[:, a:b], wd.type((1 << bits) - 1), out=out[:, a:b])

    parallel_columns(width, work, workers=workers, min_words=_COL_BLOCK)
    return len(jobs) * width * size


def expand_masks(keys: Sequence[bytes], nwords: int, bits: int, *, prg: str = "aes-128-ctr",
                 first_word: int = 0, workers: Optional[int] = None) -> np.ndarray:
    """m keystreams expanded into ``nwords`` elements of Z_{2^bits} each: [m, nwords] uint32
    (bits <= 32) or uint64 words, row i = ``secagg.crypto.prg_words(keys[i], nwords, bits)`` for
    the AES-128-CTR PRG. Columns split over ``workers`` threads (default: :func:`default_workers`)."""
    if not isinstance(nwords, int) or nwords < 0:
        raise ValueError(f"nwords={nwords!r} must be an integer >= 0")
    wd = _word_dtype(bits)
    if first_word % _ALIGN:
        raise ValueError(f"first_word={first_word} must be a multiple of {_ALIGN}")
    out = np.empty((len(keys), nwords), dtype=wd)
    size = wd.itemsize

    def work(a: int, b: int) -> None:       # each keystream written in place, no arithmetic
        for i, key in enumerate(keys):
            enc = _encryptor(prg, key, (first_word + a) * size)
            row = memoryview(out[i, a:b]).cast("B")
            for c0 in range(0, (b - a) * size, len(_ZEROS)):
                c1 = min((b - a) * size, c0 + len(_ZEROS))
                enc.update_into(memoryview(_ZEROS)[:c1 - c0], row[c0:c1])
        if bits not in (32, 64):
            np.bitwise_and(out[:, a:b], wd.type((1 << bits) - 1), out=out[:, a:b])

    parallel_columns(nwords, work, workers=workers, min_words=_COL_BLOCK)
    return out


def process_expand(keys: Sequence[bytes], nwords: int, bits: int, *, prg: str = "aes-128-ctr",
                   workers: Optional[int] = None) -> np.ndarray:
    """:func:`expand_masks` on a pool of processes (each writes its column range into shared
    memory): the alternative to threads that ``fedaudit bench keystream`` measures."""
    from multiprocessing import shared_memory
    wd = _word_dtype(bits)
    workers = default_workers() if workers is None else workers
    shm = shared_memory.SharedMemory(create=True, size=max(1, len(keys) * nwords * wd.itemsize))
    try:
        step = -(-nwords // max(1, workers))
        step = -(-step // _ALIGN) * _ALIGN or _ALIGN
        ranges = [(a, min(nwords, a + step)) for a in range(0, nwords, step)]
        pool = _process_pool(workers)
        list(pool.map(_process_part, [(shm.name, len(keys), nwords, bits, prg, list(keys), a, b)
                                      for a, b in ranges]))
        out = np.ndarray((len(keys), nwords), dtype=wd, buffer=shm.buf).copy()
    finally:
        shm.close()
        shm.unlink()
    return out


_process_pools: dict = {}


def _process_pool(workers: int):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    pool = _process_pools.get(workers)
    if pool is None:
        if not _process_pools:
            import atexit
            atexit.register(shutdown_process_pools)
        # forkserver: no fork of a process that runs OpenMP / torch threads
        pool = _process_pools[workers] = ProcessPoolExecutor(workers, mp_context=get_context("forkserver"))
    return pool


def shutdown_process_pools() -> None:
    """Stop the worker processes of :func:`process_expand` (also run at exit)."""
    while _process_pools:
        _process_pools.popitem()[1].shutdown(wait=True)


def _process_part(args) -> None:
    from multiprocessing import shared_memory
    name, m, nwords, bits, prg, keys, a, b = args
    shm = shared_memory.SharedMemory(name=name)
    try:
        wd = _word_dtype(bits)
        full = np.ndarray((m, nwords), dtype=wd, buffer=shm.buf)
        full[:, a:b] = expand_masks(keys, b - a, bits, prg=prg, first_word=a, workers=1)
        del full
    finally:
        shm.close()


def keystream_gbps(nbytes: int, prg: str = "chacha20") -> float:
    """One core's keystream throughput (GB/s) for ``prg``, ``nbytes`` in 16 KiB calls."""
    import time
    enc = _encryptor(prg, bytes(32 if prg == "chacha20" else 16), 0)
    buf = bytearray(16384)
    z = bytes(16384)
    t0 = time.perf_counter()
    for _ in range(max(1, nbytes // 16384)):
        enc.update_into(z, buf)
    return max(1, nbytes // 16384) * 16384 / (time.perf_counter() - t0) / 1e9

