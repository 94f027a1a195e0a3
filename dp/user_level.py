"""User-level DP-FedAvg with central noise (McMahan, Ramage, Talwar, Zhang 2018).

McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
(ICLR), Algorithm 1 (DP-FedAvg): each round samples users independently with
probability q, each sampled user clips its update to L2 norm C (the clipping IS the
mechanism's sensitivity bound, so it is applied on purpose and the number of clipped
users is reported), the server adds Gaussian noise of std z * S to the sum, S = C the
sensitivity of the sum under adding or removing one user, and divides by the expected
total weight q W (the fixed-denominator estimator, their eq. for f~_f, unbiased and
with no data-dependent denominator). The privacy of R rounds is the sampled Gaussian
mechanism composed R times: :func:`user_level_epsilon` (Opacus's PRV accountant by
default, RDP on request; :mod:`dp.accounting`).

Noise. The Gaussian noise is the discrete Gaussian on a fine grid drawn from the OS
CSPRNG (:mod:`dp.grid`): immune to the floating-point attack on float Gaussian noise
(Mironov 2012), and within total variation < 1e-120 of a post-processed Gaussian
mechanism with noise multiplier z, so the Gaussian accounting holds for it. Seeded
noise (``seeded_noise=True``) is for paired experiments only (:mod:`dp.noise`).

Sampling and the neighbouring relation. The analysis is that of Poisson sampling with
add/remove-one-user neighbours, and the simulation samples cohorts that way under
user-level DP (each client independently with q = clients_per_round / clients;
:func:`dp.noise.bernoulli_cohort`). A fixed-size cohort of m users is a different
mechanism (sampling without replacement, substitution neighbours): for N = 1000, m = 50,
z = 1, 200 rounds, delta = 1e-4 its RDP bound is 8.13 (dp-accounting's
``SampledWithoutReplacementDpEvent``) where Poisson's is 4.59 (RDP) or 4.01 (PRV).
Because the cohort size is then private, nothing released may depend on it: the
numerator's denominator is the public q W, and a noisy total weight is clamped to
public bounds only (``public_cohort_size=False``).

:class:`CentralDPOracle` puts the mechanism behind the secure-average oracle interface,
so every oracle call of any rule (FedAvg: one; RFA: several) is a noisy release and
is recorded in a :class:`dp.accounting.PrivacyAccountant`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from secagg import PlaintextOracle, QuantizedOracle, SecureAverageOracle, SumResult

from .accounting import (DEFAULT_ACCOUNTANT, PrivacyAccountant, check_clip, check_delta, check_noise_multiplier,
                         check_sample_rate, epsilon, noise_for_epsilon, split_noise_multiplier)
from .grid import grid_plan, grid_release
from .noise import STREAM_CENTRAL, SecureRandom, check_seeded, noise_rng

Tensor = torch.Tensor


# --------------------------------------------------------------------------- clipping


@dataclass
class ClipResult:
    """Per-client L2 clipping: the clipped updates and what the clipping did."""

    updates: Tensor          # [n, d], each row with norm <= clip
    norms: Tensor            # [n] norms before clipping
    clipped: Tensor          # [n] bool: rows that were scaled down
    clip: float

    @property
    def n_clipped(self) -> int:
        return int(self.clipped.sum())


def clip_updates(updates: Tensor, clip: float) -> ClipResult:
    """Scale each row to L2 norm at most ``clip``: x * min(1, C / ||x||) (McMahan et al. 2018, Alg. 1).

    This is the mechanism's sensitivity bound, not a repair: the number of clipped
    clients is returned (``n_clipped``) for the caller to report. Non-finite rows are
    refused.
    """
    clip = check_clip(clip)
    if updates.ndim != 2:
        raise ValueError(f"updates must be a [n_clients, d] matrix, got shape {tuple(updates.shape)}")
    norms = torch.linalg.vector_norm(updates, dim=1)
    if not torch.isfinite(norms).all():
        bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
        raise ValueError(f"non-finite update norms for client(s) {bad[:10]}; a diverged client must be "
                         "fixed or excluded before clipping")
    factor = torch.clamp(clip / norms.clamp_min(torch.finfo(norms.dtype).tiny), max=1.0)
    clipped = norms > clip
    return ClipResult(updates * factor[:, None], norms, clipped, clip)


def check_clipped(vectors: Tensor, clip: float, *, what: str = "client vectors", tol: float = 1e-6) -> Tensor:
    """Refuse rows whose L2 norm exceeds ``clip`` (relative tolerance ``tol``); returns the norms."""
    norms = torch.linalg.vector_norm(vectors.to(torch.float64), dim=1)
    over = norms > clip * (1 + tol)
    if over.any():
        idx = over.nonzero().flatten().tolist()
        raise ValueError(
            f"{what} of client(s) {idx[:10]} have L2 norm up to {float(norms.max()):.6g} > clip={clip:g}: "
            "the DP sensitivity bound assumes every contribution is clipped. Clip the updates first "
            "(dp.clip_updates(updates, clip)), or raise the clip; under RFA disable objective tracking "
            "(track_objective=False) if the offending call is the objective")
    return norms


# --------------------------------------------------------------------------- the mechanism


def sensitivity(clip: float, adjacency: str = "add_remove") -> float:
    """L2 sensitivity of the sum of per-user clipped updates (norm <= clip).

    Adding or removing one user changes the sum by at most C (the adjacency Opacus's
    sampled Gaussian analysis uses); replacing one user's update by another, by 2C.
    """
    clip = check_clip(clip)
    if adjacency == "add_remove":
        return clip
    if adjacency == "replace":
        return 2.0 * clip
    raise ValueError(f"adjacency={adjacency!r}; choose 'add_remove' or 'replace'")


@dataclass
class DPFedAvgResult:
    aggregate: Tensor        # [d]: (sum of clipped updates + noise) / expected_weight
    n_clipped: int           # clients whose update was scaled down to the clip
    noise_std: float         # std of the noise added to the sum, ~ z * C (dp.grid)
    sensitivity: float       # C (add/remove adjacency)
    expected_weight: float


def dp_fedavg(updates: Tensor, *, clip: float, noise_multiplier: float, expected_weight: float,
              rng=None) -> DPFedAvgResult:
    """One round of DP-FedAvg on the sampled users' updates (McMahan et al. 2018, Alg. 1).

    Each row is clipped to L2 norm ``clip``; the sum gets the grid discrete Gaussian of
    noise multiplier z (:mod:`dp.grid`: std ~ z C); it is divided by ``expected_weight``
    (q W: the expected number of sampled users when every user has weight 1). ``rng``:
    None for the OS CSPRNG, or a seeded ``numpy.random.Generator`` (reproducible, insecure).
    """
    z = check_noise_multiplier(noise_multiplier)
    if not (isinstance(expected_weight, (int, float)) and expected_weight > 0):
        raise ValueError(f"expected_weight={expected_weight!r} must be > 0 (e.g. q * n_clients)")
    res = clip_updates(updates, clip)
    total = res.updates.to(torch.float64).sum(dim=0)
    p = grid_plan(res.clip, int(total.shape[0]), z, int(updates.shape[0]))
    noisy, _ = grid_release(total, p, SecureRandom() if rng is None else rng)
    return DPFedAvgResult((noisy / expected_weight).to(updates.dtype), res.n_clipped, p.noise_std, res.clip,
                          float(expected_weight))


def user_level_epsilon(noise_multiplier: float, clients_per_round: int, clients: int, rounds: int,
                       delta: float, *, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Epsilon of DP-FedAvg after ``rounds`` rounds: q = clients_per_round / clients, steps = rounds.

    delta must be below 1/clients (the records are the users).
    """
    _check_cohort(clients_per_round, clients)
    check_delta(delta, clients, unit="clients (users)")
    return epsilon(noise_multiplier, clients_per_round / clients, rounds, delta, accountant=accountant)


def user_level_noise_for_epsilon(target_epsilon: float, clients_per_round: int, clients: int, rounds: int,
                                 delta: float, *, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Noise multiplier z reaching ``target_epsilon`` after ``rounds`` rounds (``--target-epsilon``)."""
    _check_cohort(clients_per_round, clients)
    check_delta(delta, clients, unit="clients (users)")
    return noise_for_epsilon(target_epsilon, clients_per_round / clients, rounds, delta, accountant=accountant)


def _check_cohort(clients_per_round: int, clients: int) -> None:
    if not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients={clients!r} must be a positive integer")
    if not isinstance(clients_per_round, int) or not 1 <= clients_per_round <= clients:
        raise ValueError(f"clients_per_round={clients_per_round!r} must lie in [1, clients={clients}]")


def poisson_cohort(n_clients: int, sample_rate: float, rng=None) -> Tensor:
    """Indices of a Poisson cohort: each client independently with probability q (may be empty).

    ``rng``: None for the OS CSPRNG (the cohort is part of the mechanism: amplification by
    sampling needs it secret), or a seeded ``numpy.random.Generator``. Each client is in iff
    a uniform 62-bit integer is below round(q 2^62) (q exact to 2^-62).
    """
    q = check_sample_rate(sample_rate)
    if not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
    rng = SecureRandom() if rng is None else rng
    u = rng.integers(0, 1 << 62, size=n_clients, dtype=np.int64)
    return torch.from_numpy(np.nonzero(u < round(q * 2.0 ** 62))[0].astype(np.int64))


# --------------------------------------------------------------------------- as an oracle


DEN_FRACTION = 0.1


def check_den_fraction(f: float) -> float:
    """Share f of the privacy budget (1/z^2) given to the total weight of a noisy weighted average.

    z_num = z / sqrt(1 - f) on the numerator, z_den = z / sqrt(f) on the total weight.
    The default 0.1 costs the numerator 5% more noise and keeps the total weight's
    noise at 3.2 z. The MSE-optimal split of a linearised ratio, f = 1 / (1 + sqrt(d)),
    starves the denominator (f = 0.014 at d = 4810): its errors then rescale the whole
    average, and on digits DP-RFA (z_round = 1, 15 rounds) fell from 0.73 to 0.32 accuracy.
    """
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
        raise ValueError(f"den_fraction={f!r} must be a number in (0, 1) (default {DEN_FRACTION})")
    return float(f)


def check_min_weight(w: float) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
        raise ValueError(f"min_weight={w!r} must lie in [0, 1] (a public lower bound on every u_i <= 1)")
    return float(w)


def clamp_denominator(noisy: float, survivors: Optional[int], min_denominator: float, min_weight: float):
    """Clamp a noisy total weight to what is public; returns (value, raised?).

    With a public survivor count s: [max(min_denominator, min_weight * s), s] (each
    u_i <= 1, and u_i >= min_weight where the rule guarantees it). With ``survivors=None``
    (the count is private, as under central DP with Poisson cohorts): [min_denominator, inf).
    """
    if survivors is None:
        return (min_denominator, True) if noisy < min_denominator else (noisy, False)
    lo = max(min_denominator, min_weight * survivors)
    hi = max(float(survivors), lo)
    if noisy < lo:
        return lo, True
    return min(noisy, hi), False


# Margin on the sensitivity (relative) that covers a secure-sum ring's rounding: the central
# noise is then the same with or without a ring (paired runs share draws), as long as the
# ring's rounding stays below it (always at 64 bits; quantization_slack says).
SLACK_MARGIN = 2.0 ** -16


def quantization_slack(base: SecureAverageOracle, n: int, d: int) -> tuple:
    """(vector, weight) L2 amounts by which the base oracle's rounding can move one client's
    encoded (u_i x_i, u_i): sqrt(sum_j 1/scale_j^2) over the vector coordinates, 1/scale of the
    weight (stochastic rounding moves a coordinate by < 1 step); (0, 0) for plaintext."""
    if not isinstance(base, QuantizedOracle) or n < 1:
        return 0.0, 0.0
    scale = base.encoder(n, d, torch.device("cpu")).scale.to(torch.float64).reshape(-1)
    if scale.numel() == 1:
        scale = scale.expand(d + 1)
    return float(torch.sqrt((1.0 / scale[:d] ** 2).sum())), float(1.0 / scale[d])


def central_sensitivities(clip: float, base: SecureAverageOracle, n: int, d: int) -> tuple:
    """(numerator, weight) L2 sensitivities of a central call: C and 1, plus the ring's rounding
    (:func:`quantization_slack`) or the fixed margin :data:`SLACK_MARGIN` if that is larger."""
    slack_v, slack_w = quantization_slack(base, n, d)
    return clip + max(slack_v, SLACK_MARGIN * clip), 1.0 + max(slack_w, SLACK_MARGIN)


Denominator = Union[str, float]


class NoisyOracle(SecureAverageOracle):
    """What the DP oracles share: calls under the oracle's public weight bound, and the noise
    source of each call (:func:`dp.noise.noise_rng` on the subclass's ``noise_stream``)."""

    noise_stream: int

    def average(self, vectors: Tensor, weights: Tensor, *, weight_bound: Optional[float] = None, **kw) -> Tensor:
        """One noisy oracle call; ``weight_bound`` None means the oracle's public bound."""
        return super().average(vectors, weights, weight_bound=self.weight_bound if weight_bound is None
                               else weight_bound, **kw)

    def rng(self):
        """The noise source of the next call (key: rounds closed, releases pending)."""
        return noise_rng(self.seeded_noise, self.seed, self.noise_stream, len(self.accountant.rounds),
                         len(self.accountant.pending))


class CentralDPOracle(NoisyOracle):
    """Secure-average oracle with central Gaussian noise on the released sums (DP-FedAvg).

    Each client's row x_i must have L2 norm <= ``clip`` (clip first with
    :func:`clip_updates`; unclipped rows are refused) and its weight u_i = w_i / B <= 1
    for a PUBLIC bound B: a call's ``weight_bound`` or the oracle's (default 1.0, equal
    weights). ``weight_bound=None`` (B = the call's largest weight, which depends on the
    data, so one user's change rescales every other's contribution) is refused, as the
    sensitivity below would not hold. The ``base`` oracle (plaintext, quantized or masked)
    computes the sums sum_i u_i x_i and sum_i u_i (in float64; a quantized base's rounding
    is added to the sensitivity, :func:`quantization_slack`); then, as the trusted server
    of central DP:

    - ``denominator=<float>`` (public expected total weight, e.g. q N for equal weights):
      only the numerator is released, with noise multiplier z on sensitivity C (add/remove
      one user); the average is numerator / expected weight (McMahan et al. 2018's
      fixed-denominator estimator).
    - ``denominator="noisy"`` (weights that vary, e.g. RFA): numerator and total weight
      are both released, with noise multipliers z_num = z / sqrt(1 - f) on sensitivity
      C and z_den = z / sqrt(f) on sensitivity 1, so the pair composes to exactly z
      (:mod:`dp.accounting`); f = ``den_fraction`` (default 0.1, see
      :func:`check_den_fraction`). The noisy total is clamped to public facts
      (:func:`clamp_denominator`; the survivor count only when ``public_cohort_size``):
      post-processing; a raise is counted in ``floored_calls``.

    Noise: the discrete Gaussian on a fine grid (:mod:`dp.grid`; defends against the
    floating-point attacks of Mironov 2012 / Jin et al. 2022, accounted exactly as the
    Gaussian with multiplier z), drawn from the OS CSPRNG, or, with ``seeded_noise=True``
    (paired experiments; the epsilon then does not hold against whoever knows ``seed``),
    from ``numpy.random.default_rng([seed, 1, round, call])``, where round and call are
    read from the accountant (rounds closed so far, releases pending): the draws depend
    on (seed, round, call) only, not on the base oracle.

    Each call adds one release of multiplier z to ``accountant``; call
    ``accountant.end_round()`` once per round. ``last_noise`` holds the last call's
    integer noise draws (numerator, then the weight's), for tests and paired checks.
    """

    noise_stream = STREAM_CENTRAL

    name = "central-dp"

    def __init__(self, base: Optional[SecureAverageOracle] = None, *, clip: float, noise_multiplier: float,
                 accountant: Optional[PrivacyAccountant] = None, denominator: Denominator = "noisy",
                 den_fraction: float = DEN_FRACTION, min_denominator: float = 1.0, min_weight: float = 0.0,
                 weight_bound: Optional[float] = 1.0, public_cohort_size: bool = False,
                 seeded_noise: bool = False, seed: int = 0):
        self.base = base if base is not None else PlaintextOracle()
        self.clip = check_clip(clip)
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.accountant = accountant if accountant is not None else PrivacyAccountant(1.0)
        if isinstance(denominator, str):
            if denominator != "noisy":
                raise ValueError(f"denominator={denominator!r}; use 'noisy' or a public expected total "
                                 "weight > 0 (e.g. clients_per_round for equal weights)")
        elif not (isinstance(denominator, (int, float)) and denominator > 0):
            raise ValueError(f"denominator={denominator!r} must be 'noisy' or a public expected total weight > 0")
        self.denominator = denominator
        self.den_fraction = check_den_fraction(den_fraction)
        if not min_denominator > 0:
            raise ValueError(f"min_denominator={min_denominator!r} must be > 0")
        self.min_denominator = float(min_denominator)
        self.min_weight = check_min_weight(min_weight)
        self.weight_bound = check_public_weight_bound(weight_bound)
        self.public_cohort_size = bool(public_cohort_size)
        self.seeded_noise = check_seeded(seeded_noise)
        self.seed = seed
        self.floored_calls = 0
        self.last_total_weight: Optional[float] = None   # the released (clamped) total weight
        self.last: Dict[str, Any] = {}
        self.last_noise: Optional[np.ndarray] = None
        self.last_plans: tuple = ()

    def noise_stds(self, d: int):
        """(numerator std, denominator std or None, z_num, z_den) of a call on d coordinates
        (float units, without the grid's < 1e-6 relative inflation)."""
        z = self.noise_multiplier
        if self.denominator != "noisy":
            return z * self.clip, None, z, math.inf
        f = self.den_fraction
        z_num, z_den = split_noise_multiplier(z, [1.0 - f, f])
        return z_num * self.clip, z_den * 1.0, z_num, z_den

    def plans(self, n: int, d: int):
        """The grid releases of a call with n clients on d coordinates: (numerator, weight or None)."""
        _, _, z_num, z_den = self.noise_stds(d)
        s_num, s_den = central_sensitivities(self.clip, self.base, n, d)
        num = grid_plan(s_num, d, z_num, n)
        den = None if self.denominator != "noisy" else grid_plan(s_den, 1, z_den, n)
        return num, den

    def _release(self, total: Tensor, n: int, survivors: Optional[int]) -> Tensor:
        d = total.shape[0] - 1
        num_plan, den_plan = self.plans(n, d)
        rng = self.rng()
        out = torch.empty_like(total, dtype=torch.float64)
        out[:d], y_num = grid_release(total[:d], num_plan, rng)
        noise = [y_num]
        floored = False
        if den_plan is None:
            out[d] = float(self.denominator)
        else:
            w, y_den = grid_release(total[d:], den_plan, rng)
            noise.append(y_den)
            out[d], floored = clamp_denominator(float(w[0]), survivors if self.public_cohort_size else None,
                                                self.min_denominator, self.min_weight)
            self.floored_calls += int(floored)
        self.last_noise = np.concatenate(noise)
        self.last_plans = (num_plan, den_plan)
        self.last_total_weight = float(out[d])
        self.accountant.add_release(self.noise_multiplier, label="central", d=d)
        std_num, std_den, z_num, z_den = self.noise_stds(d)
        self.last = {"noise_std": num_plan.noise_std, "denominator_noise_std": None if den_plan is None
                     else den_plan.noise_std, "z_num": z_num, "z_den": z_den, "grid": num_plan.gamma,
                     "noise_multiplier": self.noise_multiplier, "floored": floored}
        return out

    def secure_sum(self, vectors: Tensor, u: Tensor) -> SumResult:
        check_clipped(vectors, self.clip)
        res = self.base.secure_sum(vectors.to(torch.float64), u.to(torch.float64))
        total = self._release(res.total.to(torch.float64), vectors.shape[0], len(res.survivors))
        view = dict(res.server_view)
        view["dp"] = {"mechanism": "central-grid-discrete-gaussian", **self.last}
        return SumResult(total=total.to(vectors.dtype), survivors=res.survivors, server_view=view)

    def release_noise_only(self, d: int, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The call's output when no client is in the cohort: noise / (public or noisy) denominator.

        Under add/remove neighbours an empty cohort must still release noise (else its
        absence would tell the one-user cohort apart); one release is accounted.
        """
        total = self._release(torch.zeros(d + 1, dtype=torch.float64, device=device), 0, 0)
        return (total[:d] / total[d]).to(dtype)

    def __repr__(self) -> str:
        return (f"CentralDPOracle(base={self.base.name!r}, clip={self.clip:g}, "
                f"noise_multiplier={self.noise_multiplier:g}, denominator={self.denominator!r}, "
                f"noise={'seeded' if self.seeded_noise else 'csprng'})")


def check_public_weight_bound(weight_bound: Optional[float]) -> float:
    """The oracle's public weight bound B (u_i = w_i / B <= 1); None is refused."""
    if weight_bound is None:
        raise ValueError("weight_bound=None: the oracle would divide the weights by the call's largest weight, "
                         "which depends on the clients' data, so one user's change rescales every other "
                         "contribution and the DP sensitivity (C per user) no longer holds; give a public "
                         "bound on every weight, e.g. weight_bound=1.0 for equal weights")
    if isinstance(weight_bound, bool) or not isinstance(weight_bound, (int, float)) \
            or not math.isfinite(weight_bound) or weight_bound <= 0:
        raise ValueError(f"weight_bound={weight_bound!r} must be a finite public bound > 0 on every client weight")
    return float(weight_bound)
