"""RFA (Pillutla, Kakade, Harchaoui 2022): Algorithms 2-4, Propositions 2 and 3, under secagg."""
import json

import pytest
import torch

import rfa
import secagg
from rfa import geometric_median_reference, one_step, smoothed_weiszfeld
from secagg import ClientUpdates, PlaintextOracle, QuantizedOracle

def _points(n=30, d=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale


def _handle(x, oracle=None, **kw):
    return ClientUpdates(x, oracle=oracle if oracle is not None else PlaintextOracle(), secure=True,
                         rule="rfa", **kw)


def _g(x, v, alphas=None):
    """Ground-truth objective (eq. 6, normalised alphas) in float64."""
    x, v = x.double(), v.double()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64) if alphas is None \
        else alphas.double() / alphas.double().sum()
    return float(a @ torch.linalg.vector_norm(x - v, dim=1))


ORACLES = {
    "plaintext": lambda: PlaintextOracle(),
    "quantized64": lambda: QuantizedOracle(bits=64, clip=10.0, seed=1),
    "quantized32": lambda: QuantizedOracle(bits=32, clip=10.0, seed=1),
}


# ----------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("oracle", sorted(ORACLES))
def test_objective_within_proposition_2_bound(oracle):
    x = _points()
    ref = geometric_median_reference(x)
    assert ref.converged
    res = smoothed_weiszfeld(_handle(x, ORACLES[oracle]()), max_calls=3)
    gap = _g(x, res.aggregate) - ref.objective
    bound = res.prop2_bound(ref.median)
    assert 0 <= gap + 1e-6 and gap <= bound, (gap, bound)
    # The server's objective (through the oracle) is the true one, and it decreases.
    for v, g in zip(res.iterates, res.objective):
        assert g == pytest.approx(_g(x, v), rel=1e-5)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(res.objective, res.objective[1:]))


def test_many_calls_reach_the_reference_median():
    x = _points(n=25, d=5, seed=3)
    ref = geometric_median_reference(x)
    res = smoothed_weiszfeld(_handle(x.double()), max_calls=200, tol=1e-14)
    assert torch.allclose(res.aggregate, ref.median, atol=1e-6)
    assert res.objective[-1] == pytest.approx(ref.objective, rel=1e-10)


def test_reference_is_the_median_in_one_dimension():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    ref = geometric_median_reference(x)
    assert float(ref.median) == pytest.approx(2.0, abs=1e-6)


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("oracle", ["plaintext", "quantized64"])
def test_geometric_median_resists_a_quarter_of_far_outliers(oracle):
    g = torch.Generator().manual_seed(5)
    n, d = 40, 20
    mu = torch.full((d,), 0.5)
    x = mu + 0.3 * torch.randn(n, d, generator=g)
    bad = torch.randperm(n, generator=g)[: n // 4]
    x[bad] = 50.0 + torch.randn(len(bad), d, generator=g)       # 25% moved far away
    inlier_mean = x[torch.isin(torch.arange(n), bad, invert=True)].mean(0)
    make = {"plaintext": PlaintextOracle, "quantized64": lambda: QuantizedOracle(bits=64, clip=100.0)}[oracle]
    mean_err = float((x.mean(0) - inlier_mean).norm())
    spread = float((x - inlier_mean).norm(dim=1).median())   # typical inlier distance
    assert mean_err > 50.0 > spread
    # The paper's budget R = 3 from the (corrupted) mean already removes 95% of its error ...
    res = smoothed_weiszfeld(_handle(x, make()), max_calls=3)
    assert float((res.aggregate - inlier_mean).norm()) < 0.06 * mean_err
    # ... and a few more calls land inside the inlier cloud, near the exact median.
    res = smoothed_weiszfeld(_handle(x, make()), max_calls=8)
    gm_err = float((res.aggregate - inlier_mean).norm())
    assert gm_err < 0.5 * spread, (gm_err, spread)
    ref = geometric_median_reference(x)
    assert float((ref.median - inlier_mean.double()).norm()) < 0.5 * spread


def test_one_step_downweights_large_updates():
    g = torch.Generator().manual_seed(6)
    x = 0.1 * torch.randn(20, 10, generator=g)
    x[:5] = 100.0 * torch.randn(5, 10, generator=g)              # large corrupted updates
    res = one_step(_handle(x))
    assert float(res.aggregate.norm()) < 1.0 < float(x.mean(0).norm())


# ----------------------------------------------------------------------------- privacy


@pytest.mark.parametrize("oracle", ["plaintext", "quantized64", "quantized32"])
def test_max_effective_weight_within_proposition_3(oracle):
    x = _points(n=20, d=6, seed=2)
    res = smoothed_weiszfeld(_handle(x, ORACLES[oracle]()), max_calls=4)
    xd = x.double()
    # Ground truth from the broadcast iterates v^(0..R-1) and the points.
    dists = torch.stack([torch.linalg.vector_norm(xd - v.double(), dim=1) for v in res.iterates[:-1]])
    nu_bar = float(dists.clamp(min=res.nu).min())
    diameter = float(torch.cdist(xd, xd).max())
    m = x.shape[0]
    paper = diameter / (diameter + (m - 1) * nu_bar)
    assert res.max_effective_weight <= paper
    assert res.max_effective_weight <= res.privacy_bound * (1 + 1e-6) <= paper * (1 + 1e-6)
    assert res.prop3_bound(diameter, nu_bar) == pytest.approx(paper)
    assert res.ground_truth.nu_bar == pytest.approx(nu_bar, rel=1e-4)
    # The effective weights are Algorithm 2's beta_i / sum beta at each broadcast iterate.
    for eff, dist in zip(res.ground_truth.effective_weights, dists):
        beta = 1.0 / dist.clamp(min=res.nu)
        assert torch.allclose(eff.double(), beta / beta.sum(), atol=1e-6)


# ----------------------------------------------------------------------------- transcript, secagg


@pytest.mark.parametrize("given_v0", [False, True])
@pytest.mark.parametrize("track", [False, True])
def test_transcript_holds_exactly_the_counted_calls(given_v0, track):
    x = _points(n=10, d=4)
    h = _handle(x)
    h.secure_average(label="before")                    # calls of others are not counted
    h.transcript.round = 7
    v0 = x.median(0).values if given_v0 else None
    res = smoothed_weiszfeld(h, max_calls=3, v0=v0, track_objective=track)
    expected = (0 if given_v0 else 1) + 3 + (4 if track else 0)
    assert res.oracle_calls == expected == len(h.transcript) - 1 == h.oracle_calls - 1
    assert len(h.transcript.calls_in_round(7)) == expected
    assert res.labels == [c.label for c in h.transcript.calls[1:]]
    assert sum(lbl.startswith("rfa:w") for lbl in res.labels) == res.weiszfeld_calls == 3
    assert len(res.objective) == (4 if track else 0)
    assert len(res.iterates) == 4 and torch.equal(res.iterates[-1], res.aggregate)
    for view in h.transcript.server_view():
        assert "ground_truth" not in view and "effective_weights" not in view
    assert h.transcript.summary()["individual_reveals"] == 0


def test_reveal_is_never_called(monkeypatch):
    x = _points(n=12, d=5)
    h = _handle(x, QuantizedOracle(bits=64))

    def refuse():
        raise AssertionError("RFA called reveal()")

    monkeypatch.setattr(h, "reveal", refuse)
    smoothed_weiszfeld(h, max_calls=3)
    one_step(h)
    with pytest.raises(secagg.SecureAggregationViolation):
        ClientUpdates.reveal(h)                           # the real method would refuse anyway


@pytest.mark.parametrize("bits", [64, 32])
def test_quantized_matches_plaintext(bits):
    x = _points(n=50, d=200, seed=4)
    p = smoothed_weiszfeld(_handle(x), max_calls=3)
    q = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=bits, seed=7)), max_calls=3)
    assert q.weight_bound == ("nu" if bits == 64 else "revealed")
    scale = p.objective[-1]                               # the typical distance
    err = float((q.aggregate - p.aggregate).norm())
    assert err <= 1e-5 * scale, err
    for a, b in zip(p.objective, q.objective):
        assert b == pytest.approx(a, rel=1e-5)
    # The server's estimate of the quantization error is of the right size.
    assert 0 < q.encoding_error[-1] < 1e-5 * scale
    assert p.encoding_error == [0.0] * 3


def test_weight_bound_policies_and_what_they_reveal():
    x = _points(n=16, d=10)
    h = _handle(x, QuantizedOracle(bits=64))
    res = smoothed_weiszfeld(h, weight_bound="nu")
    assert res.weight_bound == "nu"
    assert all("weight_bound" not in c.revealed for c in h.transcript.calls if ":w" in c.label)
    h = _handle(x, QuantizedOracle(bits=32))
    res = smoothed_weiszfeld(h, weight_bound="revealed")
    assert all("weight_bound" in c.revealed for c in h.transcript.calls if ":w" in c.label)
    # A public float bound on beta_i = alpha_i / max(nu, d_i): 1 / (n * nu) always holds.
    pub = smoothed_weiszfeld(_handle(x), weight_bound=1.0 / (16 * 1e-6))
    assert pub.weight_bound == "public"
    assert torch.allclose(pub.aggregate, smoothed_weiszfeld(_handle(x)).aggregate, atol=1e-5)


def test_nu_policy_refuses_a_narrow_ring():
    x = _points(n=16, d=10)
    with pytest.raises(ValueError, match=r"bits=32.*64-bit ring.*larger nu.*'revealed'"):
        smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=32)), weight_bound="nu")
    # ... and a larger nu makes it fit.
    res = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=32)), weight_bound="nu", nu=1.0,
                             max_encoding_error=1e-5)
    assert res.weight_bound == "nu"


def test_masked_run_equals_quantized_run_bit_for_bit():
    x = _points(n=8, d=32, seed=9)
    q = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=64, seed=3)))
    m = smoothed_weiszfeld(_handle(x, secagg.MaskedOracle(bits=64, seed=3)))
    assert torch.equal(q.aggregate, m.aggregate)
    assert q.objective == m.objective and q.oracle_calls == m.oracle_calls
    q32 = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=32, seed=3)))
    m32 = smoothed_weiszfeld(_handle(x, secagg.MaskedOracle(bits=32, seed=3)))
    assert torch.equal(q32.aggregate, m32.aggregate)


def test_dropouts_each_call_averages_its_survivors():
    n = 12
    x = _points(n=n, d=16, seed=10).double()
    h = _handle(x, secagg.MaskedOracle(bits=64, dropout_rate=0.25, seed=2))
    res = smoothed_weiszfeld(h, max_calls=3)
    calls = {c.label: c for c in h.transcript.calls}
    for r in range(1, 4):
        c = calls[f"rfa:w{r}"]
        surv = torch.tensor(c.survivors)
        assert len(surv) == n - 3
        v = res.iterates[r - 1]
        beta = 1.0 / torch.linalg.vector_norm(x[surv] - v, dim=1)
        assert torch.allclose(res.iterates[r], (beta[:, None] * x[surv]).sum(0) / beta.sum(), atol=1e-9)
        eff = res.ground_truth.effective_weights[r - 1]
        assert float(eff.sum()) == pytest.approx(1.0) and eff[[i for i in range(n) if i not in c.survivors]].eq(0).all()
    for r, g in enumerate(res.objective):          # the objective over each call's survivors
        surv = torch.tensor(calls[f"rfa:g{r}"].survivors)
        assert g == pytest.approx(float(torch.linalg.vector_norm(x[surv] - res.iterates[r], dim=1).sum()) / n,
                                  rel=1e-9)
    assert res.max_effective_weight <= res.privacy_bound * (1 + 1e-9)


def test_tol_stops_early():
    x = _points(n=20, d=5, seed=8)
    h = _handle(x)
    res = smoothed_weiszfeld(h, max_calls=100, tol=1e-4)
    assert res.stop_reason == "tol" and 1 <= res.weiszfeld_calls < 100
    assert res.oracle_calls == 1 + res.weiszfeld_calls + (res.weiszfeld_calls + 1) == len(h.transcript)
    assert smoothed_weiszfeld(_handle(x), max_calls=2).stop_reason == "max_calls"


# ----------------------------------------------------------------------------- one-step


def test_one_step_is_algorithm_3():
    x = _points(n=15, d=6, seed=11)
    h = _handle(x)
    res = one_step(h, nu=1e-6)
    beta = 1.0 / x.double().norm(dim=1).clamp(min=1e-6)
    expected = (beta[:, None] * x.double()).sum(0) / beta.sum()
    assert res.oracle_calls == 1 == len(h.transcript) and res.weiszfeld_calls == 1
    assert torch.equal(res.iterates[0], torch.zeros(6))
    assert torch.allclose(res.aggregate.double(), expected, atol=1e-6)
    assert one_step(_handle(x), track_objective=True).oracle_calls == 3


# ----------------------------------------------------------------------------- alphas


def test_equal_sample_counts_are_equal_alphas():
    x = _points(n=10, d=4)
    a = smoothed_weiszfeld(_handle(x, num_samples=torch.full((10,), 7.0)))
    b = smoothed_weiszfeld(_handle(x), alphas=torch.ones(10))
    assert torch.allclose(a.aggregate, b.aggregate, atol=1e-6)


@pytest.mark.parametrize("oracle", ["plaintext", "quantized64"])
def test_unequal_alphas_give_the_weighted_median(oracle):
    x = _points(n=12, d=4, seed=12).double()
    w = torch.arange(1.0, 13.0, dtype=torch.float64)
    ref = geometric_median_reference(x, w)
    res = smoothed_weiszfeld(_handle(x, ORACLES[oracle](), num_samples=w), max_calls=60, tol=1e-12)
    assert torch.allclose(res.aggregate.double(), ref.median, atol=1e-4)
    assert res.objective[-1] == pytest.approx(ref.objective, rel=1e-6)
    eff = res.ground_truth.effective_weights[0].double()
    beta = (w / w.sum()).double() / torch.linalg.vector_norm(x.double() - res.iterates[0].double(), dim=1)
    assert torch.allclose(eff, beta / beta.sum(), atol=1e-6)
    assert res.max_effective_weight <= res.privacy_bound * (1 + 1e-6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("nu", [0, -1e-6, float("nan"), float("inf"), "1e-6"])
def test_bad_nu(nu):
    with pytest.raises(ValueError, match=r"nu=.* must be a finite number > 0.*1e-6"):
        smoothed_weiszfeld(_handle(_points(n=5, d=3)), nu=nu)


@pytest.mark.parametrize("calls", [0, -2, 1.5, True])
def test_bad_max_calls(calls):
    with pytest.raises(ValueError, match=r"max_calls=.* must be an integer >= 1.*budget R"):
        smoothed_weiszfeld(_handle(_points(n=5, d=3)), max_calls=calls)


def test_bad_alphas():
    h = _handle(_points(n=5, d=3))
    with pytest.raises(ValueError, match=r"alphas\[2\] = -1.0 is negative.*>= 0"):
        smoothed_weiszfeld(h, alphas=torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"alphas\[0\] = nan is not finite"):
        smoothed_weiszfeld(h, alphas=torch.tensor([float("nan"), 1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"alphas must have shape \[5\]"):
        smoothed_weiszfeld(h, alphas=torch.ones(4))
    with pytest.raises(ValueError, match="all zero"):
        smoothed_weiszfeld(h, alphas=torch.zeros(5))
    assert len(h.transcript) == 0                         # refused before any oracle call


def test_other_bad_input():
    h = _handle(_points(n=5, d=3))
    with pytest.raises(ValueError, match=r"v0 must have shape \[3\]"):
        smoothed_weiszfeld(h, v0=torch.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        smoothed_weiszfeld(h, v0=torch.tensor([0.0, float("inf"), 0.0]))
    with pytest.raises(ValueError, match="track_objective=True"):
        smoothed_weiszfeld(h, tol=1e-3, track_objective=False)
    with pytest.raises(ValueError, match=r"tol=-1"):
        smoothed_weiszfeld(h, tol=-1)
    with pytest.raises(ValueError, match=r"weight_bound='max'.*choose one of"):
        smoothed_weiszfeld(h, weight_bound="max")
    with pytest.raises(ValueError, match=r"weight_bound=-1.0 must be"):
        smoothed_weiszfeld(h, weight_bound=-1.0)
    with pytest.raises(TypeError, match="ClientUpdates"):
        smoothed_weiszfeld(torch.zeros(5, 3))
    bad = _points(n=5, d=3)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"client\(s\) \[3\]"):
        smoothed_weiszfeld(_handle(bad))
    assert len(h.transcript) == 0


# ----------------------------------------------------------------------------- result, dtype


def test_result_is_json_ready_and_keeps_dtype():
    x = _points(n=8, d=5).double()
    res = smoothed_weiszfeld(_handle(x))
    assert res.aggregate.dtype == torch.float64 and res.aggregate.device == x.device
    d = res.to_dict()
    json.dumps(d)
    assert d["ground_truth"]["max_effective_weight"] == pytest.approx(res.max_effective_weight)
    assert "ground_truth" not in res.server_view()


def test_stays_on_the_device():
    # On the GPU when there is one, else on the CPU: the aggregate follows the inputs.
    x = _points(n=10, d=50).to("cuda" if torch.cuda.is_available() else "cpu")
    res = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=64)))
    assert res.aggregate.device == x.device
    cpu = smoothed_weiszfeld(_handle(x.cpu()))
    assert torch.allclose(res.aggregate.cpu(), cpu.aggregate, atol=1e-5)


def test_predicted_encoding_error():
    assert rfa.predicted_encoding_error(100, 10**6, 1e-6, 0.01, None) == 0.0
    res32 = QuantizedOracle(bits=32).encoder(100, 1, torch.device("cpu")).resolution[0]
    assert rfa.predicted_encoding_error(100, 10**6, 1e-6, 0.01, float(res32)) > 1.0
    res64 = QuantizedOracle(bits=64).encoder(100, 1, torch.device("cpu")).resolution[0]
    assert rfa.predicted_encoding_error(100, 10**6, 1e-6, 0.01, float(res64)) < 1e-7


# ----------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_model_scale_quantized_matches_plaintext():
    x = _points(n=100, d=100_000, seed=13, scale=0.01)
    p = smoothed_weiszfeld(_handle(x))
    for bits in (32, 64):
        q = smoothed_weiszfeld(_handle(x, QuantizedOracle(bits=bits)))
        assert float((q.aggregate - p.aggregate).norm()) <= 1e-5 * p.objective[-1]
        assert q.objective[-1] == pytest.approx(p.objective[-1], rel=1e-5)
