"""Federated training in one process: rounds, client sampling, secure aggregation, history.

Each round: sample clients (seeded), train them locally from the global model
(vectorized or looped), hand the updates to the aggregation rule as a
:class:`secagg.ClientUpdates` backed by the configured oracle, apply the
aggregate with the server learning rate, evaluate on held-out data.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

import secagg
from secagg import ClientUpdates, PlaintextOracle, QuantizedOracle, Transcript

from .aggregators import make_rule
from .attacks import AttackView, corrupted_clients, make_attack
from .clients import TRAINERS, LocalTraining, evaluate
from .data import Dataset, load_dataset, partition
from .models import build_model, flat_params, set_flat_params

SECAGG_MODES = ("off", "plaintext", "quantized", "masked")


@dataclass
class RunConfig:
    """Everything that defines a run; every field has a default (``fedaudit run``'s)."""

    dataset: str = "digits"
    clients: int = 20
    clients_per_round: Optional[int] = None     # None: all clients every round
    rounds: int = 30
    partition: str = "dirichlet"
    alpha: float = 0.5                          # Dirichlet concentration
    labels_per_client: int = 2                  # shards partition
    model: str = "mlp"
    rule: str = "rfa"
    rule_args: Dict[str, Any] = field(default_factory=dict)
    attack: Optional[str] = None                # poisoning attack of the corrupted clients
    attack_args: Dict[str, Any] = field(default_factory=dict)
    corrupt: float = 0.0                        # rho: fraction of corrupted clients
    secagg: str = "masked"
    bits: int = 64                              # wide ring: RFA's Weiszfeld weights encode without
                                                # revealing any per-call scalar (rfa.smoothed_weiszfeld)
    clip: float = 10.0
    overflow: str = "raise"                     # "clip": clip to the encoding bound and count it
    root_size: int = 100                        # server root dataset, for rules that need one (FLTrust)
    personalize: bool = False                   # RFA Alg. 4 personal parameters u_i (any rule)
    client_holdout: float = 0.0                 # fraction of each client's data held out for
                                                # per-client accuracy (0.2 when personalized)
    threshold: Optional[float] = None           # masked: int count or fraction of clients
    neighbors: Optional[int] = None             # masked: k-regular graph degree (None: complete)
    dropout_rate: float = 0.0                   # masked: per-call client dropout probability
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.5
    weight_decay: float = 0.0
    server_lr: float = 1.0
    training: str = "vmap"
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        if self.secagg not in SECAGG_MODES:
            raise ValueError(f"secagg={self.secagg!r}; choose one of {SECAGG_MODES}")
        if self.training not in TRAINERS:
            raise ValueError(f"training={self.training!r}; choose one of {sorted(TRAINERS)}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds={self.rounds!r} must be a positive integer")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.clients:
            raise ValueError(f"clients_per_round={self.clients_per_round!r} must lie in [1, clients={self.clients}]")
        if self.corrupt and self.attack is None:
            raise ValueError(f"corrupt={self.corrupt} needs an attack (--attack NAME); "
                             "see `fedaudit list attacks`")
        if self.attack is not None and not self.corrupt:
            raise ValueError(f"attack={self.attack!r} with corrupt=0 corrupts no client; set --corrupt RHO")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr={self.server_lr!r} must be > 0")

    def local_training(self) -> LocalTraining:
        return LocalTraining(self.local_epochs, self.batch_size, self.lr, self.momentum, self.weight_decay)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def make_oracle(cfg: RunConfig, n_clients: int) -> Optional[secagg.SecureAverageOracle]:
    """The oracle for ``cfg.secagg`` (None for "off": rules see plaintext updates)."""
    if cfg.secagg in ("off", "plaintext"):
        return PlaintextOracle()
    if cfg.secagg == "quantized":
        return QuantizedOracle(bits=cfg.bits, clip=cfg.clip, overflow=cfg.overflow, seed=cfg.seed)
    if not hasattr(secagg, "MaskedOracle"):
        raise ValueError("secagg='masked' needs secagg.MaskedOracle, which this build lacks")
    threshold = cfg.threshold
    kwargs = {"bits": cfg.bits, "clip": cfg.clip, "overflow": cfg.overflow, "seed": cfg.seed,
              "neighbors": cfg.neighbors, "dropout_rate": cfg.dropout_rate}
    if threshold is not None:
        kwargs["threshold"] = threshold
    return secagg.MaskedOracle(**kwargs)


@dataclass
class RoundRecord:
    round: int
    test_accuracy: float
    test_loss: float
    oracle_calls: int
    clients: int
    seconds: float
    corrupted: int = 0
    attack_clipped: int = 0   # coordinates of corrupted updates clipped to the encoding bound
    clipped: int = 0          # coordinates clipped by the encoding (overflow="clip")
    attack_success: Optional[float] = None   # backdoor ASR / targeted flip rate, where it applies
    client_accuracy: Optional[float] = None  # mean over clients of accuracy on their own held-out
                                             # data (personalized model w + u_i when personalized)


class Simulation:
    """One federated run. ``run()`` returns the list of :class:`RoundRecord`."""

    def __init__(self, cfg: RunConfig, dataset: Optional[Dataset] = None):
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        ds = dataset if dataset is not None else load_dataset(cfg.dataset, seed=cfg.seed)
        self.data = ds.to(self.device)
        self.rule = make_rule(cfg.rule, **cfg.rule_args)
        pool = torch.arange(len(ds.y_train))
        self.root_indices = None
        if getattr(self.rule, "needs_server_update", False):
            # FLTrust Sec. VI-A, Case I: a root set drawn uniformly, excluded from the clients' data.
            if not 1 <= cfg.root_size < len(pool) - cfg.clients:
                raise ValueError(f"root_size={cfg.root_size} must lie in [1, {len(pool) - cfg.clients})")
            perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed + 104729))
            self.root_indices = perm[:cfg.root_size].sort().values.to(self.device)
            pool = perm[cfg.root_size:].sort().values
        pkw = {"alpha": cfg.alpha} if cfg.partition == "dirichlet" else \
            {"labels_per_client": cfg.labels_per_client} if cfg.partition == "shards" else {}
        self.client_indices = [pool[ix].to(self.device) for ix in
                               partition(ds.y_train[pool], cfg.clients, cfg.partition, seed=cfg.seed, **pkw)]
        self.model = build_model(cfg.model, ds.input_shape, ds.num_classes, seed=cfg.seed).to(self.device)
        self.personalized = bool(cfg.personalize or getattr(self.rule, "personalized", False))
        holdout = cfg.client_holdout or (0.2 if self.personalized else 0.0)
        if not 0 <= holdout < 1:
            raise ValueError(f"client_holdout={cfg.client_holdout!r} must lie in [0, 1)")
        self.client_holdout = None
        if holdout:
            g = torch.Generator().manual_seed(cfg.seed + 15485863)
            split = []
            for ix in self.client_indices:
                perm = ix[torch.randperm(len(ix), generator=g).to(ix.device)]
                k = int(round(holdout * len(ix)))
                if k < 1 or k >= len(ix):
                    raise ValueError(f"a client with {len(ix)} samples cannot hold out {holdout:.0%}; "
                                     "use fewer clients or another --client-holdout")
                split.append((perm[k:].sort().values, perm[:k].sort().values))
            self.client_indices = [a for a, _ in split]
            self.client_holdout = [b for _, b in split]
        d = sum(p.numel() for p in self.model.parameters())
        # Personal parameters u_i persist on-device across rounds (RFA Alg. 4).
        self.personal = torch.zeros(cfg.clients, d, device=self.device) if self.personalized else None
        self.secure = cfg.secagg != "off"
        self.oracle = make_oracle(cfg, cfg.clients)
        self.transcript = Transcript()
        self.local = cfg.local_training()
        self.trainer = TRAINERS[cfg.training]
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history: List[RoundRecord] = []
        self.attack = make_attack(cfg.attack, **cfg.attack_args) if cfg.attack else None
        self.corrupted = corrupted_clients(cfg.clients, cfg.corrupt, cfg.seed) if self.attack else \
            torch.zeros(0, dtype=torch.long)
        # Global model after each round (index 0: the initial model), for audits of the broadcast view.
        self.global_history: List[torch.Tensor] = [flat_params(self.model).clone()]
        self.broadcast_hook: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None
        self.batch_transform = self._data_poisoning() if self.attack and self.attack.kind in ("data", "both") \
            else None

    def _data_poisoning(self):
        corrupted = self.corrupted.to(self.device)
        attack, num_classes = self.attack, self.data.num_classes

        def transform(x, y, ids):
            bad = torch.isin(ids, corrupted)
            if not bad.any():
                return x, y
            px, py = attack.poison_batch(x, y, num_classes)
            mx = bad.reshape(bad.shape + (1,) * (x.ndim - bad.ndim))
            my = bad.reshape(bad.shape + (1,) * (y.ndim - bad.ndim))
            return torch.where(mx, px, x), torch.where(my, py, y)
        return transform

    def _poison_updates(self, ids: torch.Tensor, deltas: torch.Tensor, counts: torch.Tensor,
                        server_update: Optional[torch.Tensor] = None):
        """Replace the corrupted clients' rows with the update attack's output."""
        bad = torch.isin(ids, self.corrupted)
        if self.attack is None or self.attack.kind == "data" or not bad.any():
            return deltas, 0
        bad_d = bad.to(deltas.device)
        omniscient = self.attack.knowledge == "honest-updates"
        view = AttackView(own=deltas[bad_d], own_weights=counts[bad_d], global_params=flat_params(self.model),
                          generator=self.gen, honest=deltas[~bad_d] if omniscient else None,
                          honest_weights=counts[~bad_d] if omniscient else None,
                          rule=self.rule, n_selected=len(ids),
                          server_update=server_update if omniscient else None)
        poisoned = self.attack.poison_updates(view)
        if poisoned.shape != view.own.shape:
            raise RuntimeError(f"attack {self.attack.name!r} returned shape {tuple(poisoned.shape)}, "
                               f"expected {tuple(view.own.shape)}")
        clipped = 0
        if self.cfg.secagg in ("quantized", "masked"):
            # A corrupted client submits through the oracle too: its input obeys the encoding bound.
            clipped = int((poisoned.abs() > self.cfg.clip).sum())
            poisoned = poisoned.clamp(-self.cfg.clip, self.cfg.clip)
        deltas = deltas.clone()
        deltas[bad_d] = poisoned
        return deltas, clipped

    def sample_clients(self) -> torch.Tensor:
        m = self.cfg.clients_per_round or self.cfg.clients
        if m == self.cfg.clients:
            return torch.arange(self.cfg.clients)
        return torch.randperm(self.cfg.clients, generator=self.gen)[:m].sort().values

    def broadcast_params(self, rnd: int) -> torch.Tensor:
        """The model the clients receive this round: the global model, or what a malicious
        server's ``broadcast_hook(round, global_flat)`` makes of it (active membership attacks)."""
        w = flat_params(self.model)
        return w if self.broadcast_hook is None else self.broadcast_hook(rnd, w)

    def client_updates(self, ids: torch.Tensor, broadcast: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Local training of clients ``ids`` from ``broadcast`` (default: the global model)."""
        parts = [self.client_indices[i] for i in ids.tolist()]
        if broadcast is None:
            broadcast = flat_params(self.model)

        def train(start=None):
            if start is None:
                start = broadcast.unsqueeze(0).expand(len(parts), -1)
            return self.trainer(self.model, self.data.x_train, self.data.y_train, parts, self.local,
                                self.gen, batch_transform=self.batch_transform, client_ids=ids, start=start)

        if not self.personalized:
            return train()
        # RFA Alg. 4: tau steps on u_i with w fixed, then tau steps on w with u_i fixed. Both are
        # SGD on the sum p = w + u_i, so each phase is ordinary local training from a per-client start.
        dev_ids = ids.to(self.device)
        p0 = broadcast.unsqueeze(0) + self.personal[dev_ids]
        du = train(p0)
        self.personal[dev_ids] += du
        return train(p0 + du)

    def step(self, rnd: int) -> RoundRecord:
        t0 = time.perf_counter()
        self.transcript.round = rnd
        ids = self.sample_clients()
        deltas = self.client_updates(ids, self.broadcast_params(rnd))
        counts = torch.tensor([len(self.client_indices[i]) for i in ids.tolist()],
                              dtype=deltas.dtype, device=deltas.device)
        context = {"round": rnd, "client_ids": ids, "global_params": flat_params(self.model)}
        if self.root_indices is not None:
            # The server's own update on its root data (FLTrust Alg. 1, ModelUpdate on D_0).
            context["server_update"] = self.trainer(self.model, self.data.x_train, self.data.y_train,
                                                    [self.root_indices], self.local, self.gen)[0]
        deltas, clipped = self._poison_updates(ids, deltas, counts, context.get("server_update"))
        handle = ClientUpdates(deltas, oracle=self.oracle, secure=self.secure, rule=self.rule.name,
                               num_samples=counts, transcript=self.transcript, context=context)
        if not self.secure:
            handle.reveal()  # without secure aggregation the server receives every update
        self.last_round_clients = ids
        clipped_before = getattr(self.oracle, "total_clipped", 0)
        agg = self.rule(handle)
        if agg.shape != (deltas.shape[1],) or not torch.isfinite(agg).all():
            raise RuntimeError(f"rule {self.rule.name!r} returned an invalid aggregate "
                               f"(shape {tuple(agg.shape)}, finite={bool(torch.isfinite(agg).all())})")
        with torch.no_grad():
            set_flat_params(self.model, flat_params(self.model) + self.cfg.server_lr * agg)
        self.global_history.append(flat_params(self.model).clone())
        acc, loss = evaluate(self.model, self.data.x_test, self.data.y_test)
        success = self.attack_success()
        client_acc = self.client_accuracy()
        rec = RoundRecord(rnd, acc, loss, handle.oracle_calls, len(ids), time.perf_counter() - t0,
                          corrupted=int(torch.isin(ids, self.corrupted).sum()), attack_clipped=clipped,
                          clipped=getattr(self.oracle, "total_clipped", 0) - clipped_before,
                          attack_success=success, client_accuracy=client_acc)
        self.history.append(rec)
        return rec

    @torch.no_grad()
    def client_accuracy(self) -> Optional[float]:
        if self.client_holdout is None:
            return None
        w = flat_params(self.model)
        model = copy.deepcopy(self.model)
        accs = []
        for k, ix in enumerate(self.client_holdout):
            set_flat_params(model, w + self.personal[k] if self.personal is not None else w)
            accs.append(evaluate(model, self.data.x_train[ix], self.data.y_train[ix])[0])
        return sum(accs) / len(accs)

    @torch.no_grad()
    def attack_success(self) -> Optional[float]:
        """The attack's own success metric on the test set, if it has one (else None)."""
        if self.attack is None:
            return None
        if hasattr(self.attack, "success_rate"):
            return self.attack.success_rate(self.model, self.data.x_test, self.data.y_test)
        if hasattr(self.attack, "triggered") and hasattr(self.attack, "target"):
            # Backdoor ASR: triggered test inputs whose true label is not the target.
            keep = self.data.y_test != self.attack.target
            if not keep.any():
                return None
            pred = self.model(self.attack.triggered(self.data.x_test[keep])).argmax(1)
            return float((pred == self.attack.target).float().mean())
        return None

    def run(self, progress: Optional[Callable[[RoundRecord], None]] = None) -> List[RoundRecord]:
        for rnd in range(len(self.history), self.cfg.rounds):
            rec = self.step(rnd)
            if progress is not None:
                progress(rec)
        return self.history

    def result(self) -> Dict[str, Any]:
        """The JSON-ready result: config, per-round history, final metrics, transcript summary."""
        last = self.history[-1] if self.history else None
        return {
            "config": self.cfg.to_dict(),
            "rounds": [dataclasses.asdict(r) for r in self.history],
            "final": {"test_accuracy": last.test_accuracy if last else None,
                      "client_accuracy": last.client_accuracy if last else None,
                      "test_loss": last.test_loss if last else None,
                      "attack_success": last.attack_success if last else None},
            "transcript": self.transcript.summary(),
        }
