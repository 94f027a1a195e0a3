"""Adversarial regularization: membership privacy as a min-max game in local training.

Nasr, Shokri, Houmansadr, "Machine Learning with Membership Privacy using Adversarial
Regularization", CCS 2018, eq. (7) and Algorithm 1:

    min_f  max_h   L_D(f)  +  lambda * G_{f, D, D'}(h)

where h(x, y, f(x)) in (0, 1) is an inference model that tells members D from a
reference set D' of non-members drawn from the same distribution, and its gain is

    G = E_{(x,y) in D} log h(x, y, f(x)) + E_{(x',y') in D'} log(1 - h(x', y', f(x'))).

Algorithm 1 alternates, for every minibatch of the private data: ``k`` steps of h
ascending G on a member batch and a reference batch (f fixed), then one step of f on
the member batch descending ``L(f) + lambda * mean log h(x, y, f(x))`` (h fixed). The
Cronus appendix (Table 6) uses it as a local-training defense of FedAvg and Cronus
parties, with a reference set as large as each party's training data (D.1).

Here each party keeps its own inference model (and optimizer) across rounds, and its
reference set is its own held-out data: the simulation's ``client_holdout`` (set
``--client-holdout 0.5`` for a reference set as large as the training set), which the
party never trains f on and which audits never count as members.

:func:`train_clients_advreg` is the local trainer of :class:`protocols.simulation.Simulation`
when ``RunConfig.adv_reg > 0`` (a per-client loop, ``torch.optim.SGD`` as in
:func:`protocols.clients.train_loop`); :class:`AdvRegParty` is the per-party state that the
Cronus parties (:mod:`protocols.cronus`) use in their private-data steps.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from protocols.clients.local import batch_schedule

Tensor = torch.Tensor

__all__ = ["InferenceModel", "AdvRegParty", "check_lambda", "train_clients_advreg"]


def check_lambda(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"adv_reg={lam!r} must be a finite number >= 0 (lambda of Nasr et al. 2018; 0 turns it off)")
    return float(lam)


class InferenceModel(nn.Module):
    """h(x, y, f(x)) of Nasr et al. 2018 (Sec. 5, Fig. 2), at CPU scale: the prediction vector
    and the one-hot label through separate fully connected branches, concatenated, then a fully
    connected head with a sigmoid output (returned as logits; the sigmoid is in the loss). The
    prediction branch reads [p_y, the C - 1 largest probabilities], so that it sees the confidence
    profile and the true-label probability whatever the class."""

    def __init__(self, num_classes: int, hidden: int = 64):
        super().__init__()
        h2 = max(hidden // 2, 1)
        self.pred = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, h2), nn.ReLU())
        self.label = nn.Sequential(nn.Linear(num_classes, h2), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * h2, h2), nn.ReLU(), nn.Linear(h2, 1))
        self.num_classes = num_classes

    def forward(self, probs: Tensor, y: Tensor) -> Tensor:
        onehot = F.one_hot(y, self.num_classes).to(probs.dtype)
        feats = torch.cat([self.pred(torch.cat([probs.gather(1, y.view(-1, 1)),
                                                probs.sort(dim=1, descending=True).values[:, :-1]], 1)),
                           self.label(onehot)], dim=1)
        return self.head(feats).squeeze(1)


class AdvRegParty:
    """One party's side of Algorithm 1 (Nasr et al. 2018): its inference model h, h's Adam
    optimizer, and its reference set (indices into the training tensors).

    ``steps_h``: k, the inference-model steps per classifier step (Alg. 1; 1 here).
    """

    def __init__(self, lam: float, num_classes: int, reference: Tensor, seed: int, device,
                 steps_h: int = 1, lr_h: float = 1e-3, hidden: int = 64):
        self.lam = check_lambda(lam)
        if reference is None or len(reference) == 0:
            raise ValueError("adversarial regularization needs a non-empty reference set per party "
                             "(set --client-holdout, e.g. 0.5)")
        if not isinstance(steps_h, int) or steps_h < 1:
            raise ValueError(f"steps_h={steps_h!r} must be a positive integer (k of Nasr et al. Alg. 1)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.h = InferenceModel(num_classes, hidden).to(device)
        self.opt_h = torch.optim.Adam(self.h.parameters(), lr=lr_h)
        self.reference = reference
        self.steps_h = steps_h
        self.gen = torch.Generator().manual_seed(seed)

    def _reference_batch(self, x: Tensor, y: Tensor, size: int):
        pick = torch.randint(len(self.reference), (size,), generator=self.gen)
        ix = self.reference[pick.to(self.reference.device)]
        return x[ix], y[ix]

    def gain(self, model: nn.Module, xm: Tensor, ym: Tensor, xr: Tensor, yr: Tensor) -> Tensor:
        """G of eq. (7) on a member and a reference batch (to be maximised by h)."""
        sm = self.h(F.softmax(model(xm), 1), ym)
        sr = self.h(F.softmax(model(xr), 1), yr)
        return -(F.binary_cross_entropy_with_logits(sm, torch.ones_like(sm))
                 + F.binary_cross_entropy_with_logits(sr, torch.zeros_like(sr)))

    def step(self, model: nn.Module, opt_f: torch.optim.Optimizer, xb: Tensor, yb: Tensor,
             x_all: Tensor, y_all: Tensor, loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
        """One round of Algorithm 1 on member batch (xb, yb): k steps of h, then one of f.
        Returns the classifier's task loss."""
        for _ in range(self.steps_h):
            xr, yr = self._reference_batch(x_all, y_all, len(yb))
            with torch.no_grad():
                pm, pr = F.softmax(model(xb), 1), F.softmax(model(xr), 1)
            sm, sr = self.h(pm, yb), self.h(pr, yr)
            loss_h = F.binary_cross_entropy_with_logits(sm, torch.ones_like(sm)) + \
                F.binary_cross_entropy_with_logits(sr, torch.zeros_like(sr))
            self.opt_h.zero_grad(set_to_none=True)
            loss_h.backward()
            self.opt_h.step()
        logits = model(xb)
        task = F.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, yb)
        # lambda * mean log h(x, y, f(x)) on members (h fixed: only f's optimizer steps)
        log_h = F.logsigmoid(self.h(F.softmax(logits, 1), yb)).mean()
        opt_f.zero_grad(set_to_none=True)
        (task + self.lam * log_h).backward()
        opt_f.step()
        return task.detach()


def train_clients_advreg(sim, ids: Tensor, parts: Sequence[Tensor], start: Tensor) -> Tensor:
    """Local training of :class:`protocols.simulation.Simulation` clients with adversarial
    regularization (strength ``sim.cfg.adv_reg``): the schedule and optimizer of
    :func:`protocols.clients.train_loop` (SGD, ``cfg.local_epochs`` passes over seeded
    minibatches), each classifier step preceded by its inference model's step (Alg. 1).
    Returns updates [n, d] (local - start). Each client's inference model persists across
    rounds; its reference set is its held-out data (``sim.client_holdout``).
    """
    cfg = sim.cfg
    lam = check_lambda(cfg.adv_reg)
    if getattr(sim, "dpc", None) is not None:
        raise ValueError(f"adv_reg={cfg.adv_reg} with --dp record is not supported: Opacus DP-SGD clients "
                         "train with their own optimizer; use one of the two defenses")
    if sim.client_holdout is None:
        raise ValueError(f"adv_reg={cfg.adv_reg} needs each client's reference set of non-members (Nasr et al. "
                         "2018): set --client-holdout F (e.g. 0.5, a reference set as large as the training set)")
    states: Dict[int, AdvRegParty] = sim.__dict__.setdefault("_advreg_parties", {})
    x, y = sim.data.x_train, sim.data.y_train
    index, mask = batch_schedule(parts, cfg.local_epochs, cfg.batch_size, sim.gen)
    out = []
    for k, cid in enumerate(ids.tolist()):
        if cid not in states:
            states[cid] = AdvRegParty(lam, sim.data.num_classes, sim.client_holdout[cid],
                                      seed=cfg.seed * 1009 + cid, device=x.device)
        party = states[cid]
        local = copy.deepcopy(sim.model)
        torch.nn.utils.vector_to_parameters(start[k].clone(), local.parameters())
        opt = torch.optim.SGD(local.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cid_t = torch.tensor(cid, device=x.device)
        for s in range(index.shape[1]):
            m = mask[k, s]
            if not m.any():
                continue
            idx = index[k, s][m].to(x.device)
            xb, yb = x[idx], y[idx]
            if sim.batch_transform is not None:
                xb, yb = sim.batch_transform(xb, yb, cid_t)
            party.step(local, opt, xb, yb, x, y)
        out.append(torch.nn.utils.parameters_to_vector(local.parameters()).detach() - start[k])
    return torch.stack(out)
