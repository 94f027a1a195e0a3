"""Real secrecy of the masked protocol (issue 18): what a server holding the transcript and the
run's public configuration (seed, call counter) can rebuild.

Each attack re-derives the protocol's secrets the way a seeded simulation would
(:func:`secagg.secrets.instance_root`, :func:`secagg.secrets.client_secrets`,
:func:`secagg.secrets.long_term_signing_key`: the derivation ``insecure_reproducible=True``
keeps) and must fail on a default run. The same attack against an
``insecure_reproducible=True`` run is the positive control: it succeeds, which is why that
mode is labelled insecure in every result.
"""
import copy

import numpy as np
import pytest
import torch

from secagg import (MaskedOracle, ProtocolViolationDetected, QuantizedOracle, SecAggProtocol, Transcript,
                    modular_sum, run_protocol)
from secagg import crypto, secrets as sec
from secagg.pki import SimulatedPKI, key_message
from secagg.protocol.adversary import KeySubstitution


def _values(n, d, bits=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64)


def _rebuild_from_seed(view, seed, instance, bits):
    """The attack: rebuild every x_u from the server view and (seed, instance) alone.

    x_u = y_u - PRG(b_u) - sum_{v<u} PRG(s_uv) + sum_{v>u} PRG(s_uv) with b_u and s_u^SK
    re-derived from the instance root as a seeded simulation would draw them."""
    root = sec.instance_root(seed, instance)
    survivors = view["rounds"]["masked_input"]
    U2 = set(view["rounds"]["share_keys"])
    masked = view["masked_inputs"]
    d, mod = masked.shape[1], 1 << bits
    out = {}
    for i, u in enumerate(survivors):
        src = sec.client_secrets(root, u)
        src.x25519_private_bytes()                     # c_u^SK (channel key), drawn first
        s_raw = src.x25519_private_bytes()             # s_u^SK (mask key)
        b = src.self_mask_seed()
        y = masked[i].numpy().astype(np.uint64)
        y = y - crypto.prg_words(crypto.mask_key(b, "self"), d, bits).astype(np.uint64)
        for v in view["graph"][u]:
            if v not in U2:
                continue
            w = crypto.prg_words(crypto.mask_key(crypto.agree(s_raw, view["public_keys"][v][1]), "pair"), d, bits)
            y = y - w.astype(np.uint64) if v < u else y + w.astype(np.uint64)
        out[u] = torch.from_numpy((y % np.uint64(mod) if bits < 64 else y).view(np.int64).copy())
    return out


# -- fresh secrets per instance --------------------------------------------------------


def test_same_seed_different_inputs_give_fresh_keys_and_masks():
    x1, x2 = _values(8, 4000, seed=1), _values(8, 4000, seed=2)
    a = run_protocol(x1, modulus_bits=32, threshold=6, seed=0)
    b = run_protocol(x2, modulus_bits=32, threshold=6, seed=0)
    keys_a = {k for pair in a.public_keys.values() for k in pair}
    keys_b = {k for pair in b.public_keys.values() for k in pair}
    assert not keys_a & keys_b                                     # no key repeats
    # With repeated masks y1 - y2 = x1 - x2 (mod M) everywhere; fresh masks make it a coincidence.
    same = ((a.masked_inputs - b.masked_inputs) % 2 ** 32) == ((x1 - x2) % 2 ** 32)
    assert same.float().mean() < 1e-3
    assert torch.equal(a.total, modular_sum(x1, 32)) and torch.equal(b.total, modular_sum(x2, 32))


@pytest.mark.parametrize("neighbors", [None, 4])
def test_server_with_seed_and_counter_cannot_unmask(neighbors):
    x = _values(10, 300)
    res = run_protocol(x, modulus_bits=32, threshold=7, neighbors=neighbors, seed=0, instance=3,
                       dropouts={"masked_input": [4]})
    rebuilt = _rebuild_from_seed(res.server_view(), seed=0, instance=3, bits=32)
    assert set(rebuilt) == set(res.survivors)
    for u, xu in rebuilt.items():
        assert (xu != x[u]).float().mean() > 0.99, u              # nothing of x_u comes back
    # Positive control: the same attack on an insecure_reproducible run rebuilds every input.
    weak = run_protocol(x, modulus_bits=32, threshold=7, neighbors=neighbors, seed=0, instance=3,
                        dropouts={"masked_input": [4]}, insecure_reproducible=True)
    for u, xu in _rebuild_from_seed(weak.server_view(), seed=0, instance=3, bits=32).items():
        assert torch.equal(xu, x[u]), u


def _encoded_inputs(x, w, bits, clip, seed):
    """The integers MaskedOracle's clients mask in their first call (QuantizedOracle's encoding)."""
    q = QuantizedOracle(bits=bits, clip=clip, seed=seed)
    u = w / w.max()
    payload = torch.cat([x * u[:, None], u[:, None]], dim=1)
    return q.encoder(x.shape[0], x.shape[1], x.device).encode(payload, generator=q.generator(x.device))


def test_masked_oracle_view_plus_seed_does_not_rebuild_the_inputs():
    g = torch.Generator().manual_seed(3)
    x, w = torch.rand(9, 40, generator=g) * 2 - 1, torch.rand(9, generator=g) + 0.1
    t = Transcript()
    MaskedOracle(clip=1.0, seed=0).average(x, w, transcript=t)
    view = t.calls[0].server_view
    truth = _encoded_inputs(x, w, 32, 1.0, 0)
    rebuilt = _rebuild_from_seed(view, seed=0, instance=view["instance"], bits=32)
    assert all((rebuilt[u] != truth[u]).float().mean() > 0.9 for u in rebuilt)
    t2 = Transcript()
    MaskedOracle(clip=1.0, seed=0, insecure_reproducible=True).average(x, w, transcript=t2)
    v2 = t2.calls[0].server_view
    assert v2["insecure_reproducible"] and "insecure" in v2["warning"]
    rebuilt = _rebuild_from_seed(v2, seed=0, instance=v2["instance"], bits=32)
    assert all(torch.equal(rebuilt[u], truth[u]) for u in rebuilt)     # the control: the attack works


def test_a_copied_oracle_never_reuses_masks_on_other_inputs():
    """The audit snapshots the simulation (deepcopy) and replays rounds on other inputs with the
    same call counter: the two instances must not share masks."""
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.rand(8, 30, generator=g) * 2 - 1, torch.rand(8, 30, generator=g) * 2 - 1
    w = torch.ones(8)
    oracle = MaskedOracle(clip=1.0, seed=0, active_security=True)
    snapshot = copy.deepcopy(oracle)
    t1, t2 = Transcript(), Transcript()
    oracle.average(x1, w, transcript=t1)
    snapshot.average(x2, w, transcript=t2)
    v1, v2 = t1.calls[0].server_view, t2.calls[0].server_view
    assert v1["instance"] == v2["instance"] == 0
    assert not {k for p in v1["public_keys"].values() for k in p} & {k for p in v2["public_keys"].values() for k in p}
    e1, e2 = _encoded_inputs(x1, w, 32, 1.0, 0), _encoded_inputs(x2, w, 32, 1.0, 0)
    same = ((v1["masked_inputs"] - v2["masked_inputs"]) % 2 ** 32) == ((e1 - e2) % 2 ** 32)
    assert same.float().mean() < 0.05


# -- the PKI's long-term keys ----------------------------------------------------------


class _SeedForgingSubstitution(KeySubstitution):
    """Key substitution whose fake keys carry signatures made with long-term keys re-derived
    from the public seed (how a seeded PKI would have made them)."""

    name = "seed-forging-key-substitution"

    def keys_for(self, client, keys):
        out = super().keys_for(client, keys)
        p = self.proto
        if not p.active:
            return out
        forged = {}
        for w, blob in out.items():
            if blob[:32] != keys[w][:32]:      # a substituted channel key: sign it as w
                sk, _ = sec.long_term_signing_key(p.seed, w)
                blob = blob[:64] + sk.sign(key_message(p.tag, w, blob[:32], blob[32:64]))
            forged[w] = blob
        return forged


def _forged_run(x, **kw):
    proto = SecAggProtocol(x, modulus_bits=16, threshold=5, seed=0, active_security=True,
                           server=_SeedForgingSubstitution(target=4), **kw)
    try:
        res = proto.run()
    except ProtocolViolationDetected as exc:
        return "detected", exc, exc.server_recovered
    return "exact" if torch.equal(res.total, modular_sum(x[res.survivors], 16)) else "wrong", res, res.recovered


def test_key_substitution_with_keys_rederived_from_the_seed_is_detected():
    x = _values(7, 30, bits=16, seed=6)
    kind, err, rec = _forged_run(x)
    assert kind == "detected" and rec == {}
    assert err.check == "advertised-key signature" and err.round == "share_keys"
    # Control: against a seeded PKI the forged signatures verify and the target's input leaks.
    kind, res, rec = _forged_run(x, insecure_reproducible=True)
    assert kind == "exact" and set(rec) == {4} and torch.equal(rec[4], x[4])


def test_long_term_keys_are_fresh_per_pki_and_kept_across_an_oracles_calls():
    a, b = SimulatedPKI(), SimulatedPKI()
    raw = lambda pki, u: pki.verification_key(u).public_bytes_raw()  # noqa: E731
    assert raw(a, 0) != raw(b, 0) and raw(a, 0) == raw(a, 0) and raw(a, 0) != raw(a, 1)
    assert raw(SimulatedPKI(insecure_seed=5), 2) == raw(SimulatedPKI(insecure_seed=5), 2)
    assert raw(SimulatedPKI(insecure_seed=5), 2) == sec.long_term_signing_key(5, 2)[1]
    oracle = MaskedOracle(clip=1.0, active_security=True)
    x, w = torch.rand(7, 5) * 2 - 1, torch.ones(7)
    oracle.average(x, w)
    first = raw(oracle.pki, 3)
    oracle.average(x, w)
    assert raw(oracle.pki, 3) == first                              # long-term: one PKI per oracle
    assert raw(MaskedOracle(clip=1.0, active_security=True).pki, 3) != first


# -- the opt-in ----------------------------------------------------------------------------


def test_insecure_reproducible_runs_are_identical_and_labelled():
    x = _values(9, 50)
    kw = dict(modulus_bits=32, threshold=7, neighbors=4, seed=11, instance=2, dropouts={"masked_input": [1]},
              insecure_reproducible=True)
    a, b = run_protocol(x, **kw), run_protocol(x, **kw)
    assert a.public_keys == b.public_keys and a.ciphertexts == b.ciphertexts and a.graph == b.graph
    assert torch.equal(a.masked_inputs, b.masked_inputs)
    assert a.insecure_reproducible and "insecure" in a.warning
    view = a.server_view()
    assert view["insecure_reproducible"] is True and view["warning"] == a.warning
    c = run_protocol(x, **{**kw, "insecure_reproducible": False})
    assert not c.insecure_reproducible and c.warning is None and c.server_view()["insecure_reproducible"] is False
    assert c.public_keys != a.public_keys
    with pytest.raises(TypeError, match="insecure_reproducible"):
        run_protocol(x, modulus_bits=32, threshold=7, insecure_reproducible="yes")


def test_masked_oracle_reproducible_only_when_asked():
    g = torch.Generator().manual_seed(5)
    x, w = torch.rand(8, 20, generator=g) * 2 - 1, torch.rand(8, generator=g) + 0.1

    def views(**kw):
        t = Transcript()
        MaskedOracle(clip=1.0, seed=3, neighbors=4, **kw).average(x, w, transcript=t)
        return t.calls[0].server_view

    r1, r2 = views(insecure_reproducible=True), views(insecure_reproducible=True)
    assert r1["public_keys"] == r2["public_keys"] and torch.equal(r1["masked_inputs"], r2["masked_inputs"])
    s1, s2 = views(), views()
    assert s1["public_keys"] != s2["public_keys"] and not s1["insecure_reproducible"]
