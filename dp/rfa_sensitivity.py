"""DP-RFA: sensitivity of a smoothed-Weiszfeld oracle call, and accounting of R calls per round.

RFA: Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE
TSP 2022), Algorithm 2 (smoothed Weiszfeld) as an iterative secure aggregate
(Definition 1). In call r the server broadcasts v = v^(r); client i, with clipped
update ||w_i|| <= C, sends (beta_i w_i, beta_i) with

    beta_i = alpha_i / max(nu, ||v - w_i||) <= alpha_max / nu =: beta_max,

and the oracle returns N / W, N = sum_i beta_i w_i, W = sum_i beta_i. In the oracle's
units u_i = beta_i / B for a public B >= beta_max (``rfa``'s ``weight_bound="nu"``
policy uses B = alpha_max / nu, so u_i <= 1 and every bound below holds with
beta_max = 1).

Sensitivity of the sums (what the DP oracles noise)
---------------------------------------------------
The other clients' weights beta_j depend only on their own update and on v, which is
fixed by earlier outputs (adaptive composition), so changing client i's data changes
only client i's term:

- add or remove client i: ||dN|| <= beta_max C, |dW| <= beta_max, and jointly
  ||(dN, dW)|| <= beta_max sqrt(C^2 + 1);
- replace client i's update: ||dN|| = ||beta w - beta' w'|| <= 2 beta_max C (equal
  weights, antipodal updates), |dW| <= beta_max, and jointly
  beta_max max(2 C, sqrt(C^2 + 1)) (the squared norm is convex in beta', so its maximum
  is at beta' in {0, beta_max}).

So noise N(0, (z_N beta_max C)^2 I) on N and N(0, (z_W beta_max)^2) on W make the call
a Gaussian mechanism with noise multiplier (z_N^-2 + z_W^-2)^-1/2 (add/remove); the
server's N / W is post-processing. This is what :class:`dp.CentralDPOracle` and
:class:`dp.DistributedDPOracle` do with ``denominator="noisy"``.

Sensitivity of the average itself
---------------------------------
With S = sum_{j != i} beta_j the others' weight and m their weighted average (inside the
ball of radius C), the output is m + t (w_i - m), t = beta_i / (S + beta_i), so

    ||d(N / W)|| <= 2 C beta_max / (S_min + beta_max)

for add/remove and for replacement alike (replacement: t1 w1 - t2 w2 - (t1 - t2) m has
norm <= (t1 + t2 + |t1 - t2|) C = 2 max(t1, t2) C), attained by the others all at m = 0
and the target's update going from C e to -C e at weight beta_max
(:func:`rfa_average_sensitivity`, tested against that neighbour). With equal alphas and
all distances at most D: S_min = (n - 1) alpha / D, and the bound is 2 C times
D / (D + (n - 1) nu), RFA's Proposition 3 privacy bound s (:func:`prop3_average_sensitivity`).
But S_min depends on the data (on how far the clients are from v), so it is not a
public sensitivity; hence the sums are noised separately, as above.

Utility note. The noise is calibrated to beta_max = alpha_max / nu, the weight of a
client at distance <= nu, while a typical client weighs alpha / distance. With RFA's
default nu = 1e-6 the signal is ~1e-6 of the noise: DP-RFA needs nu of the order of
the typical distance to v (a fraction of C), which trades robustness (weights then
vary less) for accuracy.

A tighter public bound per call. Since ||w_i|| <= C, every distance satisfies
||v - w_i|| >= ||v|| - C, which the server knows (v is its own broadcast). So

    beta_i <= alpha_max / max(nu, ||v|| - C) =: B_r      (:func:`public_weight_bound`)

is a public bound for call r, and u_i = beta_i / B_r = (alpha_i / alpha_max)
max(nu, ||v|| - C) / max(nu, ||v - w_i||) <= 1 gives the same average (a common factor)
with sensitivity in units of B_r instead of alpha_max / nu. This matters under DP: a
noisy iterate v lies far from every clipped update (the noise has norm ~ z C sqrt(d) /
sum u), every weight with the fixed bound is then ~ nu / ||v|| << 1 and the next call is
all noise; with B_r the weights stay near 1. Rules that run smoothed Weiszfeld under DP
should pass B_r as the call's weight bound. It also bounds the weights from below:
||v - w_i|| <= ||v|| + C, so with equal alphas

    u_i >= max(nu, ||v|| - C) / max(nu, ||v|| + C) >= nu / (2 C + nu)   (:func:`rfa_weight_floor`)

for every v, and a noisy total weight can be clamped to [s nu / (2 C + nu), s] for s
survivors (post-processing of public facts; the DP oracles' ``min_weight``), which
keeps a low noise draw from blowing the average up.

Rounds. A round's R calls run on one sampled cohort and compose into one
sampled-Gaussian step with z_round = (sum_r z_r^-2)^-1/2 (:mod:`dp.accounting`); with
the same z per call, z_round = z / sqrt(R).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .accounting import (DEFAULT_ACCOUNTANT, check_clip, check_delta, check_noise_multiplier,
                         compose_noise_multipliers, epsilon, noise_for_epsilon)


@dataclass(frozen=True)
class SumSensitivity:
    """L2 sensitivities of one weighted-average call's released sums."""

    numerator: float     # of N = sum_i beta_i w_i
    denominator: float   # of W = sum_i beta_i
    joint: float         # of the pair (N, W)
    adjacency: str


def weiszfeld_weight_bound(alpha_max: float, nu: float) -> float:
    """beta_max = alpha_max / nu: no smoothed-Weiszfeld weight exceeds it (RFA Alg. 2)."""
    if not alpha_max > 0 or not nu > 0:
        raise ValueError(f"alpha_max={alpha_max!r} and nu={nu!r} must be > 0")
    return alpha_max / nu


def public_weight_bound(v_norm: float, clip: float, nu: float, alpha_max: float = 1.0) -> float:
    """B_r = alpha_max / max(nu, ||v|| - C): a public bound on every beta_i of the call with broadcast v.

    Valid because ||v - w_i|| >= ||v|| - ||w_i|| >= ||v|| - C for clipped updates; the
    server computes it from its own broadcast (module docstring).
    """
    c = check_clip(clip)
    if not nu > 0 or not alpha_max > 0:
        raise ValueError(f"nu={nu!r} and alpha_max={alpha_max!r} must be > 0")
    if not (v_norm >= 0 and math.isfinite(v_norm)):
        raise ValueError(f"v_norm={v_norm!r} must be a finite norm >= 0")
    return alpha_max / max(nu, v_norm - c)


def rfa_weight_floor(clip: float, nu: float, alpha_ratio: float = 1.0) -> float:
    """Public lower bound nu / (2 C + nu) on every u_i = beta_i / B_r (module docstring).

    ``alpha_ratio`` = alpha_min / alpha_max multiplies it for unequal alphas.
    """
    c = check_clip(clip)
    if not nu > 0 or not 0 < alpha_ratio <= 1:
        raise ValueError(f"nu={nu!r} must be > 0 and alpha_ratio={alpha_ratio!r} in (0, 1]")
    return alpha_ratio * nu / (2.0 * c + nu)


def rfa_sum_sensitivity(clip: float, beta_max: float = 1.0, adjacency: str = "add_remove") -> SumSensitivity:
    """Sensitivities of (N, W) for one call with ||w_i|| <= clip and beta_i <= beta_max (module docstring)."""
    c = check_clip(clip)
    if not beta_max > 0:
        raise ValueError(f"beta_max={beta_max!r} must be > 0 (a public bound on every client weight)")
    b = float(beta_max)
    if adjacency == "add_remove":
        return SumSensitivity(b * c, b, b * math.sqrt(c * c + 1.0), adjacency)
    if adjacency == "replace":
        return SumSensitivity(2.0 * b * c, b, b * max(2.0 * c, math.sqrt(c * c + 1.0)), adjacency)
    raise ValueError(f"adjacency={adjacency!r}; choose 'add_remove' or 'replace'")


def rfa_average_sensitivity(clip: float, beta_max: float, others_weight_min: float) -> float:
    """Bound on the change of the weighted average N / W: 2 C beta_max / (S_min + beta_max).

    ``others_weight_min`` is a lower bound S_min on the total weight of the clients
    other than the one that changes (module docstring; add/remove and replace).
    """
    c = check_clip(clip)
    if not beta_max > 0:
        raise ValueError(f"beta_max={beta_max!r} must be > 0")
    if not others_weight_min >= 0:
        raise ValueError(f"others_weight_min={others_weight_min!r} must be >= 0")
    return 2.0 * c * beta_max / (others_weight_min + beta_max)


def prop3_average_sensitivity(clip: float, n: int, nu: float, diameter: float) -> float:
    """2 C s with s = D / (D + (n - 1) nu), RFA Proposition 3 (equal alphas, distances <= D)."""
    c = check_clip(clip)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    if not nu > 0 or not diameter > 0:
        raise ValueError(f"nu={nu!r} and diameter={diameter!r} must be > 0")
    d = max(diameter, nu)
    return 2.0 * c * d / (d + (n - 1) * nu)


def rfa_round_noise_multiplier(call_noise_multiplier: float, calls: int) -> float:
    """z_round of ``calls`` releases of multiplier z each on one cohort: z / sqrt(calls)."""
    if not isinstance(calls, int) or calls < 1:
        raise ValueError(f"calls={calls!r} must be a positive integer (oracle calls per round)")
    return compose_noise_multipliers([check_noise_multiplier(call_noise_multiplier)] * calls)


def rfa_epsilon(call_noise_multiplier: float, calls_per_round: int, clients_per_round: int, clients: int,
                rounds: int, delta: float, *, accountant: str = DEFAULT_ACCOUNTANT,
                mechanism: str = "gaussian") -> float:
    """Epsilon of DP-RFA: ``rounds`` steps of rate clients_per_round/clients, z_round = z / sqrt(R)
    (``mechanism``: "gaussian" for the central oracle, "discrete" for the distributed one)."""
    if not isinstance(clients, int) or not isinstance(clients_per_round, int) or not 1 <= clients_per_round <= clients:
        raise ValueError(f"clients_per_round={clients_per_round!r} must lie in [1, clients={clients!r}]")
    check_delta(delta, clients, unit="clients (users)")
    z = rfa_round_noise_multiplier(call_noise_multiplier, calls_per_round)
    return epsilon(z, clients_per_round / clients, rounds, delta, accountant=accountant, mechanism=mechanism)


def rfa_noise_for_epsilon(target_epsilon: float, calls_per_round: int, clients_per_round: int, clients: int,
                          rounds: int, delta: float, *, accountant: str = DEFAULT_ACCOUNTANT,
                          mechanism: str = "gaussian") -> float:
    """Per-call noise multiplier reaching ``target_epsilon``: z_round(target) * sqrt(R)."""
    if not isinstance(calls_per_round, int) or calls_per_round < 1:
        raise ValueError(f"calls_per_round={calls_per_round!r} must be a positive integer")
    if not isinstance(clients, int) or not isinstance(clients_per_round, int) or not 1 <= clients_per_round <= clients:
        raise ValueError(f"clients_per_round={clients_per_round!r} must lie in [1, clients={clients!r}]")
    check_delta(delta, clients, unit="clients (users)")
    z_round = noise_for_epsilon(target_epsilon, clients_per_round / clients, rounds, delta, accountant=accountant,
                                mechanism=mechanism)
    return z_round * math.sqrt(calls_per_round)
