"""Integrity of the masked protocol: a wrong share, inconsistent views of U2 and a threshold
too low for the active model end in a clean abort, a detection or a refusal, never in a
wrong sum (Bonawitz et al. 2017, Fig. 4 and Sec. 6.2)."""
import pytest
import torch

from secagg import (MaskedOracle, ProtocolViolationDetected, SecAggProtocol, SecureAggregationAborted,
                    modular_sum, run_protocol, shamir)
from secagg.protocol.adversary import SplitShares


def _values(n, d, bits=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64)


def _alter(proto, holder, kind, subject=None):
    """Make ``holder`` answer the unmasking request with one share of ``kind`` ("b" or "s") off
    the polynomial (+1): what a corrupt holder can do; the AES-GCM channel cannot stop it."""
    honest = proto.clients[holder].unmask

    def unmask(*args, **kw):
        out = honest(*args, **kw)
        v = subject if subject is not None else min(out[kind])
        out[kind][v] = (out[kind][v] + 1) % shamir.PRIME
        return out

    proto.clients[holder].unmask = unmask


def _outcome(proto, x, bits=16):
    try:
        res = proto.run()
    except SecureAggregationAborted as exc:
        return exc
    return "exact" if torch.equal(res.total, modular_sum(x[res.survivors], bits)) else "wrong"


# -- a share off the polynomial ------------------------------------------------------------


@pytest.mark.parametrize("active", [False, True])
def test_one_altered_self_mask_share_aborts_with_exactly_t_shares(active):
    n, t = 6, 5
    x = _values(n, 40)
    # One client drops in unmasking: exactly t = 5 holders answer, no spare share to compare.
    proto = SecAggProtocol(x, modulus_bits=16, threshold=t, dropouts={"unmasking": [5]}, active_security=active)
    _alter(proto, 2, "b", subject=0)
    err = _outcome(proto, x)
    assert isinstance(err, SecureAggregationAborted) and not isinstance(err, ProtocolViolationDetected)
    assert err.round == "unmasking" and err.client == 0
    assert "commitment" in str(err) and "cannot be named" in str(err)


def test_one_altered_share_with_a_spare_names_its_holder():
    x = _values(7, 30)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=5)
    _alter(proto, 1, "b", subject=3)
    err = _outcome(proto, x)
    assert isinstance(err, SecureAggregationAborted) and err.client == 3
    assert "holder 1's share is the one off the polynomial" in str(err)


def test_one_altered_mask_key_share_aborts():
    x = _values(8, 30)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=5, dropouts={"masked_input": [6], "unmasking": [7, 5]})
    _alter(proto, 0, "s", subject=6)          # s_6^SK is reconstructed from exactly 5 shares
    err = _outcome(proto, x)
    assert isinstance(err, SecureAggregationAborted) and err.client == 6
    assert "advertised public key" in str(err)


def test_altered_shares_on_secagg_plus_never_give_a_wrong_sum():
    x = _values(16, 20)
    for v in (0, 5, 9, 14):
        for pick, want in ((min, "abort"), (max, "exact")):
            proto = SecAggProtocol(x, modulus_bits=16, threshold=11, neighbors=4, dropouts={"masked_input": [3]})
            holders = [h for h in [v] + proto.graph[v] if h != 3]
            # t_s = 3 of 5 holders; the server uses the 3 smallest: the first's share is used, the last's not.
            _alter(proto, pick(holders), "b", subject=v)
            out = _outcome(proto, x)
            if want == "abort":
                assert isinstance(out, SecureAggregationAborted) and out.client == v and "commitment" in str(out)
            else:
                assert out == "exact"


def test_unaltered_shares_still_sum_exactly():
    x = _values(9, 25)
    res = run_protocol(x, modulus_bits=16, threshold=7, dropouts={"masked_input": [2]})
    assert torch.equal(res.total, modular_sum(x[res.survivors], 16))
    assert set(res.commitments) == set(res.rounds["share_keys"]) and "commitments" in res.server_view()


# -- clients' own views of U2 ---------------------------------------------------------------


def test_inconsistent_share_lists_abort_without_active_security():
    x = _values(12, 20, seed=2)
    for neighbors in (None, 4):
        proto = SecAggProtocol(x, modulus_bits=16, threshold=9, neighbors=neighbors, server=SplitShares(target=0))
        deprived = proto.graph[0][1::2]
        err = _outcome(proto, x)
        assert isinstance(err, SecureAggregationAborted), neighbors
        assert err.round == "masked_input" and err.client in deprived and "inconsistent views of U2" in str(err)
        # The deprived client's own view drove its mask: no pairwise mask with client 0.
        assert 0 not in proto.clients[err.client].u2_view() and err.client in proto.clients[0].u2_view()


def test_inconsistent_share_lists_are_detected_with_active_security():
    x = _values(12, 20, seed=2)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=9, neighbors=4, active_security=True,
                           server=SplitShares(target=0))
    err = _outcome(proto, x)
    assert isinstance(err, ProtocolViolationDetected) and err.check == "survivors within U2"
    assert {e.detected_by for e in err.incidents} == set(proto.graph[0][1::2]) and err.subject == 0


class _WithholdOne(SplitShares):
    # Withholds the target's shares from its first neighbour only.
    def shares_for(self, client, ciphertexts):
        if client == self.proto.graph[self.target][0]:
            return {v: ct for v, ct in ciphertexts.items() if v != self.target}
        return ciphertexts


@pytest.mark.parametrize("neighbors", [None, 6])
def test_views_that_differ_about_a_dropped_client_still_sum_exactly(neighbors):
    """Client 0 sends its shares, then drops before its masked input. Its first neighbour never
    got them, so it does not mask with 0; the others do. The server removes the mask of 0 only
    from the inputs of those whose view holds 0: exactly the survivors' sum."""
    x = _values(10, 30, seed=4)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=6, neighbors=neighbors,
                           dropouts={"masked_input": [0]}, server=_WithholdOne(target=0))
    first = proto.graph[0][0]
    res = proto.run()
    assert torch.equal(res.total, modular_sum(x[res.survivors], 16))
    assert 0 in res.reconstructed_keys and 0 not in res.survivors
    row = res.survivors.index(first)
    mine = torch.from_numpy(proto.masked_row(first).view("int64").copy())
    global_u2 = torch.from_numpy(proto.masked_row(first, res.rounds["share_keys"]).view("int64").copy())
    assert torch.equal(res.masked_inputs[row], mine) and not torch.equal(mine, global_u2)


# -- the active model's threshold -----------------------------------------------------------


def test_active_security_needs_t_above_two_thirds():
    x = _values(9, 5)
    with pytest.raises(ValueError, match="2n/3") as info:
        run_protocol(x, modulus_bits=16, threshold=6, active_security=True)      # 6 = 2n/3 exactly
    assert "threshold >= 7" in str(info.value)
    res = run_protocol(x, modulus_bits=16, threshold=6, active_security=True, allow_insecure_threshold=True)
    assert torch.equal(res.total, modular_sum(x, 16))
    assert run_protocol(x, modulus_bits=16, threshold=7, active_security=True).survivors == list(range(9))
    assert run_protocol(x, modulus_bits=16, threshold=6).threshold == 6               # t > n/2 suffices there


def test_masked_oracle_default_threshold_is_strictly_above_two_thirds():
    oracle = MaskedOracle(clip=1.0, active_security=True)
    for n in (3, 9, 10, 11, 99, 100):
        assert 3 * oracle.threshold_for(n) > 2 * n and oracle.threshold_for(n) == 2 * n // 3 + 1
    x, w = torch.rand(9, 6) * 2 - 1, torch.ones(9)
    assert torch.isfinite(oracle.average(x, w)).all()                                # n = 9, t = 7
    with pytest.raises(ValueError, match="2n/3"):
        MaskedOracle(threshold=2 / 3, clip=1.0, active_security=True).average(x, w)   # ceil(2n/3) = 6
