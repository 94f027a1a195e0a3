"""White-box membership inference attack of Nasr, Shokri and Houmansadr, "Comprehensive
Privacy Analysis of Deep Learning: Passive and Active White-box Inference Attacks
against Centralized and Federated Learning", IEEE S&P 2019 (arXiv:1812.00910), in the
configuration of the Cronus appendix (D.1: last-layer gradients and outputs, plus the
prediction and its cross-entropy loss; Adam, learning rate 0.0001, 100 epochs; B.5 and
Table 6 for the passive/active federated results).

The attack network has **one component per feature**, whose embeddings are
concatenated and fed to a fully connected **encoder** with a sigmoid output (the
membership probability):

* output vector  [V*C]          -> FC -> ReLU -> FC -> ReLU
* loss           [V]            -> FC -> ReLU -> FC -> ReLU
* one-hot label  [C]            -> FC -> ReLU -> FC -> ReLU
* last-layer gradient [V, out, in+1] -> Conv2d(V, filters, kernel (1, in+1)) -> ReLU
  (each filter reads one output unit's gradient row at a time) -> FC -> ReLU -> FC -> ReLU
* encoder: concat -> FC -> ReLU -> FC -> ReLU -> FC -> sigmoid

V is the number of views (e.g. the same model at several rounds, or the ascended
broadcast and the next round's model in the active attack): features of every view
are stacked, as Nasr et al. combine the observations of several epochs. Widths are
small (64/32-unit components, 32 conv filters, dropout 0.2; Nasr et al. use wider
layers) so that the attack trains in seconds on a CPU; all are parameters.

Training: binary cross-entropy (class-balanced) on the attacker's known members
(label 1) and non-members (label 0), Adam with ``lr=1e-4`` (paper), minibatches,
``epochs`` passes (paper: 100; default 50, half the CPU time — on 50+50 known
records of an overfit digits MLP, 50 and 100 epochs gave AUCs within 0.01 of each
other). Feature columns are standardised with the training set's mean and
standard deviation. Everything is seeded by ``seed``; a member is predicted when the
output is >= 0.5.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..features import Features, record_features
from ..views import ModelView, Records
from .base import MembershipAttack

Tensor = torch.Tensor


def _mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden // 2), nn.ReLU())


class AttackNetwork(nn.Module):
    """The per-feature components and the encoder of Nasr et al.'s attack model."""

    def __init__(self, n_views: int, n_classes: int, grad_shape, hidden: int = 64, grad_filters: int = 32,
                 dropout: float = 0.2):
        super().__init__()
        out_units, in_units = int(grad_shape[0]), int(grad_shape[1])
        h2 = hidden // 2
        self.output = _mlp(n_views * n_classes, hidden, dropout)
        self.loss = _mlp(n_views, hidden, dropout)
        self.label = _mlp(n_classes, hidden, dropout)
        self.grad_conv = nn.Conv2d(n_views, grad_filters, kernel_size=(1, in_units))
        self.grad = _mlp(grad_filters * out_units, hidden, dropout)
        self.encoder = nn.Sequential(nn.Linear(4 * h2, hidden), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, h2), nn.ReLU(), nn.Linear(h2, 1))

    def forward(self, output: Tensor, loss: Tensor, label: Tensor, grad: Tensor) -> Tensor:
        """Logit of the membership probability, [N]."""
        g = F.relu(self.grad_conv(grad)).flatten(1)
        z = torch.cat([self.output(output.flatten(1)), self.loss(loss), self.label(label), self.grad(g)], dim=1)
        return self.encoder(z).squeeze(1)


class WhiteboxAttack(MembershipAttack):
    """Nasr et al. (S&P 2019) white-box attack; see the module docstring.

    Parameters: ``epochs`` (default 50; paper 100), ``lr`` (Adam, paper 1e-4), ``batch_size``,
    ``hidden`` (component width), ``grad_filters`` (conv filters of the gradient
    component), ``dropout``, ``last_layer`` (module whose gradient is used; default the
    last ``nn.Linear``), ``seed``.
    """

    name = "whitebox"
    requires_fit = True

    def __init__(self, epochs: int = 50, lr: float = 1e-4, batch_size: int = 16, hidden: int = 64,
                 grad_filters: int = 32, dropout: float = 0.2, last_layer: Optional[str] = None, seed: int = 0):
        super().__init__()
        for k, v in (("epochs", epochs), ("batch_size", batch_size), ("hidden", hidden),
                     ("grad_filters", grad_filters)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k}={v!r} must be a positive integer")
        if hidden < 2:
            raise ValueError(f"hidden={hidden!r} must be >= 2")
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0 (paper: 1e-4)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} must lie in [0, 1)")
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.hidden, self.grad_filters, self.dropout = hidden, grad_filters, dropout
        self.last_layer, self.seed = last_layer, seed
        self.network: Optional[AttackNetwork] = None
        self.history: List[float] = []

    # -- features -------------------------------------------------------------------
    def features(self, views: List[ModelView], records: Records) -> Features:
        return record_features(views, records, last_layer=self.last_layer)

    def _standardise(self, f: Features) -> Features:
        st = self._stats
        return Features((f.output - st["output"][0]) / st["output"][1], (f.loss - st["loss"][0]) / st["loss"][1],
                        f.label, (f.grad - st["grad"][0]) / st["grad"][1])

    # -- fit / score ----------------------------------------------------------------
    def _fit(self, views, members, nonmembers):
        fm, fn = self.features(views, members), self.features(views, nonmembers)
        feats = Features.cat([fm, fn])
        dev = feats.loss.device
        target = torch.cat([torch.ones(len(fm), device=dev), torch.zeros(len(fn), device=dev)])
        self._stats = {k: (getattr(feats, k).mean(0), getattr(feats, k).std(0, unbiased=False).clamp(min=1e-6))
                       for k in ("output", "loss", "grad")}
        self._shape = (feats.output.shape[1:], tuple(feats.grad.shape[1:]))
        x = self._standardise(feats)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = AttackNetwork(feats.n_views, feats.label.shape[1], feats.grad.shape[2:], self.hidden,
                                self.grad_filters, self.dropout).to(dev)
            gen = torch.Generator().manual_seed(self.seed)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            pos_weight = torch.tensor(len(fn) / len(fm), device=dev)
            n = len(target)
            self.history = []
            net.train()
            for _ in range(self.epochs):
                perm = torch.randperm(n, generator=gen).to(dev)
                total = 0.0
                for i in range(0, n, self.batch_size):
                    b = perm[i:i + self.batch_size]
                    logit = net(x.output[b], x.loss[b], x.label[b], x.grad[b])
                    loss = F.binary_cross_entropy_with_logits(logit, target[b], pos_weight=pos_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(b)
                self.history.append(total / n)
        net.eval()
        self.network = net
        self.threshold, self.threshold_source = 0.5, "attack"

    def _score(self, views, records):
        f = self.features(views, records)
        if (f.output.shape[1:], tuple(f.grad.shape[1:])) != self._shape:
            raise ValueError(f"features of shape {tuple(f.output.shape[1:])}/{tuple(f.grad.shape[1:])} do not match "
                             f"the fitted {tuple(self._shape[0])}/{self._shape[1]}; score with the same "
                             "architecture and number of views as in fit")
        x = self._standardise(f)
        with torch.no_grad():
            logit = self.network(x.output, x.loss, x.label, x.grad)
        return torch.sigmoid(logit.double())
