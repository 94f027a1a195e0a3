"""RobustFilter on prediction vectors, batched over public examples (Cronus appendix C, Alg. 6),
and the soft-label cross-entropy of the parties' distillation step."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from protocols.rules.robustfilter import filter_count

Tensor = torch.Tensor


def robustfilter_batched(x: Tensor, epsilon: float = 0.2, iterations: int = 2,
                         threshold: Optional[float] = None):
    """RobustFilter (Cronus appendix C, Alg. 6, practical variant) on B independent point sets.

    ``x`` [B, n, k]: for each b, n points in R^k (Cronus: the n parties' prediction vectors
    of public example b). Each iteration projects the kept, centred points of every set on
    the top eigenvector v* of their covariance and removes the round(epsilon * n / 2) with
    the largest |v* . (Y - Y_bar)|; after ``iterations`` iterations the output is the mean of
    what remains. ``threshold``: a set stops early once its top eigenvalue lambda* <= threshold.
    The same algorithm as the ``robustfilter`` rule (:class:`protocols.rules.robustfilter
    .RobustFilter`), applied to every set at once from batched [B, n, n] Gram matrices.

    Returns ``(mean [B, k], kept [B, n] bool)``.
    """
    if x.ndim != 3:
        raise ValueError(f"robustfilter_batched needs x of shape [B, n, k], got {tuple(x.shape)}")
    if not isinstance(epsilon, (int, float)) or not 0 <= epsilon < 1:
        raise ValueError(f"robustfilter: epsilon={epsilon!r} must lie in [0, 1) (the corrupted fraction)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"robustfilter: iterations={iterations!r} must be an integer >= 1")
    B, n, _ = x.shape
    per_iter = filter_count(epsilon, n)
    if per_iter * iterations >= n:
        raise ValueError(f"robustfilter: removing {per_iter} of n={n} points in each of {iterations} iterations "
                         f"leaves none; lower epsilon={epsilon} or iterations")
    if not torch.isfinite(x).all():
        raise ValueError("robustfilter: non-finite prediction values; a diverged party must be fixed or excluded")
    keep = torch.ones(B, n, dtype=torch.bool, device=x.device)
    if per_iter == 0:
        return x.mean(dim=1), keep
    xd = x.to(torch.float64)
    for _ in range(iterations):
        w = keep.to(xd.dtype)
        m = w.sum(dim=1, keepdim=True)                              # [B, 1] kept per set
        mean = (xd * w[..., None]).sum(dim=1) / m                   # [B, k]
        c = (xd - mean[:, None]) * w[..., None]                     # dropped rows are zero
        gram = c @ c.transpose(1, 2)                                # [B, n, n]
        evals, evecs = torch.linalg.eigh(gram)
        top = evals[:, -1].clamp_min(0)
        # as top_direction_scores: C v* = s u, so |v* . (Y - Y_bar)| = s |u|
        scores = top.sqrt()[:, None] * evecs[:, :, -1].abs()
        scores = scores.masked_fill(~keep, float("-inf"))
        active = torch.ones(B, dtype=torch.bool, device=x.device)
        if threshold is not None:
            active = (top / m.squeeze(1)) > threshold
        drop = scores.topk(per_iter, dim=1).indices                 # [B, per_iter]
        dropped = torch.zeros_like(keep).scatter_(1, drop, True) & active[:, None]
        keep = keep & ~dropped
    w = keep.to(x.dtype)
    return (x * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True), keep


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of -sum_c t_c log softmax(logits)_c (distillation on soft labels)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
