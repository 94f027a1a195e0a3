"""Personalized RFA: the pure-math pieces of Algorithm 4.

Pillutla, Kakade, Harchaoui 2022, Algorithm 4 (Sec. IV-B, "Personalized RFA"),
following the residual learning of Agarwal et al. 2020: predictions on device i
use w + u_i, with shared parameters w (aggregated) and personal parameters u_i
(never leave the device). Objective: min_{w, U} sum_i alpha_i E_{z~D_i} f(w + u_i; z).

What the protocols layer must do each round t, for each selected client i (the
training loop lives there):

1. ``u = state.gather(ids)``; train u_i for tau steps on f(w^(t) + u_i; z) with w^(t)
   fixed (Alg. 4 lines 1-3);
2. starting from w^(t), train w_i for tau steps on f(w_i + u_i; z) with the new u_i
   fixed (lines 4-5): the shared update is learnt on the residual;
3. ``state.scatter(ids, u)`` (line 6: u_i persists across rounds, per client);
4. send only Delta_i = w_i - w^(t) as the client's update in a
   ``secagg.ClientUpdates`` and aggregate it with :func:`aggregate_shared`
   (RFA, one-step RFA, or FedAvg); the server applies w^(t+1) = w^(t) + aggregate;
5. evaluate each client with :func:`personalized_parameters` on its own held-out
   data and report :func:`average_personalized_accuracy`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .onestep import one_step
from .weiszfeld import RFAResult, smoothed_weiszfeld

Tensor = torch.Tensor

_METHODS = ("rfa", "rfa-onestep", "fedavg")


class PersonalState:
    """The personal parameters u_i of every client, kept across rounds (Alg. 4, line 6).

    Parameters
    ----------
    n_clients, dim : int
        Number of clients and the flattened model size.
    device, dtype : where u lives (the model's device and dtype).

    u_i starts at 0, so a client that has never trained predicts with w alone.
    """

    def __init__(self, n_clients: int, dim: int, *, device="cpu", dtype=torch.float32):
        if not isinstance(n_clients, int) or n_clients < 1:
            raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive integer (the flattened model size)")
        self.u = torch.zeros(n_clients, dim, device=device, dtype=dtype)
        self.trained = torch.zeros(n_clients, dtype=torch.bool, device=device)

    def _ids(self, ids) -> Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.u.device).reshape(-1)
        n = self.u.shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise IndexError(f"client ids {ids.tolist()[:10]} out of range [0, {n}); ids index the "
                             "clients this state was created for")
        return ids

    def gather(self, ids) -> Tensor:
        """u_i for the clients ``ids`` [m, dim] (a copy)."""
        return self.u[self._ids(ids)].clone()

    def scatter(self, ids, values: Tensor) -> None:
        """Store the clients' new u_i (values [m, dim])."""
        ids = self._ids(ids)
        if values.shape != (ids.numel(), self.u.shape[1]):
            raise ValueError(f"values must have shape [{ids.numel()}, {self.u.shape[1]}], "
                             f"got {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("personal parameters must be finite; a client's personal training diverged")
        self.u[ids] = values.to(self.u.dtype)
        self.trained[ids] = True

    def state_dict(self) -> dict:
        return {"u": self.u.clone(), "trained": self.trained.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["u"].shape != self.u.shape:
            raise ValueError(f"state u has shape {tuple(state['u'].shape)}, expected {tuple(self.u.shape)}")
        self.u.copy_(state["u"])
        self.trained.copy_(state["trained"])


def personalized_parameters(w: Tensor, u: Tensor) -> Tensor:
    """The parameters each client predicts with: w + u_i, [m, dim] (Alg. 4)."""
    if w.ndim != 1 or u.ndim != 2 or u.shape[1] != w.shape[0]:
        raise ValueError(f"w must be [dim] and u [m, dim] with the same dim; got {tuple(w.shape)} "
                         f"and {tuple(u.shape)}")
    return w.unsqueeze(0) + u


def aggregate_shared(updates, method: str = "rfa", alphas: Optional[Tensor] = None,
                     **kwargs) -> Tuple[Tensor, Optional[RFAResult]]:
    """Aggregate the shared-parameter updates w_i - w^(t) (Alg. 4 with Alg. 1 line 9).

    ``method``: "rfa" (Algorithm 2, :func:`rfa.smoothed_weiszfeld`), "rfa-onestep"
    (Algorithm 3) or "fedavg" (eq. 3, one call weighted by alphas, default
    ``updates.num_samples``). Only the shared part is aggregated; personal
    parameters never enter the oracle. Returns (aggregate, RFAResult or None).
    """
    if method == "rfa":
        res = smoothed_weiszfeld(updates, alphas, **kwargs)
        return res.aggregate, res
    if method == "rfa-onestep":
        res = one_step(updates, alphas, **kwargs)
        return res.aggregate, res
    if method == "fedavg":
        if kwargs:
            raise ValueError(f"method='fedavg' takes no parameters, got {sorted(kwargs)}")
        weight = updates.num_samples if alphas is None else alphas
        return updates.secure_average(weight=weight, label="fedavg-personalized"), None
    raise ValueError(f"method={method!r}; choose one of {_METHODS}")


def average_personalized_accuracy(correct: Tensor, total: Tensor) -> float:
    """Mean over clients of each client's accuracy on its own held-out data (Sec. V-C).

    ``correct`` and ``total`` hold per-client counts [n]; clients without held-out
    data are left out (an error if none has any).
    """
    correct = torch.as_tensor(correct, dtype=torch.float64)
    total = torch.as_tensor(total, dtype=torch.float64)
    if correct.shape != total.shape or correct.ndim != 1:
        raise ValueError(f"correct and total must be [n] per-client counts, got {tuple(correct.shape)} "
                         f"and {tuple(total.shape)}")
    if (correct < 0).any() or (correct > total).any():
        raise ValueError("need 0 <= correct <= total for every client")
    has = total > 0
    if not has.any():
        raise ValueError("no client has held-out data; give clients a test split")
    return float((correct[has] / total[has]).mean())
