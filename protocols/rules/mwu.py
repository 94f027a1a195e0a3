"""Multiplicative-weights aggregation (Cronus appendix A.4, Alg. 4) as iterative secure aggregates.

In every iteration a client's weight depends only on its own update and the
server's broadcast estimates, so each iteration is one ``secure_average`` call
(plus one for CRH's normaliser), like RFA's smoothed Weiszfeld.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from secagg import ClientUpdates

from .common import check_int
from .base import AggregationRule, register_rule

Tensor = torch.Tensor


def _check_common(rule: str, iterations, p) -> None:
    check_int("iterations", iterations, rule, minimum=1)
    if not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"{rule}: p={p!r} must be a number >= 1 (the l_p norm of the distances)")


@register_rule
@dataclass
class MWUAvg(AggregationRule):
    """MWU with mean aggregation, MwuAvg (Cronus appendix Alg. 4 with eqs. (4)-(5)).

    theta^0 is the plain mean (w^0 = 1); then, ``iterations`` times,
    w_i <- w_i * exp(-||theta^t - theta_i||_p / temperature) and theta^{t+1} = sum w_i theta_i / sum w_i.

    Secure form: the server broadcasts every estimate so far; client i computes its weight
    exp(-sum_s ||theta^s - theta_i||_p / temperature) from its own row (eq. (4) unrolled).
    Weights are computed and averaged in float64 and normalised by their maximum inside the
    oracle, so the server learns each call's largest weight (the smallest cumulative
    distance; recorded in the transcript as the revealed ``weight_bound``), which keeps
    weights such as exp(-150) usable. ``temperature`` = 1 is eq. (4) as written; a larger
    value only helps when every distance is huge (all weights underflow: a clear error).
    """

    iterations: int = 3
    p: float = 2.0
    temperature: float = 1.0
    name = "mwu-avg"
    secagg_compatible = True
    citation = "Cronus appendix Alg. 4, eqs. 4-5 (MwuAvg)"
    breakdown_point = 0.5
    breakdown_source = "Cronus appendix A.4: MWU's breaking point is floor((n - 1) / 2) malicious parties"

    def __call__(self, updates: ClientUpdates) -> Tensor:
        _check_common(self.name, self.iterations, self.p)
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature < float("inf"):
            raise ValueError(f"{self.name}: temperature={self.temperature!r} must be a finite number > 0")
        p, temp = float(self.p), float(self.temperature)
        theta = updates.secure_average(label=f"{self.name}:mean")          # w^0 = 1 (Alg. 4, line 2)
        history = [theta.to(torch.float64)]

        def weight(row, hist):
            dist = torch.linalg.vector_norm(row.to(hist.dtype)[None, :] - hist, ord=p, dim=1).sum()
            return torch.exp(-dist / temp)

        def as_float64(row, _):
            return row.to(torch.float64)

        for t in range(self.iterations):
            hist = torch.stack(history)
            try:
                theta = updates.secure_average(weight=weight, transform=as_float64, broadcast=hist,
                                               label=f"{self.name}:iter{t + 1}")
            except ValueError as err:
                if "zero" not in str(err) and "total weight" not in str(err):
                    raise
                raise ValueError(
                    f"{self.name}: every client's weight exp(-distance / temperature) underflowed to 0 in "
                    f"iteration {t + 1} (all clients are far from the estimate); pass a larger temperature "
                    f"(now {temp})") from err
            history.append(theta)
        return theta.to(updates.dtype)


def _distance_scale(updates: ClientUpdates, p: float) -> float:
    """Public divisor that keeps a client's reported distance within the encoding bound.

    Every coordinate of a row and of the estimate lies within the oracle's clip c, so
    ||theta - theta_i||_p <= 2 c d^(1/p); a client reports its distance / (2 d^(1/p)) <= c.
    """
    return 2.0 * updates.d ** (1.0 / p)


@register_rule
@dataclass
class CRH(AggregationRule):
    """CRH truth discovery (Li, Li, Gao, Zhao, Fan, Han 2014) in Cronus's form, MWU with
    optimisation (Cronus appendix A.4.2, eqs. (6)-(7)).

    theta^0 is the plain mean; then, ``iterations`` times,
    w_i = -log(D_i / sum_j D_j) with D_i = ||theta^t - theta_i||_p (eq. (6)), and
    theta^{t+1} = sum_i w_i theta_i / sum_i w_i (eq. (7) is printed without the normaliser;
    CRH's truth update normalises, and these weights sum to more than 1).

    Secure form, two oracle calls per iteration: each client reports its distance scaled by the
    public 1 / (2 d^(1/p)) (at most the encoding bound, since every coordinate of a row and of
    the estimate is), whose average times the surviving count gives sum_j D_j; then the weighted
    average, each client computing w_i from its own row and the broadcast (theta^t, sum_j D_j).
    D_i / sum_j D_j is floored at ``nu`` (as RFA's smoothing), so the weight bound -log(nu) is
    public. The server learns sum_j D_j, as RFA's server learns its objective.
    """

    iterations: int = 3
    p: float = 2.0
    nu: float = 1e-6
    name = "crh"
    secagg_compatible = True
    citation = "Li et al. 2014 (CRH); Cronus appendix A.4.2, eqs. 6-7"
    breakdown_point = 0.5
    breakdown_source = "Cronus appendix A.4: MWU's breaking point is floor((n - 1) / 2) malicious parties"

    def __call__(self, updates: ClientUpdates) -> Tensor:
        _check_common(self.name, self.iterations, self.p)
        if not isinstance(self.nu, (int, float)) or not 0 < self.nu < 1:
            raise ValueError(f"{self.name}: nu={self.nu!r} must lie in (0, 1)")
        p, nu = float(self.p), float(self.nu)
        scale = _distance_scale(updates, p)
        theta = updates.secure_average(label=f"{self.name}:mean")

        def scaled_distance(row, th):
            return (torch.linalg.vector_norm(row - th, ord=p) / scale).reshape(1)

        def weight(row, state):
            th, total = state
            dist = torch.linalg.vector_norm(row - th, ord=p) / scale
            return -torch.log(torch.clamp(dist / total, min=nu))

        for t in range(self.iterations):
            mean_d = updates.secure_average(transform=scaled_distance, broadcast=theta,
                                            label=f"{self.name}:distances{t + 1}")
            survivors = float(updates.transcript.calls[-1].revealed["total_weight"])   # weight 1 each
            total = mean_d[0] * survivors
            if not float(total) > 0:
                return theta               # every client already sits at the estimate
            theta = updates.secure_average(weight=weight, broadcast=(theta, total), weight_bound=-math.log(nu),
                                           label=f"{self.name}:iter{t + 1}")
        return theta


@register_rule
@dataclass
class MWUOpt(CRH):
    """MwuOpt, Cronus's name for CRH (appendix A.4.2: "MWU with optimization ... Li et al.
    propose ... CRH"): the same rule, eqs. (6)-(7), registered under both names."""

    name = "mwu-opt"
    citation = "Cronus appendix A.4.2, eqs. 6-7 (MwuOpt = CRH)"
