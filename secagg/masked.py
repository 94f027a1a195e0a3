"""The masked secure-average oracle: one SecAgg / SecAgg+ instance per call.

Bonawitz et al. 2017 (Fig. 4) and Bell et al. 2020 (SecAgg+) realise the secure
sum; this oracle plugs the protocol into the secure-average interface: encode
(exactly as :class:`QuantizedOracle`, same per-client stochastic-rounding streams) -> run
the protocol over Z_{2^bits} -> decode the survivors' sum. With no dropouts it returns
bit for bit what :class:`QuantizedOracle` returns with the same seed; with
dropouts it returns the quantized weighted average over the survivors U3.

Memory: the clients' inputs are encoded, masked and summed a group of clients at a time
(:class:`secagg.protocol.dataplane.EncodedRows`, ``group_bytes`` of int64 encodings per
group), so a call never holds the [n, d + 1] integers; only the float updates are whole.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from . import crypto
from .encoding import rounding_key
from .graph import fraction_count
from .oracle import QuantizedOracle, SumResult
from .pki import SimulatedPKI
from .protocol import ACTIVE_ROUNDS, ROUNDS, run_protocol
from .protocol.dataplane import EncodedRows
from .protocol.messages import DEFAULT_CORRUPT_FRACTION, DEFAULT_DROPOUT_FRACTION
from .secrets import check_flag

__all__ = ["MaskedOracle"]

# Active security is opt-in: `fedaudit bench secagg` measured up to 1.2x the honest-but-curious
# protocol at model sizes and more at small d (docs/security.md).
ACTIVE_DEFAULT = False
GROUP_BYTES = 1 << 30          # int64 encodings per group of clients (n = 1000, d = 1.32M: ~100 clients)
KEEP_MASKED_BYTES = 64 << 20   # keep_masked_inputs=None keeps the masked inputs up to this size


class MaskedOracle(QuantizedOracle):
    """Secure-average oracle backed by the masked protocol (Bonawitz et al. 2017, Fig. 4;
    Bell et al. 2020 for ``neighbors``).

    Each call runs a fresh protocol instance whose keys, self-mask seeds and Shamir
    coefficients come from the OS CSPRNG (reusing masks across calls would reveal
    differences of inputs, and RFA makes several calls per round; deriving them from the
    seed would reveal the inputs), and records the survivors and the server's view
    (masked inputs, relayed ciphertexts, reconstructed seeds, the graph's security label
    ``bound``) in the transcript. The seed drives only what never leaves a client or is
    public: the stochastic rounding (so the result is reproducible: the masked sum does
    not depend on the masks) and the simulated dropouts.

    Parameters
    ----------
    threshold : int, float or None
        t as a client count, or as a fraction of the n clients of a call
        (t = ceil(fraction * n)). Must exceed n/2 unless ``allow_insecure_threshold``,
        and 2n/3 with ``active_security``. Default (None): floor(2n/3) + 1, strictly above
        2n/3 (Bonawitz et al. 2017, Sec. 6.2), so fewer than a third of the clients may drop.
    neighbors : None, int, "auto" or graph
        None: complete graph (SecAgg). "auto": SecAgg+ with the degree and share threshold
        that meet Bell et al. 2020's bound for ``corrupt_fraction`` and
        ``dropout_fraction`` (see :func:`secagg.run_protocol`). An int k: a random
        k-regular graph, not checked against the bound. Or an explicit graph.
    corrupt_fraction, dropout_fraction : float, optional
        The threat model the bound is computed for and reported against (gamma, delta).
        Default: gamma = 0.1; delta = max(0.1, the fraction this call's simulated dropouts
        make). An explicit ``dropout_fraction`` below ``dropout_rate`` is refused.
    dropout_rate : float
        Fraction of the clients that drop in ``dropout_round`` of each call: exactly
        round(rate * n), chosen at random from the seed and the call counter (simulated, not
        secret). :meth:`check_dropouts` refuses a rate that would abort every call.
    dropout_round : str
        One of ``secagg.ROUNDS`` or "random" (each dropped client in a random round).
        Default "masked_input": the server must recover their pairwise masks.
    share_threshold : int, optional
        Per-client Shamir threshold for SecAgg+ (default: majority of the k + 1 holders).
    active_security : bool
        Run the variant secure against an actively malicious server (Bonawitz et al.
        2017, Fig. 4 with the red parts: Ed25519-signed keys under a simulated PKI and
        the ConsistencyCheck round; see :func:`secagg.run_protocol` and docs/security.md).
        A call in which an honest client detects a violation raises
        ``secagg.ProtocolViolationDetected`` (a ``SecureAggregationAborted``).
        Default False: the measured cost (``fedaudit bench secagg``, docs/security.md)
        is about 0.9-1.2x at d >= 1e5 (complete graph and the bound's SecAgg+ graph,
        n = 100..1000) and more at small d (Ed25519 signing and verification and the
        extra round are a fixed cost per call). Requires t > 2n/3 (the default t is).
    insecure_reproducible : bool
        INSECURE, for debugging: every secret of call i derives from (seed, i) and the PKI
        from the seed, so runs repeat exactly; every call's server view says so
        (``insecure_reproducible``, ``warning``).
    keep_masked_inputs : bool or None
        Keep the masked inputs y_u (int64 [|U3|, d + 1]) in the server view. None (default):
        keep them when they take at most 64 MiB (:data:`KEEP_MASKED_BYTES`), so a small call
        shows the whole server view and a model-sized one never holds the [n, d] integers;
        the view's ``masked_inputs_kept`` says which (``masked_inputs`` is [|U3|, 0] when not).
        The simulations pass False (no audit reads them).
    group_bytes : int
        int64 encodings per group of clients that is encoded, masked and summed at once
        (default 1 GiB). Edges between two groups have their keystream generated in each, as
        their two clients do in a deployment; within a group once for both ends.
    bits, clip, rounding, overflow, seed : as :class:`QuantizedOracle`.

    A call in which too many clients drop raises ``SecureAggregationAborted``.
    """

    name = "masked"

    def __init__(self, threshold: Union[int, float, None] = None, neighbors=None, dropout_rate: float = 0.0, *,
                 dropout_round: str = "masked_input", share_threshold: Optional[int] = None,
                 allow_insecure_threshold: bool = False, bits: int = 32, clip: float = 10.0,
                 rounding: str = "stochastic", overflow: str = "raise", seed: int = 0,
                 active_security: bool = ACTIVE_DEFAULT, corrupt_fraction: Optional[float] = None,
                 dropout_fraction: Optional[float] = None, insecure_reproducible: bool = False,
                 keep_masked_inputs: Optional[bool] = None, group_bytes: int = GROUP_BYTES):
        super().__init__(bits, clip, rounding=rounding, overflow=overflow, seed=seed)
        if keep_masked_inputs is not None and not isinstance(keep_masked_inputs, bool):
            raise TypeError(f"keep_masked_inputs={keep_masked_inputs!r} must be True, False or None (auto)")
        if isinstance(group_bytes, bool) or not isinstance(group_bytes, int) or group_bytes < 1:
            raise ValueError(f"group_bytes={group_bytes!r} must be a positive number of bytes")
        self.keep_masked_inputs = keep_masked_inputs
        self.group_bytes = group_bytes
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise TypeError(f"threshold={threshold!r} must be an int (clients) or a float fraction in (0, 1]")
        if isinstance(threshold, float) and not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r}: a fractional threshold must be in (0, 1]")
        if isinstance(threshold, int) and threshold < 1:
            raise ValueError(f"threshold={threshold} must be >= 1")
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"dropout_rate={dropout_rate!r} must be in [0, 1)")
        if dropout_round not in ACTIVE_ROUNDS + ("random",):
            raise ValueError(f"dropout_round={dropout_round!r}; choose one of {ACTIVE_ROUNDS + ('random',)}")
        if dropout_round == "consistency_check" and not active_security:
            raise ValueError("dropout_round='consistency_check' exists only with active_security=True")
        if isinstance(neighbors, str) and neighbors != "auto":
            raise ValueError(f"neighbors={neighbors!r}; use None, an int k, 'auto' or an explicit graph")
        self.active_security = check_flag("active_security", active_security)
        self.insecure_reproducible = check_flag("insecure_reproducible", insecure_reproducible)
        for name, frac in (("corrupt_fraction", corrupt_fraction), ("dropout_fraction", dropout_fraction)):
            if frac is not None:
                fraction_count(name, frac, 1)
        if dropout_fraction is not None and dropout_fraction < dropout_rate:
            raise ValueError(f"dropout_fraction={dropout_fraction!r} is below dropout_rate={dropout_rate!r}: the "
                             "simulated dropouts would exceed what the bound assumes; use dropout_fraction >= "
                             "dropout_rate (or leave it None)")
        self.corrupt_fraction = DEFAULT_CORRUPT_FRACTION if corrupt_fraction is None else float(corrupt_fraction)
        self.dropout_fraction = dropout_fraction
        # Long-term keys of the active model: one PKI for the oracle's life (Sec. 6.2).
        self.pki = (SimulatedPKI(insecure_seed=seed if insecure_reproducible else None)
                    if active_security else None)
        self.threshold = threshold
        self.neighbors = neighbors
        self.dropout_rate = float(dropout_rate)
        self.dropout_round = dropout_round
        self.share_threshold = share_threshold
        self.allow_insecure_threshold = allow_insecure_threshold
        self.calls = 0   # protocol instance counter: fresh keys and masks per call

    def threshold_for(self, n: int) -> int:
        """t for a call with n clients (the threshold of Bonawitz et al. 2017, Fig. 4); the
        default is floor(2n/3) + 1 > 2n/3."""
        if self.threshold is None:
            return 2 * n // 3 + 1
        if isinstance(self.threshold, float):
            return max(1, math.ceil(self.threshold * n - 1e-9))
        return self.threshold

    def check_dropouts(self, n: int) -> None:
        """Refuse a ``dropout_rate`` that leaves fewer than t of n clients in every call: each
        call would abort (Bonawitz et al. 2017, Fig. 4: the server needs t shares of each secret)."""
        count = int(round(self.dropout_rate * n))
        t = self.threshold_for(n)
        if n - count < t:
            raise ValueError(f"dropout_rate={self.dropout_rate} drops {count} of the {n} clients in every protocol "
                             f"call, leaving {n - count} < the threshold t={t}: every call would abort; use "
                             f"--dropout-rate <= {(n - t) / n:.3g} or a lower --threshold")

    def dropouts_for(self, n: int, instance: int) -> Dict[str, List[int]]:
        """The seeded dropouts of call ``instance``: round(rate * n) clients, dropping in the
        configured round of Bonawitz et al. 2017, Fig. 4."""
        count = int(round(self.dropout_rate * n))
        if count == 0:
            return {}
        key = crypto.hkdf(crypto.instance_key(self.seed, instance), info=b"oracle/dropouts", length=16)
        rng = np.random.default_rng(int.from_bytes(key, "big"))
        who = rng.choice(n, size=count, replace=False)
        names = ACTIVE_ROUNDS if self.active_security else ROUNDS
        if self.dropout_round == "random":
            rounds = rng.integers(0, len(names), size=count)
        else:
            rounds = np.full(count, names.index(self.dropout_round))
        out: Dict[str, List[int]] = {}
        for u, r in zip(who.tolist(), rounds.tolist()):
            out.setdefault(names[r], []).append(u)
        return {r: sorted(v) for r, v in out.items()}

    def secure_sum(self, vectors: torch.Tensor, u: torch.Tensor) -> SumResult:
        """The secure sum of the clients' (u_i x_i, u_i) through one protocol instance, encoded a
        group of clients at a time (bit for bit :class:`QuantizedOracle`'s integers: the same
        per-client rounding streams under the same call key), never the [n, d + 1] integers."""
        n, d = vectors.shape
        dev = vectors.device
        enc = self.encoder(n, d, dev)
        gen = self.generator(dev)
        known = getattr(self, "_vectors_absmax", None)
        absmax = known[2] if known is not None and known[0] is vectors and known[1] == vectors._version else None
        key = rounding_key(gen) if enc.rounding == "stochastic" else None   # as the encoder draws it
        rows = max(1, self.group_bytes // (8 * (d + 1)))
        if rows < n and enc.overflow == "raise" and self._may_overflow(enc, u, absmax, vectors):
            # refuse an input past the clip bound before the protocol runs, naming its own row
            enc.encode_sum(vectors, key, weights=u, _absmax=absmax)
        clipped = [0]

        def encode(ids):
            if ids == list(range(ids[0], ids[0] + len(ids))):
                x, w = vectors[ids[0]:ids[0] + len(ids)], u[ids[0]:ids[0] + len(ids)]
            else:
                sel = torch.as_tensor(ids, dtype=torch.long, device=dev)
                x, w = vectors.index_select(0, sel), u.index_select(0, sel)
            out = enc.encode(x, key, weights=w, client_ids=ids, _absmax=absmax)
            clipped[0] += enc.last_clipped
            return out

        total, survivors, view = self._instance(EncodedRows(n, d + 1, dev, encode, rows), n, d + 1)
        self.last_clipped = clipped[0]          # coordinates of the encoded clients: the survivors
        self.total_clipped += clipped[0]
        return SumResult(total=enc.decode(total), survivors=survivors, server_view=view)

    @staticmethod
    def _may_overflow(enc, u: torch.Tensor, absmax: Optional[float], vectors: torch.Tensor) -> bool:
        """Whether some |u_i x_ij| may pass the clip bound (the encoder's own quick test)."""
        if absmax is None:
            return True
        bound = float(torch.tensor(absmax, dtype=vectors.dtype) * u.abs().max().to(vectors.dtype))
        clip = enc.clip
        return bound > float(clip if clip.ndim == 0 else clip[:-1].min()) or float(u.abs().max()) > 1.0

    def sum_encoded(self, encoded: torch.Tensor):
        """Sum already encoded rows (int64 [n, d + 1]) with one protocol instance; the masked inputs,
        if kept, are written over ``encoded`` (which saves an [n, d] allocation). Used by the
        distributed-DP oracle, whose shares carry their noise."""
        return self._instance(encoded, *encoded.shape)

    def _instance(self, values, n: int, width: int):
        """One protocol instance on ``values`` (a tensor or :class:`EncodedRows`)."""
        instance = self.calls
        self.calls += 1
        dropouts = self.dropouts_for(n, instance)
        delta = self.dropout_fraction
        if delta is None:   # at least what this call's simulated dropouts make
            delta = min(max(DEFAULT_DROPOUT_FRACTION, int(round(self.dropout_rate * n)) / n), (n - 1) / n)
        keep = self.keep_masked_inputs
        if keep is None:
            keep = n * width * 8 <= KEEP_MASKED_BYTES
        res = run_protocol(values, modulus_bits=self.bits, threshold=self.threshold_for(n),
                           neighbors=self.neighbors, dropouts=dropouts, seed=self.seed,
                           instance=instance, share_threshold=self.share_threshold,
                           allow_insecure_threshold=self.allow_insecure_threshold,
                           overwrite=keep and isinstance(values, torch.Tensor), keep_masked_inputs=keep,
                           active_security=self.active_security, corrupt_fraction=self.corrupt_fraction,
                           dropout_fraction=delta, insecure_reproducible=self.insecure_reproducible,
                           pki=self.pki)
        view = res.server_view()
        view["instance"] = instance
        view["masked_inputs_kept"] = keep
        return res.total, res.survivors, view
