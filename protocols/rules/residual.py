"""Residual-based reweighting (Fu, Xie, Li, Chen 2019, Alg. 1).

Per parameter n: sort the K clients' values y_n, regress them on their ranks x_n with
Siegel's repeated median, turn the residuals into IRLS confidences, correct extreme
values, and weight each confidence by the spread of that parameter's confidences; a
client's model weight is the sum of its weighted confidences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from secagg import ClientUpdates

from .common import median_last, revealed
from .base import AggregationRule, register_rule

Tensor = torch.Tensor

# Parameters per chunk: bounds the [chunk, K, K - 1] pairwise-slope tensors.
_CHUNK_ELEMS = 1 << 22


def _offdiag_index(k: int, device) -> Tensor:
    """[K, K - 1]: for row i, the columns j != i."""
    j = torch.arange(k - 1, device=device)
    i = torch.arange(k, device=device)[:, None]
    return j[None, :] + (j[None, :] >= i).long()


def repeated_median_line(ys: Tensor, x: Tensor, off: Tensor):
    """Siegel's repeated median line through the points (x_k, ys[:, k]) for every row of ``ys``.

    Eq. (1): beta1 = med_i med_{j != i} (y_j - y_i) / (x_j - x_i);
    eq. (2): beta0 = med_i med_{j != i} (x_j y_i - x_i y_j) / (x_j - x_i).
    ``ys`` [c, K], ``x`` [K] (distinct), ``off`` from :func:`_offdiag_index`.
    """
    k = x.shape[0]
    rows = torch.arange(k, device=x.device)[:, None]
    dx = (x[None, :] - x[:, None])[rows, off]                           # [K, K-1]: x_j - x_i
    yi = ys[:, :, None]                                                 # [c, K, 1]
    yj = ys[:, off]                                                     # [c, K, K-1]: y_j
    slopes = (yj - yi) / dx
    beta1 = median_last(median_last(slopes))
    xj = x[off]                                                         # [K, K-1]
    inter = (xj * yi - x[:, None] * yj) / dx
    beta0 = median_last(median_last(inter))
    return beta0, beta1


def residual_confidences(y: Tensor, lam: float = 2.0, delta: float = 0.01, gamma: float = 1.48):
    """Alg. 1, lines 2-11, for a chunk y [c, K] (parameters x clients).

    Returns (the corrected values [c, K] in client order, the weighted confidences
    w_n sigma(w_n) [c, K] in client order).
    """
    c, k = y.shape
    ys, order = y.sort(dim=1)                                   # line 2: x_n = ranks
    x = torch.arange(k, device=y.device, dtype=y.dtype)
    off = _offdiag_index(k, y.device)
    beta0, beta1 = repeated_median_line(ys, x, off)             # line 3
    fit = beta0[:, None] + beta1[:, None] * x                   # the line at each rank
    r = ys - fit                                                # line 4
    tau = gamma * median_last(r.abs()) * (1 + 5 / (k - 1))      # lines 5-6, eqs. (3)-(4)
    # Leverage of the fitted line y = beta0 + beta1 x: the diagonal of the hat matrix of its
    # design [1, x_n] (eq. (7)), h_kk = 1/K + (x_k - x_bar)^2 / sum_j (x_j - x_bar)^2.
    xc = x - x.mean()
    h = 1.0 / k + xc ** 2 / (xc ** 2).sum()
    s = torch.sqrt(1 - h)
    z = lam * math.sqrt(2.0 / k)
    # Eq. (6): w = s / e * Psi(e / s), e = r / tau, Psi clips to [-Z, Z]: w = 1 while
    # |r| <= Z tau s, else Z tau s / |r| (written without dividing by tau, which may be 0).
    thr = z * tau[:, None] * s[None, :]
    absr = r.abs()
    w = torch.where(absr <= thr, torch.ones_like(r), thr / absr)
    keep = w > delta                                            # eqs. (8)-(9): extreme values
    w = w * keep
    yc = torch.where(keep, ys, fit)
    std = w.std(dim=1, keepdim=True) if k > 1 else torch.zeros_like(w[:, :1])
    wsig = w * std                                              # line 11, eq. (10)
    out_y = torch.empty_like(y).scatter_(1, order, yc)
    out_w = torch.empty_like(y).scatter_(1, order, wsig)
    return out_y, out_w


@register_rule
@dataclass
class ResidualReweighting(AggregationRule):
    """Residual-based reweighting (Fu, Xie, Li, Chen 2019, "Attack-resistant federated learning
    with residual-based reweighting", Alg. 1, eqs. (1)-(11)).

    Per parameter: repeated median regression of the clients' values on their ranks
    (eqs. (1)-(2)), residuals normalised by tau = gamma * median|r| * (1 + 5 / (K - 1)) with
    gamma = 1.48 (eqs. (3)-(5)), confidences w = sqrt(1 - h) / e * Psi(e / sqrt(1 - h)) with
    Psi clipping at Z = lambda * sqrt(2 / K), lambda = 2, and h the hat-matrix leverage
    (eqs. (6)-(7)); values with confidence <= delta are replaced by the line's value and get
    weight 0 (eqs. (8)-(9), delta = 0.01 as in the paper's MNIST experiments); model weight
    W_k = sum_n w_n^(k) sigma(w_n) (eq. (10)); output sum_k W_k y_k / sum_k W_k over the
    corrected values (eq. (11)). If every parameter's confidences have zero spread (all W_k
    = 0) the models are equally trusted and the corrected values are averaged uniformly.

    The rule is applied to updates: the regression is shift-equivariant, so aggregating
    updates or models w + update gives the same global model. Needs K >= 3 clients.
    """

    lam: float = 2.0
    delta: float = 0.01
    gamma: float = 1.48
    name = "residual"
    secagg_compatible = False
    citation = "Fu et al. 2019 (residual-based reweighting), Alg. 1"
    breakdown_point = 0.5
    breakdown_source = "Fu et al. 2019, Sec. 3: the repeated median's breakdown point is 50% (Siegel 1982)"

    def __call__(self, updates: ClientUpdates) -> Tensor:
        for key in ("lam", "gamma"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{self.name}: {key}={v!r} must be a finite number > 0")
        if not isinstance(self.delta, (int, float)) or not 0 <= self.delta < 1:
            raise ValueError(f"{self.name}: delta={self.delta!r} must lie in [0, 1)")
        k = updates.n
        if k < 3:
            raise ValueError(f"{self.name} needs at least 3 clients (a regression line through K points with "
                             f"leverage < 1); got {k}")
        x = revealed(updates)
        d = x.shape[1]
        corrected = torch.empty_like(x)
        weights = torch.zeros(k, dtype=torch.float64, device=x.device)
        step = max(1, _CHUNK_ELEMS // (k * k))
        for s in range(0, d, step):
            yc, wsig = residual_confidences(x[:, s:s + step].T, self.lam, self.delta, self.gamma)
            corrected[:, s:s + step] = yc.T
            weights += wsig.sum(dim=0, dtype=torch.float64)
        total = weights.sum()
        if not total > 0:
            self.last_weights = torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device)
            return corrected.mean(dim=0)
        self.last_weights = (weights / total).to(x.dtype)
        return (self.last_weights[:, None] * corrected).sum(dim=0)
