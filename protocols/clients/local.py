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

Memory: the vectorized path trains the clients in groups (``LocalTraining.client_batch``,
by default sized by :func:`client_group_size` from the model and the free memory): each
group's stacked parameters, gradients, momentum and activations exist only while it
trains, so memory is O(n d) for the returned updates plus O(group d) for the work. Every
client's batch schedule is drawn up front, so the updates equal the all-at-once path's.
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
    # Clients trained together by the vmap path: None sizes the groups from the model and the
    # free memory (client_group_size); the updates do not depend on it.
    client_batch: Optional[int] = None

    def __post_init__(self):
        if self.client_batch is not None and (not isinstance(self.client_batch, int) or self.client_batch < 1):
            raise ValueError(f"client_batch={self.client_batch!r} must be a positive integer (or None: sized "
                             "from the free memory)")
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
    ids = (client_ids if client_ids is not None else torch.arange(n)).to(device)
    base = {k: p.detach() for k, p in model.named_parameters()}
    d = sum(p.numel() for p in base.values())
    if start is None:
        start = torch.nn.utils.parameters_to_vector(base.values()).unsqueeze(0).expand(n, -1)
    if start.shape != (n, d):
        raise ValueError(f"start must have shape [{n}, d], got {tuple(start.shape)}")
    group = cfg.client_batch or client_group_size(model, x[:1], n, cfg)
    out = torch.empty((n, d), dtype=start.dtype, device=device)
    for a in range(0, n, group):
        b = min(n, a + group)
        # the group's steps: the all-at-once path idles these clients after them
        busy = mask[a:b].any(dim=2).any(dim=0)
        steps = int(busy.nonzero().max()) + 1 if bool(busy.any()) else 0
        idx, msk = index[a:b, :steps].to(device), mask[a:b, :steps].to(device)
        out[a:b] = _train_group(model, x, y, idx, msk, cfg, batch_transform, ids[a:b], start[a:b])
    return out


def _train_group(model: nn.Module, x: Tensor, y: Tensor, index: Tensor, mask: Tensor, cfg: LocalTraining,
                 batch_transform: Optional[BatchTransform], ids: Tensor, start: Tensor) -> Tensor:
    """vmap(grad) SGD of one group of clients over its batch schedule; returns local - start."""
    n = start.shape[0]
    names = [k for k, _ in model.named_parameters()]
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


def free_memory_bytes(device: torch.device) -> int:
    """Memory a run may still take on ``device``: CUDA's free memory, or the host's MemAvailable
    (Linux; elsewhere 4 GiB is assumed)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:                      # pragma: no cover - not Linux
        pass
    return 4 << 30


def client_group_size(model: nn.Module, x_example: Tensor, n: int, cfg: LocalTraining,
                      budget: Optional[int] = None) -> int:
    """Clients per vmap group: a quarter of the free memory (on a CPU at most 2 GiB; or ``budget``
    bytes) over what one client costs while it trains, at least 1 and at most n.

    One client holds about six copies of the parameters (stacked parameters, gradients, momentum,
    the step and the new parameters) and, per example of a minibatch, its activations and their
    gradients (measured by one forward pass on ``x_example`` with hooks, times 3 for autograd).
    """
    device = next(model.parameters()).device
    itemsize = next(model.parameters()).element_size()
    d = sum(p.numel() for p in model.parameters())
    acts = [0]

    def hook(_m, _i, out):
        if isinstance(out, Tensor):
            acts[0] += out.numel()
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x_example[:1].to(device))
    finally:
        for h in handles:
            h.remove()
    per_client = itemsize * (6 * d + 3 * cfg.batch_size * acts[0]) + 2 * cfg.batch_size * x_example[:1].nbytes
    if budget is None:
        # a quarter of what is free; on a CPU at most 2 GiB: larger groups train no faster there
        budget = free_memory_bytes(device) // 4
        if device.type == "cpu":
            budget = min(budget, 2 << 30)
    return max(1, min(n, int(budget // max(1, per_client))))


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
