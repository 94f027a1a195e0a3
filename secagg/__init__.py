"""secagg: secure aggregation as a secure-average oracle.

Fixed-point encoding into Z_{2^k}, the oracle interface (plaintext reference,
quantized, and the Bonawitz et al. masked protocol), the transcript of what the
server observed, and the :class:`ClientUpdates` handle given to aggregation rules.
This package imports no other fedaudit package.
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
