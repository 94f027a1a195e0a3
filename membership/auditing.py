"""Empirical epsilon: lower bounds that hold with a stated confidence, and point estimates.

Two different things, never mixed up (``epsilon_lower`` vs ``epsilon_estimate`` in results):

* **Lower bounds** (hold with probability >= ``confidence`` over the training randomness):

  - :func:`epsilon_from_counts` — Jagielski, Ullman, Oprea, "Auditing Differentially Private
    Machine Learning: How Private is Private SGD?", NeurIPS 2020, Sec. 3 (Algorithm 2): an
    (epsilon, delta)-DP mechanism has TPR <= e^eps FPR + delta, so with Clopper-Pearson
    bounds at level (1 - confidence) / 2 each, eps >= max(log((TPR_lo - delta) / FPR_hi),
    log((TNR_lo - delta) / FNR_hi)). :func:`epsilon_lower_from_scores` chooses the threshold on
    one half of the scores and bounds on the other (a split, so the choice costs no
    confidence). Treating pooled records of one model as independent trials is the standard
    MIA practice; for canaries inserted at random in one run, the rigorous bound is:
  - :func:`one_run_epsilon_lower` / :func:`one_run_audit` — Steinke, Nasr, Jagielski, "Privacy
    Auditing with One (1) Training Run", NeurIPS 2023, Theorem 3.1 / Algorithm 2: m canaries,
    each included with probability 1/2; the auditor guesses "in" for the k+ highest scores,
    "out" for the k- lowest and abstains on the rest; with r guesses of which v are correct,
    p = P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta max_{i=1..v} P[v > Binomial >=
    v - i] / i, and eps_lower is the largest eps whose p-value is below 1 - confidence. The
    choice of k over a grid is paid for with a Bonferroni correction.

* **Point estimates** (no confidence attached; may exceed the true epsilon):

  - :func:`gaussian_epsilon_estimate` — Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar,
    "One-shot Empirical Privacy Estimation for Federated Learning", ICLR 2024, Sec. 3-4: fit
    a Gaussian to the statistics of inserted canaries and one to those of fresh (never
    inserted) canaries, and report the epsilon at ``delta`` of the pair of Gaussians
    (:func:`epsilon_two_gaussians`, exact: the privacy-loss region of two Gaussians with
    different variances is bounded by the roots of a quadratic).

Canary directions for client-level audits: :func:`random_unit_directions` and
:func:`cosines`. Numerics come from scipy (binomial, normal, root finding). Imports no
other fedaudit package.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import optimize, stats

Tensor = torch.Tensor

__all__ = ["clopper_pearson", "epsilon_from_counts", "epsilon_lower_from_scores", "one_run_p_value",
           "one_run_epsilon_lower", "one_run_audit", "epsilon_two_gaussians", "delta_two_gaussians",
           "gaussian_epsilon_estimate", "random_unit_directions", "cosines"]


def _check_conf(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0.5 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must lie in (0.5, 1), e.g. 0.95")
    return 1.0 - float(confidence)


def _check_delta(delta: float) -> float:
    if not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise ValueError(f"delta={delta!r} must lie in [0, 1) (the DP delta of the claim being audited)")
    return float(delta)


def _check_counts(k: int, n: int, what: str) -> None:
    for name, v in ((f"{what} count", k), (f"{what} total", n)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name}={v!r} must be a non-negative integer")
    if k > n:
        raise ValueError(f"{what}: {k} successes out of {n} trials; the count cannot exceed the total")
    if n == 0:
        raise ValueError(f"{what}: no trials (total 0); a bound needs at least one record of each class")


def clopper_pearson(k: int, n: int, alpha: float) -> Tuple[float, float]:
    """Exact one-sided Clopper-Pearson bounds ``(lo, hi)`` of a binomial proportion, each at level
    ``alpha``: ``lo`` solves P[Bin(n, lo) >= k] = alpha, ``hi`` solves P[Bin(n, hi) <= k] = alpha
    (root finding on the binomial tails; lo = 0 when k = 0, hi = 1 when k = n)."""
    _check_counts(k, n, "clopper_pearson")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    k, n = int(k), int(n)
    lo = 0.0 if k == 0 else optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - alpha, 0.0, 1.0,
                                            xtol=1e-15, rtol=1e-14, maxiter=500)
    hi = 1.0 if k == n else optimize.brentq(lambda p: stats.binom.cdf(k, n, p) - alpha, 0.0, 1.0,
                                            xtol=1e-15, rtol=1e-14, maxiter=500)
    return float(lo), float(hi)


def epsilon_from_counts(tp: int, n_pos: int, fp: int, n_neg: int, delta: float = 0.0,
                        confidence: float = 0.95) -> float:
    """Jagielski et al. (2020) lower bound on epsilon from one threshold's counts: ``tp`` of
    ``n_pos`` members and ``fp`` of ``n_neg`` non-members predicted "member". Both directions of
    the DP inequality are used (TPR vs FPR and TNR vs FNR), each with Clopper-Pearson bounds at
    level (1 - confidence) / 2; 0 when neither is informative."""
    alpha = _check_conf(confidence)
    delta = _check_delta(delta)
    _check_counts(tp, n_pos, "true positives")
    _check_counts(fp, n_neg, "false positives")
    tpr_lo, tpr_hi = clopper_pearson(tp, n_pos, alpha / 2)
    fpr_lo, fpr_hi = clopper_pearson(fp, n_neg, alpha / 2)
    best = 0.0
    for num, den in ((tpr_lo, fpr_hi), (1.0 - fpr_hi, 1.0 - tpr_lo)):   # TPR/FPR and TNR/FNR
        if num - delta > 0 and den > 0:
            best = max(best, math.log((num - delta) / den))
    return best


def _counts_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Tuple[int, int, int, int]:
    pred = scores >= threshold
    pos = labels == 1
    return int((pred & pos).sum()), int(pos.sum()), int((pred & ~pos).sum()), int((~pos).sum())


def _check_scores(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are non-finite")
    if not np.all(np.isin(y, [0, 1])):
        raise ValueError("labels must be 1 (member / included) or 0")
    return s, y.astype(np.int64)


def epsilon_lower_from_scores(scores, labels, delta: float = 0.0, confidence: float = 0.95,
                              select_fraction: float = 0.5, seed: int = 0) -> Dict[str, Any]:
    """Epsilon lower bound from an attack's scores (Jagielski et al. 2020) with the threshold
    chosen on a split: a stratified, seeded ``select_fraction`` of the members and of the
    non-members picks the threshold that maximises :func:`epsilon_from_counts` on them; the
    bound is then computed on the other records at that threshold only.

    Returns ``epsilon_lower``, ``threshold``, the held-out counts (``tp, n_pos, fp, n_neg``),
    ``confidence``, ``delta`` and ``method``."""
    s, y = _check_scores(scores, labels)
    if not 0 < select_fraction < 1:
        raise ValueError(f"select_fraction={select_fraction!r} must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    sel = np.zeros(len(s), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        k = int(round(select_fraction * len(idx)))
        if k < 1 or k >= len(idx):
            raise ValueError(f"{len(idx)} {'members' if cls else 'non-members'} cannot be split "
                             f"{select_fraction:.0%} / {1 - select_fraction:.0%}; a bound needs at least 2 of each")
        sel[rng.choice(idx, k, replace=False)] = True
    ss, sy = s[sel], y[sel]
    # Candidate thresholds: every distinct selection score (predict "member" iff score >= t).
    order = np.argsort(-ss, kind="stable")
    st, lab = ss[order], sy[order]
    tp_c, fp_c = np.cumsum(lab == 1), np.cumsum(lab == 0)
    last = np.r_[st[1:] != st[:-1], True]            # the end of each run of equal scores
    n_pos_s, n_neg_s = int((sy == 1).sum()), int((sy == 0).sum())
    best, thr = -1.0, float("inf")
    # Point estimates rank the candidates; the bound is evaluated on the best few (cheap and exact).
    cand = np.flatnonzero(last)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr, fpr = tp_c[cand] / n_pos_s, fp_c[cand] / n_neg_s
        point = np.maximum(np.log((tpr - delta) / np.maximum(fpr, 0.5 / n_neg_s)),
                           np.log(((1 - fpr) - delta) / np.maximum(1 - tpr, 0.5 / n_pos_s)))
    point = np.nan_to_num(point, nan=-np.inf)
    for j in cand[np.argsort(-point)[:64]]:
        e = epsilon_from_counts(int(tp_c[j]), n_pos_s, int(fp_c[j]), n_neg_s, delta, confidence)
        if e > best:
            best, thr = e, float(st[j])
    tp, n_pos, fp, n_neg = _counts_at(s[~sel], y[~sel], thr)
    eps = epsilon_from_counts(tp, n_pos, fp, n_neg, delta, confidence)
    return {"epsilon_lower": eps, "threshold": thr, "tp": tp, "n_pos": n_pos, "fp": fp, "n_neg": n_neg,
            "confidence": confidence, "delta": delta,
            "method": "Jagielski et al. 2020, Clopper-Pearson, threshold chosen on a 50% split"}


# -- one-run auditing (Steinke, Nasr, Jagielski 2023) --------------------------------------------


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Steinke et al. (2023) Algorithm 2's p-value: the probability that r guesses about m
    randomly included canaries under an (epsilon, delta)-DP mechanism get >= v right."""
    for name, x in (("m", m), ("r", r), ("v", v)):
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 0:
            raise ValueError(f"{name}={x!r} must be a non-negative integer")
    if not v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m (correct <= guesses <= canaries), got v={v}, r={r}, m={m}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon={epsilon!r} must be >= 0")
    delta = _check_delta(delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))               # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    between = stats.binom.sf(v - i - 1, r, q) - beta          # P[v > Bin >= v - i]
    alpha = float(np.max(between / i))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon_lower(m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest epsilon that r guesses with v correct about m canaries reject at ``confidence``
    (Steinke et al. 2023): sup {eps : one_run_p_value(m, r, v, eps, delta) < 1 - confidence}, 0 if none."""
    alpha = _check_conf(confidence)
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    hi = 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        hi *= 2
        if hi > 1e4:   # every guess right with delta = 0 and huge m: no finite bound is rejected
            return float("inf")
    return float(optimize.brentq(lambda e: one_run_p_value(m, r, v, e, delta) - alpha, 0.0, hi, xtol=1e-9))


#: Guess counts k (as fractions of the m canaries) tried by :func:`one_run_audit`: k+ = k- = k.
ONE_RUN_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def one_run_audit(scores, included, delta: float = 0.0, confidence: float = 0.95,
                  fractions: Sequence[float] = ONE_RUN_FRACTIONS) -> Dict[str, Any]:
    """Steinke et al.'s one-run audit of m canaries: ``included[j]`` (each drawn with probability
    1/2 before training) and a score per canary (higher = more likely included). For each k in
    ``fractions`` x m, guess "in" for the k highest and "out" for the k lowest scores and abstain
    on the rest; the best bound over the grid is reported at confidence
    ``1 - (1 - confidence) / len(grid)`` per k (Bonferroni), so it holds at ``confidence``."""
    s, y = _check_scores(scores, included)
    m = len(s)
    if m < 2:
        raise ValueError(f"a one-run audit needs at least 2 canaries, got {m}")
    ks = sorted({max(1, min(m // 2, int(round(f * m)))) for f in fractions})
    per_k = 1.0 - (1.0 - confidence) / len(ks)
    order = np.argsort(-s, kind="stable")
    ys = y[order]
    best = {"epsilon_lower": 0.0, "k": None, "guesses": 0, "correct": 0}
    for k in ks:
        v = int(ys[:k].sum() + (1 - ys[-k:]).sum())
        eps = one_run_epsilon_lower(m, 2 * k, v, delta, per_k)
        if eps > best["epsilon_lower"]:
            best = {"epsilon_lower": eps, "k": k, "guesses": 2 * k, "correct": v}
    return {**best, "m": m, "n_included": int(y.sum()), "confidence": confidence, "delta": delta,
            "grid": ks, "method": "Steinke, Nasr, Jagielski 2023 (one run), top/bottom k, Bonferroni over k"}


# -- Gaussian fits (Andrew et al. 2024) -------------------------------------------------------


def delta_two_gaussians(epsilon: float, mu_p: float, sd_p: float, mu_q: float, sd_q: float) -> float:
    """delta(eps) = sup_S P(S) - e^eps Q(S) for P = N(mu_p, sd_p^2), Q = N(mu_q, sd_q^2): the
    P-mass minus e^eps times the Q-mass of {x : log p(x) - log q(x) > eps}, a region bounded by
    the roots of a quadratic (one half-line when the variances are equal)."""
    if not (sd_p > 0 and sd_q > 0):
        raise ValueError(f"standard deviations must be > 0, got {sd_p!r} and {sd_q!r}")
    # log p - log q - eps = a x^2 + b x + c
    a = 0.5 * (1 / sd_q ** 2 - 1 / sd_p ** 2)
    b = mu_p / sd_p ** 2 - mu_q / sd_q ** 2
    c = 0.5 * (mu_q ** 2 / sd_q ** 2 - mu_p ** 2 / sd_p ** 2) + math.log(sd_q / sd_p) - epsilon
    P, Q = stats.norm(mu_p, sd_p), stats.norm(mu_q, sd_q)

    def mass(d, lo, hi):   # d's mass on (lo, hi), accurate in both tails
        if hi <= lo:
            return 0.0
        if lo > d.mean():
            return float(d.sf(lo) - d.sf(hi))
        return float(d.cdf(hi) - d.cdf(lo))

    if abs(a) < 1e-12 * max(1.0, abs(b)):
        if b == 0:
            return max(0.0, 1.0 - math.exp(epsilon)) if c > 0 else 0.0
        x0 = -c / b
        region = [(x0, math.inf)] if b > 0 else [(-math.inf, x0)]
    else:
        disc = b * b - 4 * a * c
        if disc <= 0:
            region = [(-math.inf, math.inf)] if a > 0 else []
        else:
            r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
            region = [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]
    d = sum(mass(P, lo, hi) - math.exp(epsilon) * mass(Q, lo, hi) for lo, hi in region)
    return max(0.0, d)


def epsilon_two_gaussians(mu_p: float, sd_p: float, mu_q: float, sd_q: float, delta: float) -> float:
    """The smallest eps with delta(eps) <= ``delta`` in both directions (P vs Q and Q vs P)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} must lie in (0, 1)")

    def worst(e):
        return max(delta_two_gaussians(e, mu_p, sd_p, mu_q, sd_q), delta_two_gaussians(e, mu_q, sd_q, mu_p, sd_p))

    if worst(0.0) <= delta:
        return 0.0
    hi = 1.0
    while worst(hi) > delta:
        hi *= 2
        if hi > 1e6:
            return float("inf")
    return float(optimize.brentq(lambda e: worst(e) - delta, 0.0, hi, xtol=1e-9))


def gaussian_epsilon_estimate(inserted, fresh, delta: float) -> Dict[str, Any]:
    """Andrew et al.'s estimate: Gaussians fitted (mean, unbiased std) to the statistics of the
    inserted canaries and of fresh directions; ``epsilon_estimate`` of that pair at ``delta``.
    A point estimate, not a bound."""
    a = np.asarray(inserted, dtype=np.float64)
    f = np.asarray(fresh, dtype=np.float64)
    if a.ndim != 1 or f.ndim != 1 or len(a) < 2 or len(f) < 2:
        raise ValueError(f"need at least 2 inserted and 2 fresh statistics, got {a.shape} and {f.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(f))):
        raise ValueError("canary statistics hold non-finite values")
    mu1, sd1, mu0, sd0 = float(a.mean()), float(a.std(ddof=1)), float(f.mean()), float(f.std(ddof=1))
    if sd1 <= 0 or sd0 <= 0:
        eps = float("inf") if mu1 != mu0 else 0.0   # no spread: perfectly separated (or identical)
    else:
        eps = epsilon_two_gaussians(mu1, sd1, mu0, sd0, delta)
    return {"epsilon_estimate": eps, "inserted_mean": mu1, "inserted_std": sd1, "fresh_mean": mu0,
            "fresh_std": sd0, "n_inserted": int(len(a)), "n_fresh": int(len(f)), "delta": delta,
            "method": "Andrew et al. 2024, Gaussian fits of inserted vs fresh canary statistics"}


# -- canary directions --------------------------------------------------------------------------


def random_unit_directions(m: int, d: int, generator: torch.Generator, dtype=torch.float32,
                           device: Optional[torch.device] = None) -> Tensor:
    """``m`` isotropic random unit vectors in R^d (normalised Gaussians), drawn from ``generator``
    on the CPU and moved to ``device``, so that the draw is the same on every device."""
    if not isinstance(m, int) or m < 1 or not isinstance(d, int) or d < 2:
        raise ValueError(f"need m >= 1 directions in d >= 2 dimensions, got m={m!r}, d={d!r}")
    g = torch.randn(m, d, generator=generator, dtype=torch.float64)
    g = g / g.norm(dim=1, keepdim=True)
    return g.to(dtype=dtype, device=device)


def cosines(directions: Tensor, vectors: Tensor) -> Tensor:
    """Cosine of every direction [m, d] with every vector [T, d] (or one [d]): [m, T] (or [m]);
    0 against a zero vector."""
    one = vectors.ndim == 1
    v = vectors.reshape(-1, vectors.shape[-1]).to(directions.device, torch.float64)
    u = directions.to(torch.float64)
    num = u @ v.T
    den = u.norm(dim=1, keepdim=True) * v.norm(dim=1).view(1, -1)
    out = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
    return out[:, 0] if one else out
