"""The pruned Batcher selection network (protocols.rules.selection) and the fused rules built on it.

Fast tests: the network against ``torch.sort`` (every n up to 40, some up to 128, ties, +-inf,
signed zeros, both float widths), exhaustively on 0-1 inputs for n <= 14 (the 0-1 principle:
a comparator network that selects a rank on every 0-1 input selects it on every input), the
rank checks, NaN, and the fallback when the kernel cannot be built. Slow tests (``-m slow``):
the compiled kernel, ``coordinate_median`` and ``trimmed_mean`` fused against their eager paths
bit for bit on the inputs that break fast paths.
"""
import itertools
import random
import warnings

import numpy as np
import pytest
import torch

from protocols.rules import selection
from protocols.rules.common import coordinate_median
from protocols.rules.coordinate import trimmed_mean
from protocols.rules.selection import network, order_statistic_blocks, run_network

DTYPES = (torch.float32, torch.float64)


def sorted_ranks(x: torch.Tensor, ranks) -> torch.Tensor:
    return x.sort(dim=0).values[list(ranks)]


def by_network(x: torch.Tensor, ranks) -> torch.Tensor:
    return torch.stack(run_network(network(x.shape[0], tuple(ranks)), list(x.unbind(0))))


def hard_columns(n: int, d: int, dtype, g: torch.Generator) -> torch.Tensor:
    """[n, d]: continuous values, a few distinct values (ties everywhere), duplicated rows,
    +-inf, -0.0 and 0.0, constant columns."""
    cont = torch.randn(n, d, generator=g, dtype=torch.float64)
    few = torch.randint(-2, 3, (n, d), generator=g).to(torch.float64)
    pick = torch.randint(0, 4, (1, d), generator=g)
    x = torch.where(pick == 0, cont, few)
    special = torch.tensor([float("inf"), -float("inf"), -0.0, 0.0], dtype=torch.float64)
    where = torch.rand(n, d, generator=g) < 0.15
    x = torch.where(where, special[torch.randint(0, 4, (n, d), generator=g)], x)
    if d > 3:
        x[:, 1] = 0.5                                      # a constant column
        x[:, 2] = torch.where(torch.arange(n) % 2 == 0, -0.0, 0.0).double()
    if n > 2:
        x[n - 1] = x[0]                                    # a duplicated update
    return x.to(dtype)


def rank_sets(n: int, rnd: random.Random):
    sets = [tuple(range(n)), ((n - 1) // 2,), (n // 2 - 1, n // 2) if n % 2 == 0 and n > 1 else (0,)]
    for _ in range(3):
        sets.append(tuple(sorted(rnd.sample(range(n), rnd.randint(1, n)))))
    k = max(1, n // 4)
    if 4 * k <= n:
        sets.append((k - 1, k, n - k - 1, n - k))         # the trimmed mean's ranks
    sets.append((n - 1, 0))                                # unsorted request: outputs in request order
    return sets


# ----------------------------------------------------------------------------- the network


@pytest.mark.parametrize("n", list(range(1, 41)) + [47, 64, 65, 100, 127, 128])
def test_network_selects_the_sorted_ranks(n):
    rnd = random.Random(n)
    g = torch.Generator().manual_seed(n)
    for dtype in DTYPES:
        x = hard_columns(n, 64, dtype, g)
        for ranks in (rank_sets(n, rnd) if n <= 40 else rank_sets(n, rnd)[:4]):
            out = by_network(x, ranks)
            assert out.dtype == dtype
            assert torch.equal(out, sorted_ranks(x, ranks)), (n, ranks, dtype)


@pytest.mark.parametrize("n", range(1, 15))
def test_network_selects_every_rank_of_every_0_1_input(n):
    """Exhaustive: all 2^n 0-1 columns; by the 0-1 principle the network selects these ranks
    of any input."""
    cols = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float32).T
    for ranks in [tuple(range(n))] + [(r,) for r in range(n)]:
        assert torch.equal(by_network(cols, ranks), sorted_ranks(cols, ranks)), (n, ranks)


def test_network_prunes_to_the_requested_ranks():
    assert len(selection.batcher_pairs(128)) == 1471            # (p^2 - p + 4) 2^(p-2) - 1, p = 7
    mid = network(100, (49, 50))
    # the module docstring's figures: 898 compare-exchanges, 1,698 min/max for the median of 100
    assert len(mid.ops) == 898
    assert sum((lo >= 0) + (hi >= 0) for lo, hi, _, _ in mid.ops) == 1698
    assert len(mid.ops) < len(network(100, tuple(range(100))).ops) < 1471


@pytest.mark.parametrize("n, ranks", [(0, (0,)), (3, ()), (3, (3,)), (3, (-1,)), (3, (0, 5)),
                                      (3, (1.5,)), (3, (True,)), (3, ("1",))])
def test_network_rejects_bad_ranks(n, ranks):
    with pytest.raises((ValueError, TypeError)):
        network(n, ranks)


def test_network_accepts_a_list_of_ranks_and_numpy_integers():
    assert network(5, [1, 2]) == network(5, (1, 2))
    assert network(5, (np.int64(2),)) == network(5, (2,))


def test_network_propagates_nan_to_every_rank():
    """min/max propagate NaN: a column holding a NaN gives NaN at every rank (the eager
    median does the same; ``torch.sort`` would put it last instead)."""
    x = torch.randn(9, 5, dtype=torch.float64)
    x[3, 1] = float("nan")
    x[:, 4] = float("nan")
    out = by_network(x, (0, 4, 8))
    assert out[:, 1].isnan().all() and out[:, 4].isnan().all()
    assert torch.equal(out[:, [0, 2, 3]], sorted_ranks(x, (0, 4, 8))[:, [0, 2, 3]])
    assert torch.median(x, dim=0).values[1].isnan()


def test_the_partial_block_follows_the_network_on_nan():
    """The last, narrower block is selected by a sort: it must give NaN where the kernel would."""
    x = torch.randn(7, 10)
    x[0, 3] = float("nan")
    x[:5, 6] = float("nan")
    (s, values, masked), = list(order_statistic_blocks(x, (1, 3, 5), mask=True))
    assert s == 0 and values[:, [3, 6]].isnan().all()
    keep = [c for c in range(10) if c not in (3, 6)]
    assert torch.equal(values[:, keep], sorted_ranks(x, (1, 3, 5))[:, keep])


def test_fusable_conditions(monkeypatch):
    monkeypatch.setattr(selection, "FUSE_MIN_ELEMS", 1000)
    monkeypatch.setattr(selection, "BLOCK", 64)
    monkeypatch.setitem(selection._state, "failed", "")
    assert selection.fusable(torch.zeros(16, 64))
    assert not selection.fusable(torch.zeros(16, 63))                  # narrower than a block
    assert not selection.fusable(torch.zeros(2, 1000))                 # too few clients
    assert not selection.fusable(torch.zeros(129, 64))                 # too many
    assert not selection.fusable(torch.zeros(10, 64))                  # too few elements
    assert not selection.fusable(torch.zeros(16, 64, dtype=torch.float16))
    monkeypatch.setattr(selection, "FUSE_ON_CPU", False)
    assert not selection.fusable(torch.zeros(16, 64))


# ----------------------------------------------------------------------------- the fused rules


def same_bits(a: torch.Tensor, b: torch.Tensor, signed_zero: bool = True) -> bool:
    """Bit for bit, NaN where NaN (any payload); ``signed_zero=False``: -0.0 == 0.0."""
    if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a.isnan(), b.isnan()):
        return False
    a, b = a[~a.isnan()], b[~b.isnan()]
    if not signed_zero:
        a, b = a + 0.0, b + 0.0                   # -0.0 + 0.0 = 0.0
    view = torch.int32 if a.dtype == torch.float32 else torch.int64
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def eager(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(selection, "FUSE_ON_CPU", False)
        return fn(*args)


def spy_kernel(monkeypatch):
    calls = []
    real = selection._kernel

    def counted(*a):
        calls.append(a)
        return real(*a)
    monkeypatch.setattr(selection, "_kernel", counted)
    return calls


def test_a_kernel_that_cannot_be_built_warns_once_and_the_rules_return_the_eager_result(monkeypatch):
    monkeypatch.setattr(selection, "FUSE_MIN_ELEMS", 0)
    monkeypatch.setattr(selection, "BLOCK", 64)
    monkeypatch.setitem(selection._state, "failed", "")

    def broken(*a):
        raise RuntimeError("no C++ compiler here")
    monkeypatch.setattr(selection, "_kernel", broken)
    x = torch.randn(12, 200, dtype=torch.float64)
    x[:, 7] = float("nan")
    ref_med, ref_trim = eager(monkeypatch, coordinate_median, x), eager(monkeypatch, trimmed_mean, x, 2)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        med = coordinate_median(x)
    assert same_bits(med, ref_med)
    assert "no C++ compiler" in selection._state["failed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no second warning
        assert same_bits(trimmed_mean(x, 2), ref_trim)
        assert same_bits(coordinate_median(x), ref_med)
    monkeypatch.setitem(selection._state, "failed", "")
    with pytest.warns(RuntimeWarning):                    # the trimmed mean's own fallback
        assert same_bits(trimmed_mean(x, 2), ref_trim)


def fused_cases(n: int, d: int, dtype, seed: int):
    """The inputs of the bit-equality checks, by name."""
    g = torch.Generator().manual_seed(seed)
    out = {"normal": torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype),
           "hard": hard_columns(n, d, dtype, g),
           "few values": torch.randint(-1, 2, (n, d), generator=g).to(dtype),
           "offset 1e8": (1e8 + torch.randn(n, d, generator=g, dtype=torch.float64) * 3).to(dtype),
           "constant": torch.full((n, d), 0.25, dtype=dtype)}
    nan = out["hard"].clone()
    nan[0, 3] = float("nan")                               # one NaN: trimmed away as the largest
    nan[: n // 2 + 1, 5] = float("nan")                    # more NaN than can be trimmed
    nan[:, d - 1] = float("nan")                           # in the partial block
    nan[1, d - 2] = float("nan")
    out["nan"] = nan
    return out


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 4, 9, 12])
@pytest.mark.parametrize("tail", [0, 1, 5, 100])
def test_fused_rules_equal_the_eager_paths_bit_for_bit(monkeypatch, n, tail):
    """Small networks (cheap to compile) on blocks of 256 columns; the tails 1 and 5 are the
    widths at which torch's column sum takes another loop."""
    monkeypatch.setattr(selection, "FUSE_MIN_ELEMS", 0)
    monkeypatch.setattr(selection, "BLOCK", 256)
    monkeypatch.setitem(selection._state, "failed", "")
    calls = spy_kernel(monkeypatch)
    d = 2 * 256 + tail
    for dtype in DTYPES:
        for name, x in fused_cases(n, d, dtype, seed=n * 100 + tail).items():
            assert same_bits(coordinate_median(x), eager(monkeypatch, coordinate_median, x),
                             signed_zero=False), (name, dtype)
            for k in range(1, n // 4 + 1):
                fused, ref = trimmed_mean(x, k), eager(monkeypatch, trimmed_mean, x, k)
                assert same_bits(fused, ref), (name, dtype, k, (fused != ref).nonzero()[:5].tolist())
    assert calls and not selection._state["failed"]


@pytest.mark.slow
def test_fused_rules_at_the_real_block_size(monkeypatch):
    """n = 100 (the bench's size) and the module's BLOCK: the networks the rules compile (about
    20 s each the first time on a machine, then inductor's disk cache)."""
    monkeypatch.setattr(selection, "FUSE_MIN_ELEMS", 0)
    monkeypatch.setitem(selection._state, "failed", "")
    calls = spy_kernel(monkeypatch)
    n, d = 100, selection.BLOCK + 5
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, d, generator=g)
    x[:, : d // 4] = torch.randint(-3, 4, (n, d // 4), generator=g).float()        # ties
    x[:, -3:] = torch.randint(-3, 4, (n, 3), generator=g).float()
    x[5, 100] = float("nan")
    assert same_bits(coordinate_median(x), eager(monkeypatch, coordinate_median, x), signed_zero=False)
    assert same_bits(trimmed_mean(x, 10), eager(monkeypatch, trimmed_mean, x, 10))
    assert len(calls) >= 2 and not selection._state["failed"]
