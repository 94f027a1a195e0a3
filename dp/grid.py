"""Gaussian noise for a float sum without floating-point leaks: the discrete Gaussian on a fine grid.

Why. Mironov ("On Significance of the Least Significant Bits for Differential Privacy",
CCS 2012) showed that adding a floating-point sample of a continuous distribution to a
float value leaks the value: the set of doubles the sum can take depends on the input,
so the low-order bits of the release tell neighbouring inputs apart (his attack is on
the Laplace mechanism; Jin et al. 2022, "Are We There Yet? Timing and Floating-Point
Attacks on Differential Privacy Systems", IEEE S&P, carry it to ``torch.normal``-style
Gaussian noise, as in Opacus's DP-SGD). The release here never adds floats:

1. the sum S (float64, [D]) is rounded to the grid gamma Z^D, gamma = 2^e:
   k = round(S / gamma), a vector of int64;
2. Y ~ N_Z(0, sigma^2)^D is drawn exactly (Canonne, Kamath, Steinke 2020, Algorithm 3;
   :mod:`dp.discrete_gaussian`) from :class:`dp.SecureRandom` (the OS CSPRNG);
3. the release is gamma (k + Y), computed exactly (an integer times a power of two).

Every output is a grid point and every grid point is reachable from every input, with
probabilities given by the discrete Gaussian alone; the sampler's running time depends
on its random draws and on sigma, never on S (no timing channel on the data).

Sensitivity. For neighbouring sums with ||S - S'|| <= Delta (L2): rounding moves each
coordinate by at most 1/2 grid step, and the float64 summation error is kept below half a
step by the choice of gamma (:func:`grid_plan`: |error| <= n^2 2^-53 B per coordinate for
n summands bounded by B), so the integer vectors satisfy ||k - k'|| <= Delta / gamma +
2 sqrt(D) =: Delta_int. gamma is the largest power of two with 2 sqrt(D) gamma <= 2^-20
Delta (when the summation error allows): the inflation of the sensitivity is below 1e-6.

Privacy accounting: the Gaussian's, exactly. sigma^2 = (z Delta_int)^2 + s^2 with
s = :data:`SMOOTHING` = 4. Let G = k + N(0, (z Delta_int)^2 I) (the continuous Gaussian
mechanism with noise multiplier z on the integer vectors) and map each coordinate of G to
Z by the kernel K(j | y) = phi_s(j - y) / theta(y), theta(y) = sum_i phi_s(i - y) (phi_s
the N(0, s^2) density). K commutes with integer shifts, so K(G) = k + W with
P(W = j) = E[phi_s(j - X) / theta(X)], X ~ N(0, (z Delta_int)^2). By Poisson summation
|theta(y) - 1| <= eta := 2 sum_{m >= 1} exp(-2 pi^2 s^2 m^2) (1.4e-137 at s = 4), and
phi_{z Delta_int} * phi_s = phi_sigma, so P(W = j) / P(Y = j) lies in [1/(1 + eta),
(1 + eta)/(1 - eta)]: the total variation between W and Y is at most 2 eta per
coordinate. K(G) is post-processing of a Gaussian mechanism with noise multiplier z, so
any (eps, delta) of the (sampled, composed) Gaussian mechanism holds for the releases here
at (eps, delta + (1 + e^eps) 2 eta N), N the number of coordinates released in the whole
run: below 1e-120 for any run that fits in memory, under the resolution of delta. This is
why :class:`dp.CentralDPOracle` is accounted by Opacus (PRV or RDP) as the Gaussian
mechanism with noise multiplier z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

import numpy as np
import torch

from .discrete_gaussian import discrete_gaussian

Tensor = torch.Tensor

SMOOTHING = 4            # s: the TV argument's smoothing width, in grid steps
GRID_BITS = 20           # 2 sqrt(D) gamma <= 2^-20 Delta when the summation error allows
_EXACT = 2.0 ** 52       # |k|, |k + Y| below this: exact in int64 and float64
MAX_INFLATION = 0.01     # refuse a grid that inflates the sensitivity by more (huge n)


def smoothing_tv_bound(s: float = SMOOTHING) -> float:
    """2 eta: the per-coordinate total variation of the module docstring's argument."""
    return 4.0 * sum(math.exp(-2.0 * math.pi ** 2 * s * s * m * m) for m in range(1, 6))


@dataclass(frozen=True)
class GridPlan:
    """Public parameters of one grid release (known to everyone; nothing data-dependent)."""

    dim: int
    sensitivity: float        # Delta: L2 sensitivity of the float sum
    noise_multiplier: float   # z
    gamma: float              # grid step, a power of two
    sensitivity_int: float    # Delta_int = Delta / gamma + 2 sqrt(dim), rounded up
    sigma2: float             # discrete Gaussian scale sigma^2 >= (z Delta_int)^2 + s^2 (exactly)

    @property
    def noise_std(self) -> float:
        """Std of the noise in float units (about z * sensitivity)."""
        return self.gamma * math.sqrt(self.sigma2) if self.noise_multiplier > 0 else 0.0


def _up(x: float) -> float:
    return math.nextafter(x, math.inf)


def grid_plan(sensitivity: float, dim: int, noise_multiplier: float, n_summands: int,
              bound: Optional[float] = None) -> GridPlan:
    """The grid and the discrete Gaussian scale of a release of a sum of ``n_summands`` rows.

    ``bound`` (default: ``sensitivity``) bounds every summand's coordinates in absolute
    value; it sizes the float64 summation error the grid must absorb.
    """
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity={sensitivity!r} must be a finite number > 0")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim={dim!r} must be a positive integer")
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"noise_multiplier={noise_multiplier!r} must be a finite number >= 0")
    n = max(int(n_summands), 0)
    b = float(sensitivity if bound is None else bound)
    e = math.floor(math.log2(sensitivity / (2.0 ** GRID_BITS * 2.0 * math.sqrt(dim))))
    if n > 1:
        e = max(e, math.ceil(math.log2(n * n * 2.0 ** -52 * b)))
    gamma = 2.0 ** e
    if n * b / gamma >= _EXACT / 4 or 2.0 * math.sqrt(dim) * gamma > MAX_INFLATION * sensitivity:
        raise ValueError(f"a float64 sum of {n} rows of {dim} coordinates is too coarse for the noise grid (the "
                         f"rounding would inflate the sensitivity by more than {MAX_INFLATION:.0%}); "
                         "aggregate fewer clients per call")
    sens_int = _up(_up(sensitivity / gamma) + _up(2.0 * math.sqrt(dim)))
    if z == 0:
        return GridPlan(dim, float(sensitivity), 0.0, gamma, sens_int, 0.0)
    exact = Fraction(z) ** 2 * Fraction(sens_int) ** 2 + SMOOTHING ** 2
    s2 = float(exact)
    while Fraction(s2) < exact:
        s2 = _up(s2)
    if math.sqrt(s2) * 40 >= _EXACT / 4:
        raise ValueError(f"noise multiplier {z:g} on this grid needs sigma = {math.sqrt(s2):.3g} grid steps, "
                         "too many for exact int64 arithmetic; use a smaller noise multiplier")
    return GridPlan(dim, float(sensitivity), z, gamma, sens_int, s2)


def grid_release(values: Tensor, plan: GridPlan, rng) -> Tuple[Tensor, np.ndarray]:
    """gamma (round(values / gamma) + Y), Y ~ N_Z(0, sigma^2) from ``rng``; returns (release
    [float64, values' device], Y [int64 numpy]). With z = 0 the values come back unchanged."""
    if values.ndim != 1 or values.shape[0] != plan.dim:
        raise ValueError(f"values must have shape [{plan.dim}], got {tuple(values.shape)}")
    if plan.noise_multiplier == 0:
        return values.to(torch.float64).clone(), np.zeros(plan.dim, dtype=np.int64)
    v = values.to(torch.float64)
    k = torch.round(v / plan.gamma)
    if not bool(torch.isfinite(k).all()) or float(k.abs().max()) >= _EXACT / 2:
        raise ValueError("the sum is not finite or too large for its grid (clip the rows first)")
    y = discrete_gaussian(Fraction(plan.sigma2), plan.dim, rng)
    out = (k.to(torch.int64).cpu() + torch.from_numpy(y)).to(torch.float64) * plan.gamma
    return out.to(v.device), y
