"""rfa: the geometric median as an iterative secure aggregate (Robust Federated Aggregation).
May import secagg (the oracle interface and the ClientUpdates handle) only.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP
2022: :func:`smoothed_weiszfeld` (Algorithm 2) and :func:`one_step` (Algorithm 3).
Personalized RFA (Algorithm 4) aggregates its shared part with :func:`smoothed_weiszfeld`;
its on-device training (u_i, then w on the residual) lives in ``protocols.simulation``.
Every function takes a :class:`secagg.ClientUpdates` handle and reaches the
clients' updates only through its secure-average oracle. Imports only ``secagg``.
"""
from .onestep import one_step
from .weiszfeld import (GMReference, RFAGroundTruth, RFAResult, geometric_median_reference,
                        predicted_encoding_error, smoothed_weiszfeld)

__all__ = [
    "smoothed_weiszfeld", "one_step", "RFAResult", "RFAGroundTruth",
    "geometric_median_reference", "GMReference", "predicted_encoding_error",
]
