"""Membership attacks with reference models: LiRA and RMIA.

Both compare what the target model says about a record with what *reference models* —
trained the way the target was, on data that did (IN) or did not (OUT) hold the record —
say about it. Every reference model is one *run*; a run's model for a record may depend
on the record's *group* (a federated client's own model in the individual view, the one
shared model otherwise).

* **LiRA** — Carlini, Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference Attacks From
  First Principles", IEEE S&P 2022, Algorithm 1. The signal is the logit-scaled confidence
  phi(p) = log(p_y / (1 - p_y)) of the true label (Sec. IV-C; computed from the logits as
  z_y - logsumexp_{j != y} z_j, exact and stable, as their code does in float64). Online:
  per-record Gaussians N(mu_in, s_in^2) and N(mu_out, s_out^2) fitted to the IN and OUT
  reference signals; score = log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out). Offline
  (OUT models only): the one-sided test of Algorithm 1, score = log Pr[Z <= phi],
  Z ~ N(mu_out, s_out^2). Fixed variance (Sec. VI-A, better with few reference models): one
  global variance for IN and one for OUT, pooled over records (the within-record variance,
  so per-record means are not counted as spread).
* **RMIA** — Zarifzadeh, Liu, Lee, Shokri, "Low-Cost High-Power Membership Inference Attacks",
  ICML 2024, Eq. 3-4 (and ML Privacy Meter's ``run_rmia``). The signal is the probability of
  the true label, Pr(x | theta). LR(x) = Pr(x | theta) / Pr(x), with Pr(x) the mean over the
  reference models (online: all of them) or, offline, ((1 + a) Pr_OUT(x) + (1 - a)) / 2 from
  the OUT models only (``offline_a`` = a). The score is the fraction of population records z
  (known non-members of the target) with LR(x) / LR(z) > gamma (pairwise likelihood ratio
  test, Eq. 4). Pr(z) is computed on the same group's models as x.

:func:`lira_scores` and :func:`rmia_scores` attack one target model given its references;
:class:`ReferenceGame` holds R runs of one procedure in which *each run is the target in
turn*, the others its references (the leave-one-out evaluation of Carlini et al. Sec. V,
which gives R times as many member and non-member scores). :class:`LiRA` and :class:`RMIA`
(:mod:`membership.attacks.reference`) are membership attacks bound to a game
(:func:`membership.attack_server_view` binds them). Imports torch and membership's views and
features only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.func import functional_call

from .features import eval_mode
from .views import ModelView, Records, as_records, as_single_view

Tensor = torch.Tensor

__all__ = ["logit_confidence", "true_label_probability", "reference_signals", "lira_scores", "rmia_scores",
           "ReferenceGame", "FIX_VARIANCE_BELOW", "check_rmia_args"]

#: LiRA's fixed variance is the default below this many reference models (Carlini et al. Sec. VI-A).
FIX_VARIANCE_BELOW = 64
_MIN_STD = 1e-6


def _logits(view: ModelView, records: Records, batch_size: int = 2048) -> Tensor:
    params = view.param_dict()
    x = records.x.to(view.device)
    out = []
    with eval_mode(view.model), torch.no_grad():
        for i in range(0, len(records), batch_size):
            out.append(functional_call(view.model, params, (x[i:i + batch_size],)))
    logits = torch.cat(out).double()
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits [B, n_classes], got shape {tuple(logits.shape)}")
    y = records.y.to(logits.device)
    if y.numel() and int(y.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {logits.shape[1]} outputs")
    return logits


def _signals_from_logits(logits: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """(logit-scaled confidence, true-label probability) from float64 logits."""
    y = y.to(logits.device).view(-1, 1)
    zy = logits.gather(1, y).squeeze(1)
    others = logits.scatter(1, y, float("-inf"))
    phi = zy - torch.logsumexp(others, dim=1)
    prob = torch.softmax(logits, dim=1).gather(1, y).squeeze(1)
    return phi, prob


def logit_confidence(view, records) -> Tensor:
    """LiRA's signal phi = log(p_y / (1 - p_y)) per record (float64), Carlini et al. Sec. IV-C."""
    view = as_single_view(view, "logit_confidence")
    records = as_records(records)
    return _signals_from_logits(_logits(view, records), records.y)[0]


def true_label_probability(view, records) -> Tensor:
    """RMIA's signal Pr(x | theta): the softmax probability of the true label (float64)."""
    view = as_single_view(view, "true_label_probability")
    records = as_records(records)
    return _signals_from_logits(_logits(view, records), records.y)[1]


def reference_signals(models: Sequence[ModelView], records) -> Tuple[Tensor, Tensor]:
    """``(phi [M, N], prob [M, N])`` of every record on every model (one forward pass each)."""
    records = as_records(records)
    phis, probs = [], []
    for v in models:
        phi, prob = _signals_from_logits(_logits(v, records), records.y)
        phis.append(phi.cpu())
        probs.append(prob.cpu())
    return torch.stack(phis), torch.stack(probs)


# -- LiRA -------------------------------------------------------------------------------------


def _check_lira_inputs(target: Tensor, reference: Tensor, inside: Tensor) -> None:
    if reference.ndim != 2 or inside.shape != reference.shape or target.shape != reference.shape[1:]:
        raise ValueError(f"target [N], reference [K, N] and inside [K, N] must agree; got {tuple(target.shape)}, "
                         f"{tuple(reference.shape)}, {tuple(inside.shape)}")
    if not bool(torch.isfinite(reference).all()) or not bool(torch.isfinite(target).all()):
        raise ValueError("LiRA signals hold non-finite values; check the models")


def _gauss_logpdf(x: Tensor, mu: Tensor, sd: Tensor) -> Tensor:
    return -0.5 * ((x - mu) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)


def _moments(values: Tensor, mask: Tensor):
    """Per-column count, mean and within-column sum of squared deviations over the masked rows."""
    m = mask.to(values.dtype)
    n = m.sum(0)
    mean = (values * m).sum(0) / n.clamp(min=1)
    ss = (((values - mean) * m) ** 2).sum(0)
    return n, mean, ss


def _lira_core(target: Tensor, n_in, mu_in, ss_in, n_out, mu_out, ss_out, online: bool, fix_variance: bool,
               where: str) -> Tensor:
    if bool((n_out < 1).any()):
        raise ValueError(f"{where}: {int((n_out < 1).sum())} record(s) have no OUT reference model; LiRA needs at "
                         "least one per record (use more reference models)")
    if online and bool((n_in < 1).any()):
        raise ValueError(f"{where}: {int((n_in < 1).sum())} record(s) have no IN reference model; online LiRA needs "
                         "at least one per record (use more reference models, or the offline attack)")
    # Global variances: the within-record variance pooled over records (Carlini et al. Sec. VI-A).
    g_out = torch.sqrt(ss_out.sum() / n_out.sum()).clamp(min=_MIN_STD)
    g_in = torch.sqrt(ss_in.sum() / n_in.sum().clamp(min=1)).clamp(min=_MIN_STD) if online else g_out
    if fix_variance:
        sd_in, sd_out = g_in.expand_as(mu_in), g_out.expand_as(mu_out)
    else:   # a record with a single IN (OUT) model has no variance of its own: the global one
        sd_in = torch.where(n_in >= 2, torch.sqrt(ss_in / n_in.clamp(min=1)).clamp(min=_MIN_STD), g_in)
        sd_out = torch.where(n_out >= 2, torch.sqrt(ss_out / n_out.clamp(min=1)).clamp(min=_MIN_STD), g_out)
    if online:
        return _gauss_logpdf(target, mu_in, sd_in) - _gauss_logpdf(target, mu_out, sd_out)
    return torch.special.log_ndtr((target - mu_out) / sd_out)


def lira_scores(target, reference, inside, online: bool = True, fix_variance: Optional[bool] = None) -> Tensor:
    """LiRA scores (Carlini et al. 2022, Algorithm 1) of N records on one target model.

    ``target`` [N]: phi of each record on the target model; ``reference`` [K, N]: phi on each
    reference model; ``inside`` [K, N] (bool): whether the record was in that reference model's
    training data. ``fix_variance=None``: a global variance when K < 64. Higher = member.
    """
    target = torch.as_tensor(target, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    inside = torch.as_tensor(inside).bool()
    _check_lira_inputs(target, reference, inside)
    fix = reference.shape[0] < FIX_VARIANCE_BELOW if fix_variance is None else bool(fix_variance)
    n_in, mu_in, ss_in = _moments(reference, inside)
    n_out, mu_out, ss_out = _moments(reference, ~inside)
    return _lira_core(target, n_in, mu_in, ss_in, n_out, mu_out, ss_out, online, fix, "lira_scores")


# -- RMIA -------------------------------------------------------------------------------------


def _rmia_denominator(ref: Tensor, out_mask: Tensor, offline_a: Optional[float], where: str) -> Tensor:
    """Pr(x) from the reference probabilities [K, N]: online the mean over all K; offline
    ((1 + a) mean_OUT + (1 - a)) / 2 (Zarifzadeh et al. Sec. 3, offline approximation)."""
    if offline_a is None:
        return ref.mean(0)
    n_out = out_mask.sum(0)
    if bool((n_out < 1).any()):
        raise ValueError(f"{where}: {int((n_out < 1).sum())} record(s) have no OUT reference model; offline RMIA "
                         "needs at least one per record (use more reference models)")
    mean_out = (ref * out_mask).sum(0) / n_out
    return (1 + offline_a) / 2 * mean_out + (1 - offline_a) / 2


def _pairwise_fraction(lr_x: Tensor, lr_z: Tensor, gamma: float) -> Tensor:
    """For each x: the fraction of z with LR(x) / LR(z) > gamma, i.e. LR(z) < LR(x) / gamma."""
    zs = torch.sort(lr_z).values
    return torch.searchsorted(zs, lr_x / gamma, side="left").double() / len(zs)


def check_rmia_args(gamma: float, offline_a: Optional[float]) -> None:
    """Validate RMIA's ``gamma`` (> 0) and ``offline_a`` (None: online, else in [0, 1]) with clear errors."""
    if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma={gamma!r} must be a finite number > 0 (Zarifzadeh et al.: 1 or 2)")
    if offline_a is not None and not (isinstance(offline_a, (int, float)) and 0 <= offline_a <= 1):
        raise ValueError(f"offline_a={offline_a!r} must lie in [0, 1] (ML Privacy Meter's default 0.3), or None "
                         "for the online attack")


def rmia_scores(target_x, reference_x, target_z, reference_z, inside_x=None, inside_z=None, gamma: float = 1.0,
                offline_a: Optional[float] = None) -> Tensor:
    """RMIA scores (Zarifzadeh et al. 2024, Eq. 4) of N records on one target model.

    ``target_x`` [N] / ``reference_x`` [K, N]: Pr(x | theta) on the target and each reference
    model; ``target_z`` [Z] / ``reference_z`` [K, Z]: the same for the population records z.
    ``offline_a=None``: online (Pr(x) the mean over all reference models); a number: offline,
    using the OUT models only (``inside_x`` [K, N] / ``inside_z`` [K, Z] say which are IN;
    population records default to OUT everywhere). Higher = member.
    """
    check_rmia_args(gamma, offline_a)
    tx, rx = torch.as_tensor(target_x, dtype=torch.float64), torch.as_tensor(reference_x, dtype=torch.float64)
    tz, rz = torch.as_tensor(target_z, dtype=torch.float64), torch.as_tensor(reference_z, dtype=torch.float64)
    if rx.ndim != 2 or tx.shape != rx.shape[1:] or rz.ndim != 2 or tz.shape != rz.shape[1:] \
            or rz.shape[0] != rx.shape[0]:
        raise ValueError(f"target_x [N], reference_x [K, N], target_z [Z], reference_z [K, Z] must agree; got "
                         f"{tuple(tx.shape)}, {tuple(rx.shape)}, {tuple(tz.shape)}, {tuple(rz.shape)}")
    if len(tz) == 0:
        raise ValueError("RMIA needs population records z (known non-members); got none")
    out_x = torch.ones_like(rx) if inside_x is None else (~torch.as_tensor(inside_x).bool()).double()
    out_z = torch.ones_like(rz) if inside_z is None else (~torch.as_tensor(inside_z).bool()).double()
    lr_x = tx / _rmia_denominator(rx, out_x, offline_a, "rmia_scores")
    lr_z = tz / _rmia_denominator(rz, out_z, offline_a, "rmia_scores")
    return _pairwise_fraction(lr_x, lr_z, gamma)


# -- the game: R runs, each the target in turn ---------------------------------------------------


@dataclass
class ReferenceGame:
    """R runs of one training procedure over the same N candidate records.

    ``phi`` / ``prob`` [R, G, N]: LiRA's and RMIA's signal of record i on run r's model for
    group g (G = 1 for a view shared by every record); ``group`` [N]: the group whose model
    scores each record; ``inside`` [R, N]: whether record i was in run r's training data.
    Pooled record index ``p = r * N + i`` (run r as the target, the other R - 1 runs its
    references).
    """

    phi: Tensor
    prob: Tensor
    group: Tensor
    inside: Tensor
    _cache: Dict[tuple, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        R, G, N = self.phi.shape
        if self.prob.shape != (R, G, N) or self.inside.shape != (R, N) or self.group.shape != (N,):
            raise ValueError(f"ReferenceGame: phi {tuple(self.phi.shape)}, prob {tuple(self.prob.shape)}, inside "
                             f"{tuple(self.inside.shape)}, group {tuple(self.group.shape)} disagree")
        if R < 2:
            raise ValueError(f"a reference game needs at least 2 runs (the target and one reference), got {R}")
        self.inside = self.inside.bool().cpu()
        self.group = self.group.long().cpu()

    @property
    def n_runs(self) -> int:
        return int(self.phi.shape[0])

    @property
    def n_records(self) -> int:
        return int(self.phi.shape[2])

    def own(self, values: Tensor) -> Tensor:
        """[R, G, N] -> [R, N]: each record's value on its own group's model."""
        idx = self.group.view(1, 1, -1).expand(values.shape[0], 1, -1)
        return values.gather(1, idx).squeeze(1)

    def balanced(self, r: int) -> Tuple[Tensor, Tensor]:
        """The references of target run r, as (IN mask, OUT mask) [R-1, N] over the other runs, with
        per record as many IN as OUT runs (the larger side subsampled, seeded).

        Every record is IN for half of all R runs, so once run r is left out, a record IN for r
        has one IN reference fewer than OUT ones, and a record OUT for r one more: the reference
        sets would differ between members and non-members by design. With few references that
        difference alone moves the scores (the plug-in Gaussian likelihood ratio favours the side
        with more samples; the online RMIA denominator counts fewer IN models for members):
        balancing makes the reference set of every target record exchangeable, so that a run
        without leakage scores AUC 0.5 (tests/test_reference_attacks.py)."""
        R, N = self.n_runs, self.n_records
        keep = torch.arange(R) != r
        ins = self.inside[keep]
        prio = self._priority()[keep]
        n_in, n_out = ins.sum(0), (~ins).sum(0)
        m = torch.minimum(n_in, n_out)

        def first(mask):
            p = torch.where(mask, prio, torch.full_like(prio, 2.0))
            rank = p.argsort(0).argsort(0)
            return mask & (rank < m.view(1, -1))
        return first(ins), first(~ins)

    def _priority(self) -> Tensor:
        if "priority" not in self._cache:
            gen = torch.Generator().manual_seed(1_000_003 * self.n_runs + self.n_records)
            self._cache["priority"] = torch.rand(self.n_runs, self.n_records, generator=gen)
        return self._cache["priority"]

    def lira(self, online: bool = True, fix_variance: Optional[bool] = None) -> Tensor:
        """LiRA scores [R, N] with each run the target and the others its references (online: a
        balanced set of IN and OUT references per record, :meth:`balanced`; offline: every OUT run)."""
        R = self.n_runs
        fix = (R - 1) < FIX_VARIANCE_BELOW if fix_variance is None else bool(fix_variance)
        key = ("lira", online, fix)
        if key in self._cache:
            return self._cache[key]
        x = self.own(self.phi).double()
        scores = torch.empty_like(x)
        for r in range(R):
            keep = torch.arange(R) != r
            ref = x[keep]
            if online:
                use_in, use_out = self.balanced(r)
            else:
                use_in, use_out = self.inside[keep], ~self.inside[keep]
            n_in, mu_in, ss_in = _moments(ref, use_in)
            n_out, mu_out, ss_out = _moments(ref, use_out)
            scores[r] = _lira_core(x[r], n_in, mu_in, ss_in, n_out, mu_out, ss_out, online, fix,
                                   f"LiRA (target run {r})")
        self._cache[key] = scores
        return scores

    def rmia(self, population: Sequence[Tensor], gamma: float = 1.0, offline_a: Optional[float] = None) -> Tensor:
        """RMIA scores [R, N]; ``population[r]``: the record indices (0..N-1) known to be OUT of
        run r, its population z. Online, Pr(x) and Pr(z) average a balanced IN/OUT reference set
        (:meth:`balanced`); offline, every OUT run."""
        check_rmia_args(gamma, offline_a)
        R, G, N = self.prob.shape
        if len(population) != R:
            raise ValueError(f"RMIA needs population records for each of the {R} runs, got {len(population)}")
        prob = self.prob.double()
        scores = torch.empty(R, N, dtype=torch.float64)
        for r in range(R):
            z = torch.as_tensor(population[r], dtype=torch.long).cpu()
            if len(z) == 0:
                raise ValueError(f"RMIA: run {r} has no known non-member to serve as population z; raise the "
                                 "attacker's known fraction")
            if bool(self.inside[r, z].any()):
                raise ValueError(f"RMIA: population records of run {r} include members of that run")
            keep = torch.arange(R) != r
            out = (~self.inside[keep]).double()                       # [R-1, N]
            b_in, b_out = self.balanced(r)
            both = (b_in | b_out).double()
            for g in torch.unique(self.group).tolist():
                xs = torch.nonzero(self.group == g).flatten()
                ref = prob[keep, g]                                   # [R-1, N]
                if offline_a is None:      # online: Pr(x) over a balanced IN/OUT reference set
                    den = (ref * both).sum(0) / both.sum(0).clamp(min=1)
                else:
                    den = _rmia_denominator(ref, out, offline_a, f"RMIA (target run {r})")
                lr = prob[r, g] / den
                scores[r, xs] = _pairwise_fraction(lr[xs], lr[z], gamma)
        return scores
