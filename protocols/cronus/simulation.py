"""Cronus: robust and private collaboration by knowledge transfer on public data.

Chang, Shejwalkar, Shokri, Houmansadr, "Cronus: Robust and Heterogeneous Collaborative
Learning with Black-Box Knowledge Transfer" (2019), appendix C and D.1:

1. **Initialization phase**: every party trains its own model on its private data
   (``init_epochs`` epochs, Adam at ``init_lr``; the paper's 5e-4, digits' preset 5e-3).
2. **Collaboration phase**, one round per ``RunConfig.rounds``: every party predicts soft
   labels (softmax vectors) on a public unlabelled set X_p; the server aggregates each
   public example's n prediction vectors with RobustFilter (Alg. 6, the practical variant:
   remove the epsilon/2 fraction farthest along the top eigenvector, twice), batched over the
   examples (:func:`robustfilter_batched`); it broadcasts the aggregate Y_bar, and each party
   trains ``collab_epochs`` epochs on its private data (Adam, lr 5e-4) and, after each,
   ``public_epochs`` passes on (X_p, Y_bar) (SGD, lr 1e-3 and one pass in D.1; digits' preset
   0.1 and 3 passes, :data:`CRONUS_PRESETS`).

The public set is a seeded split of the dataset's training data, disjoint from the parties'
data. ``aggregator="mean"`` is FedAvg on predictions (eq. 1 on prediction vectors, one
secure-average oracle call): it runs under secure aggregation, and is what an unset
``aggregator`` means there. RobustFilter needs every party's individual predictions, so
under secure aggregation it is refused, at construction and by ``ClientUpdates.reveal()``
(``SecureAggregationViolation``). A secure-aggregation call that aborts leaves the parties
without an aggregate that round: they train on their private data only (``on_abort``).

Corrupted parties (``cfg.corrupt``, ``cfg.attack``) poison what they share: ``labelflip``
maps each prediction vector through the label flip (the prediction of a model trained on
flipped labels), update attacks (PAF, LIE, OFOM, ...) get the flattened prediction matrices
as their "updates" (eqs. 8, 9 and Alg. 5 on prediction vectors), other data attacks poison the
corrupted parties' private training. Accuracy is the mean test accuracy of the honest parties'
models. ``protocol_args``: see :class:`CronusParams`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from secagg import ClientUpdates, SecureAggregationAborted, SecureAggregationViolation, Transcript

from protocols.attacks import AttackView, corrupted_clients, make_attack, submit_poisoned
from protocols.clients import AdvRegParty, batch_schedule, evaluate
from protocols.cronus.robustfilter import robustfilter_batched, soft_cross_entropy
from protocols.data import Dataset, load_dataset, resolve_partition
from protocols.models import build_model, flat_params, resolve_model, set_flat_params
from protocols.rules import make_rule
from protocols.rules.common import revealed
from protocols.simulation import RoundRecord, RunConfig, make_oracle, partition_pool, register_protocol

Tensor = torch.Tensor

__all__ = ["CronusParams", "CronusSimulation", "AGGREGATORS", "RobustFilterUnderSecureAggregation"]

AGGREGATORS = ("robustfilter", "mean")

#: Training presets per dataset for what the paper's D.1 values do not fit: {dataset: {field: value}},
#: applied to the CronusParams fields left at None (docs/cronus.md says why and what was measured).
#: digits: parties of ~50 records take 4 Adam steps per epoch, so the paper's 5e-4 leaves them at
#: 29% after 50 initialization epochs (init_lr 5e-3: 58%); SGD at 1e-3 on 400 public records barely
#: moves them, so the public set is trained at lr 0.1 for 3 passes per round. The collaboration
#: phase keeps the paper's Adam 5e-4 on private data: at 5e-3 the private epochs undo the
#: distillation round after round (91.5% -> 71% over 30 rounds in one seed).
CRONUS_PRESETS: Dict[str, Dict[str, Any]] = {
    "digits": {"init_lr": 5e-3, "public_lr": 0.1, "public_epochs": 3},
}
#: The paper's values (appendix D.1) for fields left at None without a dataset preset.
PAPER_DEFAULTS: Dict[str, Any] = {"public_lr": 1e-3, "public_epochs": 1}


class RobustFilterUnderSecureAggregation(SecureAggregationViolation, ValueError):
    """RobustFilter on predictions asked for under secure aggregation: refused before training
    (a ``SecureAggregationViolation``, and a ``ValueError`` so that ``fedaudit`` prints one line)."""


@dataclass
class CronusParams:
    """``RunConfig.protocol_args`` of the Cronus protocol (``--protocol-arg K=V``).

    Defaults follow the Cronus appendix D.1 where it states them: Adam at lr 5e-4 on the
    private data, SGD at lr 1e-3 on the public data, RobustFilter with 2 filter iterations
    removing epsilon/2 each. The paper trains 50 initialization epochs and 50 collaboration
    epochs over 10,000 public records; here ``init_epochs=50`` and, per round
    (``RunConfig.rounds`` rounds), one private epoch and ``public_epochs`` public passes.

    Fields left at None take the dataset's preset (:data:`CRONUS_PRESETS`; digits) or the
    paper's value: ``init_lr`` (Adam on private data in the initialization phase; else ``lr``),
    ``public_lr`` (else 1e-3; with ``public_optimizer="adam"`` always 1e-3, the presets are SGD
    recipes), ``public_epochs`` (else 1). ``aggregator`` None: RobustFilter without secure
    aggregation, and FedAvg on predictions (``mean``) under it, where RobustFilter cannot run.

    ``epsilon``: the corruption level the filter assumes (None: ``RunConfig.corrupt`` when it
    is > 0, else 0.2). ``student_epochs`` / ``student_lr``: the server's model trained on
    shared predictions for the membership audits (:mod:`protocols.cronus.audit`).
    """

    aggregator: Optional[str] = None
    public_size: int = 400
    init_epochs: int = 50
    collab_epochs: int = 1
    lr: float = 5e-4
    init_lr: Optional[float] = None
    public_optimizer: str = "sgd"
    public_lr: Optional[float] = None
    public_epochs: Optional[int] = None
    epsilon: Optional[float] = None
    iterations: int = 2
    threshold: Optional[float] = None
    student_epochs: int = 30
    student_lr: float = 1e-3

    @classmethod
    def from_args(cls, args: Dict[str, Any]) -> "CronusParams":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(args) - set(names))
        if unknown:
            raise ValueError(f"unknown cronus protocol argument(s) {unknown}; known: {names}")
        p = cls(**args)
        p.validate()
        return p

    def validate(self) -> None:
        if self.aggregator is not None and self.aggregator not in AGGREGATORS:
            raise ValueError(f"cronus aggregator={self.aggregator!r}; choose one of {AGGREGATORS}")
        for k in ("public_size", "init_epochs", "collab_epochs", "iterations", "student_epochs", "public_epochs"):
            v = getattr(self, k)
            if v is None and k == "public_epochs":
                continue
            low = 0 if k == "init_epochs" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"cronus {k}={v!r} must be an integer >= {low}")
        for k in ("lr", "init_lr", "public_lr", "student_lr"):
            v = getattr(self, k)
            if v is None and k in ("init_lr", "public_lr"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
                raise ValueError(f"cronus {k}={v!r} must be a finite number > 0")
        if self.public_optimizer not in ("sgd", "adam"):
            raise ValueError(f"cronus public_optimizer={self.public_optimizer!r}; choose 'sgd' (paper) or 'adam'")
        if self.epsilon is not None and not (isinstance(self.epsilon, (int, float)) and 0 <= self.epsilon < 1):
            raise ValueError(f"cronus epsilon={self.epsilon!r} must lie in [0, 1)")
        if self.threshold is not None and not isinstance(self.threshold, (int, float)):
            raise ValueError(f"cronus threshold={self.threshold!r} must be a number or None")

    def resolved(self, dataset: str, secagg: str) -> "CronusParams":
        """A copy with the fields left at None filled in: the dataset's preset, else the paper's
        value (class docstring). What ran is what ``result()["cronus"]["params"]`` reports."""
        preset = CRONUS_PRESETS.get(dataset, {})
        sgd = self.public_optimizer == "sgd"
        fill: Dict[str, Any] = {}
        if self.aggregator is None:
            fill["aggregator"] = "robustfilter" if secagg == "off" else "mean"
        if self.init_lr is None:
            fill["init_lr"] = preset.get("init_lr", self.lr)
        if self.public_lr is None:
            fill["public_lr"] = preset.get("public_lr", PAPER_DEFAULTS["public_lr"]) if sgd else 1e-3
        if self.public_epochs is None:
            fill["public_epochs"] = preset.get("public_epochs", PAPER_DEFAULTS["public_epochs"]) if sgd else 1
        return dataclasses.replace(self, **fill)


@register_protocol("cronus")
class CronusSimulation:
    """One Cronus run, with the interface of :class:`protocols.simulation.Simulation`:
    ``run(progress)``, ``step(rnd)``, ``history`` (:class:`RoundRecord` per collaboration
    round), ``transcript`` and ``result()``.

    State for audits: ``public_indices`` (into the training tensors), ``client_indices``
    (each party's private training records), ``client_holdout`` (reference sets, with
    ``client_holdout > 0``), ``models`` (one per party), ``shared_history`` (per round, the
    [n, P, C] predictions the server received), ``aggregate_history`` (the aggregates) and
    ``broadcast_hook(round, aggregate) -> labels`` (None: honest; a malicious server's hook
    replaces the soft labels it broadcasts).
    """

    def __init__(self, cfg: RunConfig, dataset: Optional[Dataset] = None):
        cfg.validate()
        if cfg.protocol != "cronus":
            raise ValueError(f"CronusSimulation needs protocol='cronus', got {cfg.protocol!r}")
        self.cfg = cfg
        self.params = CronusParams.from_args(dict(cfg.protocol_args)).resolved(cfg.dataset, cfg.secagg)
        self._refuse_unsupported(cfg)
        self.device = torch.device(cfg.device)
        ds = dataset if dataset is not None else load_dataset(cfg.dataset, seed=cfg.seed, data_dir=cfg.data_dir)
        self.data = ds.to(self.device)
        n_train = len(ds.y_train)
        P = self.params.public_size
        if not P + cfg.clients <= n_train - 1:
            raise ValueError(f"public_size={P} leaves {n_train - P} of the {n_train} training records for "
                             f"{cfg.clients} parties; lower public_size or the number of clients")
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed + 611953))
        self.public_indices = perm[:P].sort().values.to(self.device)
        pool = perm[P:].sort().values
        scheme = self.partition_scheme = resolve_partition(cfg.partition, ds)
        self.client_indices = [ix.to(self.device) for ix in partition_pool(ds, pool, cfg, scheme)]
        self.client_holdout: Optional[List[Tensor]] = None
        if cfg.client_holdout:
            if not 0 < cfg.client_holdout < 1:
                raise ValueError(f"client_holdout={cfg.client_holdout!r} must lie in [0, 1)")
            g = torch.Generator().manual_seed(cfg.seed + 15485863)
            train, hold = [], []
            for ix in self.client_indices:
                p = ix[torch.randperm(len(ix), generator=g).to(ix.device)]
                k = int(round(cfg.client_holdout * len(ix)))
                if k < 1 or k >= len(ix):
                    raise ValueError(f"a party with {len(ix)} records cannot hold out {cfg.client_holdout:.0%}; "
                                     "use fewer clients or another --client-holdout")
                train.append(p[k:].sort().values)
                hold.append(p[:k].sort().values)
            self.client_indices, self.client_holdout = train, hold
        if cfg.adv_reg > 0 and self.client_holdout is None:
            raise ValueError(f"adv_reg={cfg.adv_reg} needs each party's reference set of non-members (Nasr et al. "
                             "2018): set --client-holdout F (e.g. 0.5, a reference set as large as the training set)")
        self.model_name = resolve_model(cfg.model, ds)
        self.models = [build_model(self.model_name, ds.input_shape, ds.num_classes, seed=cfg.seed + k).to(self.device)
                       for k in range(cfg.clients)]
        self.model = self.models[0]          # the architecture (audits build views from flat vectors)
        # Adam at init_lr in the initialization phase; initialize() switches it to lr for the rounds
        self.private_opts = [torch.optim.Adam(m.parameters(), lr=self.params.init_lr) for m in self.models]
        pub = torch.optim.SGD if self.params.public_optimizer == "sgd" else torch.optim.Adam
        self.public_opts = [pub(m.parameters(), lr=self.params.public_lr) for m in self.models]
        self.advreg = [AdvRegParty(cfg.adv_reg, ds.num_classes, self.client_holdout[k], seed=cfg.seed * 1009 + k,
                                   device=self.device) for k in range(cfg.clients)] if cfg.adv_reg > 0 else None
        self.secure = cfg.secagg != "off"
        if self.params.aggregator == "robustfilter" and self.secure:
            raise RobustFilterUnderSecureAggregation(
                f"cronus aggregator 'robustfilter' needs each party's individual prediction vectors, but secure "
                f"aggregation is on (secagg={cfg.secagg!r}): the server only learns averages. Run with "
                "--secagg off, or use --protocol-arg aggregator=mean (FedAvg on predictions, secagg-compatible)")
        self.oracle = make_oracle(cfg, cfg.clients)
        self.mean_rule = make_rule("fedavg")
        self.transcript = Transcript()
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.attack = make_attack(cfg.attack, **cfg.attack_args) if cfg.attack else None
        self.corrupted = corrupted_clients(cfg.clients, cfg.corrupt, cfg.seed) if self.attack else \
            torch.zeros(0, dtype=torch.long)
        self.honest = [k for k in range(cfg.clients) if k not in set(self.corrupted.tolist())]
        self.batch_transform = None
        if self.attack is not None and self.attack.kind in ("data", "both") and self.attack.name != "labelflip":
            self.batch_transform = self._data_poisoning()
        self.epsilon = self.params.epsilon if self.params.epsilon is not None else (cfg.corrupt or 0.2)
        self.history: List[RoundRecord] = []
        self.shared_history: List[Tensor] = []
        self.aggregate_history: List[Tensor] = []
        self.broadcast_hook: Optional[Callable[[int, Tensor], Tensor]] = None
        self.kept_fraction: List[float] = []
        self.initialized = False
        self.init_accuracy: Optional[float] = None
        self.stopped: Optional[str] = None          # why the run stopped early (on_abort="stop")

    @staticmethod
    def _refuse_unsupported(cfg: RunConfig) -> None:
        if cfg.dp is not None:
            raise ValueError(f"--dp {cfg.dp} with --protocol cronus is not supported; run Cronus without DP")
        if cfg.personalize:
            raise ValueError("--personalize with --protocol cronus: every Cronus party already keeps its own model")
        if cfg.clients_per_round is not None and cfg.clients_per_round != cfg.clients:
            raise ValueError(f"clients_per_round={cfg.clients_per_round} with --protocol cronus: every party "
                             "predicts in every round; leave clients_per_round unset")

    # ------------------------------------------------------------------ data and training

    @property
    def x_public(self) -> Tensor:
        return self.data.x_train[self.public_indices]

    def _data_poisoning(self):
        attack, C = self.attack, self.data.num_classes

        def transform(x, y, cid):
            return attack.poison_batch(x, y, C)
        return transform

    def _private_epochs(self, epochs: int) -> None:
        """``epochs`` passes of every party over its private data (Adam; adversarial
        regularization's Alg. 1 steps when ``adv_reg > 0``)."""
        x, y = self.data.x_train, self.data.y_train
        index, mask = batch_schedule(self.client_indices, epochs, self.cfg.batch_size, self.gen)
        bad = set(self.corrupted.tolist())
        for k, model in enumerate(self.models):
            opt = self.private_opts[k]
            for s in range(index.shape[1]):
                m = mask[k, s]
                if not m.any():
                    continue
                idx = index[k, s][m].to(self.device)
                xb, yb = x[idx], y[idx]
                if self.batch_transform is not None and k in bad:
                    xb, yb = self.batch_transform(xb, yb, k)
                if self.advreg is not None:
                    self.advreg[k].step(model, opt, xb, yb, x, y)
                    continue
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()

    def _public_epoch(self, labels: Tensor) -> None:
        """One pass of every party over (X_p, labels) with its public-data optimizer."""
        xp = self.x_public
        bs = self.cfg.batch_size
        order = torch.randperm(len(xp), generator=self.gen).to(self.device)
        for k, model in enumerate(self.models):
            opt = self.public_opts[k]
            for i in range(0, len(order), bs):
                b = order[i:i + bs]
                opt.zero_grad(set_to_none=True)
                soft_cross_entropy(model(xp[b]), labels[b]).backward()
                opt.step()

    @torch.no_grad()
    def predictions(self) -> Tensor:
        """Every party's softmax predictions on the public set, [n, P, C]."""
        xp = self.x_public
        return torch.stack([F.softmax(m(xp), dim=1) for m in self.models])

    def initialize(self) -> None:
        """The initialization phase: local training on private data only."""
        if self.initialized:
            return
        if self.params.init_epochs:
            self._private_epochs(self.params.init_epochs)
        for opt in self.private_opts:
            for group in opt.param_groups:
                group["lr"] = self.params.lr
        self.initialized = True
        self.init_accuracy = self.evaluate()[0]

    @torch.no_grad()
    def evaluate(self):
        """Mean test accuracy and loss of the honest parties' models."""
        res = [evaluate(self.models[k], self.data.x_test, self.data.y_test) for k in self.honest]
        return sum(a for a, _ in res) / len(res), sum(lo for _, lo in res) / len(res)

    # ------------------------------------------------------------------ poisoning and aggregation

    def _poison(self, preds: Tensor):
        """The corrupted parties' shared predictions replaced by the attack's (flattened) output."""
        if self.attack is None or len(self.corrupted) == 0:
            return preds, 0
        n, P, C = preds.shape
        bad = torch.zeros(n, dtype=torch.bool, device=preds.device)
        bad[self.corrupted.to(preds.device)] = True
        out = preds.clone()
        if self.attack.name == "labelflip":
            # the prediction a model trained on flipped labels gives: mass of class c moves to flip(c)
            _, mapped = self.attack.poison_batch(None, torch.arange(C, device=preds.device), C)
            M = F.one_hot(mapped, C).to(preds.dtype)
            out[bad] = preds[bad] @ M
            return out, 0
        if self.attack.kind == "data":
            return out, 0
        flat = preds.reshape(n, P * C)
        counts = self._counts().to(flat.dtype)
        omniscient = self.attack.knowledge == "honest-updates"
        prev = self.aggregate_history[-1].reshape(-1) if self.aggregate_history else torch.zeros_like(flat[0])
        view = AttackView(own=flat[bad], own_weights=counts[bad], global_params=prev, generator=self.gen,
                          honest=flat[~bad] if omniscient else None,
                          honest_weights=counts[~bad] if omniscient else None, rule=None, n_selected=n)
        poisoned, clipped = submit_poisoned(self.attack, view,
                                            self.cfg.clip if self.cfg.secagg in ("quantized", "masked") else None)
        flat = flat.clone()
        flat[bad] = poisoned
        return flat.reshape(n, P, C), clipped

    def _counts(self) -> Tensor:
        return torch.tensor([len(ix) for ix in self.client_indices], dtype=torch.float32, device=self.device)

    def aggregate(self, shared: Tensor):
        """Server side: the aggregate [P, C] of the shared predictions [n, P, C] and the handle."""
        n, P, C = shared.shape
        name = "cronus-" + self.params.aggregator
        handle = ClientUpdates(shared.reshape(n, P * C), oracle=self.oracle, secure=self.secure, rule=name,
                               num_samples=self._counts().to(shared.dtype), transcript=self.transcript,
                               context={"round": self.transcript.round})
        if self.params.aggregator == "robustfilter":
            x = revealed(handle).reshape(n, P, C).transpose(0, 1)   # [P, n, C]: one set per public example
            agg, kept = robustfilter_batched(x, self.epsilon, self.params.iterations, self.params.threshold)
            self.kept_fraction.append(float(kept.float().mean()))
            self.last_kept = kept
            return agg, handle
        if not self.secure:
            handle.reveal()   # without secure aggregation the server receives every party's predictions
        return self.mean_rule(handle).reshape(P, C), handle

    # ------------------------------------------------------------------ rounds

    def step(self, rnd: int) -> RoundRecord:
        self.initialize()
        t0 = time.perf_counter()
        self.transcript.round = rnd
        shared, clipped = self._poison(self.predictions())
        calls_before = len(self.transcript.calls)
        aborted = None
        try:
            agg, handle = self.aggregate(shared)
        except SecureAggregationAborted as exc:
            # no aggregate this round (too few parties survived the masked protocol): the parties
            # train on their private data only (on_abort="continue"), or the run stops ("stop")
            aborted, agg = f"{type(exc).__name__}: {exc}", None
            if self.cfg.on_abort == "stop":
                self.stopped = f"round {rnd}: {aborted}"
        if agg is not None and not torch.isfinite(agg).all():
            raise RuntimeError("the aggregate of the predictions is not finite")
        self.shared_history.append(shared.detach())
        if agg is not None:
            self.aggregate_history.append(agg.detach())
        labels = None if agg is None else agg if self.broadcast_hook is None else self.broadcast_hook(rnd, agg)
        for _ in range(self.params.collab_epochs):
            self._private_epochs(1)
            if labels is not None:
                for _ in range(self.params.public_epochs):
                    self._public_epoch(labels)
        acc, loss = self.evaluate()
        rec = RoundRecord(rnd, acc, loss, len(self.transcript.calls) - calls_before, self.cfg.clients,
                          time.perf_counter() - t0, corrupted=len(self.corrupted), attack_clipped=clipped,
                          aborted=aborted)
        self.history.append(rec)
        return rec

    def run(self, progress: Optional[Callable[[RoundRecord], None]] = None) -> List[RoundRecord]:
        self.initialize()
        for rnd in range(len(self.history), self.cfg.rounds):
            if self.stopped:
                break
            rec = self.step(rnd)
            if progress is not None:
                progress(rec)
        return self.history

    # ------------------------------------------------------------------ the server's model on predictions

    def train_student(self, labels: Tensor, start: Optional[Tensor] = None) -> Tensor:
        """The server's model trained on (X_p, ``labels``) (soft labels [P, C]): from ``start``
        (flat parameters) or a fresh seeded model, ``student_epochs`` epochs of Adam at
        ``student_lr``; the same inputs give the same parameters. Returns the flat parameters."""
        ds = self.data
        student = build_model(self.model_name, ds.input_shape, ds.num_classes, seed=self.cfg.seed + 424242)
        student = student.to(self.device)
        if start is not None:
            set_flat_params(student, start.clone())
        opt = torch.optim.Adam(student.parameters(), lr=self.params.student_lr)
        g = torch.Generator().manual_seed(self.cfg.seed + 31337)
        xp, bs = self.x_public, self.cfg.batch_size
        for _ in range(self.params.student_epochs):
            order = torch.randperm(len(xp), generator=g).to(self.device)
            for i in range(0, len(order), bs):
                b = order[i:i + bs]
                opt.zero_grad(set_to_none=True)
                soft_cross_entropy(student(xp[b]), labels[b]).backward()
                opt.step()
        return flat_params(student)

    @torch.no_grad()
    def labels_of(self, flat: Tensor) -> Tensor:
        """Soft labels [P, C] that the model with flat parameters ``flat`` gives the public set."""
        m = copy.deepcopy(self.model)
        set_flat_params(m, flat)
        return F.softmax(m(self.x_public), dim=1)

    def result(self) -> Dict[str, Any]:
        """The JSON-ready result, with the keys of :meth:`Simulation.result` and a ``cronus`` section."""
        last = self.history[-1] if self.history else None
        party_acc = {str(k): evaluate(self.models[k], self.data.x_test, self.data.y_test)[0] for k in self.honest}
        return {
            "config": self.cfg.to_dict(),
            "rounds": [dataclasses.asdict(r) for r in self.history],
            "final": {"test_accuracy": last.test_accuracy if last else None, "client_accuracy": None,
                      "test_loss": last.test_loss if last else None, "attack_success": None, "epsilon": None},
            "dp": None,
            "transcript": self.transcript.summary(),
            "aborted_rounds": [r.round for r in self.history if r.aborted],
            "stopped": self.stopped,
            "cronus": {"params": dataclasses.asdict(self.params), "filter_epsilon": self.epsilon,
                       "init_accuracy": self.init_accuracy, "honest_party_accuracy": party_acc,
                       "corrupted": self.corrupted.tolist(),
                       "kept_fraction": self.kept_fraction[-1] if self.kept_fraction else None},
        }
