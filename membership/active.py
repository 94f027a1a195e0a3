"""Active membership inference by gradient ascent (Nasr, Shokri, Houmansadr, S&P 2019;
Cronus appendix B.5, "Active membership inference attacks", Table 6 and Figure 3).

A malicious server (or participant) pushes the model *up* the loss of the target
records before the owners train:

    theta_m = theta_a + gamma * dL_x / dtheta_a                       (Cronus B.5)

If a target x is in some party's training data, that party's SGD on theta_m sharply
reduces the loss of x (and the norm of its gradient); if x is a non-member, its loss
stays almost unchanged. The adversary then compares the model it broadcast
(``before``) with what it observes next (``after``: a client's model or the new
aggregate): the larger the drop, the more likely a member.

* Malicious server: broadcast ``gradient_ascent(model, theta_a, targets, gamma)``
  instead of theta_a, then score with :func:`active_scores` (or the ``loss_drop`` /
  ``gradient_norm_drop`` attacks, or the white-box attack on the two views).
* Malicious participant: submit ``gradient_ascent(...) - theta_a`` as its update; the
  ascent then reaches the others only through the aggregate.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from .features import outputs_and_losses, per_sample_grad_norm
from .views import ModelView, as_records, flatten_params, unflatten_params

Tensor = torch.Tensor

__all__ = ["gradient_ascent", "active_scores"]


def gradient_ascent(model: nn.Module, params_flat: Optional[Tensor], target_x: Tensor, target_y: Tensor,
                    gamma: float, steps: int = 1) -> Tensor:
    """``theta + gamma * grad_theta L(targets)``, repeated ``steps`` times; a new flat vector.

    ``L`` is the mean cross-entropy over the target records (so ``gamma`` does not
    scale with their number); each step recomputes the gradient at the current
    parameters. ``params_flat=None`` starts from ``model``'s own parameters. The
    module itself is not modified; the result lies on ``params_flat``'s device.
    """
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma={gamma!r} must be a finite number > 0 (the ascent step size)")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    targets = as_records((target_x, target_y), "targets")
    theta = flatten_params(model) if params_flat is None else params_flat.detach()
    unflatten_params(model, theta)  # validates the length with a clear message
    x, y = targets.x.to(theta.device), targets.y.to(theta.device)

    def loss(flat):
        return F.cross_entropy(functional_call(model, unflatten_params(model, flat), (x,)), y)

    was = model.training
    model.eval()
    try:
        for _ in range(steps):
            theta = theta + gamma * grad(loss)(theta).detach()
    finally:
        model.train(was)
    return theta


def active_scores(model: nn.Module, before: Optional[Tensor], after: Optional[Tensor], x: Tensor, y: Tensor,
                  signal: str = "loss", layers: str = "last") -> Tensor:
    """Membership scores from the change between two views: ``signal(before) - signal(after)``.

    ``signal="loss"``: the per-record loss drop; ``"grad_norm"``: the drop of the
    per-record gradient norm (``layers="last"``, the quantity of Cronus Fig. 3, or
    ``"all"``). ``before`` is typically the ascended broadcast, ``after`` the next view
    (flat vectors; ``None`` uses ``model``'s own parameters). Higher = member.
    """
    if signal not in ("loss", "grad_norm"):
        raise ValueError(f"signal={signal!r} is not supported; use 'loss' or 'grad_norm'")
    records = as_records((x, y), "records")
    vb, va = ModelView(model, before, "before"), ModelView(model, after, "after")
    if signal == "loss":
        return outputs_and_losses(vb, records)[1] - outputs_and_losses(va, records)[1]
    return per_sample_grad_norm(vb, records, layers=layers) - per_sample_grad_norm(va, records, layers=layers)
