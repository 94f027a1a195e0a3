"""Fixed-point encoding of real vectors into Z_M, M = 2^bits (bits <= 64).

Encoded values are int64 tensors holding residues mod M. For bits < 64 the
residue lies in [0, M); for bits == 64 the int64 itself is the residue (two's
complement wraparound makes int64 addition addition mod 2^64).

A real x with |x| <= clip is mapped to q = round(x * scale) with unbiased
stochastic rounding (floor(y) + [U < frac(y)] for y = x * scale in float64 and
U uniform on the multiples of 2^-32 in [0, 1), so P(round up) = frac(y) to
2^-32) or to the nearest integer, then reduced mod M. The scale is chosen so that the sum of
``n_summands`` encodings cannot wrap: n * (clip * scale + 1) <= M/2 - 1, hence a
sum decodes to its signed value exactly (Bonawitz et al. 2017, Sec. 3, inputs in
Z_R; the bound is the usual one for fixed-point secure aggregation).

The rounding bits (experiment randomness, seeded, not a secret) are per client: each
encode call draws a 32-byte key K from its generator, and the client with index c
rounds its coordinate j with word j of the ChaCha20 keystream (RFC 8439) under K with
nonce c (12 bytes, little-endian), a counter-based stream. A client's bits therefore
depend only on K and its own index, not on how many clients are encoded together, in
which groups or on which device: the CPU reads the stream from OpenSSL
(:mod:`secagg.keystream`, on all cores), an accelerator computes it in place
(:mod:`secagg.chacha20`), and both give the same integers (tests/test_encoding.py).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import keystream
from .chacha20 import backend as chacha20_backend, chacha20_block_words

Tensor = torch.Tensor
ClipLike = Union[float, Tensor]
Generatorish = Union[None, bytes, torch.Generator, np.random.Generator]
ClientIds = Union[None, int, Sequence[int], Tensor]

_ROUNDING = ("stochastic", "nearest")
_OVERFLOW = ("raise", "clip")
# Random bits per stochastically rounded coordinate (P(round up) exact to 2^-32).
_FRAC_BITS = 32
KEY_BYTES = 32
# CPU inputs: rounding bits from OpenSSL and numpy arithmetic, on every core. Off: the device
# path (secagg.chacha20 and torch operations) runs on the CPU too; the tests flip it to compare.
HOST_PATH = True
_HOST_COLS = 4096          # coordinates per host block: 16 KiB of keystream per client
_HOST_ELEMS = 1 << 15      # elements per host block: its float64 temporaries stay in L2
_DEVICE_ELEMS = {"cuda": 1 << 24}   # elements per device block (other devices: 2^18)
_CHECK_ELEMS = 1 << 22     # elements per block of the exact clip check
_THREAD_ELEMS = 1 << 18    # elements per host thread at least: fewer are not worth a thread
# CPU calls of at least this many elements do their arithmetic in one kernel fused by torch.compile
# (C++; compiled once per machine and cached on disk): a few passes over memory instead of seven.
# Smaller calls, a failed compilation (no C++ compiler) and clipping use numpy; same integers.
FUSE_ON_CPU = True
_FUSE_ELEMS = 1 << 22
_FUSED_COLS = 8192
_fused = {"failed": ""}


def wrap_mod(values: Tensor, bits: int) -> Tensor:
    """Reduce int64 ``values`` mod 2^bits into the canonical residue range."""
    if bits == 64:
        return values
    return values & ((1 << bits) - 1)


def modular_sum(encoded: Tensor, bits: int) -> Tensor:
    """Exact sum over dim 0 of int64 residues mod 2^bits.

    Residues below 2^bits are summed in chunks of rows small enough that the
    int64 partial sums cannot overflow, then reduced; for bits == 64 int64
    addition is already addition mod 2^64.
    """
    if encoded.dtype != torch.int64:
        raise TypeError(f"modular_sum needs an int64 tensor, got {encoded.dtype}")
    if bits == 64:
        return encoded.sum(dim=0)
    rows_per_chunk = max(1, (1 << 63) // (1 << bits) - 1)
    total = torch.zeros(encoded.shape[1:], dtype=torch.int64, device=encoded.device)
    for start in range(0, encoded.shape[0], rows_per_chunk):
        total = wrap_mod(total + encoded[start:start + rows_per_chunk].sum(dim=0), bits)
    return total


def rounding_key(generator: Generatorish = None) -> bytes:
    """The 32-byte key of one encode call's rounding streams, drawn from ``generator``: a
    ``numpy.random.Generator`` (``generator.bytes(32)``: the same key on every device), a
    ``torch.Generator`` (32 bytes drawn on its device), None (torch's global generator), or
    the key itself (32 bytes)."""
    if isinstance(generator, (bytes, bytearray)):
        if len(generator) != KEY_BYTES:
            raise ValueError(f"a rounding key must be {KEY_BYTES} bytes, got {len(generator)}")
        return bytes(generator)
    if isinstance(generator, np.random.Generator):
        return generator.bytes(KEY_BYTES)
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else torch.device("cpu")
        raw = torch.randint(0, 256, (KEY_BYTES,), dtype=torch.uint8, generator=generator, device=dev)
        return bytes(raw.cpu().tolist())
    raise TypeError(f"generator={generator!r} must be a numpy.random.Generator, a torch.Generator, "
                    f"{KEY_BYTES} key bytes or None")


def client_id_array(client_ids: ClientIds, rows: int) -> np.ndarray:
    """The clients' indices (the nonces of their rounding streams) of ``rows`` rows: None ->
    0..rows-1, an int c -> c..c+rows-1, else one distinct index >= 0 per row."""
    if client_ids is None:
        return np.arange(rows, dtype=np.int64)
    if isinstance(client_ids, (int, np.integer)) and not isinstance(client_ids, bool):
        if client_ids < 0:
            raise ValueError(f"client_ids={client_ids} must be >= 0")
        return np.arange(rows, dtype=np.int64) + int(client_ids)
    ids = np.asarray(client_ids.cpu() if isinstance(client_ids, Tensor) else client_ids, dtype=np.int64).ravel()
    if ids.shape[0] != rows:
        raise ValueError(f"{ids.shape[0]} client ids for {rows} rows; give one per row")
    if rows and (ids.min() < 0 or len(np.unique(ids)) != rows):
        raise ValueError(f"client ids must be distinct and >= 0 (two clients would share rounding bits), "
                         f"got {ids.tolist()[:10]}")
    return ids


def _round_block(y: Tensor, bits: Optional[Tensor], mode: int) -> Tensor:
    """Signed integers of the scaled payload ``y`` (float64): mode 0 nearest, 1 stochastic in
    int64 fixed point (y holds x * scale * 2^32), 2 stochastic in float64."""
    if mode == 0:
        return torch.round(y).to(torch.int64)
    if mode == 1:
        return (y.to(torch.int64) + bits) >> _FRAC_BITS
    f = torch.floor(y)
    return f.to(torch.int64) + (bits.to(torch.float64) < (y - f) * 2.0 ** _FRAC_BITS).to(torch.int64)


def _fused_nearest(x: Tensor, w: Optional[Tensor], s: Tensor, r: Optional[Tensor], mask: Tensor,
                   want_sum: bool) -> Tensor:
    """One block of the host path in one pass (one function per rounding mode: torch.compile keeps
    a few variants per function): the payload x * w in the clients' dtype, scaled in float64,
    rounded, then summed over the clients or reduced mod 2^bits (``mask`` = M - 1, or -1)."""
    q = torch.round((x if w is None else x * w[:, None]).to(torch.float64) * s).to(torch.int64)
    return q.sum(dim=0) if want_sum else q & mask


def _fused_fixed(x: Tensor, w: Optional[Tensor], s: Tensor, r: Tensor, mask: Tensor, want_sum: bool) -> Tensor:
    """As :func:`_fused_nearest`, stochastic in int64 fixed point: (trunc(y 2^32) + r) >> 32."""
    y = (x if w is None else x * w[:, None]).to(torch.float64) * s
    q = (y.to(torch.int64) + (r.to(torch.int64) & 0xFFFFFFFF)) >> _FRAC_BITS
    return q.sum(dim=0) if want_sum else q & mask


def _fused_float(x: Tensor, w: Optional[Tensor], s: Tensor, r: Tensor, mask: Tensor, want_sum: bool) -> Tensor:
    """As :func:`_fused_nearest`, stochastic in float64: floor(y) + [r < frac(y) 2^32]."""
    y = (x if w is None else x * w[:, None]).to(torch.float64) * s
    f = torch.floor(y)
    u = (r.to(torch.int64) & 0xFFFFFFFF).to(torch.float64)
    q = f.to(torch.int64) + (u < (y - f) * 2.0 ** _FRAC_BITS).to(torch.int64)
    return q.sum(dim=0) if want_sum else q & mask


def _fused_kernel(mode: int):
    fns = _fused.setdefault("fns", {})
    if mode not in fns:
        fns[mode] = torch.compile((_fused_nearest, _fused_fixed, _fused_float)[mode], dynamic=True)
    return fns[mode]


_compiled_round = None


def _round_on(device: torch.device):
    """The rounding kernel for ``device``: fused by ``torch.compile`` on CUDA, eager elsewhere."""
    global _compiled_round
    if device.type != "cuda":
        return _round_block
    if _compiled_round is None:
        _compiled_round = torch.compile(_round_block, dynamic=True)
    return _compiled_round


class FixedPointEncoder:
    """Floats -> Z_{2^bits} and back, safe for sums of ``n_summands`` encodings.

    Parameters
    ----------
    bits : int
        log2 of the modulus M, 2 <= bits <= 64.
    clip : float or Tensor
        Per-coordinate bound |x_j| <= clip_j (a scalar, or a tensor broadcastable
        to the last dimension of the inputs).
    n_summands : int
        How many encodings will be added before decoding.
    scale : float or Tensor, optional
        Fixed-point scale. Default: the largest scale for which ``n_summands``
        encodings cannot wrap. An explicit scale that can wrap raises ValueError.
    rounding : {"stochastic", "nearest"}
        Stochastic rounding is unbiased: E[decode(encode(x))] = x.
    overflow : {"raise", "clip"}
        What to do with |x_j| > clip_j. "raise" (default) refuses the input;
        "clip" clips it and counts the clipped coordinates in ``last_clipped``.
    """

    def __init__(self, bits: int = 32, clip: ClipLike = 1.0, n_summands: int = 1, *,
                 scale: Optional[ClipLike] = None, rounding: str = "stochastic",
                 overflow: str = "raise"):
        if not isinstance(bits, int) or not 2 <= bits <= 64:
            raise ValueError(f"bits={bits!r} must be an integer in [2, 64] (the modulus is M = 2^bits)")
        if not isinstance(n_summands, int) or n_summands < 1:
            raise ValueError(f"n_summands={n_summands!r} must be a positive integer")
        if rounding not in _ROUNDING:
            raise ValueError(f"rounding={rounding!r}; choose one of {_ROUNDING}")
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow={overflow!r}; choose one of {_OVERFLOW}")
        clip_t = torch.as_tensor(clip, dtype=torch.float64)
        if not torch.isfinite(clip_t).all() or (clip_t <= 0).any():
            raise ValueError(f"clip={clip!r} must be finite and > 0")
        self.bits = bits
        self.modulus = 1 << bits
        self.n_summands = n_summands
        self.rounding = rounding
        self.overflow = overflow
        self.clip = clip_t
        half = self.modulus // 2 - 1
        # Largest |q| of one encoding is clip*scale (+1 from rounding up).
        max_int_per_summand = half // n_summands - 1
        if max_int_per_summand < 1:
            raise ValueError(
                f"bits={bits} leaves no room for {n_summands} summands: M/2 - 1 = {half} < "
                f"2 * n_summands; use more bits (at least {math.ceil(math.log2(4 * n_summands)) + 1})")
        if scale is None:
            # The 2^-48 margin absorbs float64 rounding of clip*scale when bits > 53.
            self.scale = max_int_per_summand * (1 - 2.0 ** -48) / clip_t
        else:
            scale_t = torch.as_tensor(scale, dtype=torch.float64)
            if not torch.isfinite(scale_t).all() or (scale_t <= 0).any():
                raise ValueError(f"scale={scale!r} must be finite and > 0")
            worst = float((torch.floor(clip_t * scale_t * (1 + 2.0 ** -48)) + 1).max()) * n_summands
            if worst > half:
                raise ValueError(
                    f"scale={scale!r} can wrap: {n_summands} summands of |x| <= clip={clip!r} reach "
                    f"{worst:.6g} > M/2 - 1 = {half} (bits={bits}); use scale <= "
                    f"{float((max_int_per_summand / clip_t).min()):.6g}, a larger bits or a smaller clip")
            self.scale = scale_t
        self.resolution = 1.0 / self.scale
        # Largest |x * scale| an accepted (or clipped) input reaches: picks the int64 rounding path.
        self._max_abs_scaled = float((clip_t * self.scale).max())

        self._vectors: dict = {}
        self.last_clipped = 0

    def encode(self, x: Tensor, generator: Generatorish = None, *, weights: Optional[Tensor] = None,
               client_ids: ClientIds = None, _absmax: Optional[float] = None) -> Tensor:
        """Encode a float tensor [..., d] into int64 residues mod M, on ``x``'s device.

        ``generator`` gives the call's rounding key (:func:`rounding_key`: a numpy or torch
        generator, None, or the 32 key bytes); row r is client ``client_ids[r]`` (default: r;
        an int c numbers the rows c, c+1, ...), whose rounding stream it uses.

        ``weights`` [n] (with ``x`` [n, d]) encodes the secure-average payload
        ``[x * weights[:, None], weights[:, None]]`` of width d + 1 (RFA paper,
        Sec. III-A) without building it: bit for bit what encoding that matrix gives.

        Works in blocks of clients and coordinates, so the float64 intermediates never
        exist at full size. (``_absmax``: max |x|, already computed and checked finite by the
        caller; skips that pass. Internal.)
        """
        flat, width = self._rows(x, weights)
        out = torch.empty((flat.shape[0], width), dtype=torch.int64, device=x.device)
        self._encode(flat, weights, generator, client_ids, out, None, _absmax)
        return out if weights is not None else out.reshape(x.shape)

    def encode_sum(self, x: Tensor, generator: Generatorish = None, *, weights: Optional[Tensor] = None,
                   client_ids: ClientIds = None, _absmax: Optional[float] = None) -> Tensor:
        """``self.sum(self.encode(x, generator, ...))`` without the [n, d] integers.

        Bit for bit the same residues (and the same generator consumption): each block's
        signed encodings are summed as they are made; the no-wrap scale makes the signed
        sum exact, so reducing it mod M once equals the modular sum of the residues. Memory
        beyond the input: O(d) plus one block per thread.
        """
        flat, width = self._rows(x, weights)
        total = torch.zeros(width, dtype=torch.int64, device=x.device)
        self._encode(flat, weights, generator, client_ids, None, total, _absmax)
        return wrap_mod(total, self.bits)

    def _rows(self, x: Tensor, weights: Optional[Tensor]):
        if not torch.is_floating_point(x):
            raise TypeError(f"encode needs a floating tensor, got {x.dtype}")
        x = x.detach()
        if weights is None:
            flat = x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
            width = flat.shape[1]
        else:
            if x.ndim != 2 or weights.shape != (x.shape[0],):
                raise ValueError(f"weights of shape {tuple(weights.shape)} need x of shape [n, d] with "
                                 f"n = {weights.shape[0] if weights.ndim == 1 else '?'}, got {tuple(x.shape)}")
            if weights.device != x.device:
                raise ValueError(f"weights are on {weights.device} but x on {x.device}; put them on one device")
            flat, width = x, x.shape[1] + 1
        if self.clip.ndim and self.clip.shape[-1] != width:
            raise ValueError(f"clip has {self.clip.shape[-1]} coordinates but the input has {width}")
        return flat, width

    def _vector(self, what: str, width: int, device: torch.device, factor: float = 1.0) -> Tensor:
        """scale * factor or clip as a float64 [width] tensor on ``device``, cached per encoder."""
        key = (what, width, str(device), factor)
        v = self._vectors.get(key)
        if v is None:
            base = self.scale if what == "scale" else self.clip
            v = (base.to(device) * factor).expand(width).contiguous() if base.ndim else \
                torch.full((width,), float(base) * factor, dtype=torch.float64, device=device)
            if len(self._vectors) > 8:
                self._vectors.clear()
            self._vectors[key] = v
        return v

    def _payload(self, rows_x: Tensor, rows_w: Optional[Tensor]) -> Tensor:
        if rows_w is None:
            return rows_x
        p = torch.empty((rows_x.shape[0], rows_x.shape[1] + 1), dtype=rows_x.dtype, device=rows_x.device)
        torch.mul(rows_x, rows_w[:, None], out=p[:, :-1])
        p[:, -1] = rows_w
        return p

    def _check(self, flat: Tensor, weights: Optional[Tensor], absmax: Optional[float]) -> bool:
        """Refuse non-finite input; apply the overflow policy (raise, or count into
        ``last_clipped``). Returns whether clipping is needed. The exact per-coordinate pass
        runs only if max |x| * max |w| may exceed the smallest clip."""
        rows, d = flat.shape
        width = d + (weights is not None)
        if absmax is None:
            lo, hi = torch.stack(torch.aminmax(flat)).tolist() if flat.numel() else (0.0, 0.0)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                self._refuse_nonfinite(flat, 0)
            absmax = max(-lo, hi)
        bound = float(absmax)
        need = False
        if weights is not None:
            if not torch.isfinite(weights).all():
                raise ValueError(f"cannot encode non-finite weights {weights.tolist()[:10]}")
            w_abs = float(weights.abs().max()) if rows else 0.0
            # Rounding is monotone, so the payload's own product of the two maxima bounds it.
            bound = float(torch.mul(torch.tensor(bound, dtype=flat.dtype),
                                    torch.tensor(w_abs, dtype=weights.dtype)).to(flat.dtype))
            need = w_abs > float(self.clip if self.clip.ndim == 0 else self.clip[d])
        if d:
            need = need or bound > float(self.clip if self.clip.ndim == 0 else self.clip[:d].min())
        if not need or not rows:
            return False
        clip = self._vector("clip", width, flat.device)
        step = max(1, _CHECK_ELEMS // max(1, width))
        count = 0
        for r0 in range(0, rows, step):
            src = self._payload(flat[r0:r0 + step], None if weights is None else weights[r0:r0 + step])
            over = ~(src.abs() <= clip)      # also flags an inf product x * weight
            k = int(over.sum())
            if k and self.overflow == "raise":
                self._refuse_overflow(src, over, r0)
            count += k
        self.last_clipped = count
        return count > 0

    def _encode(self, flat: Tensor, weights: Optional[Tensor], generator: Generatorish, client_ids: ClientIds,
                out: Optional[Tensor], total: Optional[Tensor], absmax: Optional[float]) -> None:
        """Encode into ``out`` [rows, width] (residues) or add the signed encodings into ``total``."""
        rows = flat.shape[0]
        ids = client_id_array(client_ids, rows)
        self.last_clipped = 0
        clipping = self._check(flat, weights, absmax)
        stochastic = self.rounding == "stochastic"
        key = rounding_key(generator) if stochastic else None
        # Stochastic rounding of y = x * scale: when |y| < 2^30, in int64 fixed point,
        # q = (trunc(y 2^32) + r) >> 32, exact but for the truncation of y 2^32 (< 2^-32 of a
        # step, below float64's own rounding of y); otherwise in float64, floor(y) + [r < frac(y) 2^32].
        mode = 0 if not stochastic else 1 if self._max_abs_scaled < 2.0 ** 30 else 2
        if rows == 0:
            return
        if flat.device.type == "cpu" and HOST_PATH and flat.dtype in (torch.float32, torch.float64):
            self._encode_host(flat, weights, key, ids, out, total, clipping, mode)
        else:
            self._encode_torch(flat, weights, key, ids, out, total, clipping, mode)

    def _encode_torch(self, flat, weights, key, ids, out, total, clipping: bool, mode: int) -> None:
        """Any device: rounding bits from :mod:`secagg.chacha20` where the data lives, torch arithmetic
        (fused by ``torch.compile`` on CUDA)."""
        dev = flat.device
        rows, d = flat.shape
        width = d + (weights is not None)
        elems = _DEVICE_ELEMS.get(dev.type, 1 << 18)
        W = max(16, min(-(-width // 16) * 16, (elems // rows) // 16 * 16))
        R = max(1, min(rows, elems // W))
        scale = self._vector("scale", width, dev, 2.0 ** _FRAC_BITS if mode == 1 else 1.0)
        clip = self._vector("clip", width, dev) if clipping else None
        nonces = [int(c).to_bytes(12, "little") for c in ids.tolist()]
        impl = chacha20_backend(dev)
        rnd = _round_on(dev)
        for c0 in range(0, width, W):
            c1 = min(width, c0 + W)
            d1 = min(c1, d)
            for r0 in range(0, rows, R):
                r1 = min(rows, r0 + R)
                if weights is None:
                    src = flat[r0:r1, c0:c1]
                else:
                    src = torch.empty((r1 - r0, c1 - c0), dtype=flat.dtype, device=dev)
                    if d1 > c0:
                        torch.mul(flat[r0:r1, c0:d1], weights[r0:r1, None], out=src[:, :d1 - c0])
                    if c1 > d:
                        src[:, d - c0] = weights[r0:r1]
                y = src.to(torch.float64)
                if clipping:
                    y = torch.clamp(y, -clip[c0:c1], clip[c0:c1])
                y = y * scale[c0:c1]
                bits = None
                if mode:
                    words = chacha20_block_words(key, nonces[r0:r1], -(-(c1 - c0) // 16), counters=c0 // 16,
                                                 device=dev, impl=impl)
                    bits = words[:, :c1 - c0].to(torch.int64) & 0xFFFFFFFF
                q = rnd(y, bits, mode)
                if out is not None:
                    out[r0:r1, c0:c1] = wrap_mod(q, self.bits)
                else:
                    total[c0:c1] += q.sum(dim=0)

    def _encode_host(self, flat, weights, key, ids, out, total, clipping: bool, mode: int) -> None:
        """CPU: rounding bits from OpenSSL's ChaCha20 (one encryptor per client and thread), numpy
        arithmetic with reused block buffers, column ranges split over the cores
        (:func:`secagg.keystream.parallel_columns`; threads, since OpenSSL and numpy release the GIL)."""
        rows, d = flat.shape
        width = d + (weights is not None)
        x = flat.numpy()
        w = weights.numpy() if weights is not None else None
        scale = self._vector("scale", width, flat.device, 2.0 ** _FRAC_BITS if mode == 1 else 1.0).numpy()
        clip = self._vector("clip", width, flat.device).numpy() if clipping else None
        out_np = out.numpy() if out is not None else None
        tot_np = total.numpy() if total is not None else None
        mask = self.modulus - 1 if self.bits < 64 else None
        R = max(1, min(rows, _HOST_ELEMS // _HOST_COLS))
        W = _HOST_COLS
        d0 = 0       # columns [0, d0) done by the fused kernel, the rest below
        if FUSE_ON_CPU and not clipping and not _fused["failed"] and rows * d >= _FUSE_ELEMS:
            try:
                d0 = (d // 64) * 64
                self._encode_fused(flat, weights, key, ids, d0, out, total, mode)
            except Exception as err:          # no C++ compiler, an unsupported build: numpy serves
                import warnings
                _fused["failed"] = f"{type(err).__name__}: {err}"[:300]
                warnings.warn(f"secagg.encoding: the fused CPU kernel is unavailable ({_fused['failed']}); "
                              "using numpy (same integers, slower)", RuntimeWarning)
                d0 = 0

        def work(a: int, b: int) -> None:
            encs = keystream.chacha20_encryptors(key, ids, a) if mode else None
            pbuf = np.empty((R, W), dtype=x.dtype)
            ybuf = np.empty((R, W), dtype=np.float64)
            fbuf = np.empty((R, W), dtype=np.float64) if mode == 2 else None
            qbuf = np.empty((R, W), dtype=np.int64)
            rbuf = np.empty((R, W), dtype=np.uint32) if mode else None
            bbuf = np.empty((R, W), dtype=bool) if mode == 2 else None
            for c0 in range(a, b, W):
                c1 = min(b, c0 + W)
                cw, d1 = c1 - c0, min(c1, d)
                s = scale[c0:c1]
                acc = None
                for r0 in range(0, rows, R):
                    r1 = min(rows, r0 + R)
                    h = r1 - r0
                    if w is None:
                        src = x[r0:r1, c0:c1]
                    else:
                        src = pbuf[:h, :cw]
                        if d1 > c0:
                            np.multiply(x[r0:r1, c0:d1], w[r0:r1, None], out=src[:, :d1 - c0], casting="same_kind")
                        if c1 > d:
                            src[:, d - c0] = w[r0:r1]
                    q = qbuf[:h, :cw]
                    y = None
                    if clipping or mode != 1:
                        y = ybuf[:h, :cw]
                        np.copyto(y, src)
                        if clipping:
                            np.clip(y, -clip[c0:c1], clip[c0:c1], out=y)
                        np.multiply(y, s, out=y)
                    if mode == 0:
                        np.rint(y, out=y)
                        np.copyto(q, y, casting="unsafe")
                    elif mode == 1:
                        if y is None:     # trunc(x * scale 2^32): one pass, the float64 product then C's conversion
                            np.multiply(src, s, out=q, casting="unsafe")
                        else:
                            np.copyto(q, y, casting="unsafe")
                        r = rbuf[:h, :cw]
                        keystream.chacha20_rows_into(encs[r0:r1], r)
                        np.add(q, r, out=q, casting="unsafe")
                        np.right_shift(q, _FRAC_BITS, out=q)
                    else:
                        f = fbuf[:h, :cw]
                        np.floor(y, out=f)
                        np.subtract(y, f, out=y)
                        np.multiply(y, 2.0 ** _FRAC_BITS, out=y)     # frac(y) 2^32, exact
                        r = rbuf[:h, :cw]
                        keystream.chacha20_rows_into(encs[r0:r1], r)
                        below = np.less(r, y, out=bbuf[:h, :cw])     # uint32 vs float64: exact in float64
                        np.copyto(q, f, casting="unsafe")
                        np.add(q, below, out=q, casting="unsafe")
                    if out_np is not None:
                        if mask is None:
                            out_np[r0:r1, c0:c1] = q
                        else:
                            np.bitwise_and(q, mask, out=out_np[r0:r1, c0:c1])
                    else:
                        part = np.add.reduce(q, axis=0)
                        acc = part if acc is None else np.add(acc, part, out=acc)
                if tot_np is not None:
                    tot_np[c0:c1] = acc

        keystream.parallel_columns(width - d0, lambda a, b: work(d0 + a, d0 + b),
                                   min_words=max(64, _THREAD_ELEMS // rows))

    def _encode_fused(self, flat, weights, key, ids, d0: int, out, total, mode: int) -> None:
        """Columns [0, d0) of the host path: each block's bits from OpenSSL on every core (threads
        over the clients), then one fused kernel (:func:`_fused_block`, OpenMP inside)."""
        rows, d = flat.shape
        fn = _fused_kernel(mode)
        scale = self._vector("scale", d + (weights is not None), flat.device, 2.0 ** _FRAC_BITS if mode == 1 else 1.0)
        encs = keystream.chacha20_encryptors(key, ids, 0) if mode else None
        rbuf = np.empty((rows, _FUSED_COLS), dtype=np.uint32) if mode else None
        mask = torch.tensor(self.modulus - 1 if self.bits < 64 else -1, dtype=torch.int64)
        for c0 in range(0, d0, _FUSED_COLS):
            c1 = min(d0, c0 + _FUSED_COLS)
            r = None
            if mode:
                rb = rbuf[:, :c1 - c0]
                keystream.parallel_columns(rows, lambda a, b: keystream.chacha20_rows_into(encs[a:b], rb[a:b]),
                                           min_words=1)
                r = torch.from_numpy(rb.view(np.int32))
            res = fn(flat[:, c0:c1], weights, scale[c0:c1], r, mask, total is not None)
            if total is not None:
                total[c0:c1] = res
            else:
                out[:, c0:c1] = res

    def _refuse_nonfinite(self, chunk: Tensor, offset: int):
        r, j = (~torch.isfinite(chunk)).nonzero()[0].tolist()
        raise ValueError(f"cannot encode non-finite values (first at [row, coordinate] {[r, offset + j]}); "
                         "check the client update for NaN/inf")

    def _refuse_overflow(self, chunk: Tensor, over_chunk: Tensor, row_offset: int = 0):
        r, j = over_chunk.nonzero()[0].tolist()
        value = float(chunk[r, j])
        bound = float(self.clip if self.clip.ndim == 0 else self.clip[j])
        raise ValueError(
            f"value {value:.6g} at [row {row_offset + r}, coordinate {j}] exceeds the clip bound {bound:.6g} "
            "of the fixed-point encoding; raise the clip bound (--clip), clip the updates before "
            "encoding, or clip and count them (overflow='clip', --overflow clip)")

    def to_signed(self, residues: Tensor) -> Tensor:
        """Map residues mod M to the signed representatives in [-M/2, M/2)."""
        if self.bits == 64:
            return residues
        half = self.modulus // 2
        return torch.where(residues >= half, residues - self.modulus, residues)

    def decode(self, total: Tensor) -> Tensor:
        """Decode a sum of at most ``n_summands`` encodings (residues mod M) to float64."""
        if total.dtype != torch.int64:
            raise TypeError(f"decode needs int64 residues, got {total.dtype}")
        signed = self.to_signed(wrap_mod(total, self.bits))
        return signed.to(torch.float64) / self.scale.to(total.device)

    def sum(self, encoded: Tensor) -> Tensor:
        """Exact sum mod M over dim 0."""
        return modular_sum(encoded, self.bits)

    def __repr__(self) -> str:
        return (f"FixedPointEncoder(bits={self.bits}, clip={self.clip.tolist()}, "
                f"n_summands={self.n_summands}, rounding={self.rounding!r})")
