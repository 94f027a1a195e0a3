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
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Tensor = torch.Tensor
ClipLike = Union[float, Tensor]
Generatorish = Union[None, torch.Generator, np.random.Generator]

_ROUNDING = ("stochastic", "nearest")
_OVERFLOW = ("raise", "clip")
# Coordinates encoded per chunk: keeps float64 temporaries in cache.
_CHUNK_ELEMS = 1 << 17
# Random bits per stochastically rounded coordinate (P(round up) exact to 2^-32).
_FRAC_BITS = 32


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
        self._scaled: dict = {}
        self.last_clipped = 0

    def encode(self, x: Tensor, generator: Generatorish = None, *, weights: Optional[Tensor] = None,
               _absmax: Optional[float] = None) -> Tensor:
        """Encode a float tensor [..., d] into int64 residues mod M.

        ``generator`` drives stochastic rounding: a ``numpy.random.Generator`` (CPU only;
        each call draws a 128-bit key from it and expands AES-128-CTR, the fastest
        uniform bits on a CPU with AES instructions), a ``torch.Generator`` on ``x``'s
        device, or None (torch's global generator).

        ``weights`` [n] (with ``x`` [n, d]) encodes the secure-average payload
        ``[x * weights[:, None], weights[:, None]]`` of width d + 1 (RFA paper,
        Sec. III-A) without building it: bit for bit what encoding that matrix gives.

        Works in cache-sized chunks of coordinates with reused buffers, so the
        float64 intermediates never exist at full size. (``_absmax``: max |x|, already
        computed and checked finite by the caller; skips that pass. Internal.)
        """
        flat, width = self._rows(x, weights)
        out = torch.empty((flat.shape[0], width), dtype=torch.int64, device=x.device)
        for start, stop, q in self._chunks(flat, weights, generator, out=out, absmax=_absmax):
            if self.bits < 64:
                q.bitwise_and_(self.modulus - 1)
        return out if weights is not None else out.reshape(x.shape)

    def encode_sum(self, x: Tensor, generator: Generatorish = None, *,
                   weights: Optional[Tensor] = None, _absmax: Optional[float] = None) -> Tensor:
        """``self.sum(self.encode(x, generator, weights=weights))`` without the [n, d] integers.

        Bit for bit the same residues (and the same generator consumption): each chunk's
        signed encodings are summed as they are made; the no-wrap scale makes the signed
        sum exact, so reducing it mod M once equals the modular sum of the residues.
        """
        flat, width = self._rows(x, weights)
        total = torch.empty(width, dtype=torch.int64, device=x.device)
        for start, stop, q in self._chunks(flat, weights, generator, out=None, absmax=_absmax):
            torch.sum(q, dim=0, out=total[start:stop])
        return wrap_mod(total, self.bits)

    def _rows(self, x: Tensor, weights: Optional[Tensor]):
        if not torch.is_floating_point(x):
            raise TypeError(f"encode needs a floating tensor, got {x.dtype}")
        if weights is None:
            flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
            width = flat.shape[1]
        else:
            if x.ndim != 2 or weights.shape != (x.shape[0],):
                raise ValueError(f"weights of shape {tuple(weights.shape)} need x of shape [n, d] with "
                                 f"n = {weights.shape[0] if weights.ndim == 1 else '?'}, got {tuple(x.shape)}")
            flat, width = x, x.shape[1] + 1
        if self.clip.ndim and self.clip.shape[-1] != width:
            raise ValueError(f"clip has {self.clip.shape[-1]} coordinates but the input has {width}")
        return flat, width

    def _chunks(self, flat: Tensor, weights: Optional[Tensor], generator: Generatorish,
                out: Optional[Tensor], absmax: Optional[float] = None) -> Iterator[Tuple[int, int, Tensor]]:
        """Yield (start, stop, q) per chunk of coordinates; q [rows, stop - start] holds the
        signed encodings (written into ``out[:, start:stop]`` when ``out`` is given).

        Stochastic rounding of y = x * scale (float64, as every path computes it):
        with 32 random bits r per coordinate, q = floor(y) + [r < frac(y) 2^32]
        (P(up) = frac(y) to 2^-32). When |y| < 2^30 this is done in int64 fixed point,
        q = (trunc(y 2^32) + r) >> 32, exact but for the truncation of y 2^32 (< 2^-32
        of a step, below float64's own rounding of y); otherwise in float64.
        """
        rows, d = flat.shape
        width = d + (weights is not None)
        dev = flat.device
        if self.rounding == "stochastic" and isinstance(generator, np.random.Generator) and dev.type != "cpu":
            raise ValueError("a numpy generator can only drive rounding on the CPU; pass a torch.Generator "
                             f"on {dev}")
        clip = self.clip.to(dev).expand(width)
        int_path = self.rounding == "stochastic" and self._max_abs_scaled < 2.0 ** 30
        step = max(1, _CHUNK_ELEMS // max(1, rows))
        w_max = min(step, width)
        # A 1-D scale (never 0-dim) so that float32 * scale is computed in float64.
        factor = 2.0 ** _FRAC_BITS if int_path else 1.0
        if self.scale.ndim == 0:
            s_small = torch.full((w_max,), float(self.scale) * factor, dtype=torch.float64, device=dev)
            scale_at = lambda a, b: s_small[:b - a]  # noqa: E731
        else:
            key = (str(dev), factor)
            if key not in self._scaled:        # per-coordinate scales, computed once per encoder
                self._scaled[key] = self.scale.to(dev) * factor
            s_full = self._scaled[key]
            scale_at = lambda a, b: s_full[a:b]  # noqa: E731
        ybuf = torch.empty(rows * w_max, dtype=torch.float64, device=dev)
        qbuf = torch.empty(rows * w_max, dtype=torch.int64, device=dev) if out is None else None
        pbuf = torch.empty(rows * w_max, dtype=flat.dtype, device=dev) if weights is not None else None
        float_path = self.rounding == "stochastic" and not int_path
        fbuf = torch.empty(rows * w_max, dtype=torch.float64, device=dev) if float_path else None
        # One pass over the input for finiteness and a bound on |payload|: a chunk is
        # checked coordinate by coordinate only if that bound may exceed its clip.
        if absmax is None:
            lo, hi = torch.stack(torch.aminmax(flat)).tolist() if flat.numel() else (0.0, 0.0)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                self._refuse_nonfinite(flat, 0)
            absmax = max(-lo, hi)
        bound = float(absmax)
        if weights is not None:
            if not torch.isfinite(weights).all():
                raise ValueError(f"cannot encode non-finite weights {weights.tolist()[:10]}")
            w_abs = float(weights.abs().max())
            # Rounding is monotone, so the payload's own product of the two maxima bounds it.
            bound = float(torch.mul(torch.tensor(bound, dtype=flat.dtype),
                                    torch.tensor(w_abs, dtype=weights.dtype)).to(flat.dtype))
        starts = list(range(0, width, step))
        if self.clip.ndim == 0:
            cmins = [float(self.clip)] * len(starts)
        else:
            vec_starts = [s for s in starts if s < d]
            cmins = np.minimum.reduceat(self.clip[:d].numpy(), vec_starts).tolist() if vec_starts else []
            cmins += [math.inf] * (len(starts) - len(cmins))    # a chunk of only the weight column
        need_check = [(s < d and bound > cm) for s, cm in zip(starts, cmins)]
        if weights is not None and w_abs > float(self.clip if self.clip.ndim == 0 else self.clip[d]):
            need_check[-1] = True
        bits = _RandomBits(generator, dev, rows * w_max) if self.rounding == "stochastic" else None
        np_fused = int_path and dev.type == "cpu" and flat.dtype in (torch.float32, torch.float64)
        self.last_clipped = 0
        for k, start in enumerate(starts):
            stop = min(width, start + step)
            w = stop - start
            if weights is None:
                src = flat[:, start:stop]
            else:   # the payload chunk [x * weights, weights], as client_payload builds it
                src = pbuf[:rows * w].view(rows, w)
                dstop = min(stop, d)
                if dstop > start:
                    torch.mul(flat[:, start:dstop], weights[:, None], out=src[:, :dstop - start])
                if stop > d:
                    src[:, d - start] = weights
            y = ybuf[:rows * w].view(rows, w)
            q = out[:, start:stop] if out is not None else qbuf[:rows * w].view(rows, w)
            scaled_into_q = False
            if need_check[k]:
                c = clip[start:stop]
                over = ~(src.abs() <= c)     # also flags an inf product x * weight
                n_over = int(over.sum())
                if n_over:
                    if self.overflow == "raise":
                        self._refuse_overflow(src, over, start)
                    self.last_clipped += n_over
                    y.copy_(src)
                    torch.clamp(y, -c, c, out=y)
                    y.mul_(scale_at(start, stop))
                else:
                    torch.mul(src, scale_at(start, stop), out=y)
            elif np_fused:
                # trunc(x * scale 2^32) in one numpy pass: the same float64 product, then
                # the same C conversion to int64 (toward zero) as torch's copy_
                np.multiply(src.numpy(), scale_at(start, stop).numpy(), out=q.numpy(), casting="unsafe")
                scaled_into_q = True
            else:
                torch.mul(src, scale_at(start, stop), out=y)
            if self.rounding == "nearest":
                y.round_()
                q.copy_(y)
            elif int_path:
                if not scaled_into_q:
                    q.copy_(y)          # trunc(y 2^32)
                bits.add_to(q)          # + r
                q.bitwise_right_shift_(_FRAC_BITS)
            else:
                f = fbuf[:rows * w].view(rows, w)
                torch.floor(y, out=f)
                y.sub_(f).mul_(2.0 ** _FRAC_BITS)   # frac(y) 2^32, exact
                q.copy_(f)
                q.add_(bits.below(y))   # + [r < frac 2^32]
            yield start, stop, q

    def _refuse_nonfinite(self, chunk: Tensor, offset: int):
        r, j = (~torch.isfinite(chunk)).nonzero()[0].tolist()
        raise ValueError(f"cannot encode non-finite values (first at [row, coordinate] {[r, offset + j]}); "
                         "check the client update for NaN/inf")

    def _refuse_overflow(self, chunk: Tensor, over_chunk: Tensor, offset: int):
        r, j = over_chunk.nonzero()[0].tolist()
        value = float(chunk[r, j])
        bound = float(self.clip if self.clip.ndim == 0 else self.clip[offset + j])
        raise ValueError(
            f"value {value:.6g} at [row {r}, coordinate {offset + j}] exceeds the clip bound {bound:.6g} "
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


class _RandomBits:
    """32 uniform random bits per coordinate, drawn chunk after chunk in row-major order.

    A numpy ``Generator`` (CPU) gives a fresh 128-bit AES key per encode call, expanded
    with AES-128-CTR from ``cryptography`` (several times faster than numpy's own
    generators); a torch generator (or None: torch's global one) draws with ``randint``.
    """

    _zeros = bytes(0)     # shared all-zero plaintext: the keystream is AES-CTR of zeros

    def __init__(self, generator: Generatorish, device: torch.device, max_count: int = 0):
        self.device = device
        self.torch_gen = generator if isinstance(generator, torch.Generator) else None
        self.stream = None
        self.mask = None
        if isinstance(generator, np.random.Generator):
            key = generator.bytes(16)
            self.stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            self.buf = bytearray(4 * max_count + 15)
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator={generator!r} must be a numpy.random.Generator, a torch.Generator or None")

    def _numpy(self, m: int) -> np.ndarray:
        if 4 * m > len(_RandomBits._zeros):
            _RandomBits._zeros = bytes(4 * m)
        if 4 * m + 15 > len(self.buf):
            self.buf = bytearray(4 * m + 15)
        self.stream.update_into(memoryview(_RandomBits._zeros)[:4 * m], self.buf)
        return np.frombuffer(self.buf, dtype="<u4", count=m)

    def _torch(self, shape) -> Tensor:
        return torch.randint(0, 1 << _FRAC_BITS, shape, dtype=torch.int64, generator=self.torch_gen,
                             device=self.device)

    def add_to(self, q: Tensor) -> None:
        """q += r, r uniform on [0, 2^32), in place."""
        if self.stream is None:
            q.add_(self._torch(q.shape))
            return
        r = self._numpy(q.numel()).reshape(q.shape)
        qn = q.numpy()
        np.add(qn, r, out=qn)

    def below(self, frac_scaled: Tensor) -> Tensor:
        """[r < frac_scaled] for r uniform on [0, 2^32) (bool, same shape)."""
        if self.stream is None:
            return self._torch(frac_scaled.shape) < frac_scaled
        r = self._numpy(frac_scaled.numel()).reshape(frac_scaled.shape)
        m = frac_scaled.numel()
        if self.mask is None or self.mask.size < m:
            self.mask = np.empty(m, dtype=bool)
        out = self.mask[:m].reshape(frac_scaled.shape)
        np.less(r, frac_scaled.numpy(), out=out)      # uint32 vs float64: compared exactly in float64
        return torch.from_numpy(out)
