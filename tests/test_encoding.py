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


# ------------------------------------------------------------------ per-client rounding streams

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms  # noqa: E402

import secagg.encoding as encoding  # noqa: E402
from secagg import rounding_key  # noqa: E402


def _stream_words(key, client, count):
    enc = Cipher(algorithms.ChaCha20(key, bytes(4) + client.to_bytes(12, "little")), None).encryptor()
    return np.frombuffer(enc.update(bytes(4 * count)), dtype="<u4").astype(np.int64)


@pytest.mark.parametrize("bits", [32, 64])       # int64 fixed-point path, float64 path
def test_rounding_bits_are_each_clients_chacha20_stream(bits):
    # Independent reference: Python integers and OpenSSL's ChaCha20 stream of (K, client index).
    enc = FixedPointEncoder(bits, clip=1.0, n_summands=3)
    x = torch.rand(3, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    key = bytes(range(32))
    got = enc.encode(x, key, client_ids=[5, 0, 9])
    scale = float(enc.scale)
    for row, client in enumerate([5, 0, 9]):
        r = _stream_words(key, client, 45)
        for j in range(45):
            y = float(x[row, j]) * scale
            if bits == 32:
                q = (int(y * 2.0 ** 32) + int(r[j])) >> 32          # trunc(y 2^32) + r, floor-shifted
            else:
                f = np.floor(y)
                q = int(f) + int(r[j] < (y - f) * 2.0 ** 32)
            assert int(enc.to_signed(got[row, j:j + 1])[0]) == q


@pytest.mark.parametrize("bits", [16, 32, 48, 64])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("weighted", [False, True])
def test_host_and_device_paths_agree_bit_for_bit(monkeypatch, bits, rounding, weighted):
    # The CPU path (OpenSSL streams, numpy, threads over columns) and the device path
    # (secagg.chacha20 + torch, what CUDA runs) on the same input, small blocks, ragged edges.
    monkeypatch.setattr(encoding, "_HOST_COLS", 48)
    monkeypatch.setattr(encoding, "_HOST_ELEMS", 100)
    monkeypatch.setattr(encoding, "_THREAD_ELEMS", 64)
    monkeypatch.setattr(encoding, "_DEVICE_ELEMS", {"cpu": 200})
    g = torch.Generator().manual_seed(bits)
    x = torch.rand(7, 333, generator=g) * 4 - 2
    u = torch.rand(7, generator=g) if weighted else None
    width = 334 if weighted else 333
    clip = torch.full((width,), 2.0, dtype=torch.float64)
    clip[-1] = 1.0 if weighted else 2.0
    enc = FixedPointEncoder(bits, clip, 7, rounding=rounding)
    host = enc.encode(x, b"k" * 32, weights=u)
    host_sum = enc.encode_sum(x, b"k" * 32, weights=u)
    monkeypatch.setattr(encoding, "HOST_PATH", False)
    dev = enc.encode(x, b"k" * 32, weights=u)
    dev_sum = enc.encode_sum(x, b"k" * 32, weights=u)
    assert torch.equal(host, dev) and torch.equal(host_sum, dev_sum)
    assert torch.equal(host_sum, modular_sum(host, bits))


@pytest.mark.parametrize("host", [True, False])
def test_clip_mode_agrees_on_both_paths(monkeypatch, host):
    monkeypatch.setattr(encoding, "HOST_PATH", host)
    enc = FixedPointEncoder(32, clip=1.0, n_summands=3, overflow="clip")
    x = torch.tensor([[0.5, 3.0, -0.2], [-2.0, 0.1, 1.0], [0.0, 0.9, -1.5]])
    got = enc.decode(enc.encode(x, b"c" * 32))
    assert enc.last_clipped == 3
    assert (got - x.clamp(-1, 1).double()).abs().max() <= float(enc.resolution)
    monkeypatch.setattr(encoding, "HOST_PATH", not host)
    assert torch.equal(enc.encode(x, b"c" * 32), enc.encode(x, b"c" * 32)) and enc.last_clipped == 3


def test_groups_of_clients_sum_to_the_whole():
    # Per-client streams: any grouping of the clients gives the same encodings and sums.
    enc = FixedPointEncoder(32, clip=1.0, n_summands=10)
    x = torch.rand(10, 500) * 2 - 1
    u = torch.rand(10)
    key = b"g" * 32
    whole = enc.encode_sum(x, key, weights=u)
    parts = [enc.encode_sum(x[a:b], key, weights=u[a:b], client_ids=a) for a, b in ((0, 3), (3, 4), (4, 10))]
    assert torch.equal(whole, modular_sum(torch.stack(parts), 32))
    rows = enc.encode(x[[7, 2]], key, weights=u[[7, 2]], client_ids=[7, 2])
    assert torch.equal(rows, enc.encode(x, key, weights=u)[[7, 2]])


def test_client_ids_are_checked():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=3)
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="distinct"):
        enc.encode(x, b"k" * 32, client_ids=[1, 1, 2])
    with pytest.raises(ValueError, match="2 client ids for 3 rows"):
        enc.encode(x, b"k" * 32, client_ids=[1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        enc.encode(x, b"k" * 32, client_ids=-1)


def test_rounding_key_sources():
    assert rounding_key(b"x" * 32) == b"x" * 32
    assert rounding_key(np.random.default_rng(4)) == np.random.default_rng(4).bytes(32)
    a = rounding_key(torch.Generator().manual_seed(1))
    assert a == rounding_key(torch.Generator().manual_seed(1)) and len(a) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        rounding_key(b"short")
    with pytest.raises(TypeError):
        rounding_key(3)


def test_empty_and_single_inputs():
    enc = FixedPointEncoder(32, clip=1.0, n_summands=2)
    assert enc.encode_sum(torch.zeros(0, 5), b"k" * 32).tolist() == [0] * 5
    assert enc.encode(torch.zeros(2, 0), b"k" * 32).shape == (2, 0)
    one = enc.encode(torch.tensor([0.25]), b"k" * 32)
    assert one.shape == (1,) and abs(float(enc.decode(one)) - 0.25) <= float(enc.resolution)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("bits", [32, 64])
def test_cuda_equals_cpu(bits):
    enc = FixedPointEncoder(bits, clip=1.0, n_summands=50)
    x = torch.rand(50, 10_000) * 2 - 1
    u = torch.rand(50)
    cpu = enc.encode_sum(x, b"k" * 32, weights=u)
    cuda = enc.encode_sum(x.cuda(), b"k" * 32, weights=u.cuda())
    assert torch.equal(cpu, cuda.cpu())


@pytest.mark.slow
@pytest.mark.parametrize("bits, rounding, weighted", [(32, "stochastic", True), (64, "stochastic", True),
                                                     (16, "nearest", False)])
def test_fused_cpu_kernel_equals_numpy(monkeypatch, bits, rounding, weighted):
    # The torch.compile'd host kernel of large calls against the numpy blocks, both outputs.
    monkeypatch.setattr(encoding, "_FUSE_ELEMS", 1)
    g = torch.Generator().manual_seed(bits)
    x = torch.rand(6, 9000 + 17, generator=g) * 4 - 2
    u = torch.rand(6, generator=g) if weighted else None
    width = x.shape[1] + weighted
    clip = torch.full((width,), 2.0, dtype=torch.float64)
    enc = FixedPointEncoder(bits, clip, 6, rounding=rounding)
    fused = enc.encode(x, b"f" * 32, weights=u), enc.encode_sum(x, b"f" * 32, weights=u)
    assert not encoding._fused["failed"], encoding._fused["failed"]
    monkeypatch.setattr(encoding, "FUSE_ON_CPU", False)
    plain = enc.encode(x, b"f" * 32, weights=u), enc.encode_sum(x, b"f" * 32, weights=u)
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
