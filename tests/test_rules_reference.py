"""The reveal-based rules against straightforward numpy references on the inputs that break
fast implementations: ties (across both ends of a column, constant columns, duplicated
updates), a large offset shared by every update, float32, and the smallest n.

References: a sort-based trimmed mean and np.median, Krum from brute-force pairwise
differences in float64, Bulyan as in El Mhamdi et al. with stable sorts.
"""
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from protocols.rules import make_rule
from protocols.rules.base import breakdown_warning
from protocols.rules.common import as_fraction, coordinate_median, pairwise_sq_distances
from protocols.rules.coordinate import trim_count, trimmed_mean
from protocols.rules.krum import krum_scores
from protocols.rules.robustfilter import filter_count
from secagg import ClientUpdates

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def plain(x):
    return ClientUpdates(x, secure=False, rule="test")


@st.composite
def matrices(draw, min_n=1, max_n=24, max_d=12):
    """[n, d] updates: values from a small set (many ties) or continuous, a shared offset of up
    to 1e6, float32 or float64, and sometimes a constant column."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = np.random.default_rng(seed)
    if draw(st.booleans()):
        x = g.choice(np.array([-1.0, 0.0, 0.5, 1.0]), size=(n, d))          # ties everywhere
    else:
        x = g.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    if draw(st.booleans()):
        x[:, g.integers(d)] = 0.5                                            # a constant column
    x = x + draw(st.sampled_from([0.0, 1e3, 1e6]))
    return x.astype(dtype)


def trimmed_reference(x: np.ndarray, k: int) -> np.ndarray:
    n = x.shape[0]
    return np.sort(x.astype(np.float64), axis=0)[k:n - k].mean(axis=0)


def _close(out: torch.Tensor, ref: np.ndarray, x: np.ndarray) -> bool:
    eps = np.finfo(x.dtype).eps
    scale = max(1.0, float(np.abs(x).max()))
    return np.allclose(out.double().numpy(), ref, rtol=0, atol=8 * eps * scale)


# --------------------------------------------------------------------------- trimmed mean


@FAST
@given(matrices(), st.data())
def test_trimmed_mean_equals_the_sort_reference(x, data):
    n = x.shape[0]
    k = data.draw(st.integers(0, (n - 1) // 2))
    out = trimmed_mean(torch.from_numpy(x), k)
    assert out.dtype == torch.from_numpy(x).dtype
    assert _close(out, trimmed_reference(x, k), x)


@pytest.mark.parametrize("n,k", [(8, 2), (12, 3), (20, 5), (100, 25)])
def test_trimmed_mean_with_ties_across_both_ends_removes_exactly_2k(n, k):
    """The topk path (4k <= n): a constant column, and a column whose ties span both ends,
    once came out too large (0.5 -> 0.6667) because both topk calls removed the same entries."""
    x = torch.full((n, 3), 0.5)
    x[:, 1] = torch.tensor([0.0] + [0.5] * (n - 2) + [1.0])
    x[:, 2] = torch.tensor([1.0] * (n // 2) + [0.0] * (n - n // 2))
    out = trimmed_mean(x, k)
    ref = trimmed_reference(x.numpy(), k)
    assert out[0] == 0.5 and np.allclose(out.numpy(), ref, atol=1e-7)


def test_trimmed_mean_refuses_trimming_everything():
    with pytest.raises(ValueError, match="leaves none"):
        trimmed_mean(torch.zeros(4, 2), 2)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 20, 33, 100, 1000])
def test_trim_count_is_exact_for_every_f_over_n(n):
    """floor(beta n) for beta = f / n written as a float, and for every 2-decimal beta."""
    for f in range(0, (n + 1) // 2):
        assert trim_count(f / n, n) == f
    for cents in range(0, 50):
        assert trim_count(cents / 100, n) == (cents * n) // 100


def test_trimmedmean_rule_trims_29_of_100_for_beta_029():
    x = torch.arange(100, dtype=torch.float64)[:, None]
    out = make_rule("trimmedmean", beta=0.29)(plain(x))
    assert float(out) == float(np.arange(29, 71).mean())   # 29 trimmed from each end, not 28


def test_exact_counts_of_robustfilter_and_as_fraction():
    assert as_fraction(0.29) == Fraction(29, 100) and as_fraction(1 / 3) == Fraction(1, 3)
    # round(eps n / 2) with halves up, on the exact fraction
    assert [filter_count(e, n) for e, n in [(0.2, 10), (0.1, 5), (0.3, 5), (0.2, 20), (0.1, 15)]] == [1, 0, 1, 2, 1]


# --------------------------------------------------------------------------- median


@FAST
@given(matrices())
def test_median_equals_numpy(x):
    out = make_rule("median")(plain(torch.from_numpy(x)))
    assert _close(out, np.median(x.astype(np.float64), axis=0), x)


# --------------------------------------------------------------------------- Krum family


def krum_reference_scores(x: np.ndarray, f: int) -> np.ndarray:
    """Brute force: every squared distance from the differences, in float64."""
    x = x.astype(np.float64)
    n = x.shape[0]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    k = n - f - 2
    return np.array([np.sort(np.delete(d2[i], i))[:k].sum() for i in range(n)])


@FAST
@given(matrices(min_n=5, max_n=16, max_d=40), st.data())
def test_krum_selects_what_brute_force_distances_select(x, data):
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    ref = krum_reference_scores(x, f)
    best = ref.min()
    # an exact tie picks equal rows or is ambiguous: only compare where the minimum is unique
    # (or shared by identical rows, which give the same output)
    ties = np.flatnonzero(ref <= best * (1 + 1e-9) + 1e-300)
    assume(all(np.array_equal(x[i], x[ties[0]]) for i in ties))
    out = make_rule("krum", f=f)(plain(torch.from_numpy(x)))
    assert np.array_equal(out.numpy(), x[ties[0]])


def test_krum_under_a_large_shared_offset_in_float32():
    """Updates that share an offset of 1e3 in float32: the uncentred float32 Gram matrix once
    chose a client whose score was above the true minimum (here in most seeds)."""
    wrong = 0
    for seed in range(20):
        g = np.random.default_rng(seed)
        x = (1e3 + g.standard_normal((12, 200))).astype(np.float32)
        ref = krum_reference_scores(x, 3)
        scores = krum_scores(pairwise_sq_distances(torch.from_numpy(x)), 3).numpy()
        assert np.allclose(scores, ref, rtol=1e-9)
        wrong += int(make_rule("krum", f=3)(plain(torch.from_numpy(x))).numpy().tolist() != x[ref.argmin()].tolist())
    assert wrong == 0


@FAST
@given(matrices(min_n=5, max_n=16, max_d=20))
def test_pairwise_distances_equal_brute_force(x):
    ref = ((x.astype(np.float64)[:, None] - x.astype(np.float64)[None]) ** 2).sum(-1)
    out = pairwise_sq_distances(torch.from_numpy(x)).numpy()
    spread = float(((x.astype(np.float64) - x.astype(np.float64).mean(0)) ** 2).sum(1).max())
    assert np.allclose(out, ref, rtol=1e-9, atol=1e-12 * max(spread, 1.0))


@FAST
@given(matrices(min_n=5, max_n=16, max_d=20), st.data())
def test_multikrum_averages_the_m_lowest_brute_force_scores(x, data):
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    ref = krum_reference_scores(x, f)
    order = np.argsort(ref, kind="stable")
    if m < n:   # the m-th and (m+1)-th scores must differ (else the selection is ambiguous)
        assume(ref[order[m]] > ref[order[m - 1]] * (1 + 1e-9) + 1e-300
               or np.array_equal(x[order[m]], x[order[m - 1]]))
    out = make_rule("multikrum", f=f, m=m)(plain(torch.from_numpy(x)))
    assert _close(out, x[order[:m]].astype(np.float64).mean(axis=0), x)


def bulyan_reference(x: np.ndarray, f: int) -> np.ndarray:
    x = x.astype(np.float64)
    n = x.shape[0]
    theta, beta = n - 2 * f, n - 4 * f
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    remaining, chosen = list(range(n)), []
    for _ in range(theta):
        r = len(remaining)               # Krum on the clients not yet selected (Cronus Alg. 3)
        k = min(max(r - f - 2, 0), r - 1)
        scores = [np.sort([d2[i, j] for j in remaining if j != i])[:k].sum() for i in remaining]
        pick = remaining[int(np.argmin(scores))]
        chosen.append(pick)
        remaining.remove(pick)
    s = x[chosen]
    med = np.median(s, axis=0)
    return np.array([s[np.argsort(np.abs(s[:, j] - med[j]), kind="stable")[:beta], j].mean()
                     for j in range(x.shape[1])])


@FAST
@given(st.integers(7, 15), st.integers(1, 10), st.integers(0, 2 ** 31 - 1),
       st.sampled_from([0.0, 1e3]), st.sampled_from([np.float32, np.float64]))
@example(n=7, d=4, seed=3511, offset=0.0, dtype=np.float32)   # mutual nearest neighbours: an exact tie
def test_bulyan_equals_the_reference_on_continuous_data(n, d, seed, offset, dtype):
    f = (n - 3) // 4
    x = (offset + np.random.default_rng(seed).standard_normal((n, d))).astype(dtype)
    out = make_rule("bulyan", f=f)(plain(torch.from_numpy(x)))
    assert _close(out, bulyan_reference(x, f), x)


def test_coordinate_median_single_and_two_rows():
    assert torch.equal(coordinate_median(torch.tensor([[3.0, -1.0]])), torch.tensor([3.0, -1.0]))
    assert torch.equal(coordinate_median(torch.tensor([[1.0, 0.0], [2.0, 0.0]])), torch.tensor([1.5, 0.0]))


# --------------------------------------------------------------------------- breakdown points


def test_breakdown_points_from_the_papers():
    n = 20
    assert make_rule("rfa").max_corrupted(n) == 9          # fewer than half (RFA Sec. II)
    assert make_rule("median").max_corrupted(n) == 9
    assert make_rule("krum").max_corrupted(n) == 8         # n > 2f + 2
    assert make_rule("bulyan").max_corrupted(n) == 4       # n >= 4f + 3
    assert make_rule("trimmedmean", beta=0.25).max_corrupted(n) == 5
    assert make_rule("fltrust").max_corrupted(n) is None
    assert breakdown_warning(make_rule("rfa"), 9, n) is None
    msg = breakdown_warning(make_rule("rfa"), 12, n)
    assert "breakdown point" in msg and "1/2" in msg and "12 of 20" in msg
    assert breakdown_warning(make_rule("fedavg"), 5, n) is None      # the non-robust baseline
