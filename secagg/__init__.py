"""secagg: secure aggregation (the masked protocol of Bonawitz et al. 2017) as a secure-average oracle.
May import: third-party libraries only (numpy, torch, cryptography, tqdm); no other fedaudit package.

Fixed-point encoding into Z_{2^k}, the oracle interface (plaintext reference,
quantized, and the Bonawitz et al. masked protocol, :mod:`secagg.protocol`), the
transcript of what the server observed, and the :class:`ClientUpdates` handle given to
aggregation rules. Primitives below the protocol: :mod:`.crypto`, :mod:`.shamir`,
:mod:`.graph`, :mod:`.pki`, :mod:`.secrets` (every secret the protocol draws).
"""
from .encoding import FixedPointEncoder, modular_sum, wrap_mod
from .errors import ProtocolViolationDetected, SecureAggregationAborted, SecureAggregationViolation
from .oracle import PlaintextOracle, QuantizedOracle, SecureAverageOracle, SumResult
from .protocol import (ACTIVE_ROUNDS, ADVERSARIES, ROUNDS, ProtocolResult, SecAggClient, SecAggProtocol,
                       UnmaskingRefused, run_protocol)
from .masked import MaskedOracle
from .transcript import OracleCall, Transcript
from .updates import ClientUpdates

__all__ = [
    "FixedPointEncoder", "modular_sum", "wrap_mod",
    "SecureAggregationAborted", "SecureAggregationViolation", "ProtocolViolationDetected",
    "PlaintextOracle", "QuantizedOracle", "SecureAverageOracle", "SumResult",
    "ROUNDS", "ACTIVE_ROUNDS", "ADVERSARIES", "ProtocolResult", "SecAggClient", "SecAggProtocol", "UnmaskingRefused", "run_protocol",
    "MaskedOracle",
    "OracleCall", "Transcript", "ClientUpdates",
]
