"""The data plane of the masked protocol: the masked inputs and the unmasked sum, on every
core or where the inputs live.

Bonawitz et al. 2017, Fig. 4, Round 2 (each u in U2 sends y_u = x_u + PRG(b_u) +
sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod M over its neighbours in its own view of U2)
and Round 3 (the server removes the self masks of U3 and the dangling pairwise masks of
dropped clients from the sum of the y_u). The control plane (:mod:`.server`) has already
fixed U2, U3, the views and the reconstructed secrets; this module makes the keystreams
and the sums. The PRG is ChaCha20 (:mod:`secagg.crypto`) everywhere:

- inputs on the CPU: OpenSSL's ChaCha20 (``cryptography``) on the run's threads through
  :func:`secagg.keystream.stream_columns` (columns split over threads, each keystream
  generated once per thread and applied to its rows), numpy wrap-around arithmetic on
  uint32 / uint64 words;
- inputs on an accelerator: :func:`secagg.chacha20.chacha20_keystream_batch` computes the
  keystreams on that device (a Triton kernel on CUDA) and ``index_add_`` applies them; only
  the 32-byte keys cross to the device, the masks never touch the host.

Both paths give the same masked inputs and sums (tests force the device path on a CPU with
``HOST_FAST_PATH = False``; scripts/gpu_check.sh compares CUDA with the CPU).

The inputs are a tensor [n, d] (:func:`secagg.run_protocol`), or :class:`EncodedRows`, which
encodes the clients' inputs on demand a group of clients at a time (``MaskedOracle``: the
[n, d] integers never exist; peak memory one group plus O(threads * chunk)).

Simulation choices (none changes any value computed):

- Masked inputs and the sum are computed together, group of clients by group and chunk by
  chunk of coordinates; the server's requests depend only on who sent what, so the result
  is identical to running the rounds strictly in order.
- Within a group each pairwise keystream is generated once and added to one end and
  subtracted from the other (blocks of up to 16 per sender: their sum leaves the sender's
  row in one pass); an edge between two groups is generated in each (as its two clients do
  in a real deployment).
- The server's unmasking regenerates every mask it removes from the reconstructed
  secrets, as a real server must.

Clients are used through ``self_mask_key()`` and ``pairwise_mask_key(v)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .. import crypto, keystream
from ..chacha20 import chacha20_keystream_batch
from ..encoding import wrap_mod

Tensor = torch.Tensor

__all__ = ["GROUP", "HOST_FAST_PATH", "DEVICE_WORDS", "EncodedRows", "Plan", "reduce_mod", "masked_row",
           "mask_plan", "masked_sum"]

GROUP = 16              # keystreams per block: 16 x 64 KiB stays in a core's L2
# CPU inputs: OpenSSL keystreams and numpy words on the host. Off: the device path (secagg.chacha20
# and index_add_ where the inputs live) runs on the CPU too; the tests flip it to compare.
HOST_FAST_PATH = True
# Device path: keystream words held at once (the batch of streams times the chunk of columns).
DEVICE_WORDS = {"cuda": 1 << 24}
_DEVICE_WORDS_OTHER = 1 << 18


def reduce_mod(y: np.ndarray, bits: int) -> np.ndarray:
    """uint64 words reduced mod 2^bits (unsigned wrap-around already gave mod 2^64)."""
    return y if bits == 64 else y & np.uint64((1 << bits) - 1)


class EncodedRows:
    """The clients' inputs as int64 residues mod 2^bits, produced on demand a group of rows at a
    time: ``encode(ids)`` returns int64 [len(ids), d] on ``device`` (row i = client ids[i]'s
    input, the same integers whatever the grouping). The data plane asks for at most
    ``group_rows`` rows at once, so the [n, d] matrix never exists.

    ``MaskedOracle`` passes one (its encoder with per-client rounding streams) as the
    protocol's ``values``."""

    dtype = torch.int64

    def __init__(self, n: int, d: int, device, encode: Callable[[List[int]], Tensor], group_rows: int):
        if n < 1 or d < 0:
            raise ValueError(f"EncodedRows needs n >= 1 clients and d >= 0 coordinates, got n={n}, d={d}")
        self.shape = (int(n), int(d))
        self.device = torch.device(device)
        self.encode = encode
        self.group_rows = max(1, int(group_rows))

    def rows(self, ids: Sequence[int]) -> Tensor:
        out = self.encode(list(ids))
        if out.dtype != torch.int64 or tuple(out.shape) != (len(ids), self.shape[1]):
            raise ValueError(f"EncodedRows.encode returned {out.dtype} {tuple(out.shape)} for {len(ids)} rows; "
                             f"expected int64 ({len(ids)}, {self.shape[1]})")
        return out

    def __getitem__(self, u: int) -> Tensor:
        return self.rows([int(u)])[0]


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
class Plan:
    """Which keystreams go where: per group of survivors (positions [p0, p1) of U3) the blocks of
    the clients' masks (rows relative to the group), and the server's blocks on its one-row
    accumulator."""

    groups: List[Tuple[int, int]]
    client_blocks: List[List[keystream.MaskBlock]]
    server_blocks: List[keystream.MaskBlock]

    @property
    def streams(self) -> int:
        """Keystreams generated (each once per group that holds an end, plus the server's)."""
        return sum(len(b.keys) for blocks in self.client_blocks for b in blocks) + \
            sum(len(b.keys) for b in self.server_blocks)


def mask_plan(clients: Sequence, graph: List[List[int]], survivors: List[int], U2: Set[int],
              b_hat: Mapping[int, bytes], s_hat: Mapping[int, bytes],
              public: Mapping[int, Tuple[bytes, bytes]], views: Optional[Mapping[int, Set[int]]] = None,
              group_rows: Optional[int] = None) -> Plan:
    """The blocks of keystreams: client masks (self, pairwise) group by group, and the server's
    unmasking.

    ``views``: each survivor's own view of U2 (it masks with the neighbours in it, Fig. 4,
    Round 2); None: every survivor sees ``U2``. Survivors must agree about each other (the
    control plane aborts otherwise); views may differ about dropped clients. ``group_rows``:
    survivors per group (default: all in one)."""
    G = GROUP
    pos = {u: i for i, u in enumerate(survivors)}
    n3 = len(survivors)
    step = max(1, n3 if not group_rows else int(group_rows))
    groups = [(p0, min(n3, p0 + step)) for p0 in range(0, n3, step)] or [(0, 0)]

    def linked(a: int, b: int) -> bool:   # survivor a's masked input carries the mask with b
        return b in (U2 if views is None else views[a])

    nodes = sorted(U2 if views is None else set(survivors).union(*views.values()))
    gid = {u: i // step for u, i in pos.items()}

    # Each edge's key is derived by an endpoint that really sends a masked input.
    def key(a, b):
        return clients[a].pairwise_mask_key(b) if a in pos else clients[b].pairwise_mask_key(a)

    # Every edge u < v once, bucketed by the group of each end whose masked input carries its mask:
    # per group and sender u, its partners v > u with v's row in the group (v adds the keystream)
    # or None (only u's side is in the group: v dropped, or in another group that makes its own).
    sends: List[Dict[int, List[Tuple[int, Optional[int]]]]] = [{} for _ in groups]
    for u in nodes:
        gu = gid[u] if u in pos else None
        for v in graph[u]:
            if v <= u:
                continue
            ue = gu is not None and linked(u, v)
            ve = v in pos and linked(v, u)
            if ue != ve and v in pos and gu is not None:
                raise ValueError(f"survivors {u} and {v} disagree about U2; the control plane aborts first")
            if ve:
                sends[gid[v]].setdefault(u, []).append((v, pos[v] - groups[gid[v]][0]))
            if ue and not (ve and gid[v] == gu):
                sends[gu].setdefault(u, []).append((v, None))

    client_blocks: List[List[keystream.MaskBlock]] = []
    for g, (p0, p1) in enumerate(groups):
        blocks = [keystream.MaskBlock(tuple(clients[u].self_mask_key() for u in survivors[i0:min(p1, i0 + G)]),
                                      rows=tuple(range(i0 - p0, min(p1, i0 + G) - p0)))
                  for i0 in range(p0, p1, G)]
        # Sender by sender, G keystreams at a time: made once, their sum subtracted from the
        # sender's row (when in the group) and each added to its receiver's row (when in the group).
        for u, part in sorted(sends[g].items()):
            mine = ((pos[u] - p0, -1),) if u in pos and gid[u] == g else ()
            for i0 in range(0, len(part), G):
                chunk = part[i0:i0 + G]
                blocks.append(keystream.MaskBlock(tuple(key(u, v) for v, _ in chunk),
                                                  rows=tuple(r for _, r in chunk), sums=mine))
        client_blocks.append(blocks)

    server: List[keystream.MaskBlock] = []
    for i0 in range(0, n3, G):
        keys = tuple(crypto.mask_key(b_hat[u], "self") for u in survivors[i0:i0 + G])
        server.append(keystream.MaskBlock(keys, sums=((0, -1),)))
    for v, sk in sorted(s_hat.items()):
        keys = {u: crypto.mask_key(crypto.agree(sk, public[u][1]), "pair") for u in graph[v]
                if u in pos and linked(u, v)}
        # y_u carries +PRG(s_uv) if v < u and -PRG(s_uv) if v > u: cancel it.
        for sign, part in ((-1, [u for u in keys if u > v]), (+1, [u for u in keys if u < v])):
            for i0 in range(0, len(part), G):
                server.append(keystream.MaskBlock(tuple(keys[u] for u in part[i0:i0 + G]), sums=((0, sign),)))
    return Plan(groups, client_blocks, server)


def masked_sum(X, bits: int, clients: Sequence, graph: List[List[int]], survivors: List[int],
               U2: Set[int], b_hat: Mapping[int, bytes], s_hat: Mapping[int, bytes],
               public: Mapping[int, Tuple[bytes, bytes]], *, overwrite: bool = False,
               keep_masked_inputs: bool = True, views: Optional[Mapping[int, Set[int]]] = None,
               workers: Optional[int] = None) -> Tuple[Tensor, Tensor, int]:
    """Masked inputs of U3 and the unmasked sum: (total int64 [d], masked inputs int64
    [|U3|, d or 0], keystream bytes produced).

    ``X``: int64 [n, d] residues (one group: all survivors) or :class:`EncodedRows` (groups of
    ``X.group_rows`` survivors, encoded on demand). ``overwrite`` (a tensor ``X`` only) writes
    the masked inputs over the first |U3| rows of ``X``; ``keep_masked_inputs`` False keeps
    none ([|U3|, 0]). ``views``: each survivor's own view of U2 (see :func:`mask_plan`).
    ``workers``: host threads (default: the run's, :func:`secagg.keystream.default_workers`).
    Memory beyond ``X`` and the kept masked inputs: one group's encodings (:class:`EncodedRows`)
    and O(threads * rows * chunk) words (host) or the device's keystream budget.
    """
    n, d = X.shape
    device = X.device
    n3 = len(survivors)
    lazy = isinstance(X, EncodedRows)
    if overwrite and (lazy or not keep_masked_inputs):
        raise ValueError("overwrite=True stores the masked inputs over a values tensor; it needs a tensor and "
                         "keep_masked_inputs=True")
    plan = mask_plan(clients, graph, survivors, U2, b_hat, s_hat, public, views,
                     X.group_rows if lazy else None)
    if overwrite:
        masked = X[:n3]   # rows of U3 are compacted to the front
    elif keep_masked_inputs:
        masked = torch.empty((n3, d), dtype=torch.int64, device=device)
    else:
        masked = torch.empty((n3, 0), dtype=torch.int64, device=device)

    def source(p0: int, p1: int):
        """The group's inputs: (tensor, row selector: a slice or a list of row indices)."""
        ids = survivors[p0:p1]
        if lazy:
            return X.rows(ids), slice(0, len(ids))
        if ids == list(range(ids[0], ids[0] + len(ids))):
            return X, slice(ids[0], ids[0] + len(ids))
        return X, ids

    host = device.type == "cpu" and HOST_FAST_PATH
    total = (_host_sum if host else _device_sum)(source, plan, d, bits, masked if keep_masked_inputs else None,
                                                 workers, device)
    return total, masked, plan.streams * d * np.dtype(crypto.word_dtype(bits)).itemsize


def _host_sum(source, plan: Plan, d: int, bits: int, masked: Optional[Tensor], workers, device) -> Tensor:
    """CPU: y_u in numpy words chunk by chunk (OpenSSL keystreams on the run's threads), each
    group's column sums into ``acc``, then the server's regenerated masks."""
    W = np.dtype(crypto.word_dtype(bits))
    acc = np.zeros((1, d), dtype=W)
    Yn = masked.numpy().view(np.uint64) if masked is not None else None
    for (p0, p1), blocks in zip(plan.groups, plan.client_blocks):
        if p1 <= p0:
            continue
        src, sel = source(p0, p1)
        Xn = src.numpy().view(np.uint64)        # residues (two's complement bits for 64-bit rings)
        sel = sel if isinstance(sel, slice) else np.asarray(sel)

        def load(c0, c1, buf, Xn=Xn, sel=sel):
            np.copyto(buf, Xn[sel, c0:c1], casting="unsafe")   # residues < 2^bits: exact in the words

        def store(c0, c1, buf, p0=p0, p1=p1):
            if Yn is not None:                  # after load: compacted rows may overwrite the inputs
                Yn[p0:p1, c0:c1] = buf
            part = acc[0, c0:c1]
            np.add(part, np.add.reduce(buf, axis=0), out=part)

        keystream.stream_columns(p1 - p0, d, blocks, bits=bits, prg=crypto.PRG, workers=workers, load=load,
                                 store=store)
        del src, Xn
    total = torch.empty(d, dtype=torch.int64)
    tn = total.numpy().view(np.uint64)

    def load_acc(c0, c1, buf):
        np.copyto(buf, acc[:, c0:c1])

    def store_total(c0, c1, buf):
        tn[c0:c1] = buf[0]

    keystream.stream_columns(1, d, plan.server_blocks, bits=bits, prg=crypto.PRG, workers=workers, load=load_acc,
                             store=store_total)
    return total


class _DeviceBlocks:
    """Blocks of keystreams prepared for a device: the keys as uint8 [m, 32] there, and per batch
    of streams the (stream, row, sign) triples as index tensors."""

    def __init__(self, blocks: List[keystream.MaskBlock], device, batch: int):
        keys, src, dst, sgn = [], [], [], []
        for blk in blocks:
            for i, k in enumerate(blk.keys):
                j = len(keys)
                keys.append(k)
                if blk.rows is not None and blk.rows[i] is not None:
                    src.append(j), dst.append(blk.rows[i]), sgn.append(blk.sign)
                for r, s_ in blk.sums:
                    src.append(j), dst.append(r), sgn.append(s_)
        m = len(keys)
        raw = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(m, 32) if m else \
            torch.empty((0, 32), dtype=torch.uint8)
        self.keys = raw.to(device)
        src_t = torch.as_tensor(src, dtype=torch.long)
        order = torch.argsort(src_t, stable=True)
        src_t = src_t[order]
        dst_t = torch.as_tensor(dst, dtype=torch.long)[order]
        sgn_t = torch.as_tensor(sgn, dtype=torch.int64)[order]
        self.batches = []
        for j0 in range(0, m, batch):
            j1 = min(m, j0 + batch)
            lo, hi = int(torch.searchsorted(src_t, j0)), int(torch.searchsorted(src_t, j1))
            self.batches.append((j0, j1, (src_t[lo:hi] - j0).to(device), dst_t[lo:hi].to(device),
                                 sgn_t[lo:hi].to(device)[:, None]))

    def apply(self, y: Tensor, c0: int, bits: int) -> None:
        """y[row] += sign * PRG(key)[c0 : c0 + w] for every target (int64 arithmetic, wrapping
        mod 2^64; the caller reduces mod 2^bits). The keystreams are made on y's device."""
        wb = 4 if bits <= 32 else 8
        w = y.shape[1]
        for j0, j1, src, dst, sgn in self.batches:
            if not len(src):
                continue
            K = chacha20_keystream_batch(self.keys[j0:j1], bytes(12), w * wb, counters=c0 * wb // 64,
                                         device=y.device, dtype=torch.int32 if wb == 4 else torch.int64)
            if wb == 4:
                K = K.to(torch.int64) & 0xFFFFFFFF
            pick = K.index_select(0, src)
            pick *= sgn                  # -1 wraps mod 2^64: the same residue as subtracting
            y.index_add_(0, dst, pick)


def _device_sum(source, plan: Plan, d: int, bits: int, masked: Optional[Tensor], workers, device) -> Tensor:
    """Any device: keystreams from :mod:`secagg.chacha20` where the inputs live, torch arithmetic."""
    budget = DEVICE_WORDS.get(device.type, _DEVICE_WORDS_OTHER)
    acc = torch.zeros(d, dtype=torch.int64, device=device)
    # chunk of columns: whole ChaCha20 blocks (16 words of 4 bytes, 8 of 8), a quarter of the budget at most
    W = max(64, min(-(-d // 64) * 64, (budget // 4) // 64 * 64))
    batch = max(1, budget // W)
    for (p0, p1), blocks in zip(plan.groups, plan.client_blocks):
        if p1 <= p0:
            continue
        src, sel = source(p0, p1)
        idx = None if isinstance(sel, slice) else torch.as_tensor(sel, dtype=torch.long, device=device)
        prepared = _DeviceBlocks(blocks, device, batch)
        for c0 in range(0, d, W):
            c1 = min(d, c0 + W)
            y = src[sel, c0:c1].clone() if idx is None else src[:, c0:c1].index_select(0, idx)
            prepared.apply(y, c0, bits)
            y = wrap_mod(y, bits)
            if masked is not None:      # after the read: compacted rows may overwrite the inputs
                masked[p0:p1, c0:c1] = y
            acc[c0:c1] += y.sum(dim=0)
        del src
    server = _DeviceBlocks(plan.server_blocks, device, batch)
    for c0 in range(0, d, W):
        c1 = min(d, c0 + W)
        server.apply(acc[c0:c1].unsqueeze(0), c0, bits)
    return wrap_mod(acc, bits)
