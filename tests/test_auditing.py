"""membership.auditing: epsilon lower bounds (Jagielski et al. 2020; Steinke, Nasr, Jagielski 2023) and
the Gaussian estimate (Andrew et al. 2024), each against an independent computation."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import membership as M


def _cp_beta(k, n, alpha):
    """Clopper-Pearson by scipy.stats.beta (the textbook form)."""
    lo = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k)
    return lo, hi


@pytest.mark.parametrize("k,n", [(0, 10), (1, 1), (3, 10), (10, 10), (57, 1000), (999, 1000), (0, 5000)])
def test_clopper_pearson_equals_the_beta_quantiles(k, n):
    for alpha in (0.025, 0.05, 0.2):
        np.testing.assert_allclose(M.clopper_pearson(k, n, alpha), _cp_beta(k, n, alpha), atol=1e-10)


@pytest.mark.parametrize("tp,n_pos,fp,n_neg,delta", [(90, 100, 5, 100, 0.0), (900, 1000, 3, 1000, 1e-5),
                                                   (50, 100, 50, 100, 0.0), (30, 100, 0, 2000, 1e-3),
                                                   (100, 100, 0, 100, 0.0), (5, 100, 90, 100, 0.0)])
def test_epsilon_from_counts_agrees_with_an_independent_beta_computation(tp, n_pos, fp, n_neg, delta):
    a = 0.05 / 2
    tpr_lo, tpr_hi = _cp_beta(tp, n_pos, a)
    fpr_lo, fpr_hi = _cp_beta(fp, n_neg, a)
    cands = [0.0]
    for num, den in ((tpr_lo, fpr_hi), (1 - fpr_hi, 1 - tpr_lo)):
        if num - delta > 0 and den > 0:
            cands.append(math.log((num - delta) / den))
    assert M.epsilon_from_counts(tp, n_pos, fp, n_neg, delta, 0.95) == pytest.approx(max(cands), abs=1e-6)


def test_epsilon_lower_from_scores_uses_a_split_and_is_zero_without_signal():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(2000), np.zeros(2000)].astype(int)
    strong = np.where(y == 1, rng.normal(4, 1, 4000), rng.normal(0, 1, 4000))
    b = M.epsilon_lower_from_scores(strong, y, delta=1e-5, seed=1)
    assert b["epsilon_lower"] > 2 and b["n_pos"] == 1000 and b["n_neg"] == 1000   # the held-out half
    # the bound at the chosen threshold, recomputed from the held-out counts
    assert b["epsilon_lower"] == pytest.approx(M.epsilon_from_counts(b["tp"], b["n_pos"], b["fp"], b["n_neg"], 1e-5))
    assert M.epsilon_lower_from_scores(rng.normal(size=4000), y, seed=2)["epsilon_lower"] < 0.2
    assert M.epsilon_lower_from_scores(np.zeros(4000), y)["epsilon_lower"] == 0.0      # constant scores
    with pytest.raises(ValueError, match="cannot be split"):
        M.epsilon_lower_from_scores([0.1, 0.2, 0.3], [1, 0, 0])


def test_one_run_p_value_equals_a_direct_binomial_sum():
    m, r, v, eps, delta = 200, 40, 33, 1.2, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q ** j * (1 - q) ** (r - j) for j in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = max(sum(pmf[v - i:v]) / i for i in range(1, v + 1))
    assert M.one_run_p_value(m, r, v, eps, delta) == pytest.approx(beta + alpha * delta * 2 * m, rel=1e-9)
    assert M.one_run_p_value(m, r, v, eps, 0.0) == pytest.approx(beta, rel=1e-9)
    # perfect guesses with delta = 0: p = q^r, so eps_lower = logit(0.05^(1/r))
    e = M.one_run_epsilon_lower(1000, 100, 100, 0.0, 0.95)
    t = 0.05 ** (1 / 100)
    assert e == pytest.approx(math.log(t / (1 - t)), abs=1e-6)
    assert M.one_run_epsilon_lower(1000, 100, 50, 0.0) == 0.0                  # chance-level guesses


def test_one_run_audit_is_sound_on_a_randomized_response_mechanism():
    """epsilon-DP randomized response on each canary's bit: the 95% bound stays below epsilon in
    (nearly) every repetition and is informative."""
    eps, m = 2.0, 1000
    q = math.exp(eps) / (1 + math.exp(eps))
    rng = np.random.default_rng(0)
    bounds = []
    for _ in range(20):
        bits = rng.random(m) < 0.5
        flip = rng.random(m) > q
        seen = np.where(flip, ~bits, bits)
        scores = seen + 1e-3 * rng.random(m)      # the attacker reads the released bit
        bounds.append(M.one_run_audit(scores, bits, delta=0.0)["epsilon_lower"])
    assert sum(b > eps for b in bounds) <= 2
    assert np.median(bounds) > 0.5 * eps


def test_delta_two_gaussians_equals_numerical_integration_and_the_gaussian_mechanism():
    for mp, sp, mq, sq in [(1.0, 1.0, 0.0, 1.0), (0.5, 1.3, 0.0, 1.0), (0.0, 0.5, 0.0, 2.0), (3.0, 0.2, 0.0, 1.0)]:
        for eps in (0.0, 0.7, 2.5):
            def f(x):
                return max(0.0, stats.norm.pdf(x, mp, sp) - math.exp(eps) * stats.norm.pdf(x, mq, sq))
            ref = integrate.quad(f, -40, 40, points=[mp, mq], limit=400, epsabs=1e-13)[0]
            assert M.delta_two_gaussians(eps, mp, sp, mq, sq) == pytest.approx(ref, abs=1e-8)
    # equal variances: the Gaussian mechanism's exact delta (Balle & Wang 2018, Thm. 8)
    mu = 1.5
    for eps in (0.5, 2.0):
        exact = stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu)
        assert M.delta_two_gaussians(eps, mu, 1.0, 0.0, 1.0) == pytest.approx(exact, rel=1e-9)
    e = M.epsilon_two_gaussians(mu, 1.0, 0.0, 1.0, 1e-5)
    assert M.delta_two_gaussians(e, mu, 1.0, 0.0, 1.0) == pytest.approx(1e-5, rel=1e-5)


def test_gaussian_estimate_recovers_the_mechanism_and_is_called_an_estimate():
    rng = np.random.default_rng(1)
    mu, delta = 2.0, 1e-5
    est = M.gaussian_epsilon_estimate(rng.normal(mu, 1, 20000), rng.normal(0, 1, 20000), delta)
    truth = M.epsilon_two_gaussians(mu, 1, 0, 1, delta)
    assert est["epsilon_estimate"] == pytest.approx(truth, rel=0.05)
    assert "estimate" in est["method"].lower() or "Gaussian fits" in est["method"]
    assert "epsilon_lower" not in est
    with pytest.raises(ValueError, match="at least 2"):
        M.gaussian_epsilon_estimate([1.0], [0.0, 1.0], delta)


def test_canary_directions_and_cosines():
    g = torch.Generator().manual_seed(0)
    u = M.random_unit_directions(500, 4000, g)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(500))
    c = M.cosines(u, u[0])
    assert float(c[0]) == pytest.approx(1.0) and abs(float(c[1:].std()) - 4000 ** -0.5) < 0.003
    assert torch.equal(M.cosines(u[:3], torch.zeros(4000)), torch.zeros(3, dtype=torch.float64))
    two = M.cosines(u[:3], torch.stack([u[0], -u[1]]))
    assert two.shape == (3, 2) and float(two[1, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="d >= 2"):
        M.random_unit_directions(3, 1, g)
