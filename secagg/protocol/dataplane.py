"""The data plane of the masked protocol: mask expansion and the chunked masked sum.

Bonawitz et al. 2017, Fig. 4, Round 2 (each u in U2 sends y_u = x_u + PRG(b_u) +
sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod M) and Round 3 (the server removes the
self masks of U3 and the dangling pairwise masks of dropped clients from the sum of
the y_u). The control plane (:mod:`.server`) has already fixed U2, U3 and the
reconstructed secrets; this module produces the keystreams and the sums.

Simulation choices (none changes any value computed):

- Masked inputs and the unmasked sum are computed together, chunk by chunk of
  coordinates; the server's requests depend only on who sent what, so the result is
  identical to running the rounds strictly in order.
- Each pairwise keystream is generated once per edge and added to one end and
  subtracted from the other in bulk (numpy views of the keystream bytes, unsigned
  wrap-around arithmetic, bounded memory per chunk).
- The server's unmasking regenerates every mask it removes from the reconstructed
  secrets, as a real server must.

Imports only :mod:`secagg.crypto` and :mod:`secagg.encoding`; clients are used through
``self_mask_key()`` and ``pairwise_mask_key(v)``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .. import crypto
from ..encoding import wrap_mod

Tensor = torch.Tensor

__all__ = ["CHUNK_BYTES", "GROUP", "HOST_FAST_PATH", "Job", "reduce_mod", "masked_row", "mask_jobs", "masked_sum"]

CHUNK_BYTES = 1 << 16   # keystream bytes per cipher call and row: near peak cipher speed
GROUP = 16              # keystreams per block: 16 x 64 KiB stays in a core's L2
LITTLE_ENDIAN = sys.byteorder == "little"
# CPU inputs: accumulate x_u and the masks in one numpy buffer. Off: the device path
# (masks made on the CPU, moved, added to x_u where it lives); tests flip it on CPU.
HOST_FAST_PATH = True


def reduce_mod(y: np.ndarray, bits: int) -> np.ndarray:
    """uint64 words reduced mod 2^bits (unsigned wrap-around already gave mod 2^64)."""
    return y if bits == 64 else y & np.uint64((1 << bits) - 1)


def masked_row(x_u: Tensor, client, neighbours: Iterable[int], U2: Iterable[int], bits: int) -> np.ndarray:
    """y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod M over u's
    ``neighbours`` in U2 (Fig. 4, Round 2), computed naively for one client (uint64 residues).
    The reference form, not the bulk path."""
    U2 = set(U2)
    u, d = client.index, x_u.shape[0]
    y = x_u.cpu().numpy().astype(np.uint64)
    terms = [(+1, client.self_mask_key())] + [(+1 if v < u else -1, client.pairwise_mask_key(v))
                                               for v in neighbours if v in U2]
    for sign, key in terms:
        w = crypto.prg_words(key, d, bits).astype(np.uint64)
        y = y + w if sign > 0 else y - w
    return reduce_mod(y, bits)


@dataclass
class Job:
    """A block of keystreams applied together in the data plane."""

    encs: list
    minus: Optional[int] = None   # client side: row that subtracts the block's sum
    plus: Any = None              # client side: slice or list of rows, each adding one keystream
    sign: int = 0                 # server side: +1 / -1 to add / subtract the block's sum


def mask_jobs(clients: Sequence, graph: List[List[int]], survivors: List[int], U2: Set[int],
              b_hat: Mapping[int, bytes], s_hat: Mapping[int, bytes],
              public: Mapping[int, Tuple[bytes, bytes]],
              views: Optional[Mapping[int, Set[int]]] = None) -> Tuple[List[Job], List[Job]]:
    """Blocks of keystreams: client masks (self, pairwise) and the server's unmasking.

    ``views``: each survivor's own view of U2 (it masks with the neighbours in it, Fig. 4,
    Round 2); None: every survivor sees ``U2``. Survivors must agree about each other (the
    control plane aborts otherwise); views may differ about dropped clients."""
    G = GROUP
    pos = {u: i for i, u in enumerate(survivors)}
    n3 = len(survivors)

    def linked(a: int, b: int) -> bool:   # survivor a's masked input carries the mask with b
        return b in (U2 if views is None else views[a])

    nodes = U2 if views is None else set(survivors).union(*views.values())
    client_jobs: List[Job] = []
    for i0 in range(0, n3, G):
        grp = survivors[i0:i0 + G]
        client_jobs.append(Job([crypto.prg_encryptor(clients[u].self_mask_key()) for u in grp],
                               plus=slice(i0, i0 + len(grp))))

    # Each edge's key is derived by an endpoint that really sends a masked input.
    def key(a, b):
        return clients[a].pairwise_mask_key(b) if a in pos else clients[b].pairwise_mask_key(a)

    # Pairwise masks, ordered by blocks of G receiving rows so that the block being
    # added to stays in cache while every sender u < v streams through it.
    by_block: Dict[int, List[Tuple[int, List[int]]]] = {}
    for u in sorted(nodes):
        later = [v for v in graph[u] if v > u]
        alive = [v for v in later if v in pos and linked(v, u)]
        if u in pos and any(not linked(u, v) for v in alive):
            raise ValueError(f"survivor {u} and a survivor neighbour disagree about U2; the control plane aborts first")
        for blk in sorted({pos[v] // G for v in alive}):
            by_block.setdefault(blk, []).append((u, [v for v in alive if pos[v] // G == blk]))
        if u in pos:   # partners that dropped: only u's own (minus) side remains
            gone = [v for v in later if v not in pos and linked(u, v)]
            for i0 in range(0, len(gone), G):
                grp = gone[i0:i0 + G]
                client_jobs.append(Job([crypto.prg_encryptor(key(u, v)) for v in grp], minus=pos[u]))
    for blk in sorted(by_block):
        for u, grp in by_block[blk]:
            rows = [pos[v] for v in grp]
            contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
            client_jobs.append(Job([crypto.prg_encryptor(key(u, v)) for v in grp], minus=pos.get(u),
                                   plus=slice(rows[0], rows[0] + len(rows)) if contiguous else rows))
    server_jobs: List[Job] = []
    for i0 in range(0, n3, G):
        grp = survivors[i0:i0 + G]
        server_jobs.append(Job([crypto.prg_encryptor(crypto.mask_key(b_hat[u], "self")) for u in grp], sign=-1))
    for v, sk in sorted(s_hat.items()):
        keys = {u: crypto.mask_key(crypto.agree(sk, public[u][1]), "pair") for u in graph[v]
                if u in pos and linked(u, v)}
        # y_u carries +PRG(s_uv) if v < u and -PRG(s_uv) if v > u: cancel it.
        for sign, part in ((-1, [u for u in keys if u > v]), (+1, [u for u in keys if u < v])):
            for i0 in range(0, len(part), G):
                server_jobs.append(Job([crypto.prg_encryptor(keys[u]) for u in part[i0:i0 + G]], sign=sign))
    return client_jobs, server_jobs


def masked_sum(X: Tensor, bits: int, clients: Sequence, graph: List[List[int]], survivors: List[int],
               U2: Set[int], b_hat: Mapping[int, bytes], s_hat: Mapping[int, bytes],
               public: Mapping[int, Tuple[bytes, bytes]], *, overwrite: bool = False,
               keep_masked_inputs: bool = True,
               views: Optional[Mapping[int, Set[int]]] = None) -> Tuple[Tensor, Tensor, int]:
    """Masked inputs of U3 and the unmasked sum, chunk by chunk of coordinates:
    (total int64 [d], masked inputs int64 [|U3|, d or 0], keystream bytes produced).

    Per chunk: each block of keystreams is generated once into K (numpy words
    viewed as bytes), then summed into the sender's row with one sign and added to
    the receivers' rows with the other; arithmetic is unsigned numpy wrap-around
    (mod 2^32 or 2^64), reduced mod 2^bits at the end. Memory: O((n + G) * chunk).
    ``overwrite`` writes the masked inputs over the first |U3| rows of ``X``. ``views``: each
    survivor's own view of U2 (see :func:`mask_jobs`).
    """
    n, d = X.shape
    device = X.device
    n3 = len(survivors)
    client_jobs, server_jobs = mask_jobs(clients, graph, survivors, U2, b_hat, s_hat, public, views)
    W = crypto.word_dtype(bits)
    wb = np.dtype(W).itemsize
    signed = np.int32 if wb == 4 else np.int64
    mask = None if bits in (32, 64) else W((1 << bits) - 1)
    C = CHUNK_BYTES // wb
    cpu = device.type == "cpu" and HOST_FAST_PATH
    all_rows = survivors == list(range(n))
    rows_t = torch.as_tensor(survivors, dtype=torch.long, device=device)

    keep = keep_masked_inputs
    if overwrite:
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
    K = np.empty((GROUP, C), W)
    s = np.empty(C, W)
    acc = np.empty(C, W)
    zeros = bytes(C * wb)
    add, sub, reduce = np.add, np.subtract, np.add.reduce
    swap = not LITTLE_ENDIAN   # the PRG is defined on little-endian words

    def compile_jobs(w: int):
        # Views are built once per chunk width, so the hot loop only calls.
        kv = [memoryview(K[i, :w]).cast("B") for i in range(GROUP)]
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
