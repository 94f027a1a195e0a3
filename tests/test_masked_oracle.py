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
    assert issubclass(MaskedOracle, QuantizedOracle)
    own = {k for k, v in vars(MaskedOracle).items() if callable(v) and not k.startswith("__")}
    assert "_sum_encoded" in own and "_secure_sum" not in own and "average" not in own


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
    oracle = MaskedOracle(threshold=7, dropout_rate=0.2, seed=2)
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
