"""secagg.chacha20: the ChaCha20 keystream (RFC 8439) in torch, bit for bit OpenSSL's.

Cross-checked against the RFC's test vectors and against ``cryptography``'s ChaCha20 on
random keys, nonces, counters and lengths (the CPU twin of the CUDA backends; the
compiled and Triton backends are checked the same way by scripts/gpu_check.sh).
"""
import os

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg import chacha20_keystream
from secagg.chacha20 import backend, chacha20_block_words, chacha20_keystream_batch


def _openssl(key: bytes, nonce: bytes, nbytes: int, counter: int = 0) -> bytes:
    enc = Cipher(algorithms.ChaCha20(key, counter.to_bytes(4, "little") + nonce), None).encryptor()
    return enc.update(bytes(nbytes))


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.cpu().tolist())


def test_rfc8439_block_function_vector():
    # RFC 8439, Sec. 2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block count 1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    want = bytes.fromhex(
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
    assert _bytes(chacha20_keystream(key, nonce, 64, counter=1)) == want == _openssl(key, nonce, 64, 1)


def test_rfc8439_appendix_a1_zero_key():
    # RFC 8439, Appendix A.1, test vector #1: all-zero key and nonce, block counter 0
    want = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")
    assert _bytes(chacha20_keystream(bytes(32), bytes(12), 64)) == want == _openssl(bytes(32), bytes(12), 64)


@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 65, 200, 1031])
def test_random_keys_nonces_counters_match_openssl(nbytes):
    rng = np.random.default_rng(nbytes)
    for _ in range(3):
        key, nonce = rng.bytes(32), rng.bytes(12)
        counter = int(rng.integers(0, 2 ** 32 - 64))
        assert _bytes(chacha20_keystream(key, nonce, nbytes, counter=counter)) == \
            _openssl(key, nonce, nbytes, counter)


def test_counter_at_the_top_of_its_range():
    key, nonce = os.urandom(32), os.urandom(12)
    top = 2 ** 32 - 2       # two blocks left: the int32 counter word wraps through negative values
    assert _bytes(chacha20_keystream(key, nonce, 128, counter=top)) == _openssl(key, nonce, 128, top)
    with pytest.raises(ValueError, match="overflow ChaCha20's 32-bit block counter"):
        chacha20_keystream(key, nonce, 129, counter=top)
    with pytest.raises(ValueError):      # OpenSSL refuses it too
        _openssl(key, nonce, 129, top)


def test_batch_rows_are_the_single_streams_in_every_word_size():
    rng = np.random.default_rng(1)
    keys = [rng.bytes(32) for _ in range(5)]
    nonces = [rng.bytes(12) for _ in range(5)]
    counters = [0, 1, 7, 2 ** 31 - 1, 2 ** 31]      # the sign bit of the int32 counter word
    raw = chacha20_keystream_batch(keys, nonces, 328, counters=counters)
    w32 = chacha20_keystream_batch(keys, nonces, 328, counters=counters, dtype=torch.int32)
    w64 = chacha20_keystream_batch(keys, nonces, 328, counters=counters, dtype=torch.int64)
    assert raw.dtype == torch.uint8 and raw.shape == (5, 328)
    for i in range(5):
        ref = _openssl(keys[i], nonces[i], 328, counters[i])
        assert _bytes(raw[i]) == ref
        assert np.array_equal(w32[i].numpy(), np.frombuffer(ref, dtype="<i4"))
        assert np.array_equal(w64[i].numpy(), np.frombuffer(ref, dtype="<i8"))
    # keys as a uint8 tensor, one nonce shared by all streams
    kt = torch.tensor(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(5, 32))
    shared = chacha20_keystream_batch(kt, nonces[0], 64)
    assert all(_bytes(shared[i]) == _openssl(keys[i], nonces[0], 64) for i in range(5))


def test_block_words_split_over_calls_is_one_stream(monkeypatch):
    import secagg.chacha20 as c
    monkeypatch.setattr(c, "_BLOCKS_PER_CALL", 3)     # many kernel calls, ragged last one
    key, nonce = os.urandom(32), os.urandom(12)
    words = chacha20_block_words([key, key], [nonce, nonce[::-1]], 10, counters=[5, 0])
    assert np.array_equal(words[0].numpy(), np.frombuffer(_openssl(key, nonce, 640, 5), dtype="<i4"))
    assert np.array_equal(words[1].numpy(), np.frombuffer(_openssl(key, nonce[::-1], 640, 0), dtype="<i4"))


@pytest.mark.parametrize("bad, match", [
    (dict(key=b"short"), "key must be 32 bytes"),
    (dict(nonce=b"x" * 16), "nonce must be 12 bytes"),
    (dict(counter=-1), "counter=-1"),
    (dict(nbytes=-5), "nbytes=-5"),
])
def test_bad_arguments(bad, match):
    args = dict(key=bytes(32), nonce=bytes(12), nbytes=64, counter=0)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        chacha20_keystream(args["key"], args["nonce"], args["nbytes"], counter=args["counter"])


def test_word_dtype_needs_whole_words():
    with pytest.raises(ValueError, match="multiple of 8"):
        chacha20_keystream_batch([bytes(32)], [bytes(12)], 12, dtype=torch.int64)


def test_backend_choice(monkeypatch):
    assert backend("cpu") == "eager"
    monkeypatch.setenv("FEDAUDIT_CHACHA20_BACKEND", "nope")
    with pytest.raises(ValueError, match="FEDAUDIT_CHACHA20_BACKEND"):
        backend("cpu")
    monkeypatch.setenv("FEDAUDIT_CHACHA20_BACKEND", "triton")
    with pytest.raises(ValueError, match="needs Triton and a CUDA device"):
        backend("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("impl", ["eager", "compiled", "triton"])
def test_cuda_backends_equal_openssl(impl):
    if impl == "triton":
        pytest.importorskip("triton")
    rng = np.random.default_rng(2)
    keys = [rng.bytes(32) for _ in range(4)]
    nonces = [rng.bytes(12) for _ in range(4)]
    got = chacha20_keystream_batch(keys, nonces, 4096 + 40, counters=[0, 3, 2 ** 31 - 1, 9], device="cuda",
                                   impl=impl)
    for i, c in enumerate([0, 3, 2 ** 31 - 1, 9]):
        assert _bytes(got[i]) == _openssl(keys[i], nonces[i], 4096 + 40, c)


def test_triton_kernel_in_the_interpreter_equals_openssl():
    """The Triton kernel run by Triton's CPU interpreter (where Triton is installed; CI's
    default install has none, the GPU check runs it on CUDA)."""
    pytest.importorskip("triton")
    import subprocess
    import sys
    code = (
        "import numpy as np, torch\n"
        "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms\n"
        "from secagg import chacha20_triton as T\n"
        "from secagg.chacha20 import _as_rows\n"
        "rng = np.random.default_rng(0)\n"
        "keys = [rng.bytes(32) for _ in range(3)]; nonces = [rng.bytes(12) for _ in range(3)]\n"
        "ctr = [0, 2 ** 31 - 1, 2 ** 32 - 300]\n"
        "k = _as_rows(keys, 32, 'k', torch.device('cpu')); n = _as_rows(nonces, 12, 'n', torch.device('cpu'))\n"
        "out = torch.empty(3, 16 * 200, dtype=torch.int32)\n"
        "T.blocks_into(k, n, torch.tensor(ctr), 200, out)\n"
        "for i in range(3):\n"
        "    ref = Cipher(algorithms.ChaCha20(keys[i], ctr[i].to_bytes(4, 'little') + nonces[i]), None)"
        ".encryptor().update(bytes(64 * 200))\n"
        "    assert np.array_equal(out[i].numpy(), np.frombuffer(ref, '<i4')), i\n"
        "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
