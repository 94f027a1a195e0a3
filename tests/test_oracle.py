import pytest
import torch

from secagg import ClientUpdates, PlaintextOracle, QuantizedOracle, SecureAggregationViolation, Transcript


def _data(n=12, d=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * 2 - 1, torch.rand(n, generator=g) + 0.05


def test_plaintext_is_weighted_mean():
    x, w = _data()
    out = PlaintextOracle().average(x, w)
    assert torch.allclose(out, (w[:, None] * x).sum(0) / w.sum(), atol=1e-6)


@pytest.mark.parametrize("bits", [24, 32, 64])
def test_quantized_equals_plaintext_within_quantization_bound(bits):
    x, w = _data()
    n = x.shape[0]
    oracle = QuantizedOracle(bits=bits, clip=1.0)
    q = oracle.average(x, w)
    p = PlaintextOracle().average(x, w)
    enc = oracle.encoder(n, x.shape[1], x.device)
    # Numerator and denominator each carry at most n rounding steps (weights normalised to <= 1).
    step_x, step_w = float(enc.resolution[0]), float(enc.resolution[-1])
    u_sum = float((w / w.max()).sum())
    bound = (n * step_x + float(p.abs().max()) * n * step_w) / (u_sum - n * step_w) + 1e-6
    assert (q - p).abs().max() <= bound


def test_quantized_is_seeded():
    x, w = _data()
    a = QuantizedOracle(seed=1).average(x, w)
    b = QuantizedOracle(seed=1).average(x, w)
    assert torch.equal(a, b)


def test_weight_bound_is_public_or_revealed():
    x, w = _data()
    t = Transcript()
    PlaintextOracle().average(x, w, transcript=t)
    assert t.calls[-1].revealed["weight_bound"] == pytest.approx(float(w.max()))
    PlaintextOracle().average(x, w, weight_bound=10.0, transcript=t)
    assert "weight_bound" not in t.calls[-1].revealed
    assert t.calls[-1].revealed["total_weight"] == pytest.approx(float(w.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="weight_bound"):
        PlaintextOracle().average(x, w, weight_bound=float(w.max()) / 2)


@pytest.mark.parametrize("oracle", [PlaintextOracle(), QuantizedOracle()])
def test_bad_input(oracle):
    x, w = _data()
    with pytest.raises(ValueError, match="all client weights are zero"):
        oracle.average(x, torch.zeros_like(w))
    with pytest.raises(ValueError, match=r"weights must have shape \[12\]"):
        oracle.average(x, w[:5])
    with pytest.raises(ValueError, match=r">= 0"):
        oracle.average(x, -w)
    bad = x.clone()
    bad[3, 7] = float("inf")
    with pytest.raises(ValueError, match=r"client\(s\) \[3\]"):
        oracle.average(bad, w)
    with pytest.raises(ValueError, match="matrix"):
        oracle.average(x[0], w)


def test_transcript_keeps_ground_truth_apart():
    x, w = _data()
    t = Transcript()
    QuantizedOracle().average(x, w, transcript=t, label="fedavg")
    call = t.calls[0]
    assert torch.allclose(call.ground_truth["effective_weights"], w / w.sum(), atol=1e-6)
    view = t.server_view()[0]
    assert "effective_weights" not in view and "ground_truth" not in view
    assert view["label"] == "fedavg" and view["output"].shape == (x.shape[1],)
    assert t.summary()["max_effective_weight"] == pytest.approx(float((w / w.sum()).max()), rel=1e-5)


def test_client_updates_reveal_refused_under_secagg():
    x, w = _data()
    cu = ClientUpdates(x, oracle=QuantizedOracle(), secure=True, rule="krum")
    with pytest.raises(SecureAggregationViolation, match=r"rule 'krum' needs the individual"):
        cu.reveal()
    off = ClientUpdates(x, secure=False, rule="krum")
    assert torch.equal(off.reveal(), x)
    assert off.transcript.summary()["individual_reveals"] == 1
    assert off.transcript.summary()["server_visible_outputs"] == x.shape[0]


def test_client_side_functions_see_one_row():
    x, _ = _data(n=5, d=8)
    shapes = []

    def weight(row, v):
        shapes.append(tuple(row.shape))
        return 1.0 / torch.clamp((row - v).norm(), min=1e-6)

    cu = ClientUpdates(x, secure=True, rule="test")
    v = torch.zeros(8)
    out = cu.secure_average(weight=weight, transform=lambda r, b: r - b, broadcast=v)
    beta = 1.0 / x.norm(dim=1)
    assert shapes == [(8,)]
    assert torch.allclose(out, (beta[:, None] * x).sum(0) / beta.sum(), atol=1e-6)
    assert cu.oracle_calls == 1 and len(cu.transcript) == 1


def test_client_updates_rejects_bad_shapes():
    with pytest.raises(ValueError, match="matrix"):
        ClientUpdates(torch.zeros(3))
    with pytest.raises(ValueError, match="num_samples"):
        ClientUpdates(torch.zeros(3, 2), num_samples=torch.ones(4))


def test_client_data_reaches_only_its_owner():
    x, _ = _data(n=6, d=4)
    alphas = torch.arange(1.0, 7.0)
    seen = []

    def weight(row, v, own_alpha):
        seen.append(tuple(own_alpha.shape))
        return own_alpha / torch.clamp((row - v).norm(), min=1e-6)

    cu = ClientUpdates(x, secure=True, rule="test")
    out = cu.secure_average(weight=weight, broadcast=torch.zeros(4), client_data=alphas)
    beta = alphas / x.norm(dim=1)
    assert seen == [()]
    assert torch.allclose(out, (beta[:, None] * x).sum(0) / beta.sum(), atol=1e-6)
    with pytest.raises(ValueError, match="one entry per client"):
        cu.secure_average(weight=weight, broadcast=torch.zeros(4), client_data=alphas[:3])


def test_quantized_sum_does_not_depend_on_blocks_or_threads(monkeypatch):
    # The oracle encodes and sums in blocks of clients and coordinates on every core; each
    # client's rounding bits are its own stream, so the split never changes the result.
    import secagg.encoding as encoding
    x, w = _data(n=9, d=700)
    want = QuantizedOracle(bits=32, clip=1.0, seed=4).average(x, w)
    monkeypatch.setattr(encoding, "_HOST_COLS", 64)
    monkeypatch.setattr(encoding, "_HOST_ELEMS", 130)
    monkeypatch.setattr(encoding, "_THREAD_ELEMS", 100)
    assert torch.equal(QuantizedOracle(bits=32, clip=1.0, seed=4).average(x, w), want)
    monkeypatch.setattr(encoding, "HOST_PATH", False)       # the accelerator's path, on the CPU
    monkeypatch.setattr(encoding, "_DEVICE_ELEMS", {"cpu": 500})
    assert torch.equal(QuantizedOracle(bits=32, clip=1.0, seed=4).average(x, w), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("bits", [32, 64])
def test_cuda_oracles_equal_cpu(bits):
    from secagg import MaskedOracle
    x, w = _data(n=20, d=5000)
    cpu = QuantizedOracle(bits=bits, clip=1.0, seed=2)
    cuda = QuantizedOracle(bits=bits, clip=1.0, seed=2)
    masked = MaskedOracle(bits=bits, clip=1.0, seed=2, neighbors=6)
    for _ in range(2):
        a = cpu.average(x, w)
        b = cuda.average(x.cuda(), w.cuda())
        c = masked.average(x.cuda(), w.cuda())
        assert torch.equal(a, b.cpu()) and torch.equal(b, c)
