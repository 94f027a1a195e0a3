"""Membership-inference metrics from attack scores, computed with scikit-learn.

Convention everywhere in :mod:`membership`: a **score** is higher for records the
attack believes are members, and a **label** is 1 for a member, 0 for a non-member.
The ROC curve, the AUC and the operating points come from
``sklearn.metrics.roc_curve`` / ``roc_auc_score``; nothing here re-implements them.

* **Balanced attack accuracy** ``(TPR + TNR) / 2``, which equals plain accuracy on a
  balanced evaluation set such as the one of Nasr et al. (2019) and of the Cronus
  appendix, Table 6. At a given threshold (predict "member" when ``score >=
  threshold``) it is ``sklearn.metrics.balanced_accuracy_score``; the *best* threshold
  is the ROC point maximising ``(1 + TPR - FPR) / 2``. The best threshold chosen on
  the evaluation set itself is an optimistic (oracle) estimate; attacks in
  :mod:`membership.attacks` learn their threshold on the attacker's known records
  instead, and :func:`evaluate_scores` reports the accuracy at that threshold.
* **TPR at low FPR** (Carlini et al. 2022, "Membership inference attacks from first
  principles"): the *largest TPR among ROC points whose FPR is <= the target* — no
  interpolation, so the value is achievable by an actual threshold. :func:`tpr_at_fpr`
  computes it for any input; :func:`evaluate_scores` reports it only when there are at
  least ``1 / target`` non-member scores (100 for 1%, 1,000 for 0.1%): with fewer, the only
  FPR <= target is 0 and the number would be the TPR at zero false positives, a different
  quantity. It is then ``None`` with the reason in ``tpr_notes``; when estimable it comes
  with a stratified bootstrap CI (:func:`tpr_confidence_interval`).
* **AUC confidence interval**: a seeded, stratified percentile bootstrap (members and
  non-members resampled separately, so every resample holds both classes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

__all__ = ["MIAResult", "roc", "auc", "auc_confidence_interval", "tpr_at_fpr", "tpr_confidence_interval",
           "min_nonmembers_for", "tpr_not_estimable", "balanced_accuracy", "best_threshold", "evaluate_scores",
           "labels_for", "LOW_FPRS"]

#: The operating points reported with every result: (key suffix, target FPR).
LOW_FPRS = (("1pct", 0.01), ("0.1pct", 0.001))


def _as_numpy(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores, "scores").astype(np.float64, copy=False)
    y = _as_numpy(labels, "labels")
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {s.shape} and {y.shape}; "
                         "pass one score and one label per record")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"{s.shape[0]} scores but {y.shape[0]} labels; pass one label per score")
    if s.shape[0] == 0:
        raise ValueError("no scores (empty input); evaluate at least one member and one non-member")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {s.shape[0]} scores are non-finite (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); the attack produced NaN/inf — check the model and inputs")
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, [0, 1])):
        raise ValueError(f"labels must be 1 (member) or 0 (non-member), got values {uniq.tolist()[:6]}")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        which = "members (label 1)" if n_pos == 0 else "non-members (label 0)"
        raise ValueError(f"labels hold no {which}; membership metrics need both members and non-members")
    return s, y


def labels_for(n_members: int, n_nonmembers: int) -> np.ndarray:
    """``[1]*n_members + [0]*n_nonmembers``, the label vector for concatenated scores."""
    return np.concatenate([np.ones(n_members, dtype=np.int64), np.zeros(n_nonmembers, dtype=np.int64)])


def roc(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of ``sklearn.metrics.roc_curve`` with every point kept
    (``drop_intermediate=False``); a record is predicted a member when ``score >= threshold``."""
    s, y = _check(scores, labels)
    return roc_curve(y, s, drop_intermediate=False)


def auc(scores, labels) -> float:
    """ROC AUC (``sklearn.metrics.roc_auc_score``): the probability that a random member
    scores above a random non-member (ties count 1/2)."""
    s, y = _check(scores, labels)
    return float(roc_auc_score(y, s))


def _auc_from_ids(uid: np.ndarray, u: int, n_pos: int) -> np.ndarray:
    """AUC of each row of ``uid`` [B, n] (scores given as indices 0..u-1 of their value among the
    u distinct values, in increasing order), first ``n_pos`` columns the members: the
    Mann-Whitney form P(member > non-member) + P(tie) / 2, all rows at once (members and
    non-members counted per value; the non-members below a value from a cumulative sum)."""
    b, n = uid.shape
    offs = (np.arange(b) * u)[:, None]
    cp = np.bincount((uid[:, :n_pos] + offs).ravel(), minlength=b * u).reshape(b, u)
    cn = np.bincount((uid[:, n_pos:] + offs).ravel(), minlength=b * u).reshape(b, u)
    below = np.cumsum(cn, axis=1) - cn
    return (cp * (below + 0.5 * cn)).sum(axis=1) / (n_pos * (n - n_pos))


def _auc_rows(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """:func:`_auc_from_ids` of raw score rows; equal to ``roc_auc_score`` row by row (tests)."""
    values, uid = np.unique(scores, return_inverse=True)
    return _auc_from_ids(uid.reshape(scores.shape), len(values), n_pos)


def _check_bootstrap(n_bootstrap, level) -> None:
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be a positive integer (e.g. 1000)")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1), e.g. 0.95")


def auc_confidence_interval(scores, labels, n_bootstrap: int = 1000, level: float = 0.95,
                            seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap CI of the AUC, stratified by class and seeded.

    Each of ``n_bootstrap`` resamples draws the members and the non-members with
    replacement (keeping both counts) and recomputes the AUC (:func:`_auc_rows`, the
    Mann-Whitney form of ``roc_auc_score``, all resamples at once); the CI is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
    """
    s, y = _check(scores, labels)
    _check_bootstrap(n_bootstrap, level)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n = len(pos) + len(neg)
    values, uid = np.unique(s, return_inverse=True)    # resamples reuse the values' order
    aucs = np.empty(n_bootstrap)
    chunk = max(1, min(n_bootstrap, (1 << 22) // max(n, len(values))))   # at most ~4M counts per chunk
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([rng.choice(pos, (b, len(pos))), rng.choice(neg, (b, len(neg)))], axis=1)
        aucs[start:start + b] = _auc_from_ids(uid[idx], len(values), len(pos))
    lo, hi = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def tpr_at_fpr(scores, labels, target_fpr: float) -> float:
    """Largest TPR over the ROC points with FPR <= ``target_fpr`` (no interpolation)."""
    if not 0 <= target_fpr <= 1:
        raise ValueError(f"target_fpr={target_fpr!r} must lie in [0, 1] (e.g. 0.01 for 1%)")
    fpr, tpr, _ = roc(scores, labels)
    ok = fpr <= target_fpr
    return float(tpr[ok].max())  # the (0, 0) point always qualifies


def min_nonmembers_for(target_fpr: float) -> int:
    """Non-member scores needed before TPR at ``target_fpr`` is estimable: ``ceil(1 / target_fpr)``
    (so that one false positive is allowed; 100 for 1% FPR, 1,000 for 0.1%)."""
    if not 0 < target_fpr <= 1:
        raise ValueError(f"target_fpr={target_fpr!r} must lie in (0, 1]")
    return int(math.ceil(1.0 / target_fpr - 1e-9))


def tpr_not_estimable(n_nonmembers: int, target_fpr: float) -> Optional[str]:
    """Why TPR at ``target_fpr`` is not estimable from ``n_nonmembers`` scores, or None when it is."""
    need = min_nonmembers_for(target_fpr)
    if n_nonmembers >= need:
        return None
    return (f"only {n_nonmembers} non-member scores; TPR at {100 * target_fpr:g}% FPR needs at least {need:,} "
            "(more reference models or target records)")


def _tpr_from_sorted(pos: np.ndarray, neg_sorted_desc: np.ndarray, target_fpr: float) -> np.ndarray:
    """Largest TPR with FPR <= target_fpr, rows of ``pos`` [B, P] against rows of descending ``neg`` [B, N].

    With k = floor(target_fpr * N) false positives allowed, the best threshold lies just above the
    (k + 1)-th largest non-member score v: TPR = #(pos > v) / P (every threshold <= v admits k + 1
    non-members). k >= N allows every record: TPR 1."""
    n = neg_sorted_desc.shape[1]
    k = int(math.floor(target_fpr * n + 1e-9))
    if k >= n:
        return np.ones(pos.shape[0])
    v = neg_sorted_desc[:, k]
    return (pos > v[:, None]).mean(axis=1)


def tpr_confidence_interval(scores, labels, target_fpr: float, n_bootstrap: int = 1000, level: float = 0.95,
                            seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap CI of :func:`tpr_at_fpr`, stratified by class and seeded (as the AUC CI)."""
    s, y = _check(scores, labels)
    _check_bootstrap(n_bootstrap, level)
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    out = np.empty(n_bootstrap)
    chunk = max(1, min(n_bootstrap, (1 << 22) // len(s)))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        pb = pos[rng.integers(0, len(pos), (b, len(pos)))]
        nb = -np.sort(-neg[rng.integers(0, len(neg), (b, len(neg)))], axis=1)
        out[start:start + b] = _tpr_from_sorted(pb, nb, target_fpr)
    lo, hi = np.quantile(out, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def balanced_accuracy(scores, labels, threshold: Optional[float] = None) -> float:
    """Balanced attack accuracy ``(TPR + TNR) / 2``.

    With ``threshold`` given: predict member iff ``score >= threshold``
    (``sklearn.metrics.balanced_accuracy_score``). Without: the best over all
    thresholds (:func:`best_threshold`).
    """
    if threshold is None:
        return best_threshold(scores, labels)[0]
    s, y = _check(scores, labels)
    try:
        is_nan = bool(np.isnan(threshold))
    except TypeError:
        is_nan = True
    if is_nan:
        raise ValueError(f"threshold={threshold!r} must be a number (or None for the best threshold)")
    return float(balanced_accuracy_score(y, (s >= threshold).astype(np.int64)))


def best_threshold(scores, labels) -> Tuple[float, float]:
    """``(accuracy, threshold)`` maximising the balanced accuracy ``(1 + TPR - FPR) / 2``
    over the points of ``sklearn.metrics.roc_curve`` (ties, up to float rounding: the
    highest threshold). The threshold may be ``inf`` (predict nobody a member) when no
    threshold beats chance."""
    fpr, tpr, thr = roc(scores, labels)
    acc = (1.0 + tpr - fpr) / 2.0
    i = int(np.flatnonzero(acc >= acc.max() - 1e-12)[0])  # ties up to rounding: the highest threshold
    return float(acc[i]), float(thr[i])


@dataclass
class MIAResult:
    """Outcome of one attack on one view (the row format of ``audit.json``).

    ``accuracy`` is the balanced accuracy at ``threshold`` when the attack learned one
    on the attacker's known records, else at the best threshold on the evaluation set
    (``threshold`` then records that oracle value and ``threshold_source`` says
    ``"best_on_eval"``). ``tpr_at_1pct_fpr`` / ``tpr_at_0_1pct_fpr`` are ``None`` when too
    few non-members make them not estimable (:func:`tpr_not_estimable`; the reason is in
    ``tpr_notes``); ``tpr_ci`` holds their bootstrap CIs. ``roc`` is ``(fpr, tpr)`` and
    ``scores`` / ``labels`` the evaluation scores (numpy arrays), left out of :meth:`to_dict`;
    ``extra`` holds further JSON-ready fields (e.g. ``target_runs``) that :meth:`to_dict` adds.
    """

    attack: str
    view: str
    auc: float
    auc_ci: Tuple[float, float]
    accuracy: float
    tpr_at_1pct_fpr: Optional[float]
    tpr_at_0_1pct_fpr: Optional[float]
    n_members: int
    n_nonmembers: int
    roc: Tuple[np.ndarray, np.ndarray] = field(repr=False)
    threshold: Optional[float] = None
    threshold_source: str = "best_on_eval"
    tpr_ci: Dict[str, Optional[Tuple[float, float]]] = field(default_factory=dict)
    tpr_notes: Dict[str, str] = field(default_factory=dict)
    scores: Optional[np.ndarray] = field(default=None, repr=False)
    labels: Optional[np.ndarray] = field(default=None, repr=False)
    extra: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict without the curve and the scores; note the key ``"tpr_at_0.1pct_fpr"``."""
        thr = self.threshold
        out: Dict[str, object] = {"view": self.view, "attack": self.attack, "auc": self.auc,
                                  "auc_ci": [self.auc_ci[0], self.auc_ci[1]], "accuracy": self.accuracy}
        for key, value in (("1pct", self.tpr_at_1pct_fpr), ("0.1pct", self.tpr_at_0_1pct_fpr)):
            ci = self.tpr_ci.get(key)
            out[f"tpr_at_{key}_fpr"] = value
            out[f"tpr_at_{key}_fpr_ci"] = None if ci is None else [ci[0], ci[1]]
        if self.tpr_notes:
            out["not_estimable"] = {f"tpr_at_{k}_fpr": v for k, v in self.tpr_notes.items()}
        out.update({"n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
                    "threshold": None if thr is None or not np.isfinite(thr) else thr,
                    "threshold_source": self.threshold_source})
        out.update(self.extra)
        return out


def evaluate_scores(scores, labels, attack: str = "", view: str = "", threshold: Optional[float] = None,
                    n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> MIAResult:
    """All metrics of one (attack, view) from its evaluation scores and labels.

    ``threshold``: the decision threshold the attacker chose beforehand (on its own
    known records); ``None`` reports the best-threshold accuracy on these scores.
    TPR at 1% and 0.1% FPR are reported (with a bootstrap CI) only where estimable.
    """
    s, y = _check(scores, labels)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    if threshold is None:
        acc, thr = best_threshold(s, y)
        source = "best_on_eval"
    else:
        acc, thr, source = balanced_accuracy(s, y, threshold), float(threshold), "attack"
    n_non = int((1 - y).sum())
    tprs: Dict[str, Optional[float]] = {}
    cis: Dict[str, Optional[Tuple[float, float]]] = {}
    notes: Dict[str, str] = {}
    for key, f in LOW_FPRS:
        why = tpr_not_estimable(n_non, f)
        if why is None:
            tprs[key] = float(tpr[fpr <= f].max())
            cis[key] = tpr_confidence_interval(s, y, f, n_bootstrap=n_bootstrap, level=level, seed=seed)
        else:
            tprs[key], cis[key], notes[key] = None, None, why
    return MIAResult(
        attack=attack, view=view,
        auc=float(roc_auc_score(y, s)),
        auc_ci=auc_confidence_interval(s, y, n_bootstrap=n_bootstrap, level=level, seed=seed),
        accuracy=acc,
        tpr_at_1pct_fpr=tprs["1pct"], tpr_at_0_1pct_fpr=tprs["0.1pct"],
        n_members=int(y.sum()), n_nonmembers=n_non,
        roc=(fpr, tpr), threshold=thr, threshold_source=source, tpr_ci=cis, tpr_notes=notes,
        scores=s, labels=y)
