"""Secure-average oracles: sum_i w_i x_i / sum_i w_i, with the sums taken securely.

An oracle sees one vector and one weight per client. Each client sends the pair
(u_i x_i, u_i) with u_i = w_i / B for a public weight bound B (so u_i <= 1 and
the weighted vector obeys the same per-coordinate bound as x_i); both parts are
summed through the oracle, the weight as one more coordinate. The server learns
the weighted sum and the total weight, nothing else (RFA paper, Sec. III-A,
"secure average oracle"; Bonawitz et al. 2017 for the masked realisation).

- :class:`PlaintextOracle`: the float reference (ideal functionality).
- :class:`QuantizedOracle`: encode -> exact integer sum mod M -> decode; this is
  bit for bit what the masked protocol returns.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .encoding import FixedPointEncoder, modular_sum
from .transcript import Transcript

Tensor = torch.Tensor


@dataclass
class SumResult:
    """What a secure-sum backend returns: the sum over survivors, and the server's view."""

    total: Tensor                 # float [d + 1]: sum of (u_i x_i, u_i) over survivors
    survivors: List[int]
    server_view: Dict[str, Any] = field(default_factory=dict)


def _check_inputs(vectors: Tensor, weights: Tensor) -> float:
    """Validate one call's inputs; return max |x_ij| (the encoders reuse it)."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a [n, d] matrix, got shape {tuple(vectors.shape)}")
    if weights.ndim != 1 or weights.shape[0] != vectors.shape[0]:
        raise ValueError(f"weights must have shape [{vectors.shape[0]}] (one per client), "
                         f"got {tuple(weights.shape)}")
    if vectors.shape[0] == 0:
        raise ValueError("no client vectors: the oracle needs at least one input")
    if not torch.is_floating_point(vectors):
        raise TypeError(f"vectors must be floating point, got {vectors.dtype}")
    if weights.device != vectors.device:
        raise ValueError(f"weights are on {weights.device} but vectors on {vectors.device}; "
                         "put them on one device")
    lo, hi = torch.aminmax(vectors)  # one fast pass; NaN/inf propagate into the extremes
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        bad = (~torch.isfinite(vectors).all(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"non-finite values in the updates of client(s) {bad[:10]}; "
                         "a diverged client must be fixed or excluded before aggregation")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"weights must be finite and >= 0, got {weights.tolist()[:10]}...")
    return max(-float(lo), float(hi))


class SecureAverageOracle(ABC):
    """Interface of every secure-average oracle.

    ``average(vectors, weights)`` returns sum_i w_i x_i / sum_i w_i and records the
    call in ``transcript`` (a :class:`Transcript`) when one is given.
    """

    name: str = "oracle"

    def average(self, vectors: Tensor, weights: Tensor, *, weight_bound: Optional[float] = None,
                transcript: Optional[Transcript] = None, label: str = "average") -> Tensor:
        """One oracle call.

        Parameters
        ----------
        vectors : Tensor [n, d]
            One row per client.
        weights : Tensor [n]
            Non-negative client weights.
        weight_bound : float, optional
            Public bound B >= max w_i used to normalise the weights to [0, 1]
            before encoding. Default: max_i w_i, which the server then learns
            (recorded as revealed in the transcript).
        """
        weights = torch.as_tensor(weights, dtype=vectors.dtype, device=vectors.device)
        absmax = _check_inputs(vectors, weights)
        wmax = float(weights.max())
        revealed: Dict[str, Any] = {"n_inputs": int(vectors.shape[0])}
        if weight_bound is None:
            weight_bound = wmax
            revealed["weight_bound"] = weight_bound
        elif not weight_bound > 0 or wmax > weight_bound * (1 + 1e-12):
            raise ValueError(f"weight_bound={weight_bound!r} must be > 0 and >= the largest weight "
                             f"{wmax!r}; pass a valid public bound or None")
        if wmax <= 0:
            raise ValueError("all client weights are zero: the average is undefined; "
                             "give at least one client a positive weight")
        u = (weights / weight_bound).clamp_(max=1.0)
        # this call's max |x|, for the encoder not to scan again: only for this very tensor, unmodified
        self._vectors_absmax = (vectors, vectors._version, absmax)
        try:
            res = self.secure_sum(vectors, u)
        finally:
            self._vectors_absmax = None
        total_weight = res.total[-1]
        if not total_weight > 0:
            raise ValueError(
                f"the surviving clients {res.survivors} have total weight {float(total_weight)!r}; "
                "the average is undefined (all survivors sent weight 0)")
        avg = (res.total[:-1] / total_weight).to(vectors.dtype)
        revealed["total_weight"] = float(total_weight) * weight_bound
        if transcript is not None:
            surv = torch.as_tensor(res.survivors, device=vectors.device, dtype=torch.long)
            eff = torch.zeros_like(u)
            eff[surv] = u[surv] / u[surv].sum()
            transcript.record_call(label=label, oracle=self.name, output=avg, revealed=revealed,
                                   survivors=res.survivors, server_view=res.server_view,
                                   ground_truth={"effective_weights": eff.detach()})
        return avg

    @abstractmethod
    def secure_sum(self, vectors: Tensor, u: Tensor) -> SumResult:
        """Sum the clients' (u_i x_i, u_i) [d + 1] as the server would learn it."""


class PlaintextOracle(SecureAverageOracle):
    """Float reference: the exact weighted average, no encoding (ideal functionality)."""

    name = "plaintext"

    def secure_sum(self, vectors: Tensor, u: Tensor) -> SumResult:
        total = torch.cat([u @ vectors, u.sum().reshape(1)])
        return SumResult(total=total, survivors=list(range(vectors.shape[0])))


class QuantizedOracle(SecureAverageOracle):
    """Encode into Z_{2^bits}, sum exactly mod M, decode.

    Parameters
    ----------
    bits : int
        Modulus M = 2^bits (default 32).
    clip : float
        Per-coordinate bound on each client's vector; the weight coordinate is
        bounded by 1 after normalisation.
    rounding, overflow : see :class:`FixedPointEncoder`.
    seed : int
        Seeds the generator of the stochastic rounding (one stream per oracle).
    """

    name = "quantized"

    def __init__(self, bits: int = 32, clip: float = 10.0, *, rounding: str = "stochastic",
                 overflow: str = "raise", seed: int = 0):
        # Validate eagerly so a bad configuration fails before any training.
        FixedPointEncoder(bits, clip, 1, rounding=rounding, overflow=overflow)
        self.bits, self.clip, self.rounding, self.overflow = bits, float(clip), rounding, overflow
        self.seed = seed
        self._generators: Dict[str, Any] = {}
        self._encoders: Dict[tuple, FixedPointEncoder] = {}
        self.last_clipped = 0      # coordinates clipped in the last call (overflow="clip")
        self.total_clipped = 0     # ... and over the oracle's lifetime

    def encoder(self, n: int, d: int, device: torch.device) -> FixedPointEncoder:
        """The encoder of a call with n clients and d coordinates (+1 for the weight).

        Cached per (n, d): building the per-coordinate scales is a pass over d + 1
        float64 values that an RFA run would otherwise repeat in every call.
        """
        key = (n, d)
        enc = self._encoders.get(key)
        if enc is None:
            clip = torch.full((d + 1,), self.clip, dtype=torch.float64)
            clip[-1] = 1.0
            enc = FixedPointEncoder(self.bits, clip, n, rounding=self.rounding, overflow=self.overflow)
            if len(self._encoders) >= 4:
                self._encoders.pop(next(iter(self._encoders)))
            self._encoders[key] = enc
        return enc

    def generator(self, device: torch.device):
        """The rounding generator of the calls on ``device``: numpy PCG64 seeded with ``seed``, on
        every device. Each call draws from it the 32-byte key of its clients' ChaCha20 rounding
        streams (:func:`secagg.encoding.rounding_key`), so the same seed gives the same sums on a
        CPU and on an accelerator."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = np.random.default_rng(self.seed)
        return self._generators[key]

    def client_payload(self, vectors: Tensor, u: Tensor) -> Tensor:
        """What each client encodes: its weighted vector u_i x_i and its weight u_i, [n, d + 1]."""
        n, d = vectors.shape
        payload = torch.empty((n, d + 1), dtype=vectors.dtype, device=vectors.device)
        torch.mul(vectors, u[:, None], out=payload[:, :d])
        payload[:, d] = u
        return payload

    def secure_sum(self, vectors: Tensor, u: Tensor) -> SumResult:
        # Each client's payload is client_payload(vectors, u); the encoder builds it
        # block by block (weights=u), bit for bit the same integers. The plain modular sum
        # encodes and sums in blocks of clients and coordinates (never the [n, d + 1] integers).
        n, d = vectors.shape
        enc = self.encoder(n, d, vectors.device)
        gen = self.generator(vectors.device)
        known = getattr(self, "_vectors_absmax", None)
        absmax = known[2] if known is not None and known[0] is vectors and known[1] == vectors._version else None
        if type(self).sum_encoded is QuantizedOracle.sum_encoded:
            # Plain modular sum: fuse encode and sum, never holding the [n, d + 1] integers.
            total = enc.encode_sum(vectors, gen, weights=u, _absmax=absmax)
            survivors, view = list(range(n)), {}
        else:
            total, survivors, view = self.sum_encoded(enc.encode(vectors, gen, weights=u, _absmax=absmax))
        self.last_clipped = enc.last_clipped
        self.total_clipped += enc.last_clipped
        return SumResult(total=enc.decode(total), survivors=survivors, server_view=view)

    def sum_encoded(self, encoded: Tensor):
        """Exact modular sum of all rows; the masked protocol overrides this."""
        return modular_sum(encoded, self.bits), list(range(encoded.shape[0])), {}
