"""Exact order statistics over the clients (dim 0) from a sorting network fused into one CPU kernel.

Batcher's odd-even merge sort (Batcher 1968, "Sorting networks and their applications"; Knuth,
TAOCP vol. 3, Sec. 5.3.4) on the next power of two >= n, with the padding wires resolved at
construction (they hold +inf) and every comparator that no requested output depends on removed:
for n = 100 and the two middle ranks, 898 compare-exchanges (1,698 min/max). Every column goes
through the same comparisons, so the network is a straight line of elementwise ``minimum`` and
``maximum`` over the rows; ``torch.compile`` fuses it into one loop over the columns that keeps
a column block in registers and L1 (C++, compiled once per (n, ranks, dtype) and cached on disk
by inductor: about 20-40 s the first time on a machine, 3 s in a later process). At n = 100,
d = 1e6, one thread: 0.09 s, against 1.5 s for ``torch.median(dim=0)`` and 3.7 s for a sort.

The outputs are the values at the requested sorted ranks, exactly (no arithmetic), so the rules
built on them (``common.coordinate_median``, ``coordinate.trimmed_mean``) return what their eager
paths return: the trimmed mean bit for bit (its eager path sums over the same column blocks,
:func:`column_blocks`), the median up to the sign of a zero (min and max of -0.0 and 0.0 may
return either, as ``torch.median`` may). A NaN in a column gives NaN at every rank, as
``torch.median`` gives NaN (``torch.sort`` would put it last). Used on CPU tensors of at least
``FUSE_MIN_ELEMS`` elements with at most ``FUSE_MAX_ROWS`` clients; elsewhere (CUDA, small
inputs, no C++ compiler) the eager paths. tests/test_rules_selection.py checks all of this.
"""
from __future__ import annotations

import functools
import operator
import warnings
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor

FUSE_ON_CPU = True
FUSE_MIN_ELEMS = 1 << 24      # n * d; below this the eager path costs well under a second
FUSE_MAX_ROWS = 128           # the network grows as n log^2 n: 128 rows give 2,300 min/max
BLOCK = 1 << 16               # columns per kernel call (any size works: the eager sums use the same blocks)
_state = {"failed": ""}


class Network(NamedTuple):
    """A pruned comparator network on ``n`` inputs (values 0..n-1).

    ``ops``: (lo, hi, a, b): value ``lo`` = min(a, b) and ``hi`` = max(a, b), -1 where that output
    is not needed; ``outputs``: the values holding the requested sorted ranks; ``size``: values in all.
    """
    n: int
    ops: Tuple[Tuple[int, int, int, int], ...]
    outputs: Tuple[int, ...]
    size: int


def batcher_pairs(size: int) -> List[Tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort on ``size`` = 2^p wires, in order."""
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def network(n: int, ranks: Sequence[int]) -> Network:
    """The comparators of :func:`batcher_pairs` that the sorted ``ranks`` (integers in [0, n),
    in the order wanted) of n inputs depend on (cached per (n, ranks))."""
    bad = [r for r in (n, *ranks) if isinstance(r, bool) or not hasattr(r, "__index__")]
    if bad:
        raise TypeError(f"network: n and the ranks must be integers, got {bad[0]!r}")
    n, ranks = operator.index(n), tuple(operator.index(r) for r in ranks)
    if n < 1 or not ranks or any(not 0 <= r < n for r in ranks):
        raise ValueError(f"ranks {ranks} of {n} values: need n >= 1 and 0 <= rank < n")
    return _build(n, ranks)


@functools.lru_cache(maxsize=None)
def _build(n: int, ranks: Tuple[int, ...]) -> Network:
    size = 1
    while size < n:
        size *= 2
    pad = -1                                   # a wire holding +inf
    wire = list(range(n)) + [pad] * (size - n)
    raw = []
    count = n
    for i, j in batcher_pairs(size):
        a, b = wire[i], wire[j]
        if b == pad:                           # min(a, inf) = a: nothing moves
            continue
        if a == pad:                           # the real value moves down, the pad up
            wire[i], wire[j] = b, a
            continue
        raw.append((count, count + 1, a, b))
        wire[i], wire[j] = count, count + 1
        count += 2
    outputs = tuple(wire[r] for r in ranks)
    need = set(outputs)
    kept = []
    for lo, hi, a, b in reversed(raw):         # backwards: keep what a needed value depends on
        lo, hi = (lo if lo in need else -1), (hi if hi in need else -1)
        if lo >= 0 or hi >= 0:
            kept.append((lo, hi, a, b))
            need.update((a, b))
    kept.reverse()
    return Network(n, tuple(kept), outputs, count)


def run_network(net: Network, rows: Sequence[Tensor]) -> List[Tensor]:
    """Evaluate ``net`` on the n rows (elementwise over any shape): the values at its ranks."""
    v: List[Optional[Tensor]] = list(rows) + [None] * (net.size - net.n)
    for lo, hi, a, b in net.ops:
        if lo >= 0:
            v[lo] = torch.minimum(v[a], v[b])
        if hi >= 0:
            v[hi] = torch.maximum(v[a], v[b])
    return [v[o] for o in net.outputs]


# The traced kernels. Each network gets its own code object (compiled from this text with its own
# name): torch.compile caches per code object, and closures sharing one would evict each other.
_KERNEL_SOURCE = '''
def kernel(*rows):
    outs = run_network(NET, rows)
    if not MASK:
        return torch.stack(outs)
    low, high = outs[0], outs[-1]
    zero = torch.zeros((), dtype=rows[0].dtype)
    return torch.stack(outs), torch.stack([torch.where((r > low) & (r < high), r, zero) for r in rows])
'''


@functools.lru_cache(maxsize=None)
def _kernel(n: int, ranks: Tuple[int, ...], mask: bool) -> Callable:
    scope = {"torch": torch, "run_network": run_network, "NET": network(n, ranks), "MASK": mask}
    exec(compile(_KERNEL_SOURCE, f"<selection network n={n} ranks={ranks} mask={mask}>", "exec"), scope)
    # one fused loop (inductor's default caps a kernel at 64 nodes); single-threaded, so one
    # compilation serves every thread count
    return torch.compile(scope["kernel"], dynamic=False, fullgraph=True,
                         options={"max_fusion_size": 1 << 20, "cpp.threads": 1})


def fusable(x: Tensor) -> bool:
    """Whether the fused kernel applies to ``x`` [n, d] (reduced over dim 0)."""
    n, d = x.shape
    return (FUSE_ON_CPU and not _state["failed"] and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64) and 3 <= n <= FUSE_MAX_ROWS
            and d >= BLOCK and n * d >= FUSE_MIN_ELEMS)


class FusedUnavailable(RuntimeError):
    """The fused kernel could not be built here (warned once); the caller uses its eager path."""


def _call(n: int, ranks: Tuple[int, ...], mask: bool, block: Tensor):
    try:
        with torch.no_grad():
            return _kernel(n, ranks, mask)(*block.unbind(0))
    except Exception as err:                  # no C++ compiler, inductor error: eager from now on
        _state["failed"] = f"{type(err).__name__}: {err}"[:300]
        warnings.warn(f"protocols.rules.selection: the fused sorting network is unavailable "
                      f"({_state['failed']}); using the eager rules", RuntimeWarning)
        raise FusedUnavailable(_state["failed"]) from err


def column_blocks(d: int) -> List[Tuple[int, int]]:
    """The column blocks [s, e) of ``BLOCK`` columns (the last one narrower) that the fused
    kernel works on. The eager rules that must match the fused ones bit for bit sum over the
    same blocks: torch's column sum adds the rows of a column in an order that depends on the
    width of the matrix and on where the column lies in it (a block of 1 or 4..7 float32
    columns adds in another order than the same columns inside a wider matrix)."""
    return [(s, min(d, s + BLOCK)) for s in range(0, d, BLOCK)]


def order_statistic_blocks(x: Tensor, ranks: Sequence[int], mask: bool = False) -> Iterator[tuple]:
    """Per block of :func:`column_blocks` of ``x`` [n, d]: its start s, the values at the sorted
    ``ranks`` of every column, [len(ranks), w], and, with ``mask``, the block with every entry
    outside the open interval (value at the first rank, value at the last rank) replaced by 0,
    [n, w], contiguous (else None). A column holding a NaN has NaN at every rank (min and max
    propagate it through the network; every output depends on every input).

    Full blocks go through the fused kernel, the last partial one through a sort. Raises
    :class:`FusedUnavailable` if the kernel cannot be built or run (at the first full block when
    it cannot be built); the caller drops what it has and takes its eager path.
    """
    n, d = x.shape
    ranks = tuple(int(r) for r in ranks)
    if x.stride(1) != 1:
        x = x.contiguous()
    zero = torch.zeros((), dtype=x.dtype)
    for s, e in column_blocks(d):
        xb = x[:, s:e]
        if e - s == BLOCK:
            res = _call(n, ranks, mask, xb)
            values, masked = (res[0], res[1].contiguous()) if mask else (res, None)
        else:
            values = xb.sort(dim=0).values[list(ranks)]
            values[:, xb.isnan().any(dim=0)] = float("nan")     # as the network (sort puts NaN last)
            masked = torch.where((xb > values[0]) & (xb < values[-1]), xb, zero) if mask else None
        yield s, values, masked


def order_statistics(x: Tensor, ranks: Sequence[int]) -> Tensor:
    """The values at the sorted ``ranks`` of every column of ``x`` [n, d], [len(ranks), d], by
    :func:`order_statistic_blocks` (NaN at every rank of a column holding a NaN)."""
    out = torch.empty(len(ranks), x.shape[1], dtype=x.dtype)
    for s, values, _ in order_statistic_blocks(x, ranks):
        out[:, s:s + values.shape[1]] = values
    return out
