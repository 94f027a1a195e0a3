"""Distributed DP under secure aggregation: the distributed discrete Gaussian mechanism.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation" (ICML 2021), with the sampler of Canonne, Kamath,
Steinke 2020 (:mod:`dp.discrete_gaussian`). Each client

1. clips its update to L2 norm C (refused here if not: clip first with
   :func:`dp.clip_updates`),
2. encodes u_i x_i (and, for a noisy weighted average, its weight u_i <= 1) into
   Z_M, M = 2^bits, at a fixed-point scale s (integers per unit) with the oracle's
   rounding, and
3. adds discrete Gaussian noise N_Z(0, sigma_c^2) to every coordinate, with
   sigma_c^2 = sigma^2 / n_expected, where sigma = z * Delta is the target total noise
   (z the noise multiplier, Delta the integer L2 sensitivity below), so that the sum
   over n_expected clients carries variance sigma^2.

The secure-sum backend (``QuantizedOracle.sum_encoded``: the exact modular sum, or
the masked protocol of :class:`secagg.MaskedOracle`) adds the noisy encodings modulo M;
the server decodes sum_i u_i x_i + (sum of the survivors' noise) / s, exactly.

No wrap. The scale is chosen so that the survivors' sum, noise included, stays in
(-M/2, M/2) with overwhelming probability: n (s C + 1) + T sqrt(n) sigma_c <= M/2 - 1 per
coordinate, T = ``tail`` standard deviations (default 10). N_Z(0, sigma_c^2) is
subgaussian with variance proxy sigma_c^2 (Canonne, Kamath, Steinke 2020), so a sum of n
is too with n sigma_c^2, and a coordinate exceeds the margin with probability <= 2 exp(-T^2 / 2) ~ 4e-22. A ring too
narrow to give the noise and the signal any resolution is refused (``ValueError``),
and the simulation checks every call exactly and raises if a sum would have wrapped.

Accounting (what is used, exactly)
----------------------------------
- Sensitivity in integers: Delta = s C + sqrt(d) for stochastic rounding (each
  coordinate moves by < 1; sqrt(d)/2 for nearest rounding): a deterministic bound, so
  no conditional rounding (KLS Sec. 4.1) is needed.
- One call with n survivors: KLS 2021, Proposition 14 (third bound): the sum of n
  discrete Gaussians N_Z(0, sigma_c^2) is (alpha, alpha/2 (Delta / (sqrt(n) sigma_c) +
  sqrt(d) tau)^2)-RDP for all alpha, with tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma_c^2
  k/(k+1)). That is the RDP of a Gaussian mechanism with noise multiplier
  z_eff = 1 / (Delta / (sqrt(n) sigma_c) + sqrt(d) tau), which is what is handed to
  Opacus. tau is implemented, not dropped (it is below 1e-30 once sigma_c >= 3, i.e.
  always at the scales chosen here). A noisy total weight is a second block with its
  own Delta and sigma_c; the two compose as 1/z^2 = 1/z_num^2 + 1/z_den^2.
- Rounds with sampling (q < 1): Prop. 14 bounds the RDP only, so the round's z_eff is
  accounted with the general subsampling bound of Zhu and Wang 2019 (Theorem 5), as
  KLS and Google's distributed_dp accounting do (``PrivacyAccountant(mechanism=
  "discrete")``, :mod:`dp.accounting`): a provable bound, about 20-50% above the sampled
  Gaussian's RDP (docs/dp.md); Opacus's PRV accountant does not apply (it needs the mechanism's privacy-loss
  distribution). :meth:`dp.PrivacyAccountant.gaussian_estimate` gives the number the
  continuous sampled Gaussian of the same z_eff would have: an estimate, not a guarantee.
- Adjacency: a user's contribution is replaced by zero while it still takes part
  (zero-out; Kairouz, McMahan et al. 2021): under secure aggregation the server sees
  who takes part, so DP here protects what a user sent, not whether it sent.
  Sampling amplification therefore holds against observers of the model who do not
  know the cohort; against the server itself use
  :meth:`PrivacyAccountant.epsilon_without_sampling`.
- Dropouts: only the survivors' noise is in the sum, so each call accounts z_eff with
  the actual number of survivors (:meth:`DistributedPlan.noise_multiplier_for`,
  :func:`achieved_epsilon`); fewer survivors, larger epsilon.
- Corrupt clients: a corrupted client may add no noise (or subtract what it knows of
  its own), so only honest survivors' shares count: the simulation marks the cohort's
  corrupted rows (:meth:`DistributedDPOracle.set_cohort`), those rows add no noise, and
  z_eff is that of the honest survivors (the victim is honest). The count of honest
  noise shares in a call is treated as fixed and independent of the data, as KLS and
  Google treat the number of clients.
- Noise source: the OS CSPRNG (:class:`dp.SecureRandom`), or with ``seeded_noise=True``
  ``numpy.random.default_rng([seed, 2, round, call])``: the draws depend on (seed,
  round, call) and the plan (bits, n, d), not on the secure-sum backend, so a quantized
  and a masked run of one seed draw the same shares.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from secagg import FixedPointEncoder, QuantizedOracle, SumResult, modular_sum, wrap_mod

from .accounting import (DEFAULT_ACCOUNTANT, PrivacyAccountant, check_accountant, check_clip, check_delta,
                         check_mechanism, check_noise_multiplier, check_sample_rate, compose_noise_multipliers,
                         history_epsilon, split_noise_multiplier)
from .discrete_gaussian import discrete_gaussian
from .noise import STREAM_DISTRIBUTED, check_seeded
from .user_level import (DEN_FRACTION, NoisyOracle, check_clipped, check_den_fraction, check_min_weight,
                         check_public_weight_bound, clamp_denominator)

Tensor = torch.Tensor

# Largest relative inflation of the sensitivity by rounding (sqrt(d) / (s C)) accepted.
MAX_ROUNDING_INFLATION = 0.1


def kls_tau(sigma_client: float, n: int) -> float:
    """tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma_c^2 k / (k + 1)) (KLS 2021, Prop. 14)."""
    if n <= 1:
        return 0.0
    s2 = float(sigma_client) ** 2
    return 10.0 * sum(math.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1)) for k in range(1, n))


def kls_noise_multiplier(sensitivity_int: float, sigma_client: float, n: int, dim: int) -> float:
    """Gaussian-equivalent noise multiplier of a sum of n discrete Gaussians (KLS Prop. 14, third bound).

    1 / (Delta / (sqrt(n) sigma_c) + sqrt(dim) tau); 0 when n = 0 (no noise in the sum).
    """
    if n <= 0 or sigma_client <= 0:
        return 0.0
    inv = sensitivity_int / (math.sqrt(n) * sigma_client) + math.sqrt(dim) * kls_tau(sigma_client, n)
    return 1.0 / inv


@dataclass
class Block:
    """One encoded block of the payload (the vector, or the total weight)."""

    dim: int
    clip: float                 # per-coordinate bound |value| <= clip (L2 clip for the vector)
    scale: float                # integers per unit
    sensitivity_int: float      # L2 sensitivity in integer units: scale * clip + rounding
    noise_multiplier: float     # target z of this block (with n_expected survivors)
    sigma_client: float         # std parameter of each client's discrete Gaussian (integers)


@dataclass
class DistributedPlan:
    """Scale and per-client noise of one call (public parameters, known to every party)."""

    bits: int
    n_summands: int
    n_expected: int
    tail: float
    noise_multiplier: float
    vector: Block
    weight: Optional[Block]     # None: total weight public (not encoded)

    def noise_multiplier_for(self, n_survivors: int) -> float:
        """z_eff of this call when ``n_survivors`` clients' noise is in the sum (KLS Prop. 14)."""
        blocks = [self.vector] + ([self.weight] if self.weight is not None else [])
        zs = [kls_noise_multiplier(b.sensitivity_int, b.sigma_client, n_survivors, b.dim) for b in blocks]
        return compose_noise_multipliers(zs)

    def noise_std(self, n_survivors: Optional[int] = None) -> float:
        """Std of the noise per vector coordinate of the decoded sum (float units)."""
        n = self.n_expected if n_survivors is None else n_survivors
        return math.sqrt(n) * self.vector.sigma_client / self.vector.scale

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _block(dim: int, clip: float, z: float, n: int, n_expected: int, half: int, tail: float,
           rounding: str, bits: int) -> Block:
    rnd = math.sqrt(dim) * (1.0 if rounding == "stochastic" else 0.5)
    r = math.sqrt(n / n_expected)
    # n (s C + 1) + T r z (s C + rnd) <= half  ->  s C (n + T r z) <= half - n - T r z rnd
    room = half - n - tail * r * z * rnd
    sc = room / (n + tail * r * z) if room > 0 else 0.0
    if sc <= 0 or rnd > MAX_ROUNDING_INFLATION * sc:
        need = math.log2(max(2.0, (n + tail * r * z) * rnd / MAX_ROUNDING_INFLATION + n + tail * r * z * rnd)) + 2
        raise ValueError(
            f"bits={bits} is too narrow for distributed DP on {n} clients, d={dim}, noise multiplier "
            f"{z:.4g} with a {tail:g}-sigma no-wrap margin: the largest safe scale gives {sc:.4g} integer "
            f"levels per clip, and rounding would inflate the sensitivity by more than "
            f"{MAX_ROUNDING_INFLATION:.0%}. Use bits >= {math.ceil(need)} (e.g. --bits 64), fewer "
            "clients per call, or a smaller noise multiplier")
    scale = sc / clip
    sens = sc + rnd
    sigma_c = z * sens / math.sqrt(n_expected)
    if sigma_c < 0.5 and z > 0:
        raise ValueError(f"per-client discrete Gaussian sigma {sigma_c:.3g} < 1/2 is outside KLS 2021's "
                         "analysis; use a larger noise multiplier or more bits")
    return Block(dim, clip, scale, sens, z, sigma_c)


def plan(*, bits: int, clip: float, noise_multiplier: float, n_clients: int, dim: int,
         n_expected: Optional[int] = None, weight_block: bool = False,
         den_fraction: float = DEN_FRACTION, tail: float = 10.0,
         rounding: str = "stochastic") -> DistributedPlan:
    """Scale and per-client noise for one call of ``n_clients`` on ``dim`` coordinates.

    ``noise_multiplier`` z is the target for the call (noise multiplier of the joint
    release with ``n_expected`` survivors; default n_expected = n_clients). With
    ``weight_block`` the total weight (each u_i <= 1) is released too and z is split as
    in :class:`dp.CentralDPOracle`.
    """
    if not isinstance(bits, int) or not 8 <= bits <= 64:
        raise ValueError(f"bits={bits!r} must be an integer in [8, 64]")
    clip = check_clip(clip)
    z = check_noise_multiplier(noise_multiplier)
    if z == 0:
        raise ValueError("noise_multiplier=0 adds no noise: distributed DP needs noise_multiplier > 0 "
                         "(or run without --dp)")
    if not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
    n_expected = n_clients if n_expected is None else n_expected
    if not isinstance(n_expected, int) or n_expected < 1:
        raise ValueError(f"n_expected={n_expected!r} must be a positive integer (expected clients per call)")
    if not (isinstance(tail, (int, float)) and tail >= 1):
        raise ValueError(f"tail={tail!r} must be >= 1 (standard deviations of no-wrap margin)")
    # Keep 1 bit of headroom below int64 on a 64-bit ring (float64 scaling rounds near 2^63).
    half = min((1 << bits) // 2 - 1, (1 << 62) - 1)
    if weight_block:
        f = check_den_fraction(den_fraction)
        z_num, z_den = split_noise_multiplier(z, [1.0 - f, f])
        vec = _block(dim, clip, z_num, n_clients, n_expected, half, tail, rounding, bits)
        wb = _block(1, 1.0, z_den, n_clients, n_expected, half, tail, rounding, bits)
    else:
        vec, wb = _block(dim, clip, z, n_clients, n_expected, half, tail, rounding, bits), None
    return DistributedPlan(bits, n_clients, n_expected, float(tail), z, vec, wb)


@dataclass
class NoisySum:
    """Result of :func:`noisy_sum` (simulation-side: it holds the ground-truth noise)."""

    total: Tensor             # int64 residues mod M of the survivors' noisy encodings [D]
    decoded: Tensor           # float64 [D]: the server's decoding
    encoded: Tensor           # int64 [n, D]: clients' encodings before noise (residues)
    noise: Tensor             # int64 [n, D]: clients' discrete Gaussian noise
    survivors: List[int]
    encoder: FixedPointEncoder
    plan: DistributedPlan
    noise_multiplier: float   # z_eff achieved with the survivors
    server_view: Dict[str, Any]


def noisy_sum(payload: Tensor, p: DistributedPlan, *, rounding_generator=None,
              noise_rng, sum_encoded=None, rounding: str = "stochastic",
              noiseless: Optional[Tensor] = None) -> NoisySum:
    """Clients encode ``payload`` [n, D] with the plan's scales, add discrete Gaussian noise, sum mod M.

    ``noise_rng``: :class:`dp.SecureRandom` or a seeded ``numpy.random.Generator``.
    ``noiseless`` [n] bool marks corrupted clients, which add no noise (their shares are
    drawn, then zeroed, so the honest clients' draws do not depend on who is corrupt); the
    achieved z_eff counts the honest survivors only.
    ``sum_encoded(encoded) -> (total, survivors, view)`` is the secure-sum backend
    (default: the exact modular sum over all rows). Raises if the survivors' sum would
    have wrapped (probability ~ 2 exp(-tail^2/2) per coordinate).
    """
    n, D = payload.shape
    dv = p.vector.dim
    if D != dv + (1 if p.weight is not None else 0):
        raise ValueError(f"payload has {D} coordinates but the plan expects {dv} + weight block")
    clip = torch.full((D,), p.vector.clip, dtype=torch.float64)
    scale = torch.full((D,), p.vector.scale, dtype=torch.float64)
    if p.weight is not None:
        clip[-1], scale[-1] = p.weight.clip, p.weight.scale
    enc = FixedPointEncoder(p.bits, clip, n, scale=scale, rounding=rounding, overflow="raise")
    encoded = enc.encode(payload, generator=rounding_generator)
    noise_np = np.empty((n, D), dtype=np.int64)
    noise_np[:, :dv] = discrete_gaussian(p.vector.sigma_client ** 2, (n, dv), noise_rng)
    if p.weight is not None:
        noise_np[:, dv:] = discrete_gaussian(p.weight.sigma_client ** 2, (n, 1), noise_rng)
    honest = np.ones(n, dtype=bool)
    if noiseless is not None:
        bad = torch.as_tensor(noiseless, dtype=torch.bool).reshape(-1).cpu().numpy()
        if bad.shape != (n,):
            raise ValueError(f"noiseless must have one entry per client ({n}), got shape {bad.shape}")
        honest = ~bad
        noise_np[bad] = 0
    noise = torch.from_numpy(noise_np).to(payload.device)
    noisy = wrap_mod(encoded + noise, p.bits)   # int64 addition wraps mod 2^64 for bits = 64
    if sum_encoded is None:
        total, survivors, view = modular_sum(noisy, p.bits), list(range(n)), {}
    else:
        total, survivors, view = sum_encoded(noisy)
    # Simulation-only exactness check: the survivors' signed sum must lie in (-M/2, M/2).
    idx = torch.as_tensor(survivors, dtype=torch.long, device=payload.device)
    exact = enc.to_signed(encoded[idx]).sum(dim=0) + noise[idx].sum(dim=0)
    half = (1 << p.bits) // 2
    if p.bits < 64 and bool(((exact >= half) | (exact < -half)).any()):
        raise RuntimeError(  # pragma: no cover - probability ~ 2 exp(-tail^2 / 2) per coordinate
            f"a noisy sum wrapped modulo 2^{p.bits} (noise beyond the {p.tail:g}-sigma margin); "
            "raise tail or bits")
    if not torch.equal(enc.to_signed(wrap_mod(total, p.bits)), exact):
        raise RuntimeError("secure sum disagrees with the exact sum of the noisy encodings")  # pragma: no cover
    decoded = enc.decode(total)
    n_honest = int(honest[list(survivors)].sum()) if len(survivors) else 0
    # no honest survivor: no honest user's data is in the sum, nothing to account
    z_eff = p.noise_multiplier_for(n_honest) if n_honest else math.inf
    return NoisySum(total, decoded, encoded, noise, list(survivors), enc, p, z_eff, view)


class DistributedDPOracle(NoisyOracle):
    """Secure-average oracle whose sums carry distributed discrete Gaussian noise (module docstring).

    Parameters
    ----------
    base : secagg.QuantizedOracle or secagg.MaskedOracle
        The ring (``bits``), the rounding and the secure-sum backend
        (``sum_encoded``: exact modular sum, or the masked protocol with dropouts).
    clip : float
        L2 bound every client's row must satisfy (refused otherwise).
    noise_multiplier : float
        Target z of each call (with ``expected_clients`` survivors).
    expected_clients : int, optional
        Clients whose noise shares make up the target (default: each call's n).
    accountant : PrivacyAccountant, optional
        Receives one release per call with the z actually achieved by the survivors.
    denominator, den_fraction, min_denominator, min_weight
        As :class:`dp.CentralDPOracle`; with a public expected total weight the weight
        coordinate is not even sent.
    tail : float
        No-wrap margin in standard deviations of the summed noise.
    weight_bound : float
        Public bound B on every weight (u_i = w_i / B); a call's own ``weight_bound``
        overrides it; None (the data-dependent largest weight) is refused.
    seeded_noise, seed : bool, int
        Noise from the OS CSPRNG (default), or seeded by (seed, round, call) for paired
        experiments (module docstring); sampled on the CPU, moved to the device.
    keep_last : bool
        Keep the last call's :class:`NoisySum` (encodings and noise) in ``last_sum`` (tests).

    :meth:`set_cohort` marks the corrupted clients of the current cohort (they add no
    noise and their shares are not counted).
    """

    noise_stream = STREAM_DISTRIBUTED

    name = "distributed-dp"

    def __init__(self, base: Optional[QuantizedOracle] = None, *, clip: float, noise_multiplier: float,
                 expected_clients: Optional[int] = None, accountant: Optional[PrivacyAccountant] = None,
                 denominator: Union[str, float] = "noisy", den_fraction: float = DEN_FRACTION,
                 min_denominator: float = 1.0, min_weight: float = 0.0, tail: float = 10.0,
                 weight_bound: Optional[float] = 1.0, seeded_noise: bool = False, seed: int = 0,
                 keep_last: bool = False):
        self.base = base if base is not None else QuantizedOracle(bits=32, clip=clip, seed=seed)
        if not isinstance(self.base, QuantizedOracle):
            raise TypeError(f"base must be a secagg.QuantizedOracle or MaskedOracle (a ring Z_M to sum in), "
                            f"got {type(self.base).__name__}; distributed DP needs secure aggregation over "
                            "Z_M (--secagg quantized or masked)")
        self.bits = self.base.bits
        self.clip = check_clip(clip)
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        if self.noise_multiplier == 0:
            raise ValueError("noise_multiplier=0: distributed DP needs noise_multiplier > 0")
        self.expected_clients = expected_clients
        self.accountant = accountant if accountant is not None else PrivacyAccountant(1.0)
        if isinstance(denominator, str) and denominator != "noisy":
            raise ValueError(f"denominator={denominator!r}; use 'noisy' or a public expected total weight > 0")
        if not isinstance(denominator, str) and not (isinstance(denominator, (int, float)) and denominator > 0):
            raise ValueError(f"denominator={denominator!r} must be 'noisy' or a public expected total weight > 0")
        self.denominator = denominator
        self.den_fraction = check_den_fraction(den_fraction)
        self.min_denominator = float(min_denominator)
        self.min_weight = check_min_weight(min_weight)
        self.tail = float(tail)
        self.weight_bound = check_public_weight_bound(weight_bound)
        self.seeded_noise = check_seeded(seeded_noise)
        self.seed = seed
        self.noiseless: Optional[Tensor] = None
        self.keep_last = keep_last
        self.last_sum: Optional[NoisySum] = None
        self.last: Dict[str, Any] = {}
        self.floored_calls = 0
        self.last_total_weight: Optional[float] = None
        # fail early on an impossible configuration (one client, one coordinate)
        plan(bits=self.bits, clip=self.clip, noise_multiplier=self.noise_multiplier, n_clients=1, dim=1,
             tail=self.tail, rounding=self.base.rounding)

    def set_cohort(self, noiseless: Optional[Tensor] = None) -> None:
        """Mark the rows (clients of the current cohort, in call order) that add no noise."""
        self.noiseless = None if noiseless is None else torch.as_tensor(noiseless, dtype=torch.bool).reshape(-1)

    def plan(self, n: int, d: int) -> DistributedPlan:
        return plan(bits=self.bits, clip=self.clip, noise_multiplier=self.noise_multiplier, n_clients=n, dim=d,
                    n_expected=self.expected_clients, weight_block=self.denominator == "noisy",
                    den_fraction=self.den_fraction, tail=self.tail, rounding=self.base.rounding)

    def secure_sum(self, vectors: Tensor, u: Tensor) -> SumResult:
        check_clipped(vectors, self.clip)
        n, d = vectors.shape
        p = self.plan(n, d)
        if self.denominator == "noisy":
            payload = self.base.client_payload(vectors, u)
        else:
            payload = vectors * u[:, None]
        noiseless = self.noiseless
        if noiseless is not None and noiseless.shape != (n,):
            raise ValueError(f"set_cohort marked {noiseless.shape[0]} clients but the call has {n}: call "
                             "set_cohort(noiseless) with one flag per client of this round's cohort")
        res = noisy_sum(payload, p, rounding_generator=self.base.generator(payload.device), noise_rng=self.rng(),
                        sum_encoded=self.base.sum_encoded, rounding=self.base.rounding, noiseless=noiseless)
        total = res.decoded
        floored = False
        if self.denominator != "noisy":
            total = torch.cat([total, total.new_tensor([float(self.denominator)])])
        else:
            total[-1], floored = clamp_denominator(float(total[-1]), len(res.survivors), self.min_denominator,
                                                   self.min_weight)
            self.floored_calls += int(floored)
        self.last_total_weight = float(total[-1])
        honest = len(res.survivors) if noiseless is None else \
            int((~noiseless[torch.as_tensor(res.survivors, dtype=torch.long)]).sum())
        self.accountant.add_release(res.noise_multiplier, label="distributed", survivors=len(res.survivors),
                                    honest_survivors=honest, n=n, d=d)
        self.last = {"noise_multiplier": res.noise_multiplier, "target_noise_multiplier": self.noise_multiplier,
                     "survivors": len(res.survivors), "honest_survivors": honest, "n": n,
                     "noise_std": p.noise_std(honest),
                     "scale": p.vector.scale, "sigma_client": p.vector.sigma_client, "floored": floored}
        if self.keep_last:
            self.last_sum = res
        view = dict(res.server_view)
        view["dp"] = {"mechanism": "distributed-discrete-gaussian", **self.last}
        return SumResult(total=total.to(vectors.dtype), survivors=res.survivors, server_view=view)

    def __repr__(self) -> str:
        return (f"DistributedDPOracle(base={self.base.name!r}, bits={self.bits}, clip={self.clip:g}, "
                f"noise_multiplier={self.noise_multiplier:g}, expected_clients={self.expected_clients})")


def achieved_noise_multiplier(noise_multiplier: float, expected_clients: int, survivors: int) -> float:
    """z actually achieved when only ``survivors`` of the ``expected_clients`` noise shares arrive.

    Each share has variance (z Delta)^2 / n_expected, so the sum has z sqrt(survivors /
    n_expected) (the Gaussian view; :meth:`DistributedPlan.noise_multiplier_for` adds the
    integer rounding and KLS's tau, both negligible at the scales chosen).
    """
    z = check_noise_multiplier(noise_multiplier)
    if not isinstance(expected_clients, int) or expected_clients < 1:
        raise ValueError(f"expected_clients={expected_clients!r} must be a positive integer")
    if not isinstance(survivors, int) or not 0 <= survivors:
        raise ValueError(f"survivors={survivors!r} must be an integer >= 0")
    return z * math.sqrt(survivors / expected_clients)


def achieved_epsilon(noise_multiplier: float, expected_clients: int, survivors: Sequence[int],
                     sample_rate: float, delta: float, *, calls_per_round: int = 1,
                     accountant: str = DEFAULT_ACCOUNTANT, n_users: Optional[int] = None,
                     mechanism: str = "discrete") -> float:
    """Epsilon actually achieved over rounds whose calls had ``survivors[r]`` honest survivors each.

    ``noise_multiplier`` is the per-call target; each round composes ``calls_per_round``
    calls of z_r = :func:`achieved_noise_multiplier` into one sampled step of rate q,
    accounted as ``mechanism`` (default "discrete": the provable Zhu-Wang bound;
    "gaussian": Opacus's sampled Gaussian, an estimate here; :mod:`dp.accounting`). A
    round without survivors is refused (the secure sum aborts below its threshold).
    """
    q = check_sample_rate(sample_rate)
    delta = check_delta(delta, n_users, unit="users")
    accountant = check_accountant(accountant)
    mechanism = check_mechanism(mechanism)
    if not isinstance(calls_per_round, int) or calls_per_round < 1:
        raise ValueError(f"calls_per_round={calls_per_round!r} must be a positive integer")
    history = []
    for r, s in enumerate(survivors):
        if s < 1:
            raise ValueError(f"round {r} has {s} survivors: the secure sum would have aborted")
        z = achieved_noise_multiplier(noise_multiplier, expected_clients, int(s))
        history.append((compose_noise_multipliers([z] * calls_per_round), q, 1))
    return history_epsilon(history, delta, accountant=accountant, mechanism=mechanism)
