"""DP secrecy and accounting that matches what runs (issue 18): the noise comes from the OS CSPRNG
unless --dp-seeded-noise, seeded noise pairs across --secagg modes, cohorts are Poisson and
accounted as such (cross-checked against Google's dp-accounting), the central noise is the
fine-grid discrete Gaussian, data-dependent normalisation is refused, corrupted clients' noise
shares are not counted, and the Zhu-Wang bound of the distributed mechanism is checked against
a plain reference."""
from __future__ import annotations

import math
from fractions import Fraction

import dp_accounting
import mpmath
import numpy as np
import pytest
import torch
from dp_accounting import pld, rdp

import dp
import secagg
from protocols.simulation import RunConfig, Simulation

DELTA = 1e-5


def small(**kw) -> RunConfig:
    base = dict(model="logreg", clients=6, rounds=1, local_epochs=1, secagg="plaintext", rule="fedavg",
                dp="user-central", noise_multiplier=1.0, accountant="rdp")
    base.update(kw)
    return RunConfig(**base)


def _flat(sim):
    return torch.nn.utils.parameters_to_vector(sim.model.parameters()).detach().clone()


# --------------------------------------------------------------------------- noise source


def test_secure_random_is_uniform_and_unseeded():
    r = dp.SecureRandom()
    x = r.integers(0, 7, size=70_000)
    counts = np.bincount(x, minlength=7)
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert x.dtype == np.int64 and x.min() >= 0 and x.max() <= 6
    assert chi2 < 27.9                       # 99.99% quantile of chi2(6)
    big = r.integers(0, 1 << 62, size=1000)
    assert big.max() < 1 << 62 and big.max() > 1 << 61     # the top bit is used
    assert np.all(r.integers(5, 6, size=10) == 5)          # a one-value range
    assert not np.array_equal(r.integers(0, 1 << 62, size=4), r.integers(0, 1 << 62, size=4))
    assert isinstance(r.integers(3), np.int64)
    with pytest.raises(ValueError, match="empty range"):
        r.integers(3, 3)


def test_noise_rng_is_keyed_by_seed_round_and_call_only():
    a = dp.noise_rng(True, 7, 1, 2, 0).integers(0, 1 << 40, size=5)
    b = dp.noise_rng(True, 7, 1, 2, 0).integers(0, 1 << 40, size=5)
    c = dp.noise_rng(True, 7, 1, 2, 1).integers(0, 1 << 40, size=5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert isinstance(dp.noise_rng(False, 7, 1, 2, 0), dp.SecureRandom)


# --------------------------------------------------------------------------- the grid mechanism


def test_grid_release_is_on_the_grid_with_the_target_noise():
    d, clip, z, n = 50_000, 0.7, 1.3, 10
    p = dp.grid_plan(clip, d, z, n)
    assert math.log2(p.gamma).is_integer()
    # rounding and summation slack inflate the sensitivity by < 1e-5, and sigma covers z Delta_int + s
    assert p.sensitivity_int * p.gamma / clip - 1 < 1e-5
    assert Fraction(p.sigma2) >= Fraction(z) ** 2 * Fraction(p.sensitivity_int) ** 2 + 16
    values = torch.rand(d, dtype=torch.float64) * 3 - 1.5 + 1e3          # a large offset
    out, y = dp.grid_release(values, p, np.random.default_rng(0))
    steps = out / p.gamma
    assert torch.equal(steps, torch.round(steps))                          # every output on the grid
    noise = out - values
    assert float(noise.std()) == pytest.approx(z * clip, rel=0.02)
    assert float((torch.round(values / p.gamma) + torch.from_numpy(y)).sub(steps).abs().max()) == 0
    # z = 0 releases the exact values; the TV slack of the argument is far below any delta
    exact, _ = dp.grid_release(values, dp.grid_plan(clip, d, 0.0, n), dp.SecureRandom())
    assert torch.equal(exact, values)
    assert dp.grid.smoothing_tv_bound() < 1e-130


def test_grid_plan_absorbs_the_float64_summation_error_of_many_rows():
    few, many = dp.grid_plan(1.0, 100, 1.0, 10), dp.grid_plan(1.0, 100, 1.0, 10 ** 5)
    assert many.gamma > few.gamma and many.gamma >= (10 ** 5) ** 2 * 2.0 ** -52
    assert many.sensitivity_int * many.gamma < 1.01
    with pytest.raises(ValueError, match="too coarse for the noise grid .* aggregate fewer clients"):
        dp.grid_plan(1.0, 100, 1.0, 10 ** 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_central_oracle_noise_is_grid_discrete_gaussian(dtype):
    n, d, clip, z = 5, 20_000, 1.0, 0.9
    oracle = dp.CentralDPOracle(clip=clip, noise_multiplier=z, denominator=float(n))
    x = dp.clip_updates(torch.rand(n, d, dtype=dtype) - 0.5, clip).updates
    avg = oracle.average(x, torch.ones(n, dtype=dtype))
    assert avg.dtype == dtype
    num_plan, den_plan = oracle.last_plans
    assert den_plan is None and oracle.last_noise.shape == (d,)
    assert oracle.last_noise.var() == pytest.approx(num_plan.sigma2, rel=0.03)
    assert float(((avg.double() * n - x.double().sum(0))).std()) == pytest.approx(z * clip, rel=0.03)


# --------------------------------------------------------------------------- refusals


def test_central_and_distributed_oracles_refuse_data_dependent_normalisation():
    for make in (lambda **kw: dp.CentralDPOracle(clip=1.0, noise_multiplier=1.0, **kw),
                 lambda **kw: dp.DistributedDPOracle(clip=1.0, noise_multiplier=1.0, **kw)):
        with pytest.raises(ValueError, match=r"weight_bound=None: .* depends on the clients' data"):
            make(weight_bound=None)
        with pytest.raises(ValueError, match=r"weight_bound=-1"):
            make(weight_bound=-1)
        # a call without a bound uses the public one (1.0): weights above it are refused, not rescaled
        oracle = make(denominator=2.0)
        with pytest.raises(ValueError, match=r"weight_bound=1.0 must be > 0 and >= the largest weight 3"):
            oracle.average(torch.zeros(2, 3), torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize("kw,match", [
    (dict(dp=None, noise_multiplier=None, dp_seeded_noise=True), "no DP noise to seed"),
    (dict(dp_seeded_noise=1), "dp_seeded_noise=1 must be True or False"),
    (dict(secagg="masked", clients_per_round=4, threshold=3), r"threshold=3 \(a client count\).*fraction"),
])
def test_config_refuses_bad_dp_noise_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        Simulation(small(**kw))


# --------------------------------------------------------------------------- CSPRNG vs seeded


@pytest.mark.parametrize("kw", [dict(), dict(dp="user-distributed", secagg="quantized", bits=32)])
def test_same_seed_different_noise_unless_seeded(kw):
    runs = {}
    for seeded in (False, True):
        out = []
        for _ in range(2):
            sim = Simulation(small(dp_seeded_noise=seeded, **kw))
            sim.run()
            out.append(_flat(sim))
        runs[seeded] = out
    assert not torch.equal(*runs[False]), "two CSPRNG runs of one seed must draw different noise"
    assert torch.equal(*runs[True]), "seeded noise must repeat exactly"


def _noise_trace(secagg_mode, dp_mode, rounds=2, **kw):
    sim = Simulation(small(dp=dp_mode, secagg=secagg_mode, dp_seeded_noise=True, rounds=rounds, clients=8,
                           clients_per_round=5, bits=32, **kw))
    if dp_mode == "user-distributed":
        sim.oracle.keep_last = True
    noise, cohorts = [], []
    for r in range(rounds):
        sim.step(r)
        cohorts.append(sim.last_round_clients.tolist())
        noise.append(sim.oracle.last_noise.copy() if dp_mode == "user-central" else
                     sim.oracle.last_sum.noise.numpy().copy())
    return noise, cohorts


def test_seeded_noise_is_the_same_under_every_secagg_mode():
    # central: the server's noise depends on (seed, round, call) only, whatever sums it
    ref, cohorts = _noise_trace("off", "user-central")
    for mode in ("plaintext", "quantized"):
        noise, co = _noise_trace(mode, "user-central")
        assert co == cohorts, "Poisson cohorts are keyed by (seed, round) too"
        assert all(np.array_equal(a, b) for a, b in zip(noise, ref)), mode
    # distributed: quantized and masked sum the same noise shares (same ring, same cohort)
    ref, cohorts = _noise_trace("quantized", "user-distributed")
    noise, co = _noise_trace("masked", "user-distributed")
    assert co == cohorts and all(np.array_equal(a, b) for a, b in zip(noise, ref))


def test_result_labels_the_noise_source():
    sim = Simulation(small(dp_seeded_noise=True))
    sim.run()
    assert sim.result()["dp"]["noise"] == ("seeded: the reported epsilon does not hold against anyone "
                                           "who knows the seed")
    sim = Simulation(small())
    sim.run()
    dps = sim.result()["dp"]
    assert dps["noise"] == "csprng" and dps["neighbouring_relation"] == "add/remove one user"


# --------------------------------------------------------------------------- Poisson cohorts


def test_fixed_size_cohorts_are_not_the_poisson_mechanism():
    # the reviewer's numbers: N = 1000, m = 50, z = 1, 200 rounds, delta = 1e-4
    N, m, z, T, delta = 1000, 50, 1.0, 200, 1e-4
    ours_rdp = dp.user_level_epsilon(z, m, N, T, delta, accountant="rdp")
    ours_prv = dp.user_level_epsilon(z, m, N, T, delta, accountant="prv")
    poisson = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(m / N, dp_accounting.GaussianDpEvent(z)), T)
    fixed = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(N, m, dp_accounting.GaussianDpEvent(z)), T)
    g_rdp = rdp.RdpAccountant().compose(poisson).get_epsilon(delta)
    g_pld = pld.PLDAccountant().compose(poisson).get_epsilon(delta)
    g_fixed = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE) \
        .compose(fixed).get_epsilon(delta)
    assert ours_rdp == pytest.approx(4.59, abs=0.01) and ours_rdp == pytest.approx(g_rdp, rel=2e-3)
    assert ours_prv == pytest.approx(g_pld, rel=0.01)            # PRV vs PLD: two numerical accountants
    assert ours_prv < 0.9 * ours_rdp                               # PRV is 10-15% tighter
    assert g_fixed == pytest.approx(8.13, abs=0.02)                # fixed-size cohorts: substitution
    assert g_fixed > 1.7 * ours_rdp


def test_user_dp_samples_poisson_cohorts_and_accounts_them():
    sim = Simulation(small(clients=10, clients_per_round=3, rounds=4, dp_seeded_noise=True))
    sizes = []
    for r in range(2000):
        sim.history = [None] * r                   # sample_clients keys the seeded cohort by the round
        sizes.append(len(sim.sample_clients()))
    assert np.mean(sizes) == pytest.approx(3, rel=0.03)
    assert np.var(sizes) == pytest.approx(10 * 0.3 * 0.7, rel=0.3)    # binomial, not fixed at 3
    assert 0 in sizes                                                   # empty cohorts happen (p = 0.7^10)
    sim = Simulation(small(clients=10, clients_per_round=3, rounds=4, accountant="prv"))
    sim.run()
    assert [r.epsilon for r in sim.history] == pytest.approx(
        [dp.user_level_epsilon(1.0, 3, 10, r + 1, DELTA, accountant="prv") for r in range(4)], rel=1e-9)


@pytest.mark.parametrize("mode", ["user-central", "user-distributed"])
def test_an_empty_cohort_is_a_recorded_round(mode):
    sim = Simulation(small(dp=mode, secagg="quantized", clients=6, clients_per_round=3, rounds=2, bits=32))
    sim.sample_clients = lambda: torch.zeros(0, dtype=torch.long)
    before = _flat(sim)
    rec = sim.step(0)
    assert rec.clients == 0 and rec.round == 0 and sim.history[-1] is rec
    if mode == "user-central":
        # the noise is still released (add/remove: an empty cohort must look like a one-user one)
        assert rec.oracle_calls == 1 and sim.accountant.history == [(1.0, 0.5, 1)]
        assert not torch.equal(_flat(sim), before) and rec.epsilon > 0
    else:
        assert rec.oracle_calls == 0 and sim.accountant.history == [] and rec.epsilon == 0
        assert torch.equal(_flat(sim), before)


# --------------------------------------------------------------------------- distributed: corrupt, Zhu-Wang


def test_corrupt_clients_add_no_noise_and_raise_epsilon():
    n, d, clip, z = 6, 300, 1.0, 1.0
    x = dp.clip_updates(torch.randn(n, d, dtype=torch.float64), clip).updates
    eps = {}
    for bad in (0, 2):
        acc = dp.PrivacyAccountant(0.5, mechanism="discrete")
        oracle = dp.DistributedDPOracle(secagg.QuantizedOracle(bits=32, clip=clip), clip=clip, noise_multiplier=z,
                                        accountant=acc, denominator=float(n), keep_last=True)
        oracle.set_cohort(torch.arange(n) < bad)
        oracle.average(x, torch.ones(n, dtype=torch.float64))
        res = oracle.last_sum
        assert torch.all(res.noise[:bad] == 0) and torch.all(res.noise[bad:].abs().sum(1) > 0)
        assert acc.pending[0].noise_multiplier == pytest.approx(z * math.sqrt((n - bad) / n), rel=1e-3)
        acc.end_round()
        eps[bad] = acc.epsilon(DELTA)
    assert eps[2] > eps[0]


def test_corrupt_clients_raise_the_simulated_distributed_epsilon():
    kw = dict(dp="user-distributed", secagg="quantized", bits=32, rounds=2)
    clean = Simulation(small(**kw))
    clean.run()
    attacked = Simulation(small(attack="gaussian", corrupt=0.34, **kw))
    attacked.run()
    assert len(attacked.corrupted) == 2
    assert attacked.history[-1].epsilon > clean.history[-1].epsilon
    assert attacked.result()["dp"]["corrupt_clients_add_no_noise"] == 2


def _zw_reference(z, q, alpha):
    """Zhu and Wang 2019, Thm. 5, term by term in 50-digit arithmetic (a plain reference)."""
    mpmath.mp.dps = 50
    z, q = mpmath.mpf(z), mpmath.mpf(q)
    eps = lambda l: l / (2 * z * z)     # noqa: E731
    s = (1 - q) ** (alpha - 1) * (alpha * q - q + 1) + mpmath.binomial(alpha, 2) * q ** 2 * (1 - q) ** (alpha - 2) \
        * mpmath.e ** eps(2)
    s += 3 * mpmath.fsum(mpmath.binomial(alpha, l) * (1 - q) ** (alpha - l) * q ** l * mpmath.e ** ((l - 1) * eps(l))
                         for l in range(3, alpha + 1))
    return float(min(mpmath.log(s) / (alpha - 1), eps(alpha)))


@pytest.mark.parametrize("z,q", [(1.0, 0.05), (0.7, 0.3), (3.0, 0.01)])
def test_zhu_wang_bound_matches_a_plain_reference(z, q):
    bound = dp.subsampled_rdp_bound(z, q)
    orders = dp.accounting.DISCRETE_ORDERS
    for i in (0, 1, 5, 20, len(orders) - 1):
        assert bound[i] == pytest.approx(_zw_reference(z, q, orders[i]), rel=1e-9)
    # it bounds the exact sampled Gaussian's RDP (Mironov et al. 2019, Opacus) from above, and
    # equals the Gaussian's alpha / (2 z^2) without sampling
    from opacus.accountants.analysis.rdp import compute_rdp
    exact = compute_rdp(q=q, noise_multiplier=z, steps=1, orders=list(orders))
    assert np.all(bound >= exact * (1 - 1e-9))
    assert np.allclose(dp.subsampled_rdp_bound(z, 1.0), np.array(orders) / (2 * z * z))


def test_distributed_accounting_is_the_provable_bound_and_labels_the_estimate():
    z, q, T = 1.0, 0.05, 200
    provable = dp.epsilon(z, q, T, 1e-4, mechanism="discrete")
    assert provable > dp.epsilon(z, q, T, 1e-4, accountant="rdp")          # costlier than the Gaussian's
    assert dp.epsilon(z, 1.0, 3, DELTA, mechanism="discrete") == pytest.approx(
        dp.epsilon(z, 1.0, 3, DELTA, accountant="rdp", mechanism="gaussian"), rel=1e-12)  # q = 1: same RDP
    zt = dp.noise_for_epsilon(4.0, q, T, 1e-4, mechanism="discrete")
    assert 3.95 <= dp.epsilon(zt, q, T, 1e-4, mechanism="discrete") <= 4.0
    acc = dp.PrivacyAccountant(q, mechanism="discrete", accountant="prv")
    acc.step(z, steps=T)
    assert acc.accountant == "rdp" and "PRV" in acc.note()
    assert acc.epsilons(1e-4) == {"rdp": pytest.approx(provable), "prv": None}
    assert acc.gaussian_estimate(1e-4) < provable


@pytest.mark.parametrize("base", [secagg.PlaintextOracle(), secagg.MaskedOracle(bits=32, clip=1.0)])
def test_single_client_single_coordinate_calls(base):
    # the smallest Poisson cohort: one client, one coordinate, both mechanisms
    x = torch.tensor([[0.5]], dtype=torch.float64)
    central = dp.CentralDPOracle(base, clip=1.0, noise_multiplier=2.0, denominator="noisy")
    out = central.average(x, torch.ones(1, dtype=torch.float64))
    assert out.shape == (1,) and torch.isfinite(out).all() and central.last_total_weight >= 1.0
    if isinstance(base, secagg.QuantizedOracle):
        acc = dp.PrivacyAccountant(1.0, mechanism="discrete")
        dist = dp.DistributedDPOracle(base, clip=1.0, noise_multiplier=2.0, accountant=acc, denominator=1.0)
        assert dist.average(x, torch.ones(1, dtype=torch.float64)).shape == (1,)
        assert acc.pending[0].noise_multiplier == pytest.approx(2.0, rel=1e-3)
