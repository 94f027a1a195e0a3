"""Exceptions of the secure-aggregation layer."""
from typing import Any, Optional


class SecureAggregationViolation(RuntimeError):
    """A rule asked for individual client updates while secure aggregation is on.

    Under secure aggregation the server holds only what a secure-average oracle
    returns (docs/architecture.md, "The server-view contract"); rules such as Krum or the
    coordinate median need the individual updates and therefore cannot run.
    """


class SecureAggregationAborted(RuntimeError):
    """The masked protocol stopped: too few clients remained at some round."""


class ProtocolViolationDetected(SecureAggregationAborted):
    """An honest client caught the server (or a relay) breaking the protocol and aborted.

    Raised by the checks of the actively secure variant (Bonawitz et al. 2017, Fig. 4,
    the red/underlined parts; Sec. 6.2): invalid signatures on advertised keys or on the
    survivor set, fewer than t signatures on the same U3 (ConsistencyCheck), a request
    that does not match the signed U3, a share ciphertext that fails authentication.
    It is an abort (a subclass of :class:`SecureAggregationAborted`): the server gets no
    sum from the detecting client.

    Attributes: ``round`` (protocol round), ``check`` (which check failed), ``party``
    (who is at fault: ``"server"`` for anything it sent or relayed, or a client index),
    ``detected_by`` (the honest client that aborted), ``subject`` (the client the
    offending message was about, if any).
    """

    def __init__(self, message: str, *, round: str, check: str, party: Any = "server",
                 detected_by: Optional[int] = None, subject: Optional[int] = None):
        super().__init__(message)
        self.round = round
        self.check = check
        self.party = party
        self.detected_by = detected_by
        self.subject = subject
