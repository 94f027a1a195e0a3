"""secagg.keystream: host keystreams on every core, equal to the one-stream references.

The mask expansion the data plane calls (``stream_columns``, ``accumulate_masks``,
``expand_masks``) must give exactly ``secagg.crypto.prg_words`` whatever the split over
threads or processes, the blocking of keystreams and wherever a chunk starts; the ChaCha20
rows of the rounding bits are OpenSSL's streams.
"""
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg import accumulate_masks, crypto, expand_masks
from secagg.keystream import (MaskBlock, chacha20_encryptors, chacha20_rows_into, mask_encryptor,
                              parallel_columns, process_expand, stream_columns)


def _keys(m, seed=0, size=32):
    rng = np.random.default_rng(seed)
    return [rng.bytes(size) for _ in range(m)]


@pytest.mark.parametrize("bits", [32, 24, 64, 40])
@pytest.mark.parametrize("workers", [1, 3])
def test_expand_masks_equals_prg_words(bits, workers):
    keys = _keys(5, bits)
    got = expand_masks(keys, 9000 + 7, bits, workers=workers)
    for i, k in enumerate(keys):
        assert np.array_equal(got[i], crypto.prg_words(k, 9007, bits))


def test_columns_split_anywhere_give_one_stream():
    keys = _keys(3, 1)
    full = expand_masks(keys, 20_000, 64, workers=1)
    seen = []
    parallel_columns(20_000, lambda a, b: seen.append((a, b)), workers=4, min_words=64)
    assert len(seen) == 4 and all(a % 64 == 0 for a, _ in seen)
    for first in (64, 4096, 12_800):
        part = expand_masks(keys, 20_000 - first, 64, first_word=first, workers=2)
        assert np.array_equal(part, full[:, first:])
    with pytest.raises(ValueError, match="multiple of 64"):
        expand_masks(keys, 10, 64, first_word=3)


def test_accumulate_masks_is_the_signed_sum_mod_2_bits():
    bits = 29
    keys = _keys(4, 2)
    out = np.random.default_rng(3).integers(0, 1 << bits, size=(3, 5000)).astype(np.uint32)
    want = out.astype(object)
    jobs = [(keys[0], [(0, 1), (1, -1)]), (keys[1], [(2, 1)]), (keys[2], [(0, -1)]), (keys[3], [(1, 1), (2, -1)])]
    for key, targets in jobs:
        w = crypto.prg_words(key, 5000, bits).astype(object)
        for r, s in targets:
            want[r] = want[r] + s * w
    want = np.array([[int(v) % (1 << bits) for v in row] for row in want], dtype=np.uint32)
    produced = accumulate_masks(out, jobs, bits=bits, workers=2)
    assert np.array_equal(out, want)
    assert produced == 4 * 5000 * 4
    with pytest.raises(ValueError, match="outside out's 3 rows"):
        accumulate_masks(out, [(keys[0], [(3, 1)])], bits=bits)
    with pytest.raises(ValueError, match="uint64"):
        accumulate_masks(out, [], bits=64)


def test_chacha20_prg_is_openssl_chacha20():
    key = _keys(1, 4, size=32)[0]
    got = expand_masks([key], 3000, 32, prg="chacha20", first_word=1024, workers=2)[0]
    ref = Cipher(algorithms.ChaCha20(key, (1024 * 4 // 64).to_bytes(4, "little") + bytes(12)), None) \
        .encryptor().update(bytes(3000 * 4))
    assert np.array_equal(got, np.frombuffer(ref, dtype="<u4"))


def test_chacha20_rows_are_per_client_streams():
    key = _keys(1, 5, size=32)[0]
    encs = chacha20_encryptors(key, [7, 3], 32)
    out = np.empty((2, 100), dtype=np.uint32)
    chacha20_rows_into(encs, out)
    for row, c in zip(out, (7, 3)):
        ref = Cipher(algorithms.ChaCha20(key, (2).to_bytes(4, "little") + c.to_bytes(12, "little")), None) \
            .encryptor().update(bytes(400))
        assert np.array_equal(row, np.frombuffer(ref, dtype="<u4"))
    with pytest.raises(ValueError, match="multiple of 16"):
        chacha20_encryptors(key, [0], 8)


@pytest.mark.slow
def test_processes_give_what_threads_give():
    keys = _keys(6, 6)
    assert np.array_equal(process_expand(keys, 70_000, 32, workers=2), expand_masks(keys, 70_000, 32, workers=2))


def _reference(out0, blocks, bits, prg_words):
    """The signed sums of the blocks, with Python integers."""
    want = out0.astype(object)
    w = out0.shape[1]
    for blk in blocks:
        streams = [prg_words(k, w).astype(object) for k in blk.keys]
        for i, r in enumerate(blk.rows or ()):
            if r is not None:
                want[r] = want[r] + blk.sign * streams[i]
        for r, sg in blk.sums:
            want[r] = want[r] + sg * sum(streams)
    return np.array([[int(v) % (1 << bits) for v in row] for row in want], dtype=out0.dtype)


@pytest.mark.parametrize("bits", [32, 17, 64, 45])
@pytest.mark.parametrize("workers", [1, 2])
def test_stream_columns_blocks_equal_the_signed_sums(bits, workers):
    # Blocks as the data plane builds them: self masks on a run of rows, a sender's block
    # (its row minus the sum, receivers plus one stream each, a gap), a sums-only block.
    rows, width = 7, 70_000 + 33      # several 64 KiB chunks, threads split the columns, a ragged end
    keys = _keys(12, bits)
    blocks = [MaskBlock(tuple(keys[0:3]), rows=(0, 1, 2)),
              MaskBlock(tuple(keys[3:7]), rows=(4, 5, None, 6), sign=1, sums=((1, -1),)),
              MaskBlock(tuple(keys[7:10]), sums=((3, -1), (6, 1))),
              MaskBlock((keys[10],), rows=(2,), sign=-1)]
    wd = np.uint32 if bits <= 32 else np.uint64
    start = np.random.default_rng(bits).integers(0, 1 << min(bits, 63), size=(rows, width)).astype(wd)
    seen = []

    def load(c0, c1, buf):
        np.copyto(buf, start[:, c0:c1])

    out = np.empty_like(start)

    def store(c0, c1, buf):
        seen.append((c0, c1))
        out[:, c0:c1] = buf

    produced = stream_columns(rows, width, blocks, bits=bits, workers=workers, load=load, store=store)
    want = _reference(start, blocks, bits, lambda k, w: crypto.prg_words(k, w, bits))
    assert np.array_equal(out, want)
    assert produced == 11 * width * np.dtype(wd).itemsize
    assert sorted(seen)[0][0] == 0 and sum(b - a for a, b in seen) == width     # every column once


def test_aes_prg_stays_selectable_and_differs():
    keys = _keys(2, 7, size=16)
    out = np.zeros((2, 5000), dtype=np.uint32)
    accumulate_masks(out, [(keys[0], [(0, 1)]), (keys[1], [(1, -1)])], bits=32, prg="aes-128-ctr", workers=2)
    from cryptography.hazmat.primitives.ciphers import modes
    ref = Cipher(algorithms.AES(keys[0]), modes.CTR(bytes(16))).encryptor().update(bytes(20_000))
    assert np.array_equal(out[0], np.frombuffer(ref, "<u4"))
    ref1 = np.frombuffer(Cipher(algorithms.AES(keys[1]), modes.CTR(bytes(16))).encryptor().update(bytes(20_000)),
                         "<u4")
    assert np.array_equal(out[1], (-ref1.astype(np.int64)) % (1 << 32))
    with pytest.raises(ValueError, match="prg="):
        accumulate_masks(out, [], bits=32, prg="rc4")
    with pytest.raises(ValueError, match="multiple of 64"):
        mask_encryptor(keys[0] * 2, 32)


def test_mask_block_checks_its_shape():
    with pytest.raises(ValueError, match="3 keys but 2 rows"):
        accumulate_masks(np.zeros((3, 10), np.uint32), [MaskBlock(tuple(_keys(3)), rows=(0, 1))], bits=32)
    with pytest.raises(ValueError, match="outside out's 3 rows"):
        accumulate_masks(np.zeros((3, 10), np.uint32), [MaskBlock(tuple(_keys(1)), sums=((5, 1),))], bits=32)
