"""Keystreams on the host, on every core: OpenSSL's ChaCha20 and AES-128-CTR through ``cryptography``.

Two users:

- the stochastic-rounding bits of :mod:`secagg.encoding`: one ChaCha20 stream per client
  (key K of the call, nonce = the client's index), read as little-endian uint32 words;
  :func:`chacha20_rows_into` fills a block of them. :mod:`secagg.chacha20` computes the
  same words on an accelerator;
- the masks of the masked protocol (Bonawitz et al. 2017, Fig. 4, Round 2: PRG(b_u) and
  PRG(s_uv); the PRG is ChaCha20, :data:`DEFAULT_PRG`, exactly as :func:`secagg.crypto.prg_words`,
  so that :mod:`secagg.chacha20` gives the same masks on an accelerator; AES-128-CTR stays
  selectable for measurements): :func:`stream_columns` (the data plane's engine: blocks of
  keystreams added to and subtracted from rows, chunk by chunk of columns, with a caller's
  load and store around each chunk), :func:`accumulate_masks` (the same in place on an
  array) and :func:`expand_masks` (m keystreams as words), all split over column ranges on a
  pool of threads.

Both ciphers are counter modes, so a column range starts anywhere: a worker positions
its own encryptors at its first block and the result does not depend on the split.
``cryptography`` releases the GIL while OpenSSL runs (and numpy in its ufuncs), so
threads scale; ``fedaudit bench keystream`` measures threads against processes.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["PRGS", "DEFAULT_PRG", "available_cores", "default_workers", "parallel_columns", "chacha20_rows_into",
           "chacha20_encryptors", "mask_encryptor", "stream_columns", "expand_masks", "accumulate_masks",
           "MaskJob", "MaskBlock", "keystream_gbps", "keystream_seconds"]

PRGS = ("chacha20", "aes-128-ctr")
DEFAULT_PRG = "chacha20"   # the masks' PRG: OpenSSL's on the host, secagg.chacha20 on an accelerator, same words
_ALIGN = 64          # column ranges start at multiples of 64 words: whole AES/ChaCha blocks for 4- and 8-byte words
_MIN_WORDS = 1 << 16  # below this many words per worker a second thread costs more than it saves
_COL_BLOCK = 4096    # words per cipher call: 16-32 KiB, near OpenSSL's peak, in L1/L2
_ZEROS = bytes(1 << 16)  # zeros to encrypt: one 64 KiB chunk
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
CHUNK_BYTES = 1 << 16   # keystream bytes per row and cipher call: near OpenSSL's peak, a block of 16 fits L2


@dataclass(frozen=True)
class MaskBlock:
    """Keystreams generated together, one chunk of columns at a time, and where they go:
    ``out[rows[i]] += sign * PRG(keys[i])`` (rows[i] None: nowhere) and, for each ``(row, s)`` of
    ``sums``, ``out[row] += s * sum_i PRG(keys[i])``.

    The data plane's unit (Bonawitz et al. 2017, Fig. 4, Round 2): a sender u and up to 16 of its
    neighbours v > u: ``sums=((u, -1),)``, ``rows=(v1, v2, ...)``, ``sign=+1``; the server's
    regenerated masks: ``sums=((0, -1),)`` on its one-row accumulator. ``MaskJob`` tuples are
    one-key blocks with ``sums=targets``."""

    keys: Tuple[bytes, ...]
    rows: Optional[Tuple[Optional[int], ...]] = None
    sign: int = 1
    sums: Tuple[Tuple[int, int], ...] = ()


def _word_dtype(bits: int):
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits={bits!r} must be an integer in [1, 64]")
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def mask_encryptor(key: bytes, first_byte: int = 0, prg: str = DEFAULT_PRG):
    """An encryptor whose keystream (``update_into`` of zeros) is ``prg``'s stream under ``key`` from
    byte ``first_byte`` (a multiple of the cipher's block: 64 for ChaCha20, 16 for AES).

    ChaCha20 (RFC 8439): 32-byte key, nonce zero, block counter ``first_byte // 64`` (cryptography's
    16-byte nonce is the 4-byte little-endian counter, then the 12-byte nonce). AES-128-CTR: the
    counter block ``first_byte // 16`` (big-endian), from zero. Every mask key is used for one
    stream only, so the fixed nonce / initial counter is safe (Bonawitz et al. 2017, Sec. 3, PRG)."""
    if prg == "chacha20":
        if first_byte % 64:
            raise ValueError(f"first_byte={first_byte} must be a multiple of 64 (a ChaCha20 block)")
        return Cipher(algorithms.ChaCha20(key, (first_byte // 64).to_bytes(4, "little") + bytes(12)),
                      None).encryptor()
    if prg == "aes-128-ctr":
        if first_byte % 16:
            raise ValueError(f"first_byte={first_byte} must be a multiple of 16 (an AES block)")
        return Cipher(algorithms.AES(key), modes.CTR((first_byte // 16).to_bytes(16, "big"))).encryptor()
    raise ValueError(f"prg={prg!r}; choose one of {PRGS}")


def _blocks(jobs: Sequence, rows: int) -> List[MaskBlock]:
    out = []
    for job in jobs:
        blk = job if isinstance(job, MaskBlock) else MaskBlock((job[0],), sums=tuple(tuple(t) for t in job[1]))
        targets = [(r, s) for r, s in blk.sums] + [(r, blk.sign) for r in (blk.rows or ()) if r is not None]
        for r, s in targets:
            if not 0 <= r < rows or s not in (1, -1):
                raise ValueError(f"mask target (row {r}, sign {s}) outside out's {rows} rows or sign not +-1")
        if blk.rows is not None and len(blk.rows) != len(blk.keys):
            raise ValueError(f"a MaskBlock has {len(blk.keys)} keys but {len(blk.rows)} rows")
        if blk.keys:
            out.append(blk)
    return out


def _compile(blocks: List[MaskBlock], encs: List[list], buf: np.ndarray, K: np.ndarray, s: np.ndarray, w: int):
    """The calls of one chunk of width ``w``: per block, its cipher calls and numpy operations,
    built once per width so that the loop over chunks only calls."""
    kv = [memoryview(K[i, :w]).cast("B") for i in range(K.shape[0])]
    B, sw = buf[:, :w], s[:w]
    add, sub, reduce = np.add, np.subtract, np.add.reduce
    steps = []
    for blk, es in zip(blocks, encs):
        g = len(blk.keys)
        calls = [(e.update_into, kv[i]) for i, e in enumerate(es)]
        ops = []
        if blk.sums:
            if g == 1:
                total = K[0, :w]
            else:
                ops.append(partial(reduce, K[:g, :w], axis=0, out=sw))
                total = sw
            for r, sg in blk.sums:
                ops.append(partial(add if sg > 0 else sub, B[r], total, out=B[r]))
        if blk.rows is not None:
            uf = add if blk.sign > 0 else sub
            i = 0
            while i < g:          # runs of consecutive rows: one operation on a slice
                r = blk.rows[i]
                if r is None:
                    i += 1
                    continue
                j = i + 1
                while j < g and blk.rows[j] == r + (j - i):
                    j += 1
                dst = B[r:r + j - i]
                ops.append(partial(uf, dst, K[i:j, :w], out=dst))
                i = j
        steps.append((calls, K[:g, :w], ops))
    return steps


def stream_columns(rows: int, width: int, jobs: Sequence, *, bits: int, prg: str = DEFAULT_PRG,
                   first_word: int = 0, workers: Optional[int] = None,
                   load: Optional[Callable[[int, int, np.ndarray], None]] = None,
                   store: Optional[Callable[[int, int, np.ndarray], None]] = None) -> int:
    """The data plane's engine: for each chunk of columns [c0, c1) of ``range(width)``, a buffer
    ``buf`` [rows, c1 - c0] of words (uint32 for bits <= 32, else uint64) is filled by
    ``load(c0, c1, buf)`` (zeros if None), every job's keystreams (words ``first_word + c0 ..``
    of each stream) are added / subtracted as the job says (:class:`MaskBlock` or ``MaskJob``),
    the buffer is reduced mod 2^bits and handed to ``store(c0, c1, buf)``.

    Columns are split over ``workers`` threads (``cryptography`` and numpy release the GIL);
    each thread opens its encryptors once, at its first column, and keeps them across its
    chunks, so every keystream byte is produced once per job. ``load`` and ``store`` run in
    the worker threads, on disjoint column ranges. Returns the keystream bytes produced.
    """
    wd = _word_dtype(bits)
    if first_word % _ALIGN:
        raise ValueError(f"first_word={first_word} must be a multiple of {_ALIGN}")
    if prg not in PRGS:
        raise ValueError(f"prg={prg!r}; choose one of {PRGS}")
    blocks = _blocks(jobs, rows)
    size = wd.itemsize
    C = CHUNK_BYTES // size
    G = max((len(b.keys) for b in blocks), default=1)
    mask = None if bits in (32, 64) else wd.type((1 << bits) - 1)
    swap = not np.little_endian        # the PRG is defined on little-endian words

    def work(a: int, b: int) -> None:
        if a >= b:
            return
        encs = [[mask_encryptor(k, (first_word + a) * size, prg) for k in blk.keys] for blk in blocks]
        buf = np.empty((rows, min(C, b - a)), dtype=wd)
        K = np.empty((G, buf.shape[1]), dtype=wd)
        s = np.empty(buf.shape[1], dtype=wd)
        compiled: dict = {}
        for c0 in range(a, b, C):
            c1 = min(b, c0 + C)
            w = c1 - c0
            if w not in compiled:
                compiled[w] = _compile(blocks, encs, buf, K, s, w)
            view = buf[:, :w]
            if load is None:
                view.fill(0)
            else:
                load(c0, c1, view)
            z = memoryview(_ZEROS)[:w * size] if w * size <= len(_ZEROS) else memoryview(bytes(w * size))
            for calls, Kg, ops in compiled[w]:
                for f, v in calls:
                    f(z, v)
                if swap:                   # pragma: no cover - big-endian hosts
                    Kg.byteswap(inplace=True)
                for op in ops:
                    op()
            if mask is not None:
                np.bitwise_and(view, mask, out=view)
            if store is not None:
                store(c0, c1, view)

    parallel_columns(width, work, workers=workers, min_words=C)
    return sum(len(b.keys) for b in blocks) * width * size


def accumulate_masks(out: np.ndarray, jobs: Sequence, *, bits: int, prg: str = DEFAULT_PRG,
                     first_word: int = 0, workers: Optional[int] = None) -> int:
    """``out[row] += sign * PRG(key)[first_word : first_word + w]`` for every job, mod 2^bits.

    The inner loop of the masked protocol's data plane (Bonawitz et al. 2017, Fig. 4: a client's
    y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv); the server's removal of
    the masks it regenerates). ``out``: uint32 (bits <= 32) or uint64 words [rows, w]; ``jobs``:
    ``MaskJob`` tuples ``(key, [(row, sign), ...])`` or :class:`MaskBlock`\\ s; each keystream is
    generated once and applied to all its targets. Words are the little-endian words of the
    keystream (as :func:`secagg.crypto.prg_words`); arithmetic wraps mod 2^32 / 2^64 and ``out``
    is reduced mod 2^bits at the end. ``first_word``: where ``out[:, 0]`` sits in the streams (a
    multiple of 64), so the caller can go chunk by chunk. Columns are split over ``workers``
    threads (:func:`stream_columns`). Returns the keystream bytes produced.
    """
    wd = _word_dtype(bits)
    if out.dtype.kind != "u" or out.dtype.itemsize != wd.itemsize or out.ndim != 2:
        raise ValueError(f"out must be a 2-D {wd.name} array for bits={bits}, got {out.dtype} {out.shape}")

    def load(c0: int, c1: int, buf: np.ndarray) -> None:
        np.copyto(buf, out[:, c0:c1])

    def store(c0: int, c1: int, buf: np.ndarray) -> None:
        out[:, c0:c1] = buf

    return stream_columns(out.shape[0], out.shape[1], jobs, bits=bits, prg=prg, first_word=first_word,
                          workers=workers, load=load, store=store)


def expand_masks(keys: Sequence[bytes], nwords: int, bits: int, *, prg: str = DEFAULT_PRG,
                 first_word: int = 0, workers: Optional[int] = None) -> np.ndarray:
    """m keystreams expanded into ``nwords`` elements of Z_{2^bits} each: [m, nwords] uint32
    (bits <= 32) or uint64 words, row i = ``secagg.crypto.prg_words(keys[i], nwords, bits)`` for
    the default PRG. Columns split over ``workers`` threads (default: :func:`default_workers`)."""
    if not isinstance(nwords, int) or nwords < 0:
        raise ValueError(f"nwords={nwords!r} must be an integer >= 0")
    wd = _word_dtype(bits)
    if first_word % _ALIGN:
        raise ValueError(f"first_word={first_word} must be a multiple of {_ALIGN}")
    out = np.empty((len(keys), nwords), dtype=wd)
    size = wd.itemsize

    def work(a: int, b: int) -> None:       # each keystream written in place, no arithmetic
        for i, key in enumerate(keys):
            enc = mask_encryptor(key, (first_word + a) * size, prg)
            row = memoryview(out[i, a:b]).cast("B")
            for c0 in range(0, (b - a) * size, len(_ZEROS)):
                c1 = min((b - a) * size, c0 + len(_ZEROS))
                enc.update_into(memoryview(_ZEROS)[:c1 - c0], row[c0:c1])
        if not np.little_endian:           # pragma: no cover - big-endian hosts
            out[:, a:b].byteswap(inplace=True)
        if bits not in (32, 64):
            np.bitwise_and(out[:, a:b], wd.type((1 << bits) - 1), out=out[:, a:b])

    parallel_columns(nwords, work, workers=workers, min_words=_COL_BLOCK)
    return out


def process_expand(keys: Sequence[bytes], nwords: int, bits: int, *, prg: str = DEFAULT_PRG,
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


def keystream_gbps(nbytes: int, prg: str = DEFAULT_PRG) -> float:
    """One core's keystream throughput (GB/s) for ``prg``, ``nbytes`` in 16 KiB calls."""
    import time
    enc = mask_encryptor(bytes(32 if prg == "chacha20" else 16), 0, prg)
    buf = bytearray(16384)
    z = bytes(16384)
    t0 = time.perf_counter()
    for _ in range(max(1, nbytes // 16384)):
        enc.update_into(z, buf)
    return max(1, nbytes // 16384) * 16384 / (time.perf_counter() - t0) / 1e9


def keystream_seconds(nbytes: int, *, prg: str = DEFAULT_PRG, workers: Optional[int] = None) -> float:
    """Wall time for ``workers`` threads (default :func:`default_workers`) to produce ``nbytes`` of
    ``prg`` keystream together, each its share in 64 KiB calls under its own key: the keystream
    bound of a data plane that runs on the same threads (no arithmetic, no other work)."""
    import time
    workers = default_workers() if workers is None else max(1, int(workers))
    share = -(-int(nbytes) // workers)

    def work(a: int, b: int) -> None:
        enc = mask_encryptor(bytes(32 if prg == "chacha20" else 16), 0, prg)
        buf = bytearray(len(_ZEROS))
        left = share
        while left > 0:
            k = min(left, len(_ZEROS))
            enc.update_into(memoryview(_ZEROS)[:k], memoryview(buf)[:k])
            left -= k

    t0 = time.perf_counter()
    parallel_columns(workers * _ALIGN, work, workers=workers, min_words=_ALIGN)
    return time.perf_counter() - t0
