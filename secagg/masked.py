"""The masked secure-average oracle: one SecAgg / SecAgg+ instance per call.

Bonawitz et al. 2017 (Fig. 4) and Bell et al. 2020 (SecAgg+) realise the secure
sum; this oracle plugs the protocol into the secure-average interface: encode
(exactly as :class:`QuantizedOracle`, same stochastic-rounding stream) -> run the
protocol over Z_{2^bits} -> decode the survivors' sum. With no dropouts it returns
bit for bit what :class:`QuantizedOracle` returns with the same seed; with
dropouts it returns the quantized weighted average over the survivors U3.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from . import crypto
from .oracle import QuantizedOracle
from .protocol import ACTIVE_ROUNDS, ROUNDS, run_protocol

__all__ = ["MaskedOracle"]

# Active security is opt-in: `fedaudit bench secagg` measured 1.2-1.4x the honest-but-curious
# protocol on SecAgg+ graphs (docs/security.md), not a small cost.
ACTIVE_DEFAULT = False


class MaskedOracle(QuantizedOracle):
    """Secure-average oracle backed by the masked protocol (Bonawitz et al. 2017, Fig. 4;
    Bell et al. 2020 for ``neighbors``).

    Each call runs a fresh protocol instance (new keys, seeds and masks: reusing masks
    across calls would reveal differences of inputs, and RFA makes several calls per
    round) and records the survivors and the server's view (masked inputs, relayed
    ciphertexts, reconstructed seeds) in the transcript.

    Parameters
    ----------
    threshold : int or float
        t as a client count, or as a fraction of the n clients of a call
        (t = ceil(fraction * n)). Must exceed n/2 unless ``allow_insecure_threshold``.
        Default 2/3: up to a third of the clients may drop.
    neighbors : None, int, "auto" or graph
        None: complete graph (SecAgg). An int k or "auto" (k = 2 ceil(log2 n), see
        :func:`secagg.graph.default_degree`): random k-regular graph (SecAgg+). Or an
        explicit graph, as in :func:`secagg.run_protocol`.
    dropout_rate : float
        Fraction of the clients (round(rate * n), chosen at random from the seed and
        the call counter) that drop in ``dropout_round`` of each call.
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
        is about 1.0-1.1x on the complete graph but 1.2-1.4x on SecAgg+ graphs at
        n = 100..1000 (Ed25519 signing and verification and the extra round are a
        fixed cost per call, large next to a sparse graph's cheap masking), not small
        enough to impose on every oracle call.
    bits, clip, rounding, overflow, seed : as :class:`QuantizedOracle`.

    A call in which too many clients drop raises ``SecureAggregationAborted``.
    """

    name = "masked"

    def __init__(self, threshold: Union[int, float] = 2 / 3, neighbors=None, dropout_rate: float = 0.0, *,
                 dropout_round: str = "masked_input", share_threshold: Optional[int] = None,
                 allow_insecure_threshold: bool = False, bits: int = 32, clip: float = 10.0,
                 rounding: str = "stochastic", overflow: str = "raise", seed: int = 0,
                 active_security: bool = ACTIVE_DEFAULT):
        super().__init__(bits, clip, rounding=rounding, overflow=overflow, seed=seed)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
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
        if not isinstance(active_security, bool):
            raise TypeError(f"active_security={active_security!r} must be True or False")
        self.active_security = active_security
        self.threshold = threshold
        self.neighbors = neighbors
        self.dropout_rate = float(dropout_rate)
        self.dropout_round = dropout_round
        self.share_threshold = share_threshold
        self.allow_insecure_threshold = allow_insecure_threshold
        self.calls = 0   # protocol instance counter: fresh keys and masks per call

    def threshold_for(self, n: int) -> int:
        """t for a call with n clients (the threshold of Bonawitz et al. 2017, Fig. 4)."""
        if isinstance(self.threshold, float):
            return max(1, math.ceil(self.threshold * n - 1e-9))
        return self.threshold

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

    def _sum_encoded(self, encoded: torch.Tensor):
        """Sum the encoded rows with one protocol instance (consumes ``encoded``: the
        masked inputs are written over it, which saves an [n, d] allocation)."""
        n = encoded.shape[0]
        instance = self.calls
        self.calls += 1
        res = run_protocol(encoded, modulus_bits=self.bits, threshold=self.threshold_for(n),
                           neighbors=self.neighbors, dropouts=self.dropouts_for(n, instance), seed=self.seed,
                           instance=instance, share_threshold=self.share_threshold,
                           allow_insecure_threshold=self.allow_insecure_threshold, overwrite=True,
                           active_security=self.active_security)
        view = res.server_view()
        view["instance"] = instance
        return res.total, res.survivors, view
