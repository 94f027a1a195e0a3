"""Fixed-point encoding of real vectors into Z_M, M = 2^bits (bits <= 64).

Encoded values are int64 tensors holding residues mod M. For bits < 64 the
residue lies in [0, M); for bits == 64 the int64 itself is the residue (two's
complement wraparound makes int64 addition addition mod 2^64).

A real x with |x| <= clip is mapped to q = round(x * scale) with unbiased
stochastic rounding (floor(x*scale + U), U ~ Uniform[0, 1)) or to the nearest
integer, then reduced mod M. The scale is chosen so that the sum of
``n_summands`` encodings cannot wrap: n * (clip * scale + 1) <= M/2 - 1, hence a
sum decodes to its signed value exactly (Bonawitz et al. 2017, Sec. 3, inputs in
Z_R; the bound is the usual one for fixed-point secure aggregation).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

Tensor = torch.Tensor
ClipLike = Union[float, Tensor]

_ROUNDING = ("stochastic", "nearest")
_OVERFLOW = ("raise", "clip")
# Coordinates encoded per chunk: keeps float64 temporaries in cache.
_CHUNK_ELEMS = 1 << 18


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
        self.last_clipped = 0

    def encode(self, x: Tensor, generator: Union[None, torch.Generator, np.random.Generator] = None) -> Tensor:
        """Encode a float tensor [..., d] into int64 residues mod M.

        ``generator`` drives stochastic rounding: a ``numpy.random.Generator``
        (fastest on the CPU) or a ``torch.Generator`` on ``x``'s device.
        Works in cache-sized chunks of coordinates with reused buffers, so the
        float64 intermediates never exist at full size.
        """
        if not torch.is_floating_point(x):
            raise TypeError(f"encode needs a floating tensor, got {x.dtype}")
        flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
        rows, d = flat.shape
        clip = self.clip.to(x.device)
        scale = self.scale.to(x.device)
        if clip.ndim and clip.shape[-1] != d:
            raise ValueError(f"clip has {clip.shape[-1]} coordinates but the input has {d}")
        out = torch.empty(flat.shape, dtype=torch.int64, device=x.device)
        step = max(1, _CHUNK_ELEMS // max(1, rows))
        buf = torch.empty((rows, min(step, d)), dtype=torch.float64, device=x.device)
        use_numpy = isinstance(generator, np.random.Generator)
        if use_numpy and x.device.type != "cpu":
            raise ValueError("a numpy generator can only drive rounding on the CPU; pass a torch.Generator "
                             f"on {x.device}")
        ubuf = np.empty(buf.numel(), dtype=np.float32) if use_numpy else None
        self.last_clipped = 0
        for start in range(0, d, step):
            stop = min(d, start + step)
            chunk = flat[:, start:stop]
            c = clip if clip.ndim == 0 else clip[start:stop]
            lo, hi = torch.aminmax(chunk)
            if not (torch.isfinite(lo) and torch.isfinite(hi)):
                self._refuse_nonfinite(flat)
            y = buf[:, :stop - start]
            y.copy_(chunk)
            if float(torch.maximum(-lo, hi)) > float(c.min()):
                over = chunk.abs() > c
                n_over = int(over.sum())
                if n_over:
                    if self.overflow == "raise":
                        self._refuse_overflow(flat, over, start)
                    self.last_clipped += n_over
                    y.copy_(torch.maximum(torch.minimum(y, c), -c))
            y.mul_(scale if scale.ndim == 0 else scale[start:stop])
            if self.rounding == "stochastic":
                if use_numpy:
                    u = ubuf[:rows * (stop - start)].reshape(rows, stop - start)
                    generator.random(out=u, dtype=np.float32)
                    y.add_(torch.from_numpy(u))
                else:
                    y.add_(torch.rand(y.shape, generator=generator, device=y.device, dtype=torch.float32))
                y.floor_()
            else:
                y.round_()
            o = out[:, start:stop]
            o.copy_(y)
            if self.bits < 64:
                o.bitwise_and_(self.modulus - 1)
        return out.reshape(x.shape)

    def _refuse_nonfinite(self, flat: Tensor):
        bad = (~torch.isfinite(flat)).nonzero()[0].tolist()
        raise ValueError(f"cannot encode non-finite values (first at [row, coordinate] {bad}); "
                         "check the client update for NaN/inf")

    def _refuse_overflow(self, flat: Tensor, over_chunk: Tensor, offset: int):
        r, j = over_chunk.nonzero()[0].tolist()
        value = float(flat[r, offset + j])
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
