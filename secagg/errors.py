"""Exceptions of the secure-aggregation layer."""


class SecureAggregationViolation(RuntimeError):
    """A rule asked for individual client updates while secure aggregation is on.

    Under secure aggregation the server holds only what a secure-average oracle
    returns (DESIGN.md, "what the server may see"); rules such as Krum or the
    coordinate median need the individual updates and therefore cannot run.
    """


class SecureAggregationAborted(RuntimeError):
    """The masked protocol stopped: too few clients remained at some round."""
