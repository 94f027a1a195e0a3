"""FLTrust (Cao, Fang, Liu, Gong 2021) as one secure average.

The server broadcasts its root-data update g0; each client computes its own trust
score ReLU(cos(g_i, g0)) and rescales its update to ||g0||, both client-side; one
weighted secure average then gives eq. (4):

    g = sum_i ReLU(c_i) * (||g0|| / ||g_i||) g_i / sum_j ReLU(c_j).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from secagg import ClientUpdates

from .base import AggregationRule, register_rule

Tensor = torch.Tensor

NORMALIZE = ("full", "partial", "none")


def server_update(updates: ClientUpdates, rule: str) -> Tensor:
    """The broadcast g0 from ``updates.context['server_update']``, validated."""
    g0 = updates.context.get("server_update")
    if g0 is None:
        raise ValueError(
            f"{rule} needs the server's update on its root dataset, g0 (FLTrust Alg. 2, line 12), in "
            "updates.context['server_update']; the simulation trains it on a root set of --root-size "
            "examples when the rule declares needs_server_update. Pass context={'server_update': g0} "
            "when calling the rule directly")
    g0 = torch.as_tensor(g0)
    if g0.shape != (updates.d,):
        raise ValueError(f"{rule}: server_update has shape {tuple(g0.shape)}, expected [{updates.d}] "
                         "(one flattened update like the clients')")
    g0 = g0.to(device=updates.device, dtype=updates.dtype)
    if not torch.isfinite(g0).all():
        raise ValueError(f"{rule}: server_update has non-finite values; the server's root training diverged")
    if not torch.linalg.vector_norm(g0) > 0:
        raise ValueError(f"{rule}: server_update is the zero vector, so no direction can be trusted; check "
                         "the root dataset and the local learning rate")
    return g0


def trust_and_rescale(row: Tensor, g0: Tensor, relu: bool, normalize: str):
    """Client-side: (trust score c_i or ReLU(c_i), the rescaled update g_bar_i). FLTrust eqs. (2)-(3)."""
    tiny = torch.finfo(row.dtype).tiny
    n0 = torch.linalg.vector_norm(g0)
    ni = torch.linalg.vector_norm(row)
    cos = (row @ g0) / (ni * n0).clamp_min(tiny)      # 0 for a zero update
    score = cos.clamp_min(0) if relu else cos
    if normalize == "full":
        scale = n0 / ni.clamp_min(tiny)
    elif normalize == "partial":
        scale = torch.clamp(n0 / ni.clamp_min(tiny), max=1.0)
    else:
        scale = torch.ones((), dtype=row.dtype, device=row.device)
    return score, row * scale


@register_rule
@dataclass
class FLTrust(AggregationRule):
    """FLTrust's aggregation rule (Cao et al. 2021, eqs. (2)-(4), Alg. 2), secagg-compatible.

    Each client computes TS_i = ReLU(cos(g_i, g0)) and g_bar_i = (||g0|| / ||g_i||) g_i from its
    own update and the broadcast g0; one secure average with weights TS_i (public bound 1)
    returns sum TS_i g_bar_i / sum TS_i. If every trust score is 0 there is nothing to
    average and the update is 0 (g0 itself with ``with_server``).

    Variants of the paper's ablation (Sec. VI-B, Table IV):

    - ``relu=False`` (FLTrust-NoReLU): TS_i = c_i may be negative. A secure average only takes
      non-negative weights, so each client sends (c_i g_bar_i, c_i) with weight 1 and the
      server divides the two averages (one oracle call).
    - ``normalize="none"`` (FLTrust-NoNorm) or ``"partial"`` (FLTrust-ParNorm: only updates
      longer than g0 are scaled down to ||g0||).
    - ``with_server=True`` (FLTrust-withServer): g0 joins the average with trust score 1,
      using the total weight sum TS_i that the oracle reveals anyway.

    The root dataset (100 examples by default, Table I) and g0 come from the simulation
    (``needs_server_update``; ``fedaudit run --root-size``).
    """

    relu: bool = True
    normalize: str = "full"
    with_server: bool = False
    name = "fltrust"
    secagg_compatible = True
    citation = "Cao et al. 2021 (FLTrust), eqs. 2-4, Alg. 2"
    needs_server_update: ClassVar[bool] = True

    def __call__(self, updates: ClientUpdates) -> Tensor:
        if self.normalize not in NORMALIZE:
            raise ValueError(f"{self.name}: normalize={self.normalize!r}; choose one of {NORMALIZE}")
        g0 = server_update(updates, self.name)
        relu, normalize = bool(self.relu), self.normalize
        if relu:
            return self._relu_form(updates, g0, normalize)
        return self._signed_form(updates, g0, normalize)

    def _relu_form(self, updates: ClientUpdates, g0: Tensor, normalize: str) -> Tensor:
        def weight(row, g):
            return trust_and_rescale(row, g, True, normalize)[0]

        def transform(row, g):
            return trust_and_rescale(row, g, True, normalize)[1]

        try:
            avg = updates.secure_average(weight=weight, transform=transform, broadcast=g0, weight_bound=1.0,
                                         label=self.name)
        except ValueError as err:
            msg = str(err)
            if "weight" not in msg or ("zero" not in msg and "total weight" not in msg):
                raise
            # No client has a positive trust score: the weighted average is empty.
            return g0.clone() if self.with_server else torch.zeros_like(g0)
        if not self.with_server:
            return avg
        total = float(updates.transcript.calls[-1].revealed["total_weight"])   # sum_i TS_i, revealed
        return (total * avg + g0) / (total + 1.0)

    def _signed_form(self, updates: ClientUpdates, g0: Tensor, normalize: str) -> Tensor:
        def transform(row, g):
            score, gbar = trust_and_rescale(row, g, False, normalize)
            return torch.cat([score * gbar, score.reshape(1)])

        out = updates.secure_average(transform=transform, broadcast=g0, label=f"{self.name}:noReLU")
        num, den = out[:-1], out[-1]
        n = float(updates.transcript.calls[-1].revealed["total_weight"])      # survivors (weight 1 each)
        if self.with_server:
            num, den = num * n + g0, den * n + 1.0
        if float(den.abs()) <= torch.finfo(out.dtype).eps:
            raise ValueError(f"{self.name} (relu=False): the trust scores sum to {float(den):.3g}, so the "
                             "weighted average of eq. (4) is undefined this round; use relu=True")
        return num / den
