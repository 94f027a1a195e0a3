"""The masked protocol (Bonawitz et al. 2017, Fig. 4; SecAgg+ of Bell et al. 2020).

The invariant: `.total` is exactly the modular sum of the inputs of the clients
whose masked input arrived, or the protocol aborts in the round where a threshold
was missed. Expected outcomes are computed here from the protocol's rules alone.
"""
import random

import numpy as np
import pytest
import torch
from scipy import stats

from secagg import (ROUNDS, SecAggProtocol, SecureAggregationAborted, UnmaskingRefused, modular_sum,
                    run_protocol)
from secagg import crypto, graph as graphs, shamir

_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# -- helpers -------------------------------------------------------------------------


def _values(n, d, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    if bits == 64:
        return torch.randint(-2 ** 63, 2 ** 63 - 1, (n, d), generator=g, dtype=torch.int64)
    hi = 2 ** bits
    if bits >= 63:
        return torch.randint(0, 2 ** 62, (n, d), generator=g) * 2 + torch.randint(0, 2, (n, d), generator=g)
    return torch.randint(0, hi, (n, d), generator=g, dtype=torch.int64)


def _expected(n, t, tl, adj, drops):
    """('abort', round) or ('ok', U3), from the rules in the protocol's docstring."""
    U1 = set(range(n)) - set(drops.get("advertise_keys", ()))
    U2 = U1 - set(drops.get("share_keys", ()))
    U3 = U2 - set(drops.get("masked_input", ()))
    U4 = U3 - set(drops.get("unmasking", ()))
    holders = {u: ({u} | set(adj[u])) & U1 for u in U1}
    for rnd, alive in (("advertise_keys", U1), ("share_keys", U2), ("masked_input", U3)):
        if len(alive) < t:
            return "abort", rnd
        if any(len(holders[u] & alive) < tl for u in alive):
            return "abort", rnd
    if len(U4) < t:
        return "abort", "unmasking"
    need = list(U3) + [v for v in U2 - U3 if set(adj[v]) & U3]
    if any(len(holders[v] & U4) < tl for v in need):
        return "abort", "unmasking"
    return "ok", sorted(U3)


def _random_case(rng: random.Random, max_n=10, max_d=40):
    n = rng.randint(1, max_n)
    bits = rng.choice([b for b in (1, 2, 3, 7, 8, 16, 31, 32, 33, 47, 63, 64) if 2 ** b > n])
    d = rng.choice([0, 1, 2, rng.randint(3, max_d)])
    t = rng.randint(n // 2 + 1, n)
    neighbors = None
    if n >= 3 and rng.random() < 0.4:
        ks = [k for k in range(2, n - 1) if not (k % 2 and n % 2)]
        neighbors = rng.choice(ks) if ks else None
    rate = rng.choice([0.0, 0.1, 0.25, 0.4])
    drops = {}
    for u in range(n):
        if rng.random() < rate:
            drops.setdefault(rng.choice(ROUNDS), []).append(u)
    return n, d, bits, t, neighbors, drops


def _check_case(case, seed):
    n, d, bits, t, neighbors, drops = case
    x = _values(n, d, bits, seed)
    proto = SecAggProtocol(x, modulus_bits=bits, threshold=t, neighbors=neighbors, dropouts=drops, seed=seed)
    want = _expected(n, t, proto.share_threshold, proto.graph, drops)
    if want[0] == "abort":
        with pytest.raises(SecureAggregationAborted) as info:
            proto.run()
        assert info.value.round == want[1], (case, str(info.value))
        return "abort"
    res = proto.run()
    assert res.survivors == want[1]
    assert res.total.dtype == torch.int64 and res.total.shape == (d,)
    assert torch.equal(res.total, modular_sum(x[res.survivors], bits)), case
    assert res.masked_inputs.shape == (len(res.survivors), d)
    return "ok"


# -- bit-exactness -------------------------------------------------------------------


def test_no_dropout_complete_graph_is_exact_sum():
    x = _values(9, 257, 32)
    res = run_protocol(x, modulus_bits=32, threshold=6)
    assert res.survivors == list(range(9))
    assert torch.equal(res.total, modular_sum(x, 32))
    assert res.protocol == "secagg"


@pytest.mark.parametrize("bits", [4, 8, 31, 32, 33, 64])
def test_dropouts_in_every_round_exact(bits):
    n = 12
    x = _values(n, 100, bits, seed=bits)
    drops = {"advertise_keys": [3], "share_keys": [7], "masked_input": [0, 11], "unmasking": [5]}
    res = run_protocol(x, modulus_bits=bits, threshold=7, dropouts=drops, seed=bits)
    # A client that drops in unmasking already sent its masked input: it is in the sum.
    assert res.survivors == [1, 2, 4, 5, 6, 8, 9, 10]
    assert torch.equal(res.total, modular_sum(x[res.survivors], bits))
    assert sorted(res.reconstructed_seeds) == res.survivors
    assert sorted(res.reconstructed_keys) == [0, 11]          # only the masked_input dropouts
    assert res.rounds["unmasking"] == [1, 2, 4, 6, 8, 9, 10]


def test_64_bit_inputs_are_any_int64():
    x = torch.tensor([[-1, 2 ** 63 - 1, -2 ** 63], [5, 1, -1], [7, 0, 3]], dtype=torch.int64)
    res = run_protocol(x, modulus_bits=64, threshold=2, dropouts={"masked_input": [2]})
    assert torch.equal(res.total, x[:2].sum(0))                 # int64 addition wraps mod 2^64


def test_seeded_sweep_fast():
    rng = random.Random(1234)
    outcomes = [_check_case(_random_case(rng), seed) for seed in range(40)]
    assert "ok" in outcomes and "abort" in outcomes


@pytest.mark.slow
def test_seeded_sweep_large():
    rng = random.Random(99)
    outcomes = [_check_case(_random_case(rng, max_n=24, max_d=3000), seed) for seed in range(1000)]
    assert outcomes.count("ok") > 250 and outcomes.count("abort") > 50


@pytest.mark.slow
def test_hypothesis_sweep():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=300, deadline=None, derandomize=True)
    @hyp.given(st.integers(0, 2 ** 32 - 1))
    def check(seed):
        _check_case(_random_case(random.Random(seed), max_n=16, max_d=200), seed % 1000)

    check()


@pytest.mark.parametrize("rnd", ROUNDS)
def test_aborts_exactly_when_a_round_falls_below_threshold(rnd):
    n, t = 10, 7
    x = _values(n, 20, 16)
    ok = run_protocol(x, modulus_bits=16, threshold=t, dropouts={rnd: list(range(n - t))})
    expect = [u for u in range(n) if rnd == "unmasking" or u >= n - t]
    assert ok.survivors == expect
    assert torch.equal(ok.total, modular_sum(x[expect], 16))
    with pytest.raises(SecureAggregationAborted) as info:
        run_protocol(x, modulus_bits=16, threshold=t, dropouts={rnd: list(range(n - t + 1))})
    err = info.value
    assert err.round == rnd and err.alive == t - 1 and err.threshold == t
    assert rnd in str(err) and f"only {t - 1}" in str(err) and f"t={t}" in str(err)


# -- SecAgg+ (k-regular graphs) -------------------------------------------------------


def test_k_regular_graph_exact_and_cheaper():
    n, d = 30, 500
    x = _values(n, d, 32, seed=3)
    drops = {"masked_input": [1, 17], "share_keys": [4]}
    full = run_protocol(x, modulus_bits=32, threshold=20, dropouts=drops)
    sparse = run_protocol(x, modulus_bits=32, threshold=20, neighbors=6, dropouts=drops)
    for res in (full, sparse):
        assert torch.equal(res.total, modular_sum(x[res.survivors], 32))
    assert sparse.protocol == "secagg+" and all(len(nb) == 6 for nb in sparse.graph)
    assert sparse.share_threshold == 4                               # majority of 7 holders
    assert sparse.keystream_bytes * 3 < full.keystream_bytes
    assert len(sparse.ciphertexts) == n * 6 - 6                       # client 4 never sent its shares


def test_k_regular_per_client_threshold_abort():
    n = 12
    x = _values(n, 5, 16)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=7, neighbors=2, seed=5)
    u = 0
    nb = proto.graph[u]                                # share holders of 0: 0 and its two neighbours
    proto.drops["masked_input"] = {u}
    proto.drops["unmasking"] = set(nb)
    with pytest.raises(SecureAggregationAborted) as info:
        proto.run()
    # 0's mask key, or the self-mask seed of a client that lost its holders (the graph is drawn
    # fresh: one whose two neighbours are 0's), is unrecoverable.
    answer = set(range(n)) - {u} - set(nb)
    short = {c for c in range(n) if sum(h in answer for h in [c] + proto.graph[c]) < 2}
    assert u in short and info.value.round == "unmasking" and info.value.client in short
    assert info.value.threshold == proto.share_threshold == 2


def test_explicit_graph_and_auto_degree():
    n = 8
    x = _values(n, 30, 32)
    ring = [[(u - 1) % n, (u + 1) % n, (u + 2) % n, (u - 2) % n] for u in range(n)]
    res = run_protocol(x, modulus_bits=32, threshold=5, neighbors=ring, dropouts={"masked_input": [3]})
    assert res.graph == [sorted(r) for r in ring]
    assert torch.equal(res.total, modular_sum(x[res.survivors], 32))
    mat = torch.zeros(n, n, dtype=torch.bool)
    for u, r in enumerate(ring):
        mat[u, r] = True
    res2 = run_protocol(x, modulus_bits=32, threshold=5, neighbors=mat)
    assert res2.graph == res.graph
    big = _values(60, 3, 32)
    auto = run_protocol(big, modulus_bits=32, threshold=41, neighbors="auto", corrupt_fraction=0.05,
                        dropout_fraction=0.05)
    want = graphs.secagg_plus_parameters(60, 0.05, 0.05, threshold=41)
    assert want.graph == "erdos-renyi" and want.k < 59           # a sparse graph meets the bound here
    assert auto.protocol == "secagg+" and auto.share_threshold == want.share_threshold
    assert auto.bound["graph"] == "erdos-renyi" and auto.bound["k"] == want.k and auto.bound["meets"]
    degrees = [len(nb) for nb in auto.graph]
    assert min(degrees) >= auto.share_threshold and abs(np.mean(degrees) - want.k) < 6
    assert torch.equal(auto.total, modular_sum(big, 32))


def test_graph_validation():
    with pytest.raises(ValueError, match="regular"):
        graphs.harary_graph(7, 3)
    with pytest.raises(ValueError, match="symmetric"):
        graphs.adjacency_from([[1], [], []], 3)
    with pytest.raises(ValueError, match="diagonal"):
        graphs.adjacency_from(np.eye(3), 3)
    with pytest.raises(ValueError, match=r"\[1, n - 1"):
        run_protocol(_values(5, 2, 8), modulus_bits=8, threshold=3, neighbors=5)
    adj = graphs.random_regular_graph(50, 7 + 1, np.random.default_rng(0))
    assert all(len(nb) == 8 and u not in nb for u, nb in enumerate(adj))
    assert all(u in adj[v] for u, nb in enumerate(adj) for v in nb)
    assert adj != graphs.random_regular_graph(50, 8, np.random.default_rng(1))
    assert graphs.default_degree(100) == 14 and graphs.default_share_threshold(15) == 8


# -- honest-client refusal, tampering -----------------------------------------------


def test_client_refuses_double_reveal():
    class Curious(SecAggProtocol):
        def unmask_request(self, client, survivors, dropped):
            return survivors, dropped + [survivors[0]]       # asks for both shares of one client

    x = _values(6, 10, 16)
    with pytest.raises(UnmaskingRefused, match="both"):
        Curious(x, modulus_bits=16, threshold=4, dropouts={"masked_input": [5]}).run()


def test_client_refuses_second_kind_across_requests():
    x = _values(5, 4, 16)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=3)
    proto.run()
    client = proto.clients[1]
    assert 2 in client.unmask([2], [])["b"]                    # b-share of 2 already revealed in run
    with pytest.raises(UnmaskingRefused):
        client.unmask([], [2])                                 # now the mask-key share of 2
    with pytest.raises(UnmaskingRefused):
        proto.clients[3].unmask([0, 4], [4])


def test_tampered_ciphertext_is_a_dropped_share_not_a_wrong_sum():
    x = _values(6, 50, 32)
    res = run_protocol(x, modulus_bits=32, threshold=4, dropouts={"masked_input": [0]}, tamper=[(0, 1), (2, 3)])
    assert res.failed_shares == [(0, 1), (2, 3)]
    assert torch.equal(res.total, modular_sum(x[res.survivors], 32))
    assert res.ciphertexts[(0, 1)] != run_protocol(x, modulus_bits=32, threshold=4).ciphertexts[(0, 1)]
    # Too many tampered shares of one secret: abort in unmasking, never a wrong total.
    with pytest.raises(SecureAggregationAborted) as info:
        run_protocol(x, modulus_bits=32, threshold=4, tamper=[(0, 1), (0, 2), (0, 3)])
    assert info.value.round == "unmasking" and info.value.client == 0
    assert "failed authentication" in str(info.value)


def test_misdirected_ciphertext_fails_authentication():
    class Misroute(SecAggProtocol):
        def relay(self, sender, recipient, ciphertext):
            if (sender, recipient) == (1, 0):
                self._keep = ciphertext
            if (sender, recipient) == (2, 0):
                return self._keep                              # 1->0 delivered as if from 2
            return ciphertext

    x = _values(5, 8, 16)
    res = Misroute(x, modulus_bits=16, threshold=3).run()
    assert (2, 0) in res.failed_shares                          # u, v bound in the associated data
    assert torch.equal(res.total, modular_sum(x, 16))


# -- input validation ------------------------------------------------------------------


def test_wrong_inputs_are_refused():
    x = _values(4, 6, 16)
    with pytest.raises(ValueError, match="matrix"):
        run_protocol(x[0], modulus_bits=16, threshold=3)
    with pytest.raises(ValueError, match="matrix"):
        run_protocol(x[None], modulus_bits=16, threshold=3)
    with pytest.raises(TypeError, match="int64"):
        run_protocol(x.to(torch.int32), modulus_bits=16, threshold=3)
    with pytest.raises(TypeError, match="int64"):
        run_protocol(x.float(), modulus_bits=16, threshold=3)
    with pytest.raises(ValueError, match="no rows"):
        run_protocol(x[:0], modulus_bits=16, threshold=1)
    with pytest.raises(ValueError, match="unknown round"):
        run_protocol(x, modulus_bits=16, threshold=3, dropouts={"round2": [1]})
    with pytest.raises(ValueError, match="outside"):
        run_protocol(x, modulus_bits=16, threshold=3, dropouts={"share_keys": [4]})
    with pytest.raises(ValueError, match="both"):
        run_protocol(x, modulus_bits=16, threshold=3, dropouts={"share_keys": [1], "unmasking": [1]})
    with pytest.raises(ValueError, match=r"\[1, 64\]"):
        run_protocol(x, modulus_bits=65, threshold=3)


def test_entries_outside_the_modulus_are_refused():
    x = _values(4, 6, 8)
    for bad in (256, -1):
        y = x.clone()
        y[2, 3] = bad
        with pytest.raises(ValueError, match=r"\[0, 2\^8\)"):
            run_protocol(y, modulus_bits=8, threshold=3)


def test_modulus_too_small_for_n():
    x = torch.zeros(8, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="too small for n=8"):
        run_protocol(x, modulus_bits=3, threshold=5)
    assert torch.equal(run_protocol(x, modulus_bits=4, threshold=5).total, torch.zeros(3, dtype=torch.int64))


def test_threshold_bounds():
    x = _values(6, 3, 16)
    with pytest.raises(ValueError, match="exceeds"):
        run_protocol(x, modulus_bits=16, threshold=7)
    with pytest.raises(ValueError, match="allow_insecure_threshold"):
        run_protocol(x, modulus_bits=16, threshold=3)
    with pytest.raises(TypeError):
        run_protocol(x, modulus_bits=16, threshold=4.0)
    res = run_protocol(x, modulus_bits=16, threshold=3, allow_insecure_threshold=True,
                       dropouts={"masked_input": [0, 1, 2]})
    assert torch.equal(res.total, modular_sum(x[3:], 16))
    with pytest.raises(ValueError, match="share_threshold"):
        run_protocol(_values(20, 2, 16), modulus_bits=16, threshold=15, neighbors=6, share_threshold=3)


# -- what the server sees -----------------------------------------------------------


def test_masked_inputs_look_uniform_and_are_fresh_per_instance():
    n, d = 8, 20000
    x = torch.zeros(n, d, dtype=torch.int64)                     # the most structured input
    a = run_protocol(x, modulus_bits=32, threshold=5, instance=0)
    b = run_protocol(x, modulus_bits=32, threshold=5, instance=1)
    a2 = run_protocol(x, modulus_bits=32, threshold=5, instance=0)                  # same (seed, instance)
    for res in (a, b):
        raw = res.masked_inputs.to(torch.int32).numpy().view(np.uint8)   # low 4 bytes = the residue
        counts = np.bincount(raw.ravel(), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
        assert torch.equal(res.total, torch.zeros(d, dtype=torch.int64))
    assert (a.masked_inputs != b.masked_inputs).float().mean() > 0.99  # fresh masks per instance
    assert (a.masked_inputs != a2.masked_inputs).float().mean() > 0.99  # ... even for the same (seed, instance)
    assert a.public_keys != b.public_keys and a.public_keys != a2.public_keys
    r1, r2 = (run_protocol(x, modulus_bits=32, threshold=5, instance=0, insecure_reproducible=True) for _ in range(2))
    assert torch.equal(r1.masked_inputs, r2.masked_inputs)            # only when asked: INSECURE


def test_server_view_contents():
    n = 7
    x = _values(n, 12, 32)
    res = run_protocol(x, modulus_bits=32, threshold=4, dropouts={"masked_input": [2], "share_keys": [6]})
    view = res.server_view()
    assert set(view) >= {"masked_inputs", "ciphertexts", "reconstructed_seeds", "reconstructed_keys",
                         "public_keys", "rounds", "graph"}
    # Senders are the 6 clients of U2; each encrypts to the other 6 advertisers (U1).
    assert len(res.ciphertexts) == 6 * 6
    assert all(len(ct) == 8 + 2 * shamir.SHARE_BYTES + 16 for ct in res.ciphertexts.values())
    # The server never holds both secrets of one client.
    assert not set(res.reconstructed_seeds) & set(res.reconstructed_keys)
    for v, key in res.reconstructed_keys.items():
        assert crypto.public_bytes(crypto.X25519PrivateKey.from_private_bytes(key)) == res.public_keys[v][1]


def test_masked_input_matches_the_formula():
    """y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod M, computed naively."""
    for bits, neighbors in ((32, None), (20, 4), (64, None), (40, 6)):
        n, d = 9, 33
        x = _values(n, d, bits)
        proto = SecAggProtocol(x, modulus_bits=bits, threshold=5, neighbors=neighbors,
                               dropouts={"masked_input": [3], "share_keys": [5]})
        res = proto.run()
        U2 = set(res.rounds["share_keys"])
        mod = 1 << bits
        for i, u in enumerate(res.survivors):
            c = proto.clients[u]
            y = [int(v) % mod for v in x[u].tolist()]
            terms = [(+1, c.self_mask_key())]
            terms += [(+1 if v < u else -1, c.pairwise_mask_key(v)) for v in proto.graph[u] if v in U2]
            for sign, key in terms:
                words = crypto.prg_words(key, d, bits)
                y = [(a + sign * int(w)) % mod for a, w in zip(y, words)]
            got = [int(v) % mod for v in res.masked_inputs[i].tolist()]
            assert got == y, (bits, neighbors, u)


def test_both_ends_derive_the_same_pairwise_key():
    x = _values(4, 2, 16)
    proto = SecAggProtocol(x, modulus_bits=16, threshold=3)
    proto.run()
    for c in proto.clients:
        c._cache = None                                          # no shared memo: derive independently
    for u in range(4):
        for v in range(u + 1, 4):
            assert proto.clients[u].pairwise_mask_key(v) == proto.clients[v].pairwise_mask_key(u)


# -- primitives ----------------------------------------------------------------------


def _is_probable_prime(p, rounds=32):
    d, s = p - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(0)
    for _ in range(rounds):
        x = pow(rng.randrange(2, p - 1), d, p)
        if x in (1, p - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, p)
            if x == p - 1:
                break
        else:
            return False
    return True


def test_shamir_field_and_threshold():
    assert _is_probable_prime(shamir.PRIME) and shamir.PRIME > 2 ** 256
    rng = random.Random(5)
    secret = rng.getrandbits(256)
    holders = list(range(10))
    shares = shamir.share(secret, 6, holders, [rng.randrange(shamir.PRIME) for _ in range(5)])
    for _ in range(5):
        subset = rng.sample(holders, 6)
        assert shamir.reconstruct({h: shares[h] for h in subset}, 6) == secret
    assert shamir.reconstruct({h: shares[h] for h in holders[:5]}, 5) != secret   # t - 1 shares: garbage
    with pytest.raises(ValueError):
        shamir.reconstruct({h: shares[h] for h in holders[:5]}, 6)


def test_prg_is_uniform_words_mod_m():
    key = bytes(range(32))
    w32 = crypto.prg_words(key, 1000, 32)
    w8 = crypto.prg_words(key, 1000, 8)
    assert w32.dtype == np.uint32 and np.array_equal(w8, w32 & 0xFF)
    assert crypto.prg_words(key, 10, 64).dtype == np.uint64
    assert not np.array_equal(w32, crypto.prg_words(bytes(32), 1000, 32))
    # The PRG is RFC 8439 ChaCha20 (nonce zero, counter 0): the RFC's Sec. 2.3.2 key and a plain
    # OpenSSL encryptor give the same little-endian words, and 64-bit words pair them up.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    ref = Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor().update(bytes(8000))
    assert np.array_equal(crypto.prg_words(key, 2000, 32), np.frombuffer(ref, "<u4"))
    assert np.array_equal(crypto.prg_words(key, 1000, 64), np.frombuffer(ref, "<u8"))
    assert crypto.PRG_CIPHER == "ChaCha20" and len(crypto.mask_key(b"s" * 32, "self")) == 32


@pytest.mark.parametrize("bits", [12, 32, 40, 64])
def test_device_path_matches_host_path(monkeypatch, bits):
    """The path for inputs on an accelerator (masks moved to the device), run on the CPU."""
    import secagg.protocol.dataplane as P

    x = _values(9, 3000, bits)
    # Comparing two paths' masked inputs needs the same masks: the insecure reproducible mode.
    kw = dict(modulus_bits=bits, threshold=6, dropouts={"masked_input": [2], "unmasking": [4]}, neighbors=4,
              insecure_reproducible=True)
    host = run_protocol(x, **kw)
    monkeypatch.setattr(P, "HOST_FAST_PATH", False)
    dev = run_protocol(x.clone(), **kw)
    over = run_protocol(x.clone(), overwrite=True, **kw)
    assert torch.equal(host.total, dev.total) and torch.equal(host.masked_inputs, dev.masked_inputs)
    assert torch.equal(over.masked_inputs, dev.masked_inputs)
    assert torch.equal(dev.total, modular_sum(x[dev.survivors], bits))


def test_accelerator_inputs_stay_on_device():
    # On the GPU when there is one, else on the CPU: results follow the inputs' device.
    x = _values(10, 5000, 32).to(_DEVICE)
    kw = dict(modulus_bits=32, threshold=6, dropouts={"masked_input": [2]}, neighbors=4, insecure_reproducible=True)
    res = run_protocol(x, **kw)
    assert res.total.device == x.device and res.masked_inputs.device == x.device
    assert torch.equal(res.total.cpu(), modular_sum(x[res.survivors].cpu(), 32))
    cpu = run_protocol(x.cpu(), **kw)
    assert torch.equal(cpu.masked_inputs, res.masked_inputs.cpu())


def test_overwrite_reuses_the_input_buffer():
    x = _values(8, 700, 32)
    kw = dict(modulus_bits=32, threshold=5, dropouts={"masked_input": [0, 5]}, insecure_reproducible=True)
    fresh = run_protocol(x, **kw)
    y = x.clone()
    over = run_protocol(y, overwrite=True, **kw)
    assert over.masked_inputs.data_ptr() == y.data_ptr()      # rows of U3 compacted to the front
    assert torch.equal(over.masked_inputs, fresh.masked_inputs) and torch.equal(over.total, fresh.total)
    assert torch.equal(x, _values(8, 700, 32))                # without overwrite the inputs are untouched


def test_host_path_runs_on_the_run_threads_and_its_split_changes_nothing():
    # The host data plane splits the coordinates over threads (OpenSSL releases the GIL); the
    # masked inputs and the sum do not depend on how many.
    import secagg.protocol.dataplane as P
    x = _values(12, 70_000 + 17, 32)
    kw = dict(modulus_bits=32, threshold=8, neighbors=5, dropouts={"masked_input": [3]}, insecure_reproducible=True)
    proto1 = SecAggProtocol(x, **kw)
    one = proto1.run()
    two = run_protocol(x, **kw)
    assert torch.equal(one.total, two.total) and torch.equal(one.masked_inputs, two.masked_inputs)
    U2 = set(one.rounds["share_keys"])
    survivors = one.survivors
    plan_args = (proto1.clients, proto1.graph, survivors, U2, one.reconstructed_seeds, one.reconstructed_keys,
                 one.public_keys)
    for workers in (1, 3):
        total, masked, _ = P.masked_sum(x, 32, *plan_args, workers=workers)
        assert torch.equal(total, one.total) and torch.equal(masked, one.masked_inputs)
    # in groups of 5 survivors (edges between groups generated on each side): the same values
    grouped = P.EncodedRows(12, x.shape[1], "cpu", lambda ids: x[ids], group_rows=5)
    total, masked, nbytes = P.masked_sum(grouped, 32, *plan_args)
    assert torch.equal(total, one.total) and torch.equal(masked, one.masked_inputs)
    assert nbytes > one.keystream_bytes                          # cross-group edges: twice


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("bits", [20, 32, 64])
def test_cuda_data_plane_equals_the_host_path_and_keeps_masks_on_device(monkeypatch, bits):
    """On CUDA the keystreams come from secagg.chacha20 on the device (the host engine must not
    run); the masked inputs and the sum equal OpenSSL's host path bit for bit."""
    import secagg.keystream as KS
    x = _values(40, 300_000 + 5, bits)
    kw = dict(modulus_bits=bits, threshold=27, neighbors="auto", dropouts={"masked_input": [1, 7]},
              insecure_reproducible=True)
    host = run_protocol(x, **kw)

    def no_host(*a, **k):
        raise AssertionError("the host keystream engine ran for CUDA inputs")
    monkeypatch.setattr(KS, "stream_columns", no_host)
    dev = run_protocol(x.cuda(), **kw)
    assert dev.total.device.type == "cuda" and dev.masked_inputs.device.type == "cuda"
    assert torch.equal(host.total, dev.total.cpu()) and torch.equal(host.masked_inputs, dev.masked_inputs.cpu())
    assert torch.equal(dev.total.cpu(), modular_sum(x[dev.survivors], bits))
