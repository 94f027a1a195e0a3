"""Robust aggregation rules on constructed vectors with known answers, and their secagg forms."""
import math

import numpy as np
import pytest
import torch

import secagg
from protocols.rules import RULES, make_rule
from protocols.rules.common import coordinate_median, pairwise_sq_distances
from protocols.rules.mixtailor import CLASSES, aggregate_member
from secagg import ClientUpdates, PlaintextOracle, QuantizedOracle, SecureAggregationViolation


def plain(x, **kw):
    return ClientUpdates(x, secure=False, rule="test", **kw)


def cluster_with_outliers(n_good=8, n_bad=3, d=10, seed=0, spread=0.01, far=50.0):
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(d, generator=g)
    good = center + spread * torch.randn(n_good, d, generator=g)
    bad = center + far * torch.randn(n_bad, d, generator=g)
    return center, good, bad


# --------------------------------------------------------------------------- distances

def test_pairwise_distances_from_one_gram_matrix_match_cdist():
    x = torch.randn(9, 40, dtype=torch.float64)
    assert torch.allclose(pairwise_sq_distances(x), torch.cdist(x, x) ** 2, atol=1e-10)


# --------------------------------------------------------------------------- Krum family

def test_krum_picks_the_planted_point():
    center, good, bad = cluster_with_outliers()
    x = torch.cat([bad[:2], good[:4], center[None], good[4:], bad[2:]])   # planted at index 6
    out = make_rule("krum", f=3)(plain(x))
    assert torch.equal(out, center)


def test_krum_and_multikrum_refuse_f_too_large():
    x = torch.randn(8, 5)
    with pytest.raises(ValueError, match=r"f=3 needs n > 2f \+ 2 = 8 clients.*at most 2"):
        make_rule("krum", f=3)(plain(x))
    with pytest.raises(ValueError, match="multikrum with f=3"):
        make_rule("multikrum", f=3)(plain(x))
    with pytest.raises(ValueError, match="f=-1"):
        make_rule("krum", f=-1)(plain(x))
    with pytest.raises(ValueError, match="m=9 exceeds"):
        make_rule("multikrum", f=1, m=9)(plain(x))


def test_multikrum_averages_the_cluster_and_m1_is_krum():
    center, good, bad = cluster_with_outliers()
    x = torch.cat([good, bad])
    out = make_rule("multikrum", f=3)(plain(x))                  # m = n - f = 8: exactly the cluster
    assert torch.allclose(out, good.mean(0), atol=1e-6)
    assert torch.equal(make_rule("multikrum", f=3, m=1)(plain(x)), make_rule("krum", f=3)(plain(x)))


def bulyan_reference(x: np.ndarray, f: int) -> np.ndarray:
    """Naive Bulyan: Cronus Alg. 3 with Krum (eq. 2) and eq. 3, loops everywhere."""
    n = len(x)
    theta, beta = n - 2 * f, n - 4 * f
    remaining, sel = list(range(n)), []
    for _ in range(theta):
        r = len(remaining)
        k = min(max(r - f - 2, 0), r - 1)
        scores = []
        for i in remaining:
            ds = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in remaining if j != i)
            scores.append(sum(ds[:k]))
        pick = remaining[int(np.argmin(scores))]
        sel.append(pick)
        remaining.remove(pick)
    s = x[sel]
    med = np.median(s, axis=0)
    out = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        order = np.argsort(np.abs(s[:, j] - med[j]), kind="stable")[:beta]
        out[j] = s[order, j].mean()
    return out


def test_bulyan_matches_a_naive_reference_and_ignores_outliers():
    center, good, bad = cluster_with_outliers(n_good=9, n_bad=2, d=6)
    x = torch.cat([good, bad]).double()
    out = make_rule("bulyan", f=2)(plain(x))
    assert torch.allclose(out, torch.from_numpy(bulyan_reference(x.numpy(), 2)), atol=1e-12)
    assert (out - center.double()).abs().max() < 0.05
    r = torch.randn(15, 7, dtype=torch.float64)
    assert torch.allclose(make_rule("bulyan", f=3)(plain(r)), torch.from_numpy(bulyan_reference(r.numpy(), 3)))


def test_bulyan_refuses_f_too_large():
    with pytest.raises(ValueError, match=r"bulyan with f=3 needs n >= 4f \+ 3 = 15 clients.*got n=12.*at most 2"):
        make_rule("bulyan", f=3)(plain(torch.randn(12, 4)))


# --------------------------------------------------------------------------- coordinate-wise

def test_median_equals_torch_median_for_odd_and_numpy_median_for_even_n():
    x = torch.randn(11, 50)
    assert torch.equal(make_rule("median")(plain(x)), torch.median(x, dim=0).values)
    y = torch.randn(12, 50, dtype=torch.float64)
    y[:, 0] = torch.tensor([1., 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2], dtype=torch.float64)   # ties at the middle
    y[:, 1] = torch.tensor([0., 0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5], dtype=torch.float64)
    assert torch.allclose(make_rule("median")(plain(y)), torch.from_numpy(np.median(y.numpy(), axis=0)))
    assert torch.allclose(coordinate_median(y.T, dim=1), torch.from_numpy(np.median(y.numpy(), axis=0)))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.45])
def test_trimmed_mean_equals_numpy(beta):
    x = torch.randn(13, 37, dtype=torch.float64)
    k = int(math.floor(beta * 13))
    ref = np.sort(x.numpy(), axis=0)[k:13 - k].mean(axis=0)
    assert torch.allclose(make_rule("trimmedmean", beta=beta)(plain(x)), torch.from_numpy(ref))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert np.allclose(scipy_stats.trim_mean(x.numpy(), beta, axis=0), ref)


@pytest.mark.parametrize("beta", [0.5, -0.1, 0.7])
def test_trimmed_mean_refuses_beta_out_of_range(beta):
    with pytest.raises(ValueError, match=rf"beta={beta} must lie in \[0, 0.5\)"):
        make_rule("trimmedmean", beta=beta)(plain(torch.randn(6, 3)))


@pytest.mark.parametrize("name", ["krum", "median", "trimmedmean", "residual", "robustfilter"])
def test_reveal_rules_refuse_non_finite_updates(name):
    x = torch.randn(12, 5)
    x[4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values in the updates of client\(s\) \[4\]"):
        make_rule(name)(plain(x))


# --------------------------------------------------------------------------- norm clipping

def test_normclip_clips_client_side_and_averages():
    x = torch.randn(6, 20, dtype=torch.float64) * 3
    w = torch.arange(1, 7, dtype=torch.float64)
    norms = x.norm(dim=1, keepdim=True)
    clipped = x * torch.clamp(2.0 / norms, max=1.0)
    ref = (w[:, None] * clipped).sum(0) / w.sum()
    assert torch.allclose(make_rule("normclip", max_norm=2.0)(plain(x, num_samples=w)), ref)
    with pytest.raises(ValueError, match="max_norm=0"):
        make_rule("normclip", max_norm=0)(plain(x))


# --------------------------------------------------------------------------- FLTrust

def fltrust_reference(x, g0, relu=True, normalize="full", with_server=False):
    """FLTrust eqs. (2)-(4) on the plaintext matrix."""
    c = (x @ g0) / (x.norm(dim=1) * g0.norm())
    ts = c.clamp_min(0) if relu else c
    ratio = g0.norm() / x.norm(dim=1)
    scale = ratio if normalize == "full" else ratio.clamp(max=1) if normalize == "partial" else torch.ones_like(ratio)
    num, den = (ts[:, None] * scale[:, None] * x).sum(0), ts.sum()
    if with_server:
        num, den = num + g0, den + 1
    return num / den


def fltrust_data(n=10, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    g0 = torch.randn(d, generator=g, dtype=torch.float64) * 0.1
    x = g0 + 0.15 * torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:3] = -x[:3] * 4                                    # three clients point away from g0
    return x, g0


@pytest.mark.parametrize("kw", [{}, {"relu": False}, {"normalize": "none"}, {"normalize": "partial"},
                                {"with_server": True}, {"relu": False, "with_server": True}])
def test_fltrust_secagg_form_equals_its_plaintext_form(kw):
    x, g0 = fltrust_data()
    ref = fltrust_reference(x, g0, **kw)
    rule = make_rule("fltrust", **kw)
    exact = rule(ClientUpdates(x, oracle=PlaintextOracle(), secure=True, rule="fltrust",
                               context={"server_update": g0}))
    assert torch.allclose(exact, ref, atol=1e-12)
    handle = ClientUpdates(x.float(), oracle=QuantizedOracle(bits=32, clip=2.0), secure=True, rule="fltrust",
                           context={"server_update": g0.float()})
    out = rule(handle)
    assert handle.transcript.summary()["individual_reveals"] == 0 and handle.oracle_calls == 1
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # The plaintext formula computed from the revealed matrix, as the reveal-based server would.
    revealed = ClientUpdates(x, secure=False, rule="fltrust").reveal()
    assert torch.allclose(fltrust_reference(revealed, g0, **kw), ref)


def test_fltrust_trust_scores_and_weight_bound():
    x, g0 = fltrust_data()
    handle = ClientUpdates(x, secure=True, rule="fltrust", context={"server_update": g0})
    make_rule("fltrust")(handle)
    eff = handle.transcript.calls[-1].ground_truth["effective_weights"]
    assert torch.all(eff[:3] == 0) and torch.all(eff[3:] > 0)        # negative cosines get trust 0
    assert "weight_bound" not in handle.transcript.calls[-1].revealed  # public bound 1, nothing leaked


def test_fltrust_needs_the_server_update_and_handles_no_trust():
    x, g0 = fltrust_data()
    with pytest.raises(ValueError, match=r"context\['server_update'\]"):
        make_rule("fltrust")(plain(x))
    with pytest.raises(ValueError, match="shape"):
        make_rule("fltrust")(plain(x, context={"server_update": g0[:5]}))
    with pytest.raises(ValueError, match="normalize='half'"):
        make_rule("fltrust", normalize="half")(plain(x, context={"server_update": g0}))
    away = -x[3:].abs() * torch.sign(g0)                               # every client opposes g0
    assert torch.equal(make_rule("fltrust")(plain(away, context={"server_update": g0})), torch.zeros_like(g0))
    assert torch.equal(make_rule("fltrust", with_server=True)(plain(away, context={"server_update": g0})), g0)
    assert make_rule("fltrust").needs_server_update


# --------------------------------------------------------------------------- MWU / CRH

def mwu_avg_reference(x, iterations=3, p=2.0):
    s = torch.zeros(len(x), dtype=x.dtype)
    theta = x.mean(0)
    for _ in range(iterations):
        s = s + torch.linalg.vector_norm(x - theta, ord=p, dim=1)
        w = torch.softmax(-s, dim=0)
        theta = w @ x
    return theta


def crh_reference(x, iterations=3, p=2.0, nu=1e-6):
    theta = x.mean(0)
    for _ in range(iterations):
        dist = torch.linalg.vector_norm(x - theta, ord=p, dim=1)
        w = -torch.log(torch.clamp(dist / dist.sum(), min=nu))
        theta = w @ x / w.sum()
    return theta


def test_mwu_avg_matches_the_log_domain_reference_even_far_from_everyone():
    x = torch.randn(9, 30, dtype=torch.float64) * 0.2
    assert torch.allclose(make_rule("mwu-avg")(plain(x)), mwu_avg_reference(x), atol=1e-12)
    x[0] += 400.0            # the plain mean moves ~243 from every honest client: exp(-243) underflows float32
    handle = plain(x.float())
    out = make_rule("mwu-avg")(handle)
    assert torch.allclose(out.double(), mwu_avg_reference(x), atol=1e-5)
    assert handle.transcript.calls[-1].ground_truth["effective_weights"][0] == 0    # the outlier's weight vanished
    assert "weight_bound" in handle.transcript.calls[1].revealed     # the max weight is what the server learns
    x[0] += 1e5                                                      # exp(-distance) underflows even in float64
    with pytest.raises(ValueError, match="underflowed.*larger temperature"):
        make_rule("mwu-avg")(plain(x))
    handle = plain(x)
    make_rule("mwu-avg", temperature=1e4)(handle)
    assert handle.transcript.calls[-1].ground_truth["effective_weights"][0] < 1e-12


@pytest.mark.parametrize("name", ["crh", "mwu-opt"])
def test_crh_matches_the_reference(name):
    x = torch.randn(9, 30, dtype=torch.float64)
    x[:2] += 20
    out = make_rule(name, p=1.5)(plain(x))
    assert torch.allclose(out, crh_reference(x, p=1.5), atol=1e-10)


def test_mwu_rules_validate_parameters():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="iterations=0"):
        make_rule("mwu-avg", iterations=0)(plain(x))
    with pytest.raises(ValueError, match="p=0.5"):
        make_rule("crh", p=0.5)(plain(x))
    with pytest.raises(ValueError, match="temperature=0"):
        make_rule("mwu-avg", temperature=0)(plain(x))


# --------------------------------------------------------------------------- RobustFilter

def test_robustfilter_removes_the_planted_outliers():
    g = torch.Generator().manual_seed(1)
    good = torch.randn(16, 25, generator=g, dtype=torch.float64)
    direction = torch.randn(25, generator=g, dtype=torch.float64)
    bad = good[:4].mean(0) + 30 * direction[None] * torch.tensor([[1.0], [1.1], [1.2], [1.3]], dtype=torch.float64)
    x = torch.cat([good, bad])
    out = make_rule("robustfilter", epsilon=0.2)(plain(x))      # 2 removed per iteration, 2 iterations
    assert torch.allclose(out, good.mean(0))
    with pytest.raises(ValueError, match="epsilon=1.5"):
        make_rule("robustfilter", epsilon=1.5)(plain(x))


# --------------------------------------------------------------------------- residual reweighting

def residual_reference(x: np.ndarray, lam=2.0, delta=0.01, gamma=1.48) -> np.ndarray:
    """Fu et al. Alg. 1, one parameter at a time, with explicit loops and np.median."""
    k, d = x.shape
    ycorr = x.copy()
    wsig = np.zeros((k, d))
    for n in range(d):
        y = x[:, n]
        xr = np.empty(k)
        xr[np.argsort(y, kind="stable")] = np.arange(k)          # x_n: ranks
        slopes = [np.median([(y[j] - y[i]) / (xr[j] - xr[i]) for j in range(k) if j != i]) for i in range(k)]
        inters = [np.median([(xr[j] * y[i] - xr[i] * y[j]) / (xr[j] - xr[i]) for j in range(k) if j != i])
                  for i in range(k)]
        b1, b0 = np.median(slopes), np.median(inters)
        fit = b0 + b1 * xr
        r = y - fit
        tau = gamma * np.median(np.abs(r)) * (1 + 5 / (k - 1))
        design = np.stack([np.ones(k), xr], axis=1)
        hat = design @ np.linalg.inv(design.T @ design) @ design.T
        s = np.sqrt(1 - np.diag(hat))
        e = r / tau
        z = lam * np.sqrt(2 / k)
        w = np.where(e == 0, 1.0, s / np.where(e == 0, 1, e) * np.clip(e / s, -z, z))
        keep = w > delta
        w = w * keep
        ycorr[:, n] = np.where(keep, y, fit)
        wsig[:, n] = w * np.std(w, ddof=1)
    weights = wsig.sum(axis=1)
    return (weights[:, None] * ycorr).sum(axis=0) / weights.sum()


def test_residual_reweighting_matches_a_per_parameter_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 12, generator=g, dtype=torch.float64)
    x[0, :4] = 40.0                                              # extreme values get corrected
    out = make_rule("residual")(plain(x))
    assert torch.allclose(out, torch.from_numpy(residual_reference(x.numpy())), atol=1e-10)


def test_residual_reweighting_downweights_a_poisoned_model():
    center, good, bad = cluster_with_outliers(n_good=9, n_bad=1, d=50, spread=0.1, far=5.0)
    rule = make_rule("residual")
    out = rule(plain(torch.cat([good, bad])))
    assert rule.last_weights[-1] < 0.5 * rule.last_weights[:-1].min()
    assert (out - good.mean(0)).norm() < 0.2 * (bad[0] - good.mean(0)).norm()
    with pytest.raises(ValueError, match="at least 3 clients"):
        rule(plain(torch.randn(2, 4)))


# --------------------------------------------------------------------------- MixTailor

def test_mixtailor_pool_and_seeded_draw():
    rule = make_rule("mixtailor", seed=5)
    pool = rule.pool()
    assert len(pool) == 64 and all(sum(m.family == c for m in pool) == 16 for c in CLASSES)
    assert all(1 <= m.p <= 16 for m in pool) and pool == make_rule("mixtailor", seed=5).pool()
    assert len({m.p for m in pool}) > 4
    draws = [rule.draw(r) for r in range(40)]
    assert draws == [make_rule("mixtailor", seed=5).draw(r) for r in range(40)]
    assert len({pool[i].family for i in draws}) == 4
    assert draws != [make_rule("mixtailor", seed=6).draw(r) for r in range(40)]


def test_mixtailor_applies_the_drawn_member():
    center, good, bad = cluster_with_outliers(n_good=10, n_bad=2, d=8)
    x = torch.cat([good, bad])
    rule = make_rule("mixtailor", seed=1)
    for rnd in range(6):
        out = rule(plain(x, context={"round": rnd}))
        member = rule.pool()[rule.draw(rnd)]
        assert rule.last_choice["family"] == member.family
        assert torch.allclose(out, aggregate_member(member, x, 2))
        assert (out - center).abs().max() < 0.1                 # every member resists 2 far outliers


def test_mixtailor_refuses_f_too_large_for_bulyan():
    with pytest.raises(ValueError, match="mixtailor with f=3 needs n >= 4f"):
        make_rule("mixtailor", f=3)(plain(torch.randn(12, 3)))


# --------------------------------------------------------------------------- secure aggregation

MINE = ["bulyan", "crh", "fltrust", "krum", "median", "mixtailor", "multikrum", "mwu-avg", "mwu-opt", "normclip",
        "residual", "robustfilter", "trimmedmean"]
COMPATIBLE = ["fedavg"] + [n for n in MINE if RULES[n].secagg_compatible]


def test_declared_secagg_compatibility():
    assert COMPATIBLE == ["fedavg", "crh", "fltrust", "mwu-avg", "mwu-opt", "normclip"]


def _secure_handle(oracle, x, g0):
    return ClientUpdates(x, oracle=oracle, secure=True, rule="x", num_samples=torch.arange(1, x.shape[0] + 1).float(),
                         context={"server_update": g0})


@pytest.mark.parametrize("name", COMPATIBLE)
def test_compatible_rules_agree_under_quantized_and_masked_oracles(name):
    g = torch.Generator().manual_seed(7)
    x = 0.1 * torch.randn(8, 24, generator=g)
    x[0] += 0.8                                                   # one outlier
    g0 = x[1:].mean(0)
    q = make_rule(name)(_secure_handle(QuantizedOracle(clip=2.0, seed=3), x, g0))
    ref = make_rule(name)(_secure_handle(PlaintextOracle(), x, g0))
    assert torch.allclose(q, ref, atol=1e-5)
    if not hasattr(secagg, "MaskedOracle"):
        pytest.skip("secagg.MaskedOracle is not available in this build")
    handle = _secure_handle(secagg.MaskedOracle(clip=2.0, seed=3), x, g0)
    m = make_rule(name)(handle)
    assert handle.transcript.summary()["individual_reveals"] == 0
    assert torch.equal(m, q)


@pytest.mark.parametrize("name", [n for n in MINE if not RULES[n].secagg_compatible])
def test_reveal_rules_name_themselves_under_secagg(name):
    handle = ClientUpdates(torch.randn(12, 6), oracle=QuantizedOracle(clip=10.0), secure=True, rule=name)
    with pytest.raises(SecureAggregationViolation, match=name):
        make_rule(name)(handle)
