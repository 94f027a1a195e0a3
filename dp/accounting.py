"""Privacy accounting: Opacus's accountants for Gaussian mechanisms, an RDP bound for discrete ones.

Two kinds of mechanism, two accountings (``mechanism=``):

- ``"gaussian"``: the Poisson-sampled Gaussian mechanism (Abadi et al. 2016; its RDP:
  Mironov, Talwar, Zhang 2019), accounted by Opacus (``opacus.accountants``): the PRV
  accountant (Gopi, Lee, Wutschitz 2021; a numerical upper bound, within
  ``eps_error`` = 0.01 of the exact privacy curve) by default, or the RDP accountant
  (Mironov 2017; conversion of Balle et al. 2020, Thm. 21) with ``accountant="rdp"``. At
  equal noise PRV reports 10-15% less epsilon than RDP. Used by DP-SGD (:mod:`dp.record_level`)
  and the central oracle, whose fine-grid discrete Gaussian is accounted as the Gaussian
  it is indistinguishable from (:mod:`dp.user_level`).
- ``"discrete"``: a mechanism known only through an RDP bound of Gaussian form,
  D_alpha <= alpha / (2 z^2) (the distributed discrete Gaussian, KLS 2021 Prop. 14,
  :mod:`dp.distributed`). With q = 1 that is the Gaussian RDP; with sampling (q < 1)
  the exact sampled-Gaussian analysis does not apply to it, and the round is accounted
  with the general upper bound of Zhu and Wang 2019 ("Poisson Subsampled Renyi
  Differential Privacy", ICML, Theorem 5: the bound Google's distributed_dp accounting
  applies to the distributed discrete Gaussian) at integer orders, converted as Opacus
  converts RDP. PRV does not apply (it needs the mechanism's privacy-loss distribution);
  ``accountant="prv"`` falls back to this bound, and :meth:`PrivacyAccountant.note` says so.

What this module adds: checked inputs (errors that name the bad value and the fix),
:func:`noise_for_epsilon` with a clear error when a budget is out of reach, the
Zhu-Wang bound (:func:`subsampled_rdp_bound`), and :class:`PrivacyAccountant`, a per-run
ledger that composes the releases of each federated round.

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
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.special import gammaln, logsumexp


def create_accountant(mechanism: str):
    """``opacus.accountants.create_accountant`` (Opacus is imported on first use: it is slow to import)."""
    from opacus.accountants import create_accountant as _create
    return _create(mechanism=mechanism)


def get_noise_multiplier(**kwargs) -> float:
    """``opacus.accountants.utils.get_noise_multiplier``."""
    from opacus.accountants.utils import get_noise_multiplier as _get
    return _get(**kwargs)

ACCOUNTANTS = ("prv", "rdp")
DEFAULT_ACCOUNTANT = "prv"
MECHANISMS = ("gaussian", "discrete")
# PRV's error in epsilon (Opacus returns estimate + error: an upper bound).
PRV_EPS_ERROR = 0.01
# Integer RDP orders of the discrete (Zhu-Wang) accounting: Google's distributed_dp uses
# 2..20 and a few up to 256; all integers to 64 keep the bound within ~1% of its optimum.
DISCRETE_ORDERS = tuple(range(2, 65)) + (72, 80, 96, 128, 160, 192, 256)
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


def check_mechanism(mechanism: str) -> str:
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism={mechanism!r}; choose 'gaussian' (Opacus's accountants) or 'discrete' "
                         "(an RDP bound of Gaussian form, sampled with Zhu-Wang 2019)")
    return mechanism


def _check_epsilon(eps: float, name: str = "target_epsilon") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{name}={eps!r} must be a finite number > 0")
    return float(eps)


# --------------------------------------------------------------------------- one-shot functions


def opacus_epsilon(history: Sequence[Tuple[float, float, int]], delta: float, accountant: str,
                   eps_error: float = PRV_EPS_ERROR) -> float:
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
        with np.errstate(divide="ignore", invalid="ignore"):   # PRV's log(1 - q) at q = 1: handled by it
            return float(acc.get_epsilon(delta=delta, eps_error=eps_error))
    return float(acc.get_epsilon(delta=delta))


@lru_cache(maxsize=4096)
def _subsampled_rdp_bound(z: float, q: float) -> Tuple[float, ...]:
    orders = np.asarray(DISCRETE_ORDERS, dtype=np.float64)
    base = orders / (2.0 * z * z)
    if q == 1.0:
        return tuple(base)
    lq, l1q = math.log(q), math.log1p(-q)
    out = []
    for a in DISCRETE_ORDERS:
        ls = np.arange(3, a + 1, dtype=np.float64)
        log_comb = gammaln(a + 1) - gammaln(ls + 1) - gammaln(a - ls + 1)
        terms = [(a - 1) * l1q + math.log(a * q - q + 1),                      # l = 0 and 1
                 math.log(a * (a - 1) / 2) + 2 * lq + (a - 2) * l1q + 1.0 / (z * z)]   # l = 2: e^{eps(2)}
        coef = [1.0, 1.0]
        if ls.size:
            terms.extend(((ls - 1) * ls / (2.0 * z * z) + log_comb + (a - ls) * l1q + ls * lq).tolist())
            coef.extend([3.0] * ls.size)
        out.append(min(float(logsumexp(terms, b=coef)) / (a - 1), a / (2.0 * z * z)))
    return tuple(out)


def subsampled_rdp_bound(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP at :data:`DISCRETE_ORDERS` of one Poisson-subsampled step of a mechanism with
    D_alpha <= alpha / (2 z^2) (Zhu and Wang 2019, Theorem 5, general upper bound).

    For integer alpha >= 2, with eps(l) = l / (2 z^2):
    (alpha - 1) RDP <= log[ (1-q)^(alpha-1) (alpha q - q + 1) + C(alpha,2) q^2 (1-q)^(alpha-2) e^eps(2)
    + 3 sum_{l=3}^{alpha} C(alpha,l) (1-q)^(alpha-l) q^l e^((l-1) eps(l)) ],
    and never more than eps(alpha) (no amplification). q = 1 gives eps(alpha) exactly.
    """
    z = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    if z == 0:
        return np.full(len(DISCRETE_ORDERS), math.inf)
    return np.asarray(_subsampled_rdp_bound(z, q))


def discrete_epsilon(history: Sequence[Tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a history [(z, q, steps)] of the ``"discrete"`` mechanism: the
    Zhu-Wang RDP bounds add up over steps (Mironov 2017, Prop. 1) and are converted with
    Opacus's ``get_privacy_spent`` (Balle et al. 2020, Thm. 21). Without sampling (every q = 1)
    it is the Gaussian RDP at Opacus's (fractional) orders. Unchecked inputs."""
    from opacus.accountants.analysis.rdp import get_privacy_spent
    history = [(float(z), float(q), int(s)) for z, q, s in history if s > 0]
    if not history:
        return 0.0
    if any(z == 0 for z, _, _ in history):
        return math.inf
    if all(q == 1.0 for _, q, _ in history):
        # no sampling: alpha / (2 z^2) holds at every real alpha > 1 (KLS Prop. 14), Opacus's orders
        return opacus_epsilon(history, delta, "rdp")
    rdp = np.zeros(len(DISCRETE_ORDERS))
    for z, q, steps in history:
        rdp = rdp + steps * np.asarray(_subsampled_rdp_bound(z, q))
    with warnings.catch_warnings():      # "optimal order is the largest alpha": at tiny epsilon
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = get_privacy_spent(orders=list(DISCRETE_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def history_epsilon(history: Sequence[Tuple[float, float, int]], delta: float, *, accountant: str,
                    mechanism: str = "gaussian") -> float:
    """Epsilon of a history with the accounting of ``mechanism`` (module docstring)."""
    if mechanism == "discrete":
        return discrete_epsilon(history, delta)
    return opacus_epsilon(history, delta, accountant)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
            accountant: str = DEFAULT_ACCOUNTANT, n_records: Optional[int] = None,
            mechanism: str = "gaussian") -> float:
    """Epsilon at ``delta`` of ``steps`` compositions of the sampled Gaussian mechanism.

    The mechanism adds N(0, (z * sensitivity)^2) to a sum over a Poisson sample of rate
    q (Abadi et al. 2016; Mironov, Talwar, Zhang 2019 for its RDP). Equals
    ``opacus.accountants.create_accountant(accountant)`` with history
    [(z, q, steps)] evaluated at delta. ``noise_multiplier = 0`` gives inf.
    ``mechanism="discrete"``: the Zhu-Wang RDP bound instead (:func:`discrete_epsilon`).
    """
    z = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    steps = check_steps(steps)
    delta = check_delta(delta, n_records)
    return history_epsilon([(z, q, steps)], delta, accountant=check_accountant(accountant),
                           mechanism=check_mechanism(mechanism))


def noise_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float, *,
                      accountant: str = DEFAULT_ACCOUNTANT, n_records: Optional[int] = None,
                      max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
                      epsilon_tolerance: float = 0.01, mechanism: str = "gaussian") -> float:
    """Smallest noise multiplier (to ``epsilon_tolerance``) whose epsilon is <= the target.

    Calls ``opacus.accountants.utils.get_noise_multiplier`` (``mechanism="gaussian"``), or
    bisects :func:`discrete_epsilon` (``"discrete"``). A target that needs more
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
    mechanism = check_mechanism(mechanism)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": expected at huge noise
        warnings.simplefilter("ignore", UserWarning)
        at_max = history_epsilon([(max_noise_multiplier, q, steps)], delta, accountant=accountant,
                                 mechanism=mechanism)
    if at_max > eps:
        hint = (" (an RDP accountant cannot certify epsilon below about log(1/delta)/(max order - 1) at any "
                "noise" + ("; accountant='prv' can)" if mechanism == "gaussian" else ")")
                if accountant == "rdp" or mechanism == "discrete" else "")
        raise ValueError(
            f"target epsilon {eps:g} is unreachable at delta={delta:g} with sample rate q={q:g} over "
            f"{steps} steps: even noise multiplier {max_noise_multiplier:g} gives epsilon {at_max:.4g}{hint}. "
            "Raise the target epsilon or delta, or use fewer rounds/steps or a lower sampling rate")
    if mechanism == "discrete":
        return _bisect_noise(lambda z: discrete_epsilon([(z, q, steps)], delta), eps, epsilon_tolerance,
                             max_noise_multiplier)
    # Opacus doubles sigma from 10 up to max 1e6; a smaller cap is enforced by the check above.
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", UserWarning)
            z = get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=steps,
                                     accountant=accountant, epsilon_tolerance=epsilon_tolerance)
    except ValueError as err:  # pragma: no cover - guarded by the check above
        raise ValueError(f"target epsilon {eps:g} unreachable at delta={delta:g}, q={q:g}, "
                         f"steps={steps}: {err}") from err
    return float(z)


def _bisect_noise(eps_of, target: float, tolerance: float, z_max: float) -> float:
    """Smallest z (bisection on a decreasing eps_of) with target - tolerance < eps_of(z) <= target."""
    lo, hi = 0.0, 1.0
    while eps_of(hi) > target:
        lo, hi = hi, min(2.0 * hi, z_max)
    e_hi = eps_of(hi)
    while target - e_hi > tolerance and hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        e = eps_of(mid)
        if e <= target:
            hi, e_hi = mid, e
        else:
            lo = mid
    return float(hi)


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
    inv = sum(1.0 / (z * z) for z in zs)   # an infinite z (nothing of an honest user released) adds 0
    return math.inf if inv == 0 else 1.0 / math.sqrt(inv)


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
    """Ledger of a federated run: rounds of releases on sampled cohorts.

    Parameters
    ----------
    sample_rate : float
        Cohort sampling rate q per round (expected cohort / clients). The analysis is
        that of Poisson sampling, which the simulation uses under user-level DP
        (neighbouring relation: add/remove one user; see docs/dp.md).
    accountant : {"prv", "rdp"}
        Opacus accountant that turns a ``"gaussian"`` history into epsilon.
    mechanism : {"gaussian", "discrete"}
        How each release is accounted (module docstring): Opacus's sampled Gaussian, or
        the Zhu-Wang RDP bound (the distributed discrete Gaussian), where PRV does not apply.

    Usage: each noisy release calls :meth:`add_release` (the DP oracles do it per
    call); the simulation calls :meth:`end_round` once per round, which composes the
    round's releases into one sampled step (module docstring) and appends it to the
    history. :meth:`epsilon` reads the total, :meth:`epsilons` both accountants.
    """

    def __init__(self, sample_rate: float = 1.0, *, accountant: str = DEFAULT_ACCOUNTANT,
                 mechanism: str = "gaussian"):
        self.sample_rate = check_sample_rate(sample_rate)
        self.requested = check_accountant(accountant)
        self.mechanism = check_mechanism(mechanism)
        self._history: List[Tuple[float, float, int]] = []
        self.pending: List[Release] = []
        self.rounds: List[List[Release]] = []
        self.round_noise_multipliers: List[float] = []

    @property
    def accountant(self) -> str:
        """The accountant that produces :meth:`epsilon` ("rdp" for a discrete mechanism)."""
        return "rdp" if self.mechanism == "discrete" else self.requested

    def note(self) -> Optional[str]:
        """Why the accountant used differs from the one asked for (None when it does not)."""
        if self.mechanism == "discrete" and self.requested == "prv":
            return ("PRV needs the privacy-loss distribution of a Gaussian mechanism; the distributed "
                    "discrete Gaussian has only an RDP bound (KLS 2021, Prop. 14), so epsilon is RDP "
                    "(Zhu-Wang 2019 Thm. 5 under sampling)")
        return None

    # -- recording
    def add_release(self, noise_multiplier: float, label: str = "", **info: float) -> None:
        """Record one Gaussian release (noise multiplier relative to its L2 sensitivity)."""
        self.pending.append(Release(check_noise_multiplier(noise_multiplier), label, dict(info)))

    def _append(self, z: float, q: float, steps: int = 1) -> None:
        # merge runs of equal (z, q), as Opacus's accountants do
        if self._history and self._history[-1][:2] == (z, q):
            self._history[-1] = (z, q, self._history[-1][2] + steps)
        else:
            self._history.append((z, q, steps))

    def end_round(self, sample_rate: Optional[float] = None) -> float:
        """Close the current round: one sampled step with the composed multiplier.

        Returns the round's composed noise multiplier (inf when nothing was released,
        in which case nothing is added to the history).
        """
        q = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        z = compose_noise_multipliers([r.noise_multiplier for r in self.pending])
        self.rounds.append(self.pending)
        self.pending = []
        self.round_noise_multipliers.append(z)
        if math.isfinite(z):
            self._append(z, q)
        return z

    def step(self, noise_multiplier: float, sample_rate: Optional[float] = None, steps: int = 1) -> None:
        """Append ``steps`` independent sampled steps (heterogeneous composition)."""
        q = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        z = check_noise_multiplier(noise_multiplier)
        steps = check_steps(steps)
        if steps:
            self._append(z, q, steps)

    # -- reading
    @property
    def history(self) -> List[Tuple[float, float, int]]:
        """(noise multiplier, sample rate, steps) runs, as an Opacus accountant's history."""
        return list(self._history)

    def _with_pending(self, q: Optional[float] = None) -> List[Tuple[float, float, int]]:
        history = [(z, qq if q is None else q, s) for z, qq, s in self._history]
        if self.pending:
            history.append((compose_noise_multipliers([r.noise_multiplier for r in self.pending]),
                            self.sample_rate if q is None else q, 1))
        return history

    def epsilon(self, delta: float, *, n_records: Optional[int] = None, include_pending: bool = True,
                accountant: Optional[str] = None) -> float:
        """Epsilon at ``delta`` so far (pending releases count as a round of their own), with
        :attr:`accountant` (or ``accountant`` where the mechanism allows it)."""
        delta = check_delta(delta, n_records, unit="users")
        history = self._with_pending() if include_pending else self.history
        acc = self.accountant if accountant is None else check_accountant(accountant)
        return history_epsilon(history, delta, accountant=acc, mechanism=self.mechanism)

    def epsilons(self, delta: float) -> Dict[str, Optional[float]]:
        """Both accountants' epsilons at ``delta``: {"rdp": ..., "prv": ...}; "prv" is None for
        a discrete mechanism (no privacy-loss distribution to account)."""
        rdp = self.epsilon(delta, accountant="rdp")
        prv = None if self.mechanism == "discrete" else self.epsilon(delta, accountant="prv")
        return {"rdp": rdp, "prv": prv}

    def gaussian_estimate(self, delta: float) -> float:
        """Epsilon if the releases were the continuous sampled Gaussian of the same multipliers
        (Opacus RDP: fast on the varying per-round multipliers of dropouts): for a discrete
        mechanism an estimate, not a guarantee."""
        return opacus_epsilon(self._with_pending(), check_delta(delta), "rdp")

    def epsilon_without_sampling(self, delta: float) -> float:
        """Epsilon against an observer who knows every cohort (no amplification, q = 1).

        E.g. the server under distributed DP, which sees who takes part in secure
        aggregation. Conservative: as if the target user were in every round.
        """
        delta = check_delta(delta)
        return history_epsilon(self._with_pending(q=1.0), delta, accountant=self.accountant,
                               mechanism=self.mechanism)

    def to_dict(self, delta: Optional[float] = None) -> Dict[str, object]:
        out: Dict[str, object] = {
            "accountant": self.accountant, "accountant_requested": self.requested,
            "mechanism": self.mechanism, "sample_rate": self.sample_rate,
            "rounds": len(self.rounds),
            "round_noise_multipliers": list(self.round_noise_multipliers),
            "releases_per_round": [len(r) for r in self.rounds],
        }
        if self.note():
            out["note"] = self.note()
        if delta is not None:
            out["delta"] = delta
            out["epsilon"] = self.epsilon(delta)
        return out

    def __repr__(self) -> str:
        return (f"PrivacyAccountant(q={self.sample_rate:g}, accountant={self.accountant!r}, "
                f"mechanism={self.mechanism!r}, rounds={len(self.rounds)}, pending={len(self.pending)})")
