"""The actively secure variant (Bonawitz et al. 2017, Fig. 4 with the red parts; Sec. 6.2)
and the malicious-server strategies of secagg.protocol.adversary.

Every strategy must end in a detected violation, a clean abort or the exact sum, and the
server must never hold an individual input unmasked when active security is on. The
demonstrations with it off show what each check buys.
"""
import itertools

import pytest
import torch

from secagg import (ACTIVE_ROUNDS, ADVERSARIES, MaskedOracle, ProtocolViolationDetected, QuantizedOracle,
                    SecAggProtocol, SecureAggregationAborted, UnmaskingRefused, modular_sum, run_protocol)
from secagg import graph as graphs
from secagg.pki import SimulatedPKI, encode_clients, survivors_message


def _values(n, d, bits=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64)


def _outcome(x, bits=16, **kw):
    """('exact' | 'wrong', result) or (exception type name, exception); 'recovered' inputs alongside."""
    try:
        res = run_protocol(x, modulus_bits=bits, **kw)
    except SecureAggregationAborted as exc:
        return type(exc).__name__, exc, getattr(exc, "server_recovered", {})
    ok = torch.equal(res.total, modular_sum(x[res.survivors], bits))
    return ("exact" if ok else "wrong"), res, res.recovered


_SAFE = {"exact", "SecureAggregationAborted", "UnmaskingRefused", "ProtocolViolationDetected"}


# -- the protocol with active security, honest server ---------------------------------


@pytest.mark.parametrize("neighbors", [None, 8])
def test_active_exact_with_dropouts_in_every_round(neighbors):
    n = 16
    x = _values(n, 40)
    # A fixed graph (the ring lattice of degree 8) so that the droppers below always exist.
    proto = SecAggProtocol(x, modulus_bits=16, threshold=11, seed=2,
                           neighbors=None if neighbors is None else graphs.harary_graph(n, neighbors))
    graph, ts = proto.graph, proto.share_threshold   # the run below gets this graph explicitly
    # Five droppers, leaving every client at least the per-client threshold of live share holders
    # (SecAgg+: of live neighbours, which the active model's "neighbours in U3" check requires).
    def fits(a, b, c, e, f):
        gone, out = {a, b, c, e, f}, {a, b, c}      # out: not in U3
        live = all(len(({w} | set(graph[w])) - gone) >= ts for w in range(n)) and len(set(graph[c]) - gone) >= ts
        return live and (proto.complete or all(len(set(graph[w]) - out) >= ts for w in range(n)))
    a, b, c, e, f = next(pick for pick in itertools.permutations(range(n), 5) if fits(*pick))
    drops = {"advertise_keys": [a], "share_keys": [b], "masked_input": [c], "consistency_check": [e],
             "unmasking": [f]}
    res = run_protocol(x, modulus_bits=16, threshold=11, neighbors=graph, dropouts=drops,
                       active_security=True, seed=2)
    assert res.share_threshold == ts
    # A client dropping after its masked input (consistency check, unmasking) is in the sum.
    U3 = sorted(set(range(n)) - {a, b, c})
    assert res.survivors == U3
    assert torch.equal(res.total, modular_sum(x[res.survivors], 16))
    assert res.rounds["consistency_check"] == [u for u in U3 if u != e]
    assert res.rounds["unmasking"] == [u for u in U3 if u not in (e, f)]
    assert set(res.signatures) == set(res.rounds["consistency_check"]) and res.active_security
    view = res.server_view()
    assert view["active_security"] and set(view["consistency_signatures"]) == set(res.signatures)
    assert list(res.rounds) == list(ACTIVE_ROUNDS)


def test_active_matches_honest_but_curious_bit_for_bit():
    x = _values(9, 100, bits=32)
    # The same secrets in both variants: only the insecure reproducible mode gives that.
    kw = dict(modulus_bits=32, threshold=7, dropouts={"masked_input": [4]}, seed=3, insecure_reproducible=True)
    hbc, act = run_protocol(x, **kw), run_protocol(x, active_security=True, **kw)
    assert torch.equal(hbc.total, act.total) and torch.equal(hbc.masked_inputs, act.masked_inputs)
    assert hbc.public_keys == act.public_keys     # same per-instance keys; signatures come from the PKI


def test_consistency_round_only_with_active_security_and_below_threshold_aborts():
    x = _values(6, 4)
    with pytest.raises(ValueError, match="active_security=True"):
        run_protocol(x, modulus_bits=16, threshold=4, dropouts={"consistency_check": [1]})
    with pytest.raises(SecureAggregationAborted) as info:
        run_protocol(x, modulus_bits=16, threshold=5, active_security=True,
                     dropouts={"consistency_check": [0, 1, 2]})
    assert info.value.round == "consistency_check" and info.value.alive == 3
    assert not isinstance(info.value, ProtocolViolationDetected)
    with pytest.raises(TypeError, match="active_security"):
        run_protocol(x, modulus_bits=16, threshold=4, active_security=1)
    with pytest.raises(ValueError, match="choose one of"):
        run_protocol(x, modulus_bits=16, threshold=4, adversary="eavesdrop")
    with pytest.raises(ValueError, match="without an adversary"):
        run_protocol(x, modulus_bits=16, threshold=4, adversary_options={"target": 1})


def test_tampered_share_is_detected_not_dropped():
    x = _values(6, 10)
    hbc = run_protocol(x, modulus_bits=16, threshold=4, tamper=[(0, 1)])
    assert hbc.failed_shares == [(0, 1)] and torch.equal(hbc.total, modular_sum(x, 16))
    with pytest.raises(ProtocolViolationDetected) as info:
        run_protocol(x, modulus_bits=16, threshold=5, tamper=[(0, 1)], active_security=True)
    err = info.value
    assert err.check == "share ciphertext authentication" and err.party == "server"
    assert err.detected_by == 1 and err.subject == 0 and err.round == "unmasking"
    assert isinstance(err, SecureAggregationAborted)


def test_pki_signatures_bind_the_instance_and_signer():
    registry = SimulatedPKI()
    pki = registry.session(4)
    blob = encode_clients([0, 2, 3])
    msg = survivors_message(b"t" * 16, blob)
    sig = pki.sign(2, msg)
    assert pki.verify(2, msg, sig)
    assert not pki.verify(1, msg, sig)                                    # another signer's key
    assert not pki.verify(2, survivors_message(b"u" * 16, blob), sig)     # another instance
    assert not pki.verify(2, msg, sig[:-1] + bytes([sig[-1] ^ 1]))        # altered signature
    assert not pki.verify(2, msg, sig[:10])
    assert not pki.verify(4, msg, sig) and pki.verifications == 4         # outside the session: no check
    with pytest.raises(ValueError, match="not registered"):
        pki.sign(4, msg)
    assert registry.session(4).verify(2, msg, sig)                        # long-term: the next instance too
    assert not SimulatedPKI().session(4).verify(2, msg, sig)             # another PKI: other keys
    assert SimulatedPKI(insecure_seed=5).session(4).sign(2, msg) == SimulatedPKI(insecure_seed=5).session(4).sign(2, msg)


# -- strategies ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ADVERSARIES)
@pytest.mark.parametrize("neighbors", [None, 4])
def test_every_strategy_fails_under_active_security(name, neighbors):
    x = _values(12, 24, seed=1)
    kind, obj, recovered = _outcome(x, threshold=9, neighbors=neighbors, active_security=True, adversary=name,
                                    adversary_options={"target": 2})
    assert kind in _SAFE, (name, kind)
    assert recovered == {}, name
    assert kind == "ProtocolViolationDetected", (name, kind)   # every one of these lies is caught
    assert obj.party == "server"


def test_double_reveal():
    x = _values(8, 10)
    kind, err, rec = _outcome(x, threshold=5, adversary="double-reveal", adversary_options={"target": 3})
    assert kind == "UnmaskingRefused" and rec == {}          # honest-but-curious refusal already blocks it
    assert "both" in str(err) and err.subject == 3
    kind, err, rec = _outcome(x, threshold=6, adversary="double-reveal", active_security=True,
                              adversary_options={"target": 3})
    assert kind == "ProtocolViolationDetected" and err.check == "double reveal" and err.subject == 3
    assert rec == {}


@pytest.mark.parametrize("neighbors", [None, 4])
def test_inconsistent_survivors(neighbors):
    x = _values(11, 10, seed=4)
    kind, obj, rec = _outcome(x, threshold=8, neighbors=neighbors, adversary="inconsistent-survivors")
    assert kind in {"exact", "SecureAggregationAborted"} and rec == {}
    kind, err, rec = _outcome(x, threshold=8, neighbors=neighbors, adversary="inconsistent-survivors",
                              active_security=True)
    assert kind == "ProtocolViolationDetected" and rec == {}
    # Neither story reaches t = 8 signers (6 and 5 clients): every client detects the split.
    assert err.check == "consistency threshold"
    assert sorted(e.detected_by for e in err.incidents) == list(range(11))


def test_key_substitution_reads_the_target_without_signatures():
    """Without signatures the server can list its own channel keys in place of the
    neighbours' (and the target's): a man in the middle on every share channel of the
    target. The sum stays exact, nobody notices, and the server holds all of the
    target's shares: b and s^SK, hence x_target. The advertised-key signatures stop it."""
    x = _values(7, 30, seed=6)
    kind, res, rec = _outcome(x, threshold=5, adversary="key-substitution", adversary_options={"target": 4})
    assert kind == "exact" and set(rec) == {4} and torch.equal(rec[4], x[4])
    kind, err, rec = _outcome(x, threshold=5, adversary="key-substitution", active_security=True,
                              adversary_options={"target": 4})
    assert kind == "ProtocolViolationDetected" and rec == {}
    assert err.check == "advertised-key signature" and err.round == "share_keys"


def test_replay():
    x = _values(8, 12, seed=7)
    graph = SecAggProtocol(x, modulus_bits=16, threshold=5, neighbors=4).graph   # given explicitly below
    target = 0
    kind, res, rec = _outcome(x, threshold=5, neighbors=graph, adversary="replay",
                              adversary_options={"target": target})
    assert rec == {}
    r = graph[target][0]
    if kind == "exact":     # replayed ciphertexts fail AES-GCM: dropped shares, exact sum
        assert (target, r) in res.failed_shares and len(res.failed_shares) >= 2
    else:
        assert kind == "SecureAggregationAborted"
    kind, err, rec = _outcome(x, threshold=6, neighbors=graph, adversary="replay", active_security=True,
                              adversary_options={"target": target})
    assert kind == "ProtocolViolationDetected" and rec == {}
    assert err.check in {"consistency signature", "share ciphertext authentication"}


def _drop_and_unmask_setup():
    # SecAgg+ with k = 4: 5 share holders per client, per-client threshold 3; t = 9 > 2n/3 = 8.
    x = _values(12, 30, seed=8)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=9, neighbors=4, seed=0)
    assert proto.share_threshold == 3
    return x, proto.graph


def test_drop_and_unmask_all_honest_is_blocked_by_the_refusal_rule():
    """With every holder honest and a majority share threshold, the two stories cannot both
    collect enough shares: the honest-but-curious protocol already stops it."""
    x, graph = _drop_and_unmask_setup()
    for neighbors, t in ((None, 7), (4, 9)):
        kind, obj, rec = _outcome(x, threshold=t, neighbors=neighbors, adversary="drop-and-unmask",
                                  adversary_options={"target": 0})
        assert kind in {"exact", "SecureAggregationAborted"} and rec == {}


def test_drop_and_unmask_recovers_the_input_without_the_consistency_check():
    """One corrupt neighbour of the target (n_C = 1 < n/3). The server receives y_0, tells
    the target and one honest holder that 0 survived (b-shares) and the other two honest
    holders that 0 dropped (s^SK-shares); the corrupt holder gives both. No honest
    client is asked for both shares, so no one refuses, and each story has the per-client
    threshold of 3 shares: the server unmasks x_0 exactly, and the sum is exact too.
    With active security the two holders told "0 dropped" see only 3 signatures on their
    U3 (theirs and the corrupt one's), fewer than t = 9: they abort and x_0 stays hidden."""
    x, graph = _drop_and_unmask_setup()
    corrupt = [graph[0][0]]
    opts = {"target": 0, "corrupt": corrupt}
    kind, res, rec = _outcome(x, threshold=9, neighbors=graph, adversary="drop-and-unmask", adversary_options=opts)
    assert kind == "exact"
    assert set(rec) == {0} and torch.equal(rec[0], x[0])          # the leak the option exists for
    assert 0 in res.survivors and not set(res.reconstructed_keys) & set(res.reconstructed_seeds)
    kind, err, rec = _outcome(x, threshold=9, neighbors=graph, adversary="drop-and-unmask", adversary_options=opts,
                              active_security=True)
    assert kind == "ProtocolViolationDetected" and rec == {}
    assert err.check == "consistency threshold" and err.detected_by in graph[0]
    told_dropped = [e.detected_by for e in err.incidents]
    assert len(told_dropped) == 2 and set(told_dropped) <= set(graph[0]) - set(corrupt)


def test_adversary_option_validation():
    x = _values(6, 3)
    with pytest.raises(ValueError, match="target"):
        run_protocol(x, modulus_bits=16, threshold=4, adversary="replay", adversary_options={"target": 6})
    with pytest.raises(ValueError, match="corrupt"):
        run_protocol(x, modulus_bits=16, threshold=4, adversary="drop-and-unmask",
                     adversary_options={"target": 1, "corrupt": [1]})
    with pytest.raises(ValueError, match="unknown adversary option"):
        run_protocol(x, modulus_bits=16, threshold=4, adversary="replay", adversary_options={"victim": 1})


# -- the oracle ------------------------------------------------------------------------


def test_masked_oracle_with_active_security_equals_quantized():
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(10, 50, generator=g) * 2 - 1, torch.rand(10, generator=g) + 0.1
    on = MaskedOracle(threshold=0.75, clip=1.0, seed=2, active_security=True)
    off = MaskedOracle(threshold=0.75, clip=1.0, seed=2, active_security=False)
    q = QuantizedOracle(clip=1.0, seed=2)
    a, b, c = on.average(x, w), off.average(x, w), q.average(x, w)
    assert torch.equal(a, c) and torch.equal(b, c)
    drop = MaskedOracle(threshold=0.7, clip=1.0, seed=2, active_security=True, dropout_rate=0.2,
                        dropout_round="consistency_check")
    assert torch.isfinite(drop.average(x, w)).all()
    with pytest.raises(ValueError, match="active_security"):
        MaskedOracle(dropout_round="consistency_check", active_security=False)
    with pytest.raises(TypeError, match="active_security"):
        MaskedOracle(active_security="yes")
    assert issubclass(ProtocolViolationDetected, SecureAggregationAborted)
    assert issubclass(UnmaskingRefused, SecureAggregationAborted)


def test_isolate_needs_the_neighbour_check_on_secagg_plus():
    """The server declares all four neighbours of client 0 dropped after their masked inputs
    arrived (one story for everyone, so |U3| = 16 >= t = 14 and the signatures agree). Two
    neighbours are corrupt (fewer than t_s = 3, as the bound's S1 allows): with client 0's
    own b-share that is t_s b-shares, and the honest holders reveal the neighbours' s^SK-shares.
    Without the "neighbours in U3" check this unmasks x_0 under active security too; with it,
    client 0 and the other holders refuse to sign a U3 that leaves 0 fewer than t_s neighbours."""
    x = _values(20, 16, seed=9)
    ring = graphs.harary_graph(20, 4)
    opts = {"target": 0, "corrupt": ring[0][:2]}
    kind, obj, rec = _outcome(x, threshold=14, neighbors=ring, adversary="isolate", adversary_options=opts)
    assert set(rec) == {0} and torch.equal(rec[0], x[0])           # honest-but-curious: no defence claimed
    kind, err, rec = _outcome(x, threshold=14, neighbors=ring, adversary="isolate", adversary_options=opts,
                              active_security=True)
    assert kind == "ProtocolViolationDetected" and rec == {}
    assert err.check == "neighbours in U3" and 0 in {e.detected_by for e in err.incidents}
    # The complete graph needs no such check: isolating 0 leaves U3 = {0}, below t.
    kind, err, rec = _outcome(x, threshold=14, adversary="isolate", adversary_options=opts, active_security=True)
    assert kind == "ProtocolViolationDetected" and err.check == "survivor set size" and rec == {}
