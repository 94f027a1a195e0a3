"""ChaCha20 blocks (RFC 8439, Sec. 2.3) as one Triton kernel, for CUDA devices.

The backend "triton" of :func:`secagg.chacha20.chacha20_block_words`: one program per run of
``BLOCK`` consecutive ChaCha20 blocks of one stream; the 16 state words live in registers as
uint32 (wrap-around addition, logical shifts, rotations that the compiler turns into funnel
shifts), the 20 rounds unrolled, each block's 16 words stored once. Bit for bit the eager
torch function (its CPU twin, checked against OpenSSL in tests/test_chacha20.py); the CUDA
equality is checked by scripts/gpu_check.sh, and on a CPU with ``TRITON_INTERPRET=1``.
Importable without Triton: ``AVAILABLE`` is then False.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
    AVAILABLE = True
except ImportError:                      # the torch backends serve
    triton = tl = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "BLOCK", "blocks_into"]

BLOCK = 128          # ChaCha20 blocks per program

if AVAILABLE:
    @triton.jit
    def _rotl(x, r: tl.constexpr):
        return (x << r) | (x >> (32 - r))

    @triton.jit
    def _qr(a, b, c, d):
        a = a + b
        d = _rotl(d ^ a, 16)
        c = c + d
        b = _rotl(b ^ c, 12)
        a = a + b
        d = _rotl(d ^ a, 8)
        c = c + d
        b = _rotl(b ^ c, 7)
        return a, b, c, d

    @triton.jit
    def _chacha20_kernel(key_ptr, nonce_ptr, ctr_ptr, out_ptr, n_blocks, progs_per_row, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        row = pid // progs_per_row
        blk = (pid % progs_per_row) * BLOCK + tl.arange(0, BLOCK)
        live = blk < n_blocks
        zero = tl.zeros([BLOCK], dtype=tl.uint32)
        k = key_ptr + row * 8
        n = nonce_ptr + row * 3
        i0 = zero + 0x61707865
        i1 = zero + 0x3320646E
        i2 = zero + 0x79622D32
        i3 = zero + 0x6B206574
        i4 = zero + tl.load(k + 0).to(tl.uint32, bitcast=True)
        i5 = zero + tl.load(k + 1).to(tl.uint32, bitcast=True)
        i6 = zero + tl.load(k + 2).to(tl.uint32, bitcast=True)
        i7 = zero + tl.load(k + 3).to(tl.uint32, bitcast=True)
        i8 = zero + tl.load(k + 4).to(tl.uint32, bitcast=True)
        i9 = zero + tl.load(k + 5).to(tl.uint32, bitcast=True)
        i10 = zero + tl.load(k + 6).to(tl.uint32, bitcast=True)
        i11 = zero + tl.load(k + 7).to(tl.uint32, bitcast=True)
        i12 = (tl.load(ctr_ptr + row) + blk).to(tl.uint32)
        i13 = zero + tl.load(n + 0).to(tl.uint32, bitcast=True)
        i14 = zero + tl.load(n + 1).to(tl.uint32, bitcast=True)
        i15 = zero + tl.load(n + 2).to(tl.uint32, bitcast=True)
        x0, x1, x2, x3, x4, x5, x6, x7 = i0, i1, i2, i3, i4, i5, i6, i7
        x8, x9, x10, x11, x12, x13, x14, x15 = i8, i9, i10, i11, i12, i13, i14, i15
        for _ in tl.static_range(10):
            x0, x4, x8, x12 = _qr(x0, x4, x8, x12)
            x1, x5, x9, x13 = _qr(x1, x5, x9, x13)
            x2, x6, x10, x14 = _qr(x2, x6, x10, x14)
            x3, x7, x11, x15 = _qr(x3, x7, x11, x15)
            x0, x5, x10, x15 = _qr(x0, x5, x10, x15)
            x1, x6, x11, x12 = _qr(x1, x6, x11, x12)
            x2, x7, x8, x13 = _qr(x2, x7, x8, x13)
            x3, x4, x9, x14 = _qr(x3, x4, x9, x14)
        o = out_ptr + row.to(tl.int64) * n_blocks * 16 + blk.to(tl.int64) * 16
        tl.store(o + 0, (x0 + i0).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 1, (x1 + i1).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 2, (x2 + i2).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 3, (x3 + i3).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 4, (x4 + i4).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 5, (x5 + i5).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 6, (x6 + i6).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 7, (x7 + i7).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 8, (x8 + i8).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 9, (x9 + i9).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 10, (x10 + i10).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 11, (x11 + i11).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 12, (x12 + i12).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 13, (x13 + i13).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 14, (x14 + i14).to(tl.int32, bitcast=True), mask=live)
        tl.store(o + 15, (x15 + i15).to(tl.int32, bitcast=True), mask=live)


def blocks_into(key: torch.Tensor, nonce: torch.Tensor, counters: torch.Tensor, n_blocks: int,
                out: torch.Tensor) -> None:
    """Write the ChaCha20 blocks of m streams into ``out`` (int32 [m, 16 * n_blocks]): ``key`` int32
    [m, 8], ``nonce`` int32 [m, 3] (little-endian words), ``counters`` int64 [m] (first block)."""
    if not AVAILABLE:
        raise RuntimeError("Triton is not importable; use the 'compiled' or 'eager' ChaCha20 backend")
    m = key.shape[0]
    progs = triton.cdiv(n_blocks, BLOCK)
    _chacha20_kernel[(m * progs,)](key.contiguous(), nonce.contiguous(), counters.to(torch.int64).contiguous(),
                                   out, n_blocks, progs, BLOCK=BLOCK)
