"""MaskedOracle: the masked protocol behind the secure-average interface.

Invariant (docs/architecture.md, secagg): the masked protocol returns exactly the quantized
plaintext sum of the survivors, so with no dropouts MaskedOracle == QuantizedOracle
bit for bit, and with dropouts it is the quantized weighted average over U3.
"""
import pytest
import torch

from secagg import (ClientUpdates, MaskedOracle, QuantizedOracle, SecureAggregationAborted, Transcript,
                    modular_sum)

_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _data(n=15, d=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * 4 - 2, torch.rand(n, generator=g) + 0.1


def _quantized_survivor_average(x, w, survivors, *, bits, clip, seed):
    """Encode as QuantizedOracle does (same generator stream), sum only the survivors, decode."""
    q = QuantizedOracle(bits=bits, clip=clip, seed=seed)
    gen = q.generator(x.device)
    u = w / w.max()
    payload = torch.cat([x * u[:, None], u[:, None]], dim=1)
    enc = q.encoder(x.shape[0], x.shape[1], x.device)
    encoded = enc.encode(payload, generator=gen)
    total = enc.decode(modular_sum(encoded[survivors], bits))
    return (total[:-1] / total[-1]).to(x.dtype)


@pytest.mark.parametrize("bits", [24, 32, 64])
@pytest.mark.parametrize("neighbors", [None, 4, "auto"])
def test_equals_quantized_bit_for_bit_without_dropouts(bits, neighbors):
    x, w = _data()
    quant = QuantizedOracle(bits=bits, clip=2.0, seed=7)
    masked = MaskedOracle(threshold=0.6, neighbors=neighbors, bits=bits, clip=2.0, seed=7)
    for call in range(3):   # the rounding stream stays in step across calls
        xc = x * (1 - 0.2 * call)
        assert torch.equal(quant.average(xc, w), masked.average(xc, w))
    assert masked.calls == 3


def test_subclasses_quantized_and_overrides_only_the_sum():
    # The encoding (encoder, generator, payload) and the average stay QuantizedOracle's.
    assert issubclass(MaskedOracle, QuantizedOracle)
    own = {k for k, v in vars(MaskedOracle).items() if callable(v) and not k.startswith("__")}
    assert {"sum_encoded", "secure_sum"} <= own
    assert not own & {"average", "encoder", "generator", "client_payload"}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_groups_of_clients_give_the_same_sum_and_masked_inputs(bits, rounding):
    # Encoding, masking and summing 3 clients at a time (edges between groups generated on each
    # side) equals one group of all, equals QuantizedOracle; dropouts and a sparse graph too.
    x, w = _data(n=11, d=300, seed=2)
    kw = dict(threshold=7, neighbors=4, bits=bits, clip=2.0, seed=5, rounding=rounding, dropout_rate=0.2,
              insecure_reproducible=True, keep_masked_inputs=True)
    t1, t2 = Transcript(), Transcript()
    whole = MaskedOracle(**kw).average(x, w, transcript=t1)
    grouped = MaskedOracle(group_bytes=3 * 8 * 301, **kw).average(x, w, transcript=t2)
    assert torch.equal(whole, grouped)
    v1, v2 = t1.calls[0].server_view, t2.calls[0].server_view
    assert v1["masked_inputs"].shape == (len(t1.calls[0].survivors), 301) and v1["masked_inputs_kept"]
    assert torch.equal(v1["masked_inputs"], v2["masked_inputs"])
    ref = _quantized_survivor_average(x, w, t1.calls[0].survivors, bits=bits, clip=2.0, seed=5) \
        if rounding == "stochastic" else None
    if ref is not None:
        assert torch.equal(grouped, ref)
    nodrop = dict(kw, dropout_rate=0.0)
    assert torch.equal(MaskedOracle(group_bytes=8 * 301, **nodrop).average(x, w),
                       QuantizedOracle(bits=bits, clip=2.0, seed=5, rounding=rounding).average(x, w))


def test_groups_never_hold_the_whole_integer_matrix(monkeypatch):
    # Every encoding the oracle asks for is at most group_bytes: the [n, d + 1] int64 never exists.
    from secagg.encoding import FixedPointEncoder
    sizes = []
    real = FixedPointEncoder.encode

    def spy(self, x, *a, **k):
        out = real(self, x, *a, **k)
        sizes.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(FixedPointEncoder, "encode", spy)
    x, w = _data(n=40, d=500, seed=3)
    t = Transcript()
    out = MaskedOracle(neighbors="auto", clip=2.0, seed=2, group_bytes=6 * 8 * 501).average(x, w, transcript=t)
    assert len(sizes) == 7 and max(sizes) <= 6 * 8 * 501          # 40 clients in groups of 6
    assert t.calls[0].server_view["masked_inputs"].shape == (40, 501)   # small: kept (auto)
    assert torch.equal(out, QuantizedOracle(clip=2.0, seed=2).average(x, w))
    big = MaskedOracle(neighbors="auto", clip=2.0, seed=2, keep_masked_inputs=False)
    t2 = Transcript()
    big.average(x, w, transcript=t2)
    assert t2.calls[0].server_view["masked_inputs"].shape == (40, 0)
    assert not t2.calls[0].server_view["masked_inputs_kept"]
    with pytest.raises((TypeError, ValueError)):
        MaskedOracle(keep_masked_inputs="yes")
    with pytest.raises(ValueError, match="group_bytes"):
        MaskedOracle(group_bytes=0)


def test_grouped_overflow_is_refused_with_the_inputs_row_before_the_protocol():
    x, w = _data(n=12, d=50, seed=4)
    x[9, 17] = 7.0                       # past clip 2: group 3 of 4 would find it late
    oracle = MaskedOracle(clip=2.0, seed=1, group_bytes=3 * 8 * 51, neighbors=4)
    with pytest.raises(ValueError, match=r"row 9, coordinate 17"):
        oracle.average(x, torch.ones(12))
    assert oracle.calls == 0             # no protocol instance was spent
    clipper = MaskedOracle(clip=2.0, seed=1, group_bytes=3 * 8 * 51, neighbors=4, overflow="clip")
    quant = QuantizedOracle(clip=2.0, seed=1, overflow="clip")
    assert torch.equal(clipper.average(x, torch.ones(12)), quant.average(x, torch.ones(12)))
    assert clipper.last_clipped == quant.last_clipped == 1


@pytest.mark.parametrize("bits", [20, 32, 64])
def test_device_data_plane_matches_the_host_one(monkeypatch, bits):
    # The path for inputs on an accelerator (secagg.chacha20 keystreams where the inputs live),
    # forced on the CPU: the same masked inputs and sum as OpenSSL's on the host threads.
    import secagg.protocol.dataplane as P
    x, w = _data(n=9, d=700, seed=6)
    kw = dict(threshold=6, neighbors=4, bits=bits, clip=2.0, seed=8, dropout_rate=0.2, insecure_reproducible=True,
              keep_masked_inputs=True, group_bytes=4 * 8 * 701)
    t_host, t_dev = Transcript(), Transcript()
    host = MaskedOracle(**kw).average(x, w, transcript=t_host)
    monkeypatch.setattr(P, "HOST_FAST_PATH", False)
    monkeypatch.setattr(P, "_DEVICE_WORDS_OTHER", 2048)       # several column chunks and stream batches
    dev = MaskedOracle(**kw).average(x, w, transcript=t_dev)
    assert torch.equal(host, dev)
    assert torch.equal(t_host.calls[0].server_view["masked_inputs"], t_dev.calls[0].server_view["masked_inputs"])


@pytest.mark.parametrize("round_name", ["share_keys", "masked_input", "unmasking", "random"])
def test_dropouts_give_the_quantized_average_over_survivors(round_name):
    x, w = _data(n=20, d=64, seed=1)
    t = Transcript()
    oracle = MaskedOracle(threshold=0.6, dropout_rate=0.2, dropout_round=round_name, clip=2.0, seed=3)
    out = oracle.average(x, w, transcript=t)
    call = t.calls[-1]
    dropped = oracle.dropouts_for(20, 0)
    assert sum(len(v) for v in dropped.values()) == 4
    gone = set(dropped.get("advertise_keys", [])) | set(dropped.get("share_keys", [])) | set(
        dropped.get("masked_input", []))
    assert call.survivors == sorted(set(range(20)) - gone)
    want = _quantized_survivor_average(x, w, call.survivors, bits=32, clip=2.0, seed=3)
    assert torch.equal(out, want)
    eff = call.ground_truth["effective_weights"]
    assert torch.allclose(eff.sum(), torch.tensor(1.0)) and (eff[sorted(gone)] == 0).all()


def test_transcript_records_survivors_and_masked_inputs():
    x, w = _data(n=10, d=30)
    t = Transcript()
    oracle = MaskedOracle(threshold=7, dropout_rate=0.2, seed=2, keep_masked_inputs=True)
    oracle.average(x, w, transcript=t, label="first")
    oracle.average(x, w, transcript=t, label="second")
    a, b = t.calls
    assert a.oracle == "masked" and len(a.survivors) == 8
    assert a.server_view["masked_inputs"].shape == (8, 31)
    assert a.server_view["instance"] == 0 and b.server_view["instance"] == 1
    assert set(a.server_view["reconstructed_keys"]) == set(range(10)) - set(a.survivors)
    # Fresh keys and masks per call: the same inputs are masked differently.
    assert a.server_view["public_keys"] != b.server_view["public_keys"]
    assert (a.server_view["masked_inputs"] != b.server_view["masked_inputs"]).float().mean() > 0.99
    view = t.server_view()[0]
    assert "masked_inputs" in view and "effective_weights" not in view


def test_threshold_as_fraction_or_count_and_refusals():
    assert MaskedOracle(threshold=2 / 3).threshold_for(100) == 67
    assert MaskedOracle(threshold=51).threshold_for(100) == 51
    x, w = _data(n=10, d=5)
    with pytest.raises(ValueError, match="allow_insecure_threshold"):
        MaskedOracle(threshold=0.5).average(x, w)
    with pytest.raises(ValueError, match="exceeds"):
        MaskedOracle(threshold=11).average(x, w)
    low = MaskedOracle(threshold=0.4, allow_insecure_threshold=True, dropout_rate=0.5, seed=1)
    out = low.average(x, w)
    assert torch.isfinite(out).all()
    for bad in (dict(threshold=0.0), dict(threshold=1.5), dict(threshold=0), dict(dropout_rate=1.0),
                dict(dropout_round="round9"), dict(neighbors="sparse")):
        with pytest.raises((ValueError, TypeError)):
            MaskedOracle(**bad)


def test_too_many_dropouts_abort():
    x, w = _data(n=10, d=5)
    with pytest.raises(SecureAggregationAborted, match="masked_input"):
        MaskedOracle(threshold=0.8, dropout_rate=0.3).average(x, w)


def test_modulus_too_small_for_n():
    x, w = _data(n=50, d=4)
    with pytest.raises(ValueError, match="bits"):
        MaskedOracle(bits=6, clip=2.0).average(x, w)


def test_through_client_updates():
    x, w = _data(n=12, d=40)
    masked = ClientUpdates(x, oracle=MaskedOracle(seed=4, clip=2.0), secure=True, num_samples=w)
    quant = ClientUpdates(x, oracle=QuantizedOracle(seed=4, clip=2.0), secure=True, num_samples=w)
    assert torch.equal(masked.secure_average(masked.num_samples), quant.secure_average(quant.num_samples))
    assert len(masked.transcript) == 1 and masked.transcript.calls[0].oracle == "masked"


@pytest.mark.slow
def test_model_scale_call_matches_quantized():
    x, w = _data(n=30, d=200_000, seed=5)
    masked = MaskedOracle(threshold=20, neighbors="auto", clip=2.0, seed=9)
    assert torch.equal(QuantizedOracle(clip=2.0, seed=9).average(x, w), masked.average(x, w))


def test_accelerator_matches_quantized_on_device():
    x, w = _data(n=16, d=5000)
    x, w = x.to(_DEVICE), w.to(_DEVICE)
    t = Transcript()
    out = MaskedOracle(seed=1, clip=2.0).average(x, w, transcript=t)
    assert out.device == x.device and t.calls[0].server_view["masked_inputs"].device == x.device
    assert torch.equal(out, QuantizedOracle(seed=1, clip=2.0).average(x, w))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("bits", [32, 64])
def test_cuda_masked_oracle_equals_cpu_in_groups(bits):
    # Encoding (ChaCha20 rounding bits) and masks (ChaCha20 keystreams) made on the GPU, groups of
    # 8 clients, dropouts: the same average and masked inputs as the CPU's OpenSSL paths.
    x, w = _data(n=30, d=100_000, seed=9)
    kw = dict(threshold=20, neighbors="auto", bits=bits, clip=2.0, seed=3, dropout_rate=0.1,
              insecure_reproducible=True, keep_masked_inputs=True, group_bytes=8 * 8 * 100_001)
    t_cpu, t_gpu = Transcript(), Transcript()
    cpu = MaskedOracle(**kw).average(x, w, transcript=t_cpu)
    gpu = MaskedOracle(**kw).average(x.cuda(), w.cuda(), transcript=t_gpu)
    assert torch.equal(cpu, gpu.cpu())
    assert torch.equal(t_cpu.calls[0].server_view["masked_inputs"], t_gpu.calls[0].server_view["masked_inputs"].cpu())


def test_a_dropout_rate_that_aborts_every_call_is_refused_before_the_run():
    from protocols.simulation import RunConfig
    from protocols.simulation.base import make_oracle
    oracle = MaskedOracle(dropout_rate=0.4)
    MaskedOracle(dropout_rate=0.3).check_dropouts(100)   # 70 survive >= t = 67
    with pytest.raises(ValueError, match=r"leaving 60 < the threshold t=67"):
        oracle.check_dropouts(100)
    with pytest.raises(ValueError, match=r"drops 4 of the 10 clients.*leaving 6 < the threshold t=7"):
        oracle.check_dropouts(10)
    MaskedOracle(dropout_rate=0.3).check_dropouts(10)  # 7 survive = t: the calls complete
    cfg = RunConfig(secagg="masked", clients=10, dropout_rate=0.4)
    with pytest.raises(ValueError, match=r"--dropout-rate <= 0\.3"):
        make_oracle(cfg, 10)


def test_the_inputs_are_freed_by_reference_counting_when_the_call_returns():
    # The protocol and its server strategy referred to each other; with the inputs inside that
    # cycle a round's [n, d] updates (5.3 GB at n = 1000 on fc-purchase) lived on into the next
    # round until a garbage collection happened to run.
    import gc
    import weakref
    gc.disable()
    try:
        x = torch.empty(12, 300).uniform_(-1, 1)
        ref = weakref.ref(x)
        MaskedOracle(neighbors=4, threshold=9, clip=1.0, keep_masked_inputs=False).average(x, torch.ones(12))
        del x
        assert ref() is None
    finally:
        gc.enable()
