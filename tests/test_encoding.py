import numpy as np
import pytest
import torch

from secagg import FixedPointEncoder, modular_sum


@pytest.mark.parametrize("bits", [8, 16, 32, 48, 63, 64])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_round_trip_within_one_step(bits, rounding):
    enc = FixedPointEncoder(bits, clip=2.0, n_summands=3, rounding=rounding)
    x = torch.rand(3, 50, dtype=torch.float64) * 4 - 2
    q = enc.encode(x, generator=np.random.default_rng(0))
    assert q.dtype == torch.int64
    if bits < 64:
        assert (q >= 0).all() and (bits == 63 or (q < 2 ** bits).all())
    back = enc.decode(q)
    step = float(enc.resolution)
    tol = step if rounding == "stochastic" else step / 2
    # Above ~53 bits float64 scaling, not the step, limits precision.
    assert (back - x).abs().max() <= max(tol * (1 + 1e-9), 2.0 * 2 ** -52)


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_sum_of_extremes_cannot_wrap(bits):
    n = 37
    enc = FixedPointEncoder(bits, clip=1.5, n_summands=n)
    for sign in (1.0, -1.0):
        x = torch.full((n, 4), sign * 1.5, dtype=torch.float64)
        total = enc.decode(enc.sum(enc.encode(x, generator=torch.Generator().manual_seed(1))))
        # Without wrap the decoded sum is n * 1.5 up to n rounding steps.
        assert torch.allclose(total, torch.full((4,), sign * 1.5 * n, dtype=torch.float64),
                              atol=n * float(enc.resolution))


def test_sum_matches_plain_sum_bit_for_bit():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=10)
    x = torch.rand(10, 100) * 2 - 1
    q = enc.encode(x, generator=np.random.default_rng(3))
    signed = enc.to_signed(q)
    assert torch.equal(enc.to_signed(modular_sum(q, 32)), signed.sum(0))


def test_explicit_unsafe_scale_is_refused_with_numbers():
    with pytest.raises(ValueError, match=r"can wrap.*M/2 - 1"):
        FixedPointEncoder(16, clip=1.0, n_summands=10, scale=10_000.0)
    # The chosen default scale is safe and an explicit smaller one too.
    safe = FixedPointEncoder(16, clip=1.0, n_summands=10)
    FixedPointEncoder(16, clip=1.0, n_summands=10, scale=float(safe.scale))


@pytest.mark.parametrize("bad", [{"bits": 1}, {"bits": 65}, {"clip": 0.0}, {"clip": float("inf")},
                                 {"n_summands": 0}, {"rounding": "up"}, {"overflow": "wrap"}])
def test_bad_parameters(bad):
    kwargs = {"bits": 32, "clip": 1.0, "n_summands": 2, **bad}
    with pytest.raises(ValueError):
        FixedPointEncoder(kwargs.pop("bits"), kwargs.pop("clip"), kwargs.pop("n_summands"), **kwargs)


def test_too_few_bits_for_n_summands():
    with pytest.raises(ValueError, match="use more bits"):
        FixedPointEncoder(4, clip=1.0, n_summands=100)


def test_out_of_range_raises_or_clips_and_counts():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=2)
    x = torch.tensor([[0.5, 3.0], [-2.0, 0.1]])
    with pytest.raises(ValueError, match=r"value 3.*clip bound 1"):
        enc.encode(x)
    enc_clip = FixedPointEncoder(32, clip=1.0, n_summands=2, overflow="clip", rounding="nearest")
    back = enc_clip.decode(enc_clip.encode(x))
    assert enc_clip.last_clipped == 2
    assert torch.allclose(back, torch.tensor([[0.5, 1.0], [-1.0, 0.1]], dtype=torch.float64), atol=1e-8)


def test_non_finite_refused():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=1)
    with pytest.raises(ValueError, match="non-finite"):
        enc.encode(torch.tensor([0.1, float("nan")]))


def test_per_coordinate_clip():
    enc = FixedPointEncoder(32, clip=torch.tensor([1.0, 100.0]), n_summands=4, rounding="nearest")
    x = torch.tensor([[0.9, 90.0]], dtype=torch.float64)
    assert torch.allclose(enc.decode(enc.encode(x)), x, atol=1e-6)
    assert enc.resolution[0] < enc.resolution[1]


def test_stochastic_rounding_is_unbiased():
    # x sits 0.3 of a step above a grid point: nearest rounding is biased by -0.3 steps,
    # stochastic rounding must average to x. A z-test over many draws.
    enc = FixedPointEncoder(16, clip=1.0, n_summands=1)
    step = float(enc.resolution)
    x = torch.full((20_000,), 100 * step + 0.3 * step, dtype=torch.float64)
    dec = enc.decode(enc.encode(x, generator=np.random.default_rng(7)))
    err = (dec - x) / step                      # each error is -0.3 or +0.7, variance 0.21
    z = float(err.mean()) / (0.21 ** 0.5 / len(x) ** 0.5)
    assert abs(z) < 4.5
    near = FixedPointEncoder(16, clip=1.0, n_summands=1, rounding="nearest")
    assert float(((near.decode(near.encode(x)) - x) / step).mean()) == pytest.approx(-0.3, abs=1e-6)


def test_same_seed_same_encoding():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=2)
    x = torch.rand(2, 1000)
    a = enc.encode(x, generator=np.random.default_rng(5))
    b = enc.encode(x, generator=np.random.default_rng(5))
    c = enc.encode(x, generator=np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_torch_generator_path_matches_statistics():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=2)
    x = torch.rand(2, 500)
    q = enc.encode(x, generator=torch.Generator().manual_seed(0))
    assert (enc.decode(q) - x).abs().max() <= float(enc.resolution)
