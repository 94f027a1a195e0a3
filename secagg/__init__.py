"""secagg: secure aggregation (the masked protocol of Bonawitz et al. 2017) as a secure-average oracle.
May import: third-party libraries only (numpy, torch, cryptography, networkx, scipy, tqdm); no other fedaudit package.

Fixed-point encoding into Z_{2^k} (rounding bits from per-client ChaCha20 streams,
:mod:`.chacha20` on any device, :mod:`.keystream` on every CPU core), the oracle interface (plaintext reference,
quantized, and the Bonawitz et al. masked protocol, :mod:`secagg.protocol`), the
transcript of what the server observed, and the :class:`ClientUpdates` handle given to
aggregation rules. Primitives below the protocol: :mod:`.crypto`, :mod:`.shamir`,
:mod:`.graph`, :mod:`.pki`, :mod:`.secrets` (every secret the protocol draws).
"""
from .chacha20 import chacha20_keystream, chacha20_keystream_batch
from .encoding import FixedPointEncoder, modular_sum, rounding_key, wrap_mod
from .keystream import accumulate_masks, expand_masks
from .errors import ProtocolViolationDetected, SecureAggregationAborted, SecureAggregationViolation
from .oracle import PlaintextOracle, QuantizedOracle, SecureAverageOracle, SumResult
from .protocol import (ACTIVE_ROUNDS, ADVERSARIES, ROUNDS, ProtocolResult, SecAggClient, SecAggProtocol,
                       UnmaskingRefused, run_protocol)
from .masked import MaskedOracle
from .transcript import OracleCall, Transcript
from .updates import ClientUpdates

__all__ = [
    "FixedPointEncoder", "modular_sum", "rounding_key", "wrap_mod",
    "chacha20_keystream", "chacha20_keystream_batch", "accumulate_masks", "expand_masks",
    "SecureAggregationAborted", "SecureAggregationViolation", "ProtocolViolationDetected",
    "PlaintextOracle", "QuantizedOracle", "SecureAverageOracle", "SumResult",
    "ROUNDS", "ACTIVE_ROUNDS", "ADVERSARIES", "ProtocolResult", "SecAggClient", "SecAggProtocol", "UnmaskingRefused", "run_protocol",
    "MaskedOracle",
    "OracleCall", "Transcript", "ClientUpdates",
]
