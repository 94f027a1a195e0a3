"""Local client training: all sampled clients at once with ``torch.func``, or a loop.

Both paths run the same algorithm on the same batch schedule: for each client,
``epochs`` passes over a seeded permutation of its samples in minibatches of
``batch_size`` (the last one partial), SGD with optional momentum and weight
decay (``torch.optim.SGD`` semantics). The vectorized path stacks the clients'
parameters and runs ``vmap(grad(loss))`` with a per-sample mask, so clients
with fewer steps simply idle; the loop path uses ``torch.optim.SGD`` per client.
They agree to float tolerance (tests/test_clients.py).

Updates are returned as a flattened [n_clients, d] tensor ``local - global`` on
the model's device, in ``model.parameters()`` order.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Tensor = torch.Tensor
# (x [..., B, *shape], y [..., B], client ids [...]) -> (x, y), applied per batch (e.g. label flips):
# the vmap path passes ids [n] and y [n, B], the loop path a 0-dim id and y [B].
BatchTransform = Callable[[Tensor, Tensor, Tensor], Tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class LocalTraining:
    """Hyper-parameters of local SGD."""

    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be a positive integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")


def batch_schedule(client_indices: Sequence[Tensor], epochs: int, batch_size: int,
                   generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Minibatch schedule shared by both training paths.

    Returns ``index`` [n, S, B] (dataset indices, 0 where padded) and ``mask``
    [n, S, B] (True for real samples), where S is the largest number of steps
    of any client. Permutations are drawn client by client, epoch by epoch.
    """
    sizes = [len(ix) for ix in client_indices]
    if any(s == 0 for s in sizes):
        raise ValueError(f"client(s) {[k for k, s in enumerate(sizes) if s == 0]} have no samples")
    steps = [epochs * math.ceil(s / batch_size) for s in sizes]
    S = max(steps)
    n = len(client_indices)
    index = torch.zeros(n, S, batch_size, dtype=torch.long)
    mask = torch.zeros(n, S, batch_size, dtype=torch.bool)
    for k, ix in enumerate(client_indices):
        ix = ix.cpu()
        per_epoch = math.ceil(len(ix) / batch_size)
        for e in range(epochs):
            perm = ix[torch.randperm(len(ix), generator=generator)]
            pad = per_epoch * batch_size - len(ix)
            rows = torch.cat([perm, perm.new_zeros(pad)]).view(per_epoch, batch_size)
            m = torch.cat([torch.ones(len(ix), dtype=torch.bool), torch.zeros(pad, dtype=torch.bool)])
            index[k, e * per_epoch:(e + 1) * per_epoch] = rows
            mask[k, e * per_epoch:(e + 1) * per_epoch] = m.view(per_epoch, batch_size)
    return index, mask


def _flatten_stacked(params: Dict[str, Tensor], names: Sequence[str], n: int) -> Tensor:
    return torch.cat([params[k].reshape(n, -1) for k in names], dim=1)


def _unflatten_stacked(flat: Tensor, model: nn.Module) -> Dict[str, Tensor]:
    out, offset = {}, 0
    for k, p in model.named_parameters():
        out[k] = flat[:, offset:offset + p.numel()].reshape((flat.shape[0],) + p.shape).clone()
        offset += p.numel()
    return out


def train_vmap(model: nn.Module, x: Tensor, y: Tensor, client_indices: Sequence[Tensor],
               cfg: LocalTraining, generator: torch.Generator,
               batch_transform: Optional[BatchTransform] = None,
               client_ids: Optional[Tensor] = None, start: Optional[Tensor] = None) -> Tensor:
    """Train every client at once; return updates [n, d] (local - start).

    Clients start from ``model``'s parameters, or from their own row of ``start``
    [n, d] (flattened, e.g. w + u_i for personalized RFA).
    """
    device = next(model.parameters()).device
    n = len(client_indices)
    index, mask = batch_schedule(client_indices, cfg.epochs, cfg.batch_size, generator)
    index, mask = index.to(device), mask.to(device)
    ids = (client_ids if client_ids is not None else torch.arange(n)).to(device)
    names = [k for k, _ in model.named_parameters()]
    base = {k: p.detach() for k, p in model.named_parameters()}
    if start is None:
        start = torch.nn.utils.parameters_to_vector(base.values()).unsqueeze(0).expand(n, -1)
    if start.shape != (n, sum(p.numel() for p in base.values())):
        raise ValueError(f"start must have shape [{n}, d], got {tuple(start.shape)}")
    params = _unflatten_stacked(start, model)
    fdtype = start.dtype   # masks in the parameters' dtype: inputs may be integer token ids
    bufs = {k: torch.zeros_like(p) for k, p in params.items()} if cfg.momentum else None

    def loss_fn(p, xb, yb, mb):
        logits = functional_call(model, p, (xb,))
        losses = F.cross_entropy(logits, yb, reduction="none")
        return (losses * mb).sum() / mb.sum().clamp(min=1.0)

    grad_fn = vmap(grad(loss_fn))
    for s in range(index.shape[1]):
        idx = index[:, s]
        xb, yb = x[idx], y[idx]
        if batch_transform is not None:
            xb, yb = batch_transform(xb, yb, ids)
        mb = mask[:, s].to(fdtype)
        g = grad_fn(params, xb, yb, mb)
        active = (mb.sum(dim=1) > 0).to(fdtype)
        for k in names:
            shape = (n,) + (1,) * (params[k].ndim - 1)
            a = active.view(shape)
            step = g[k] + cfg.weight_decay * params[k] if cfg.weight_decay else g[k]
            if bufs is not None:
                bufs[k] = torch.where(a > 0, cfg.momentum * bufs[k] + step, bufs[k])
                step = bufs[k]
            params[k] = params[k] - cfg.lr * a * step
    return _flatten_stacked(params, names, n) - start


def train_loop(model: nn.Module, x: Tensor, y: Tensor, client_indices: Sequence[Tensor],
               cfg: LocalTraining, generator: torch.Generator,
               batch_transform: Optional[BatchTransform] = None,
               client_ids: Optional[Tensor] = None, start: Optional[Tensor] = None) -> Tensor:
    """The same training, one client after another with ``torch.optim.SGD``."""
    device = next(model.parameters()).device
    index, mask = batch_schedule(client_indices, cfg.epochs, cfg.batch_size, generator)
    n = len(client_indices)
    ids = (client_ids if client_ids is not None else torch.arange(n)).to(device)
    if start is None:
        start = torch.nn.utils.parameters_to_vector(model.parameters()).detach().unsqueeze(0).expand(n, -1)
    out = []
    for k in range(n):
        local = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(start[k].clone(), local.parameters())
        opt = torch.optim.SGD(local.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        for s in range(index.shape[1]):
            m = mask[k, s]
            if not m.any():
                continue
            idx = index[k, s][m].to(device)
            xb, yb = x[idx], y[idx]
            if batch_transform is not None:
                xb, yb = batch_transform(xb, yb, ids[k])
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(local(xb), yb).backward()
            opt.step()
        out.append(torch.nn.utils.parameters_to_vector(local.parameters()).detach() - start[k])
    return torch.stack(out)


TRAINERS = {"vmap": train_vmap, "loop": train_loop}


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> Tuple[float, float]:
    """Accuracy and mean cross-entropy loss of ``model`` on (x, y)."""
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size])
        loss_sum += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(y), loss_sum / len(y)
