"""Fault injection (secagg.faults): loss, duplication, reordering, truncation and bit flips on
every channel in every round must end in the exact sum, a clean abort or a detected
violation; never a wrong sum, never another exception (Bonawitz et al. 2017, Fig. 4)."""
import pytest
import torch

from secagg import ProtocolViolationDetected, SecureAggregationAborted, modular_sum, run_protocol
from secagg.faults import OUTCOMES, FaultyNetwork, fault_campaign, run_with_faults


def _x(n=6, d=5, seed=0):
    return torch.randint(0, 2 ** 16, (n, d), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


def test_perfect_network_is_the_plain_protocol():
    x = _x()
    for active in (False, True):
        net = FaultyNetwork(1, loss=0, duplicate=0, reorder=0, truncate=0, bitflip=0, relay=0)
        res = run_protocol(x, modulus_bits=16, threshold=5, active_security=active, network=net)
        assert torch.equal(res.total, modular_sum(x, 16)) and res.survivors == list(range(6))
        assert not any(net.counts.values())


def test_duplicates_and_reordering_are_harmless():
    x = _x()
    for active in (False, True):
        net = FaultyNetwork(2, loss=0, duplicate=1.0, reorder=1.0, truncate=0, bitflip=0)
        res = run_protocol(x, modulus_bits=16, threshold=5, active_security=active, network=net)
        assert torch.equal(res.total, modular_sum(x, 16))
        assert net.counts["duplicated"] == net.counts["duplicate_discarded"] > 0 and net.counts["reordered"] > 0


def test_corrupted_frames_are_rejected_as_losses():
    x = _x()
    net = FaultyNetwork(3, loss=0, duplicate=0, reorder=0, truncate=0.5, bitflip=0.5)
    with pytest.raises(SecureAggregationAborted) as info:
        run_protocol(x, modulus_bits=16, threshold=4, network=net)
    assert info.value.round == "advertise_keys" and info.value.alive == 0   # every frame failed its tag
    assert net.counts["rejected"] == net.counts["truncated"] + net.counts["bit_flipped"] == 6


def test_relay_corruption_is_detected_with_active_security():
    x = _x()
    net = FaultyNetwork(4, loss=0, duplicate=0, reorder=0, truncate=0, bitflip=0, relay=1.0)
    with pytest.raises(ProtocolViolationDetected) as info:
        run_protocol(x, modulus_bits=16, threshold=5, active_security=True, network=net)
    assert info.value.round == "share_keys" and info.value.party == "server"
    # Without active security only the AES-GCM-protected shares are corrupted: dropped shares.
    net = FaultyNetwork(4, loss=0, duplicate=0, reorder=0, truncate=0, bitflip=0, relay=1.0)
    with pytest.raises(SecureAggregationAborted) as info:
        run_protocol(x, modulus_bits=16, threshold=4, network=net)
    assert info.value.round == "unmasking" and "failed authentication" in str(info.value)
    assert set(net.counts) >= {"relay_corrupted_share"} and "relay_corrupted_keys" not in net.counts


def test_rates_are_validated():
    with pytest.raises(ValueError, match="loss"):
        FaultyNetwork(0, loss=1.5)
    with pytest.raises(ValueError, match="runs"):
        fault_campaign(0)


def test_a_run_is_reproducible_from_its_seed():
    # The harness opts in to the insecure reproducible mode (exact counts); every case in it is
    # a fresh instance (its own seed), and the campaign's own secrets are never a run's secrets.
    a, b = run_with_faults(17), run_with_faults(17)
    assert a[0] == b[0] and a[1]["case"] == b[1]["case"] and a[1]["faults"] == b[1]["faults"]
    for s in range(40):
        case = run_with_faults(s)[1]["case"]
        if case["active"]:
            assert 3 * case["threshold"] > 2 * case["n"]      # the active variant's t > 2n/3


def test_fault_campaign_with_fresh_secrets_keeps_the_invariant():
    out = fault_campaign(120, seed=500, reproducible=False)
    _check(out, 120)


def _check(out, runs):
    counts = out["outcomes"]
    assert sum(counts.values()) == runs and set(counts) == set(OUTCOMES)
    assert counts["wrong"] == 0 and counts["crashed"] == 0, out["failures"][:3]
    assert counts["exact"] > 0 and counts["aborted"] > 0 and counts["detected"] > 0
    for kind in ("lost", "duplicated", "reordered", "truncated", "bit_flipped", "relay_corrupted"):
        assert out["faults"].get(kind, 0) > 0, kind
    assert out["faults"]["rejected"] == out["faults"]["truncated"] + out["faults"]["bit_flipped"] \
        - out["faults"].get("relay_corrupted", 0)


def test_fault_campaign_fast():
    out = fault_campaign(200, seed=0)
    _check(out, 200)


@pytest.mark.slow
def test_fault_campaign_10000_runs():
    out = fault_campaign(10_000, seed=100_000)
    _check(out, 10_000)
    print("secagg fault campaign (10,000 runs):", out["outcomes"], out["by_variant"], out["checks"])
