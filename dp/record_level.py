"""Record-level DP: each client's local training is DP-SGD, through Opacus.

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with
Differential Privacy" (CCS 2016), Algorithm 1 (DP-SGD): Poisson-sampled lots of rate q,
per-example gradients clipped to L2 norm C (``max_grad_norm``), N(0, (z C)^2) added to
their sum, divided by the expected lot size; the privacy of T steps is the sampled
Gaussian mechanism composed T times (moments accountant; here Opacus's RDP accountant,
Mironov 2017, or its PRV accountant).

Everything is Opacus's: ``PrivacyEngine.make_private(module, optimizer, data_loader,
noise_multiplier, max_grad_norm, poisson_sampling=True)`` wraps the model (per-sample
gradient hooks), the optimizer (clipping and noise) and the loader (Poisson sampling),
and attaches the engine's accountant to the optimizer's steps.

One :class:`RecordLevelClient` per client, kept for the whole run: the wrapped model,
the DP optimizer, the Poisson loader and the accountant are built once; each round
loads the broadcast parameters into the wrapped model, resets the optimizer's momentum
(as the plain per-client loop does with a fresh ``torch.optim.SGD``) and trains. The
accountant persists, so the client's epsilon grows with the rounds it took part in.
The records of the DP guarantee are the client's own training examples; delta must be
below 1/n_records.

Randomness (what holds). Opacus's own secure mode (``PrivacyEngine(secure_mode=True)``)
needs ``torchcsprng``, which has no release for current PyTorch (its last, 0.2.1, is for
torch 1.8) and cannot be installed here. By default (``seeded_noise=False``) each client
therefore runs Opacus's secure-mode *noise construction* (``DPOptimizer(secure_mode=True)``:
the noise is the sum of four ``torch.normal`` draws divided by 2, after a discarded draw,
Holohan and Braghin 2021, "Secure Random Sampling in Differential Privacy", Sec. 5.1,
which defeats the floating-point attack of Jin et al. 2022 on a single float Gaussian)
with its Poisson lots and noise drawn from torch generators (CPU for the lots, the
model's device for the noise) that are reseeded with 63 fresh bits of ``os.urandom``
before every lot and every noise draw (:func:`dp.noise.os_seeded_torch_generator`).
These generators are not CSPRNGs (MT19937 on the CPU, Philox on CUDA): what holds is
that the seed, the lots and the noise never derive from the run seed, and that
predicting one step's lot or noise means guessing that step's 63-bit seed; what does
not is a cryptographic guarantee on the stream within a step (state recovery from
outputs is out of the adversary's view: it sees only model updates, never raw draws).
``seeded_noise=True`` gives the earlier reproducible behaviour (lots and plain
``torch.normal`` noise from generators seeded by ``generator``): for paired experiments
only; the epsilon does not hold against anyone who knows the seed.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .accounting import (DEFAULT_ACCOUNTANT, check_accountant, check_clip, check_delta, check_noise_multiplier,
                         noise_for_epsilon)
from .noise import check_seeded, os_seed

Tensor = torch.Tensor
Seed = Union[int, torch.Generator]


class _BatchedTensorDataset(TensorDataset):
    """TensorDataset that fetches a whole batch with one indexing op (DataLoader ``__getitems__``)."""

    def __getitems__(self, indices: List[int]):
        if len(indices) == 0:
            return []   # Opacus builds the empty batch (Poisson sampling can draw none)
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.tensors[0].device)
        return [tuple(t[idx] for t in self.tensors)]


def _first(batch):
    return batch[0]


def _seed_from(seed: Seed) -> int:
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2 ** 62, (1,), generator=seed))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"generator={seed!r} must be an int seed or a torch.Generator")
    return seed


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    """Opacus's Poisson loader runs len(loader) = ceil(n / batch_size) steps per epoch."""
    return math.ceil(n_records / batch_size)


def record_level_sample_rate(n_records: int, batch_size: int) -> float:
    """q = 1 / ceil(n / batch_size), the rate Opacus derives from the loader (expected lot ~ batch_size)."""
    return 1.0 / steps_per_epoch(n_records, batch_size)


def record_level_noise_for_epsilon(target_epsilon: float, *, n_records: int, batch_size: int, epochs: int,
                                   rounds: int, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """Noise multiplier so that a client training ``epochs`` per round for ``rounds`` rounds ends at
    ``target_epsilon`` (``--target-epsilon``): opacus ``get_noise_multiplier`` with q = 1/ceil(n/B)
    and steps = rounds * epochs * ceil(n/B). Conservative for a client sampled in fewer rounds."""
    _check_sizes(n_records, batch_size, epochs)
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} must be a positive integer")
    check_delta(delta, n_records, unit="records of this client")
    spe = steps_per_epoch(n_records, batch_size)
    return noise_for_epsilon(target_epsilon, 1.0 / spe, rounds * epochs * spe, delta, accountant=accountant,
                             n_records=n_records)


def _check_sizes(n_records: int, batch_size: int, epochs: int) -> None:
    if not isinstance(n_records, int) or n_records < 1:
        raise ValueError(f"n_records={n_records!r} must be a positive integer")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer")


class RecordLevelClient:
    """One client's DP-SGD local training (Abadi et al. 2016) through Opacus, reused across rounds.

    Parameters
    ----------
    model : nn.Module
        Architecture template (copied; the copy lives on the template's device). No batch
        norm (Opacus refuses it: per-example gradients would mix examples).
    x, y : Tensor
        The client's training records and labels (on the model's device).
    epochs, batch_size, lr, momentum, weight_decay
        Local SGD hyper-parameters (``batch_size`` is the expected Poisson lot size:
        q = 1/ceil(n/batch_size)).
    noise_multiplier : float
        z: noise std z * max_grad_norm on each lot's clipped gradient sum.
    max_grad_norm : float
        C: per-example gradient clip.
    generator : int or torch.Generator
        Seeds Poisson sampling and noise when ``seeded_noise`` (ignored otherwise).
    accountant : {"prv", "rdp"}
        The Opacus accountant of this client (persistent).
    seeded_noise : bool
        False (default): lots and noise from OS-reseeded generators with Opacus's secure-mode
        noise construction (module docstring); True: reproducible from ``generator``.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, noise_multiplier: float, max_grad_norm: float,
                 epochs: int = 1, batch_size: int = 16, lr: float = 0.05, momentum: float = 0.0,
                 weight_decay: float = 0.0, generator: Seed = 0, accountant: str = DEFAULT_ACCOUNTANT,
                 seeded_noise: bool = False):
        from opacus import PrivacyEngine

        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} records but y has {y.shape[0]} labels")
        _check_sizes(int(x.shape[0]), batch_size, epochs)
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.max_grad_norm = check_clip(max_grad_norm, "max_grad_norm")
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum!r} must lie in [0, 1)")
        self.epochs, self.batch_size = epochs, batch_size
        self.n_records = int(x.shape[0])
        self.device = next(model.parameters()).device
        if x.device != self.device or y.device != self.device:
            raise ValueError(f"x, y are on {x.device}, {y.device} but the model on {self.device}; "
                             "put the client's data on the model's device")
        check_accountant(accountant)
        self.seeded_noise = check_seeded(seeded_noise)
        seed = _seed_from(generator) if self.seeded_noise else os_seed()
        local = copy.deepcopy(model)
        local.train()
        self._names = [k for k, _ in local.named_parameters()]
        optimizer = torch.optim.SGD(local.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self._lot_gen = torch.Generator().manual_seed(seed)
        self._noise_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        loader = DataLoader(_BatchedTensorDataset(x, y), batch_size=batch_size, collate_fn=_first,
                            generator=self._lot_gen)
        with warnings.catch_warnings():
            # Opacus warns that its secure RNG (torchcsprng) is off: see the module docstring.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant=accountant, secure_mode=False)
            if not self.seeded_noise:
                # Opacus's secure-mode noise construction, with our OS-reseeded generators
                # in place of torchcsprng's (set after the engine's own torchcsprng check).
                self.engine.secure_mode, self.engine.secure_rng = True, self._lot_gen
            self.module, self.optimizer, self.loader = self.engine.make_private(
                module=local, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm, poisson_sampling=True,
                noise_generator=self._noise_gen if self.seeded_noise else None)
        self.optimizer.generator = self._noise_gen          # the noise on the model's device
        self.loader.batch_sampler.generator = self._lot_gen
        self.rounds = 0

    def _reseed(self) -> None:
        """Fresh OS seeds for the next lot and the next noise draw (unless seeded_noise)."""
        if not self.seeded_noise:
            self._lot_gen.manual_seed(os_seed())
            self._noise_gen.manual_seed(os_seed())

    @property
    def secure_noise(self) -> bool:
        """Whether the optimizer uses Opacus's secure-mode noise construction."""
        return bool(getattr(self.optimizer, "secure_mode", False))

    @property
    def sample_rate(self) -> float:
        return 1.0 / len(self.loader)

    @property
    def steps(self) -> int:
        """DP-SGD steps taken so far (all rounds)."""
        return sum(s for _, _, s in self.engine.accountant.history)

    @property
    def _params(self) -> List[nn.Parameter]:
        return list(self.module._module.parameters())

    def epsilon(self, delta: float) -> float:
        """This client's epsilon at ``delta`` so far, from its Opacus accountant."""
        check_delta(delta, self.n_records, unit="records of this client")
        if self.steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        with np.errstate(divide="ignore", invalid="ignore"):   # PRV's log(1 - q) at q = 1: handled by it
            return float(self.engine.get_epsilon(delta))

    def train(self, start: Union[Tensor, nn.Module]) -> Tensor:
        """Run the local epochs from ``start`` (flat parameters [d] or a model); return local - start [d]."""
        if isinstance(start, nn.Module):
            start = torch.nn.utils.parameters_to_vector(start.parameters())
        start = start.detach()
        params = self._params
        d = sum(p.numel() for p in params)
        if start.shape != (d,):
            raise ValueError(f"start must be a flat parameter vector of shape [{d}], got {tuple(start.shape)}")
        with torch.no_grad():  # copy in place (vector_to_parameters would alias ``start``)
            offset = 0
            for p in params:
                p.copy_(start[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        self.optimizer.state.clear()            # fresh momentum, as a new torch.optim.SGD per round
        self.optimizer.zero_grad(set_to_none=True)
        self.module.train()
        with warnings.catch_warnings():
            # Opacus's hooks on the first layer: inputs need no gradient, which is fine.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(self.epochs):
                self._reseed()      # the sampler draws each lot lazily, after the previous step
                for xb, yb in self.loader:
                    self.optimizer.zero_grad(set_to_none=True)
                    out = self.module(xb)
                    # mean over the lot; 0 (not NaN) on an empty Poisson lot, whose step still adds noise
                    loss = F.cross_entropy(out, yb, reduction="sum") / max(1, int(yb.shape[0]))
                    loss.backward()
                    self.optimizer.step()
                    self._reseed()
        self.rounds += 1
        with torch.no_grad():
            return torch.nn.utils.parameters_to_vector(params).detach() - start.to(self.device)

    def __repr__(self) -> str:
        return (f"RecordLevelClient(n_records={self.n_records}, z={self.noise_multiplier:g}, "
                f"C={self.max_grad_norm:g}, q={self.sample_rate:.3g}, rounds={self.rounds})")


def train_dp_sgd(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, batch_size: int, lr: float,
                 momentum: float = 0.0, noise_multiplier: float, max_grad_norm: float, generator: Seed = 0,
                 delta: float, accountant: str = DEFAULT_ACCOUNTANT, seeded_noise: bool = False):
    """One-shot DP-SGD from ``model``'s parameters: returns (update [d], epsilon at delta).

    For several rounds keep a :class:`RecordLevelClient` instead (its accountant persists).
    """
    client = RecordLevelClient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                               epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                               generator=generator, accountant=accountant, seeded_noise=seeded_noise)
    check_delta(delta, client.n_records, unit="records of this client")
    update = client.train(model)
    return update, client.epsilon(delta)


class RecordLevelClients:
    """The federation's record-level DP clients, built lazily, one per client id.

    ``train(model, ids, client_indices, x, y)`` returns the [len(ids), d] updates
    (local - global, ``model.parameters()`` order) like ``protocols.clients.train_loop``.
    ``epsilons(delta)`` gives every client's epsilon so far; ``summary(delta)`` the max
    and mean over the clients that have trained (the per-round report).
    """

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, epochs: int, batch_size: int,
                 lr: float, momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0,
                 accountant: str = DEFAULT_ACCOUNTANT, seeded_noise: bool = False):
        self.kwargs = dict(noise_multiplier=check_noise_multiplier(noise_multiplier),
                           max_grad_norm=check_clip(max_grad_norm, "max_grad_norm"), epochs=epochs,
                           batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           accountant=check_accountant(accountant), seeded_noise=check_seeded(seeded_noise))
        self.seed = seed
        self.clients = {}

    def client(self, cid: int, model: nn.Module, x: Tensor, y: Tensor) -> RecordLevelClient:
        if cid not in self.clients:
            self.clients[cid] = RecordLevelClient(model, x, y, generator=self.seed * 1_000_003 + 2 * cid,
                                                  **self.kwargs)
        return self.clients[cid]

    def train(self, model: nn.Module, ids: Sequence[int], client_indices: Sequence[Tensor], x: Tensor,
              y: Tensor, start: Optional[Tensor] = None) -> Tensor:
        """Updates of clients ``ids`` (client ``ids[k]`` holds x[client_indices[k]])."""
        flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        out = []
        for k, cid in enumerate([int(i) for i in ids]):
            ix = client_indices[k].to(x.device)
            c = self.client(cid, model, x[ix], y[ix])
            out.append(c.train(flat if start is None else start[k]))
        return torch.stack(out)

    def epsilons(self, delta: float) -> dict:
        return {cid: c.epsilon(delta) for cid, c in self.clients.items()}

    def summary(self, delta: float) -> dict:
        eps = list(self.epsilons(delta).values())
        return {"epsilon_max": max(eps) if eps else 0.0,
                "epsilon_mean": sum(eps) / len(eps) if eps else 0.0, "delta": delta,
                "clients": len(eps)}
