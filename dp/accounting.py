"""Privacy accounting: thin wrappers over Opacus's accountants, with validation.

Every epsilon in fedaudit comes from Opacus (``opacus.accountants``): the RDP
accountant (Mironov 2017, "Renyi Differential Privacy"; the sampled Gaussian
mechanism of Mironov, Talwar, Zhang 2019, the moments accountant of Abadi et al.
2016) by default, or the PRV accountant (Gopi, Lee, Wutschitz 2021), tighter, when
``accountant="prv"``. What this module adds: checked inputs (errors that name the
bad value and the fix), :func:`noise_for_epsilon` with a clear error when a budget
is out of reach, and :class:`PrivacyAccountant`, a per-run ledger that composes the
releases of each federated round.

Composition of several releases on the same cohort
--------------------------------------------------
A round samples its cohort once (rate q) and may then release several noisy sums
computed on that cohort (R oracle calls of RFA, the numerator and denominator of a
weighted average). Those are NOT R independently subsampled mechanisms: a client is
in all of the round's releases or in none, so accounting them as R Opacus steps of
rate q would over-credit the amplification by sampling. The R Gaussian releases with
noise multipliers z_1..z_R (each relative to its own L2 sensitivity) are jointly one
Gaussian mechanism with noise multiplier

    z_round = (sum_r z_r^-2)^(-1/2)

(the R-dimensional shift has norm at most sqrt(sum_r z_r^-2) in units of the noise:
adaptive composition of Gaussian mechanisms, Dong, Roth, Su 2022 (Gaussian DP), or
equivalently RDP additivity, Mironov 2017, Prop. 1), and the round is one step of the
sampled Gaussian mechanism with (z_round, q) (the Gaussian pair dominates the round's
inner mechanism, and Poisson subsampling preserves dominating pairs: Zhu, Dong, Wang
2022). With q = 1 this is exactly R Opacus steps (RDP adds up).
Different rounds, each with its own cohort, are heterogeneous steps in the Opacus
history (one (z, q, steps) entry per run of equal parameters).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


def create_accountant(mechanism: str):
    """``opacus.accountants.create_accountant`` (Opacus is imported on first use: it is slow to import)."""
    from opacus.accountants import create_accountant as _create
    return _create(mechanism=mechanism)


def get_noise_multiplier(**kwargs) -> float:
    """``opacus.accountants.utils.get_noise_multiplier``."""
    from opacus.accountants.utils import get_noise_multiplier as _get
    return _get(**kwargs)

ACCOUNTANTS = ("rdp", "prv")
# Largest noise multiplier :func:`noise_for_epsilon` searches (Opacus's own limit is 1e6).
MAX_NOISE_MULTIPLIER = 1e6


# --------------------------------------------------------------------------- validation


def check_noise_multiplier(z: float, name: str = "noise_multiplier") -> float:
    if isinstance(z, bool) or not isinstance(z, (int, float)) or math.isnan(z):
        raise ValueError(f"{name}={z!r} must be a number >= 0")
    if z < 0:
        raise ValueError(f"{name}={z!r} is negative; the Gaussian noise std is {name} * sensitivity, "
                         f"so use {name} >= 0 (0 = no noise, epsilon = inf)")
    return float(z)


def check_clip(clip: float, name: str = "clip") -> float:
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"{name}={clip!r} must be a finite number > 0: it is the L2 bound every "
                         f"contribution is clipped to (e.g. --{name.replace('_', '-')} 1.0)")
    return float(clip)


def check_sample_rate(q: float, name: str = "sample_rate") -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise ValueError(f"{name}={q!r} must lie in (0, 1] (e.g. clients_per_round / clients, or "
                         "batch_size / n_records)")
    return float(q)


def check_steps(steps: int, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{name}={steps!r} must be an integer >= 0")
    return steps


def check_delta(delta: float, n_records: Optional[int] = None, unit: str = "records") -> float:
    """0 < delta < 1, and delta < 1/n_records when ``n_records`` is given.

    A delta of 1/n or more allows mechanisms that publish one whole record (or user)
    outright, so it is refused (Dwork and Roth 2014, Sec. 2.3).
    """
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} must lie in (0, 1); the usual choice is < 1/n, e.g. 1e-5")
    if n_records is not None:
        if not isinstance(n_records, int) or n_records < 1:
            raise ValueError(f"n_records={n_records!r} must be a positive integer")
        if delta >= 1.0 / n_records:
            raise ValueError(
                f"delta={delta:g} >= 1/n = 1/{n_records} = {1.0 / n_records:.3g} ({n_records} {unit}): such a "
                f"delta permits publishing a whole one of the {unit}; use delta < {1.0 / n_records:.3g}, "
                f"e.g. delta = {_suggest_delta(n_records):g}")
    return float(delta)


def _suggest_delta(n: int) -> float:
    """A power of ten below 1/n^1.1 (the usual 'delta << 1/n')."""
    return 10.0 ** math.floor(math.log10(1.0 / n ** 1.1))


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant={accountant!r}; choose one of {ACCOUNTANTS}")
    return accountant


def _check_epsilon(eps: float, name: str = "target_epsilon") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{name}={eps!r} must be a finite number > 0")
    return float(eps)


# --------------------------------------------------------------------------- one-shot functions


def opacus_epsilon(history: Sequence[Tuple[float, float, int]], delta: float, accountant: str,
                   eps_error: float = 0.01) -> float:
    """Epsilon at ``delta`` of an Opacus ``history`` [(z, q, steps)] (heterogeneous steps compose;
    steps <= 0 are ignored, z = 0 gives inf). Unchecked inputs: callers validate them first."""
    history = [(float(z), float(q), int(s)) for z, q, s in history if s > 0]
    if not history:
        return 0.0
    if any(z == 0 for z, _, _ in history):
        return math.inf
    acc = create_accountant(mechanism=accountant)
    acc.history = history
    if accountant == "prv":
        return float(acc.get_epsilon(delta=delta, eps_error=eps_error))
    return float(acc.get_epsilon(delta=delta))


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
            accountant: str = "rdp", n_records: Optional[int] = None) -> float:
    """Epsilon at ``delta`` of ``steps`` compositions of the sampled Gaussian mechanism.

    The mechanism adds N(0, (z * sensitivity)^2) to a sum over a Poisson sample of rate
    q (Abadi et al. 2016; Mironov, Talwar, Zhang 2019 for its RDP). Equals
    ``opacus.accountants.create_accountant(accountant)`` with history
    [(z, q, steps)] evaluated at delta. ``noise_multiplier = 0`` gives inf.
    """
    z = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    steps = check_steps(steps)
    delta = check_delta(delta, n_records)
    return opacus_epsilon([(z, q, steps)], delta, check_accountant(accountant))


def noise_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float, *,
                      accountant: str = "rdp", n_records: Optional[int] = None,
                      max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
                      epsilon_tolerance: float = 0.01) -> float:
    """Smallest noise multiplier (to ``epsilon_tolerance``) whose epsilon is <= the target.

    Calls ``opacus.accountants.utils.get_noise_multiplier``. A target that needs more
    than ``max_noise_multiplier`` (default: Opacus's own search limit, 1e6) is refused
    with the epsilon that limit would give, and what to change.
    """
    eps = _check_epsilon(target_epsilon)
    q = check_sample_rate(sample_rate)
    steps = check_steps(steps, "steps")
    if steps == 0:
        raise ValueError("steps=0: nothing is released, so no noise is needed; use steps >= 1")
    delta = check_delta(delta, n_records)
    accountant = check_accountant(accountant)
    if not max_noise_multiplier > 0:
        raise ValueError(f"max_noise_multiplier={max_noise_multiplier!r} must be > 0")
    with warnings.catch_warnings():  # "optimal order is the largest alpha": expected at huge noise
        warnings.simplefilter("ignore", UserWarning)
        at_max = opacus_epsilon([(max_noise_multiplier, q, steps)], delta, accountant)
    if at_max > eps:
        hint = (" (the RDP accountant cannot certify epsilon below about log(1/delta)/(max order - 1) at any "
                "noise; accountant='prv' can)" if accountant == "rdp" else "")
        raise ValueError(
            f"target epsilon {eps:g} is unreachable at delta={delta:g} with sample rate q={q:g} over "
            f"{steps} steps: even noise multiplier {max_noise_multiplier:g} gives epsilon {at_max:.4g}{hint}. "
            "Raise the target epsilon or delta, or use fewer rounds/steps or a lower sampling rate")
    # Opacus doubles sigma from 10 up to max 1e6; a smaller cap is enforced by the check above.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            z = get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=steps,
                                     accountant=accountant, epsilon_tolerance=epsilon_tolerance)
    except ValueError as err:  # pragma: no cover - guarded by the check above
        raise ValueError(f"target epsilon {eps:g} unreachable at delta={delta:g}, q={q:g}, "
                         f"steps={steps}: {err}") from err
    return float(z)


def compose_noise_multipliers(noise_multipliers: Sequence[float]) -> float:
    """Noise multiplier of the joint Gaussian mechanism of several releases on one cohort.

    z = (sum_r z_r^-2)^(-1/2), each z_r relative to its own L2 sensitivity (module
    docstring). A zero entry (no noise) gives 0; an empty list gives inf (no release).
    """
    zs = [check_noise_multiplier(z) for z in noise_multipliers]
    if not zs:
        return math.inf
    if any(z == 0 for z in zs):
        return 0.0
    if all(z == zs[0] for z in zs):  # exact for one release (Opacus merges equal history entries)
        return zs[0] / math.sqrt(len(zs))
    return 1.0 / math.sqrt(sum(1.0 / (z * z) for z in zs))


def split_noise_multiplier(noise_multiplier: float, fractions: Sequence[float]) -> List[float]:
    """Per-release noise multipliers whose composition is ``noise_multiplier``.

    Release k gets the share f_k of the 'privacy' 1/z^2: z_k = z / sqrt(f_k), so that
    sum_k z_k^-2 = z^-2 (fractions must be > 0 and sum to 1).
    """
    z = check_noise_multiplier(noise_multiplier)
    fr = [float(f) for f in fractions]
    if not fr or any(not f > 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions={list(fractions)!r} must be > 0 and sum to 1")
    return [z / math.sqrt(f) for f in fr]


# --------------------------------------------------------------------------- the ledger


@dataclass
class Release:
    """One noisy release inside a round (e.g. one oracle call)."""

    noise_multiplier: float
    label: str = ""
    info: Dict[str, float] = field(default_factory=dict)


class PrivacyAccountant:
    """Ledger of a federated run: rounds of releases on sampled cohorts, accounted by Opacus.

    Parameters
    ----------
    sample_rate : float
        Cohort sampling rate q per round (clients_per_round / clients; Opacus's
        analysis assumes Poisson sampling, see :mod:`dp.user_level`).
    accountant : {"rdp", "prv"}
        Opacus accountant that turns the history into epsilon.

    Usage: each noisy release calls :meth:`add_release` (the DP oracles do it per
    call); the simulation calls :meth:`end_round` once per round, which composes the
    round's releases into one sampled-Gaussian step (module docstring) and appends it to
    an Opacus accountant's history. :meth:`epsilon` reads the total.
    """

    def __init__(self, sample_rate: float = 1.0, *, accountant: str = "rdp"):
        self.sample_rate = check_sample_rate(sample_rate)
        self.mechanism = check_accountant(accountant)
        self._opacus = create_accountant(mechanism=self.mechanism)
        self.pending: List[Release] = []
        self.rounds: List[List[Release]] = []
        self.round_noise_multipliers: List[float] = []

    # -- recording
    def add_release(self, noise_multiplier: float, label: str = "", **info: float) -> None:
        """Record one Gaussian release (noise multiplier relative to its L2 sensitivity)."""
        self.pending.append(Release(check_noise_multiplier(noise_multiplier), label, dict(info)))

    def end_round(self, sample_rate: Optional[float] = None) -> float:
        """Close the current round: one sampled-Gaussian step with the composed multiplier.

        Returns the round's composed noise multiplier (inf when nothing was released,
        in which case nothing is added to the history).
        """
        q = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        z = compose_noise_multipliers([r.noise_multiplier for r in self.pending])
        self.rounds.append(self.pending)
        self.pending = []
        self.round_noise_multipliers.append(z)
        if math.isfinite(z):
            self._opacus.step(noise_multiplier=z, sample_rate=q)
        return z

    def step(self, noise_multiplier: float, sample_rate: Optional[float] = None, steps: int = 1) -> None:
        """Append ``steps`` independent sampled-Gaussian steps (heterogeneous composition)."""
        q = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        z = check_noise_multiplier(noise_multiplier)
        for _ in range(check_steps(steps)):
            self._opacus.step(noise_multiplier=z, sample_rate=q)

    # -- reading
    @property
    def history(self) -> List[Tuple[float, float, int]]:
        """Opacus history: (noise multiplier, sample rate, steps) runs."""
        return list(self._opacus.history)

    def epsilon(self, delta: float, *, n_records: Optional[int] = None, include_pending: bool = True) -> float:
        """Epsilon at ``delta`` so far (pending releases count as a round of their own)."""
        delta = check_delta(delta, n_records, unit="users")
        history = self.history
        if include_pending and self.pending:
            z = compose_noise_multipliers([r.noise_multiplier for r in self.pending])
            history = history + [(z, self.sample_rate, 1)]
        return opacus_epsilon(history, delta, self.mechanism)

    def epsilon_without_sampling(self, delta: float) -> float:
        """Epsilon against an observer who knows every cohort (no amplification, q = 1).

        E.g. the server under distributed DP, which sees who takes part in secure
        aggregation. Conservative: as if the target user were in every round.
        """
        delta = check_delta(delta)
        history = [(z, 1.0, s) for z, _, s in self.history]
        if self.pending:
            history.append((compose_noise_multipliers([r.noise_multiplier for r in self.pending]), 1.0, 1))
        return opacus_epsilon(history, delta, self.mechanism)

    def to_dict(self, delta: Optional[float] = None) -> Dict[str, object]:
        out: Dict[str, object] = {
            "accountant": self.mechanism, "sample_rate": self.sample_rate,
            "rounds": len(self.rounds),
            "round_noise_multipliers": list(self.round_noise_multipliers),
            "releases_per_round": [len(r) for r in self.rounds],
        }
        if delta is not None:
            out["delta"] = delta
            out["epsilon"] = self.epsilon(delta)
        return out

    def __repr__(self) -> str:
        return (f"PrivacyAccountant(q={self.sample_rate:g}, accountant={self.mechanism!r}, "
                f"rounds={len(self.rounds)}, pending={len(self.pending)})")
