"""SecAgg+ parameters from Bell et al. 2020's conditions (secagg.graph): the bound, its use by
``neighbors="auto"``, the refusals, and the measured exposure of sampled graphs.

The union bounds are recomputed here with scipy (binomial tails, binomial coefficients),
independently of secagg.graph's own log-space arithmetic.
"""
import math

import networkx as nx
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import comb

from secagg import MaskedOracle, Transcript, modular_sum, run_protocol
from secagg import graph as graphs


def _bounds_scipy(n, k, ts, c, d):
    """(security failures, correctness failures) of G(n, k/(n-1)) by the module's union bounds,
    for each share threshold in ``ts``."""
    p, ts = k / (n - 1), np.asarray(ts)
    m = n - c - d
    s1 = (n - c) * stats.binom.sf(ts - 1, c, p) if c else np.zeros(len(ts))
    s2 = sum(comb(m, s, exact=True) * (1 - p) ** (s * (m - s)) for s in range(1, m // 2 + 1))
    c1 = n * stats.binom.cdf(ts - 1, n - 1 - d, p)
    return s1 + s2, c1


@pytest.mark.parametrize("n,gamma,delta", [(100, 0.1, 0.1), (300, 0.2, 0.1), (1000, 1 / 3, 0.1), (60, 0.05, 0.0)])
def test_parameters_meet_the_bound_and_are_minimal(n, gamma, delta):
    p = graphs.secagg_plus_parameters(n, gamma, delta)
    assert p.graph == "erdos-renyi" and p.meets and 1 <= p.share_threshold <= p.k < n - 1
    c, d = math.floor(gamma * n + 1e-9), math.floor(delta * n + 1e-9)
    assert (p.corrupt_clients, p.dropout_clients) == (c, d)
    (sec,), (cor,) = _bounds_scipy(n, p.k, [p.share_threshold], c, d)
    assert sec <= 2.0 ** -graphs.SIGMA and cor <= 2.0 ** -graphs.ETA
    assert p.security_bits == pytest.approx(-math.log2(sec), rel=1e-6)
    assert p.correctness_bits == pytest.approx(-math.log2(cor), rel=1e-6)
    # One less expected degree fails for every share threshold.
    sec, cor = _bounds_scipy(n, p.k - 1, np.arange(1, n + 1), c, d)
    assert ((sec > 2.0 ** -graphs.SIGMA) | (cor > 2.0 ** -graphs.ETA)).all()


def test_more_corruption_needs_a_denser_graph_and_a_higher_threshold():
    ks = [graphs.secagg_plus_parameters(1000, g, 0.1) for g in (0.05, 0.1, 0.2, 1 / 3)]
    assert all(a.k < b.k and a.share_threshold < b.share_threshold for a, b in zip(ks, ks[1:]))
    assert graphs.secagg_plus_parameters(1000, 0.1, 0.1).k < graphs.secagg_plus_parameters(1000, 0.1, 0.3).k
    assert graphs.secagg_plus_parameters(1000, 0.1, 0.1, sigma=60).k > ks[1].k


def test_small_or_hopeless_cases_fall_back_to_the_complete_graph_or_fail():
    tiny = graphs.secagg_plus_parameters(3, 0.1, 0.1, threshold=2)
    assert tiny.graph == "complete" and tiny.meets and tiny.k_needed is None
    bad = graphs.secagg_plus_parameters(30, 0.5, 0.4, threshold=21)   # c = 15, n - d = 18 < t
    assert bad.graph == "complete" and not bad.meets and bad.correctness_bits == 0
    with pytest.raises(ValueError, match="corrupt_fraction"):
        graphs.secagg_plus_parameters(30, 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        graphs.secagg_plus_parameters(30, 0.1, 0.1, sigma=0)


def test_auto_uses_the_bound_and_reports_it():
    x = torch.randint(0, 2 ** 16, (100, 8), dtype=torch.int64)
    res = run_protocol(x, modulus_bits=16, threshold=67, neighbors="auto", dropouts={"masked_input": [4, 50]})
    want = graphs.secagg_plus_parameters(100, 0.1, 0.1, threshold=67)
    assert res.protocol == "secagg+" and res.share_threshold == want.share_threshold == 11
    b = res.server_view()["bound"]
    assert b["graph"] == "erdos-renyi" and b["k"] == want.k == 45 and b["meets"]
    assert b["corrupt_fraction"] == 0.1 and b["dropout_fraction"] == 0.1 and b["security_bits"] >= 40
    assert torch.equal(res.total, modular_sum(x[res.survivors], 16))
    assert np.mean([len(nb) for nb in res.graph]) == pytest.approx(45, abs=4)


def test_auto_refuses_what_no_graph_can_meet():
    x = torch.zeros(30, 2, dtype=torch.int64)
    with pytest.raises(ValueError) as info:
        run_protocol(x, modulus_bits=16, threshold=21, neighbors="auto", corrupt_fraction=0.5, dropout_fraction=0.4)
    msg = str(info.value)
    for part in ("gamma=0.5", "delta=0.4", "n=30", "k >= n - 1 = 29", "n - d=18"):
        assert part in msg, part
    with pytest.raises(ValueError, match="n/3"):
        run_protocol(x, modulus_bits=16, threshold=21, neighbors="auto", corrupt_fraction=1 / 3, active_security=True)
    with pytest.raises(ValueError, match="share_threshold"):
        run_protocol(x, modulus_bits=16, threshold=21, neighbors="auto", share_threshold=5)
    with pytest.raises(ValueError, match="dropout_fraction"):
        run_protocol(x, modulus_bits=16, threshold=21, neighbors="auto", dropout_fraction=-0.1)


def test_other_graphs_are_labelled():
    x = torch.randint(0, 2 ** 16, (40, 4), dtype=torch.int64)
    full = run_protocol(x, modulus_bits=16, threshold=27).bound
    assert full["graph"] == "complete" and full["meets"] and full["security_bits"] == math.inf
    assert full["k_needed"] == graphs.secagg_plus_parameters(40, 0.1, 0.1, threshold=27).k
    weak = run_protocol(x, modulus_bits=16, threshold=27, corrupt_fraction=0.7).bound   # c = 28 >= t
    assert weak["meets"] is False and weak["security_bits"] == 0
    sparse = run_protocol(x, modulus_bits=16, threshold=27, neighbors=6).bound
    assert sparse["graph"] == "k-regular" and sparse["meets"] is None and "not checked" in sparse["note"]
    assert sparse["k_needed"] == full["k_needed"]
    active = run_protocol(x, modulus_bits=16, threshold=27, active_security=True, corrupt_fraction=0.35).bound
    assert active["meets"] is False          # c = 14 >= n/3 voids Sec. 6.2's guarantee
    assert run_protocol(x, modulus_bits=16, threshold=27, active_security=True, corrupt_fraction=0.33).bound["meets"]


def test_masked_oracle_reports_the_bound_for_its_dropouts():
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(20, 10, generator=g) * 2 - 1, torch.rand(20, generator=g) + 0.1
    t = Transcript()
    MaskedOracle(clip=1.0, dropout_rate=0.25, neighbors="auto").average(x, w, transcript=t)
    b = t.calls[0].server_view["bound"]
    assert b["dropout_clients"] == 5 and b["corrupt_fraction"] == 0.1 and b["meets"]
    with pytest.raises(ValueError, match="dropout_rate"):
        MaskedOracle(dropout_rate=0.3, dropout_fraction=0.1)


# -- the graphs -------------------------------------------------------------------------


def test_erdos_renyi_generator_matches_networkx():
    n, p, reps = 40, 0.3, 400
    rng = np.random.default_rng(1)
    ours = [graphs.erdos_renyi_graph(n, p, rng) for _ in range(reps)]
    theirs = [nx.gnp_random_graph(n, p, seed=s) for s in range(reps)]
    e_ours = np.array([sum(len(nb) for nb in g) // 2 for g in ours])
    e_theirs = np.array([g.number_of_edges() for g in theirs])
    pairs = n * (n - 1) // 2
    se = math.sqrt(pairs * p * (1 - p) / reps)
    assert abs(e_ours.mean() - pairs * p) < 4 * se and abs(e_theirs.mean() - pairs * p) < 4 * se
    assert stats.ks_2samp(e_ours, e_theirs).pvalue > 1e-3
    freq = np.mean([1 in g[0] for g in ours])                     # one fixed pair
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / reps)
    for g in ours[:20]:
        assert all(u not in nb and all(u in g[v] for v in nb) for u, nb in enumerate(g))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
def test_erdos_renyi_extremes(n):
    rng = np.random.default_rng(0)
    assert graphs.erdos_renyi_graph(n, 1.0, rng) == graphs.complete_graph(n)
    assert graphs.erdos_renyi_graph(n, 0.0, rng) == [[] for _ in range(n)]


def test_random_regular_graph_is_regular_and_relabelled():
    rng = np.random.default_rng(3)
    g = graphs.random_regular_graph(30, 6, rng)
    assert all(len(nb) == 6 and u not in nb for u, nb in enumerate(g))
    assert all(u in g[v] for u, nb in enumerate(g) for v in nb)
    assert graphs.random_regular_graph(8, 7, rng) == graphs.complete_graph(8)


# -- measured exposure ----------------------------------------------------------------------


def test_exposure_rate_new_parameters_versus_the_old_defaults():
    new = graphs.secagg_plus_parameters(100, 1 / 3, 0.1)
    ours = graphs.exposure_rate(100, new.k, new.share_threshold, 1 / 3, 0.1, trials=200, seed=1)
    old = graphs.exposure_rate(100, graphs.default_degree(100), graphs.default_share_threshold(15), 1 / 3, 0.1,
                               graph="harary", trials=200, seed=1)
    assert ours["exposed"] == 0 and ours["disconnected"] == 0 and ours["trials"] == 200
    assert old["share_exposed"] > 0.5                         # most old graphs expose an honest client


def test_exposure_rate_matches_the_exact_share_exposure_probability():
    # In G(n, p) the corrupt-holder counts of the honest survivors are independent Bin(c, p):
    # P[some survivor has >= t corrupt holders] = 1 - (1 - q)^m.
    n, k, t, gamma, delta, trials = 30, 8, 3, 0.2, 0.1, 3000
    c, d = 6, 3
    q = stats.binom.sf(t - 1, c, k / (n - 1))
    want = 1 - (1 - q) ** (n - c - d)
    got = graphs.exposure_rate(n, k, t, gamma, delta, trials=trials, seed=2)["share_exposed"]
    assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / trials)


def test_exposure_rate_sees_isolation_and_disconnection():
    sparse = graphs.exposure_rate(60, 2, 60, 0.2, 0.2, trials=100, seed=0)    # t_s unreachable: no share exposure
    assert sparse["share_exposed"] == 0 and sparse["isolated"] > 0.5 and sparse["disconnected"] >= sparse["isolated"]
    assert sparse["exposed"] == sparse["isolated"]
    with pytest.raises(ValueError, match="graph="):
        graphs.exposure_rate(20, 4, 3, 0.1, graph="ring", trials=1)
    with pytest.raises(ValueError, match="no honest survivor"):
        graphs.exposure_rate(10, 4, 3, 0.5, 0.5, trials=1)


def test_harary_sampler_is_harary_graph_and_the_table_runs():
    for n, k in ((10, 4), (11, 4), (12, 5), (100, 14)):
        a, b = graphs._sample_edges("harary", n, k, np.random.default_rng(5))
        ref = graphs.harary_graph(n, k, np.random.default_rng(5).permutation(n))
        assert sorted(zip(a.tolist(), b.tolist())) == sorted((u, v) for u, nb in enumerate(ref) for v in nb if u < v)
    # Expected degree 3 with t_s = 3 and 20% dropouts: many clients keep fewer than t_s live neighbours.
    assert graphs.exposure_rate(40, 3, 3, 0.0, 0.2, trials=50)["aborts"] > 0.9
    (row,) = graphs.exposure_table(ns=(40,), gammas=(0.2,), trials=20)
    assert (row["k_old"], row["t_s_old"]) == (12, 7) and row["new"]["exposed"] == 0 and row["new"]["aborts"] == 0
