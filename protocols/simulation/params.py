"""The parameter-sharing protocol ("params"): clients send model updates, a rule aggregates them.

Federated training in one process: rounds, client sampling, secure aggregation, history.

Each round: sample clients (seeded), train them locally from the global model
(vectorized or looped), hand the updates to the aggregation rule as a
:class:`secagg.ClientUpdates` backed by the configured oracle, apply the
aggregate with the server learning rate, evaluate on held-out data.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Optional

import torch

import dp
from secagg import ClientUpdates, SecureAggregationAborted, Transcript

from protocols.attacks import AttackView, corrupted_clients, make_attack, submit_poisoned
from protocols.clients import TRAINERS, evaluate, train_clients_advreg
from protocols.data import Dataset, dataset_run_defaults, load_dataset, resolve_partition
from protocols.models import build_model, flat_params, resolve_model, set_flat_params
from protocols.rules import make_rule
from protocols.simulation.base import RoundRecord, make_oracle, partition_pool, register_protocol
from protocols.simulation.config import RunConfig


@register_protocol("params")
class Simulation:
    """One federated run. ``run()`` returns the list of :class:`RoundRecord`.

    ``keep_reveals``: keep a copy of every round's revealed [n, d] updates in the transcript
    (without secure aggregation the server holds them); only the audits of the individual view
    read them, so only they ask (a copy per round is the size of the updates)."""

    def __init__(self, cfg: RunConfig, dataset: Optional[Dataset] = None, *, keep_reveals: bool = False):
        cfg.validate()
        if cfg.protocol != self.protocol_name:
            raise ValueError(f"Simulation runs protocol={self.protocol_name!r}, not {cfg.protocol!r}; "
                             "use protocols.runner.make_simulation(cfg) to pick the protocol's simulation")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        ds = dataset if dataset is not None else load_dataset(cfg.dataset, seed=cfg.seed, data_dir=cfg.data_dir)
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
        # The dataset's defaults: "auto" partition and model, and lr / local_epochs left at None
        # (meta["run_defaults"], e.g. shakespeare's LEAF learning rate, else 0.05 / 2).
        # Resolved into self.cfg, so that result()["config"] says what ran.
        scheme = self.partition_scheme = resolve_partition(cfg.partition, ds)
        self.model_name = resolve_model(cfg.model, ds)
        self.cfg = cfg = dataclasses.replace(cfg, partition=scheme, model=self.model_name,
                                             **dataset_run_defaults(ds, cfg))
        self.client_indices = [ix.to(self.device) for ix in partition_pool(ds, pool, cfg, scheme)]
        self.model = build_model(self.model_name, ds.input_shape, ds.num_classes, seed=cfg.seed).to(self.device)
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
        self.transcript = Transcript(keep_reveals=keep_reveals)
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
        self.dpc: Optional[dp.RecordLevelClients] = None
        self.accountant: Optional[dp.PrivacyAccountant] = None
        self.noise_multiplier: Optional[float] = None
        if cfg.dp == "record":
            self._setup_record_dp()
        elif cfg.dp is not None:
            self._setup_user_dp()

    # ------------------------------------------------------------------ differential privacy

    def _setup_record_dp(self) -> None:
        """Record-level DP-SGD (Abadi et al. 2016) through Opacus in every client's local training."""
        cfg = self.cfg
        if self.batch_transform is not None:
            raise ValueError(f"attack {cfg.attack!r} poisons training batches, which the Opacus DP-SGD clients "
                             "of --dp record do not support; use an update-poisoning attack or no --dp")
        z = cfg.noise_multiplier
        if z is None:
            n_min = min(len(ix) for ix in self.client_indices)
            # personalization trains twice per round (u_i, then w): twice the DP-SGD steps
            rounds = cfg.rounds * (2 if self.personalized else 1)
            z = dp.record_level_noise_for_epsilon(cfg.target_epsilon, n_records=n_min, batch_size=cfg.batch_size,
                                                  epochs=cfg.local_epochs, rounds=rounds, delta=cfg.delta,
                                                  accountant=cfg.accountant)
        self.noise_multiplier = float(z)
        self.dpc = dp.RecordLevelClients(noise_multiplier=z, max_grad_norm=cfg.max_grad_norm,
                                         epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed,
                                         accountant=cfg.accountant, seeded_noise=cfg.dp_seeded_noise)

    def _calls_per_round(self) -> int:
        """Oracle calls (noisy releases) per round of the rule under user-level DP."""
        if self.cfg.rule == "fedavg":
            return 1
        if self.cfg.rule == "rfa-onestep":
            return 1
        return int(self.rule.max_calls) + (1 if self.rule.v0 == "mean" else 0)

    def _setup_user_dp(self) -> None:
        """User-level DP (McMahan et al. 2018) on every oracle call: central or distributed.

        Cohorts are Poisson samples of rate q = m / N (:meth:`sample_clients`), which is what
        the accountant analyses (add/remove one user; docs/dp.md). Central noise is the fine-grid
        discrete Gaussian, accounted as the Gaussian (Opacus PRV or RDP); distributed noise is
        the distributed discrete Gaussian, accounted by its RDP bound (Zhu-Wang under sampling).
        """
        cfg = self.cfg
        C = float(cfg.dp_clip)
        m = cfg.clients_per_round or cfg.clients
        mechanism = "discrete" if cfg.dp == "user-distributed" else "gaussian"
        self.accountant = dp.PrivacyAccountant(m / cfg.clients, accountant=cfg.accountant, mechanism=mechanism)
        base = make_oracle(cfg, m)
        if cfg.rule == "fedavg":
            # equal weights and the public expected count as denominator (McMahan et al. 2018)
            if cfg.rule_args.get("weighted"):
                raise ValueError(f"fedavg with weighted=True under --dp {cfg.dp}: DP-FedAvg weighs every user "
                                 "equally (sensitivity C per user, fixed denominator); drop weighted=True")
            self.rule.weighted = False
            den, mw = float(m), 0.0
        else:
            args = cfg.rule_args
            if args.get("track_objective"):
                raise ValueError(f"rule {cfg.rule!r} with track_objective=True under --dp {cfg.dp}: the objective "
                                 "calls send unclipped distances with no DP sensitivity; drop track_objective")
            if args.get("weight_bound", "dp") != "dp":
                raise ValueError(f"rule {cfg.rule!r} with weight_bound={args['weight_bound']!r} under --dp "
                                 f"{cfg.dp}: DP-RFA needs the public per-call bound weight_bound='dp'")
            if "nu" not in args:
                self.rule.nu = C / 2.0      # nu of the order of the distances (dp/rfa_sensitivity.py)
            if hasattr(self.rule, "track_objective"):
                self.rule.track_objective = False
            self.rule.weight_bound = "dp"
            den, mw = "noisy", dp.rfa_weight_floor(C, float(self.rule.nu))
        z = cfg.noise_multiplier
        if z is None:
            z = dp.rfa_noise_for_epsilon(cfg.target_epsilon, self._calls_per_round(), m, cfg.clients,
                                         cfg.rounds, cfg.delta, accountant=cfg.accountant, mechanism=mechanism)
            if mechanism == "discrete" and len(self.corrupted):
                # corrupted clients add no noise: the honest expected share (1 - rho) must carry z^2
                z = z / (1.0 - len(self.corrupted) / cfg.clients) ** 0.5
        self.noise_multiplier = float(z)
        noise = dict(seeded_noise=cfg.dp_seeded_noise, seed=cfg.seed)
        if cfg.dp == "user-central":
            # the cohort size is private under add/remove neighbours: clamp only to public constants
            self.oracle = dp.CentralDPOracle(base, clip=C, noise_multiplier=z, accountant=self.accountant,
                                             denominator=den, min_weight=mw, public_cohort_size=False, **noise)
        else:
            # each call's shares carry 1/n of the noise, n the call's cohort (the server sees it)
            self.oracle = dp.DistributedDPOracle(base, clip=C, noise_multiplier=z, expected_clients=None,
                                                 accountant=self.accountant, denominator=den, min_weight=mw,
                                                 **noise)

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
        poisoned, clipped = submit_poisoned(self.attack, view,
                                            self.cfg.clip if self.cfg.secagg in ("quantized", "masked") else None)
        deltas = deltas.clone()
        deltas[bad_d] = poisoned
        return deltas, clipped

    def sample_clients(self) -> torch.Tensor:
        """This round's cohort: all clients when clients_per_round is unset; under user-level DP a
        Poisson sample (each client with q = m / N, the accountant's analysis; may be empty), drawn
        from the OS CSPRNG (the cohort is part of the mechanism) or, with ``dp_seeded_noise``, from
        (seed, round); otherwise m clients uniformly from the run's generator."""
        cfg = self.cfg
        m = cfg.clients_per_round or cfg.clients
        if m == cfg.clients:
            ids = torch.arange(cfg.clients)
        elif self.accountant is not None:
            rng = dp.noise_rng(cfg.dp_seeded_noise, cfg.seed, dp.noise.STREAM_COHORT, len(self.history))
            ids = dp.bernoulli_cohort(cfg.clients, m, rng)
        else:
            ids = torch.randperm(cfg.clients, generator=self.gen)[:m].sort().values
        if isinstance(self.oracle, dp.DistributedDPOracle):
            # corrupted clients may add no noise: only the honest shares count (dp/distributed.py)
            self.oracle.set_cohort(torch.isin(ids, self.corrupted))
        return ids

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
            if self.cfg.adv_reg > 0:
                # adversarial regularization (Nasr et al. 2018): per-client loop with inference models
                return train_clients_advreg(self, ids, parts, start)
            if self.dpc is not None:
                # record-level DP: Opacus DP-SGD, one persistent client (and accountant) per id
                return self.dpc.train(self.model, ids.tolist(), parts, self.data.x_train, self.data.y_train,
                                      start=start)
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
        if len(ids) == 0:
            return self._empty_round(rnd, ids, t0)
        deltas = self.client_updates(ids, self.broadcast_params(rnd))
        counts = torch.tensor([len(self.client_indices[i]) for i in ids.tolist()],
                              dtype=deltas.dtype, device=deltas.device)
        context = {"round": rnd, "client_ids": ids, "global_params": flat_params(self.model)}
        if self.root_indices is not None:
            # The server's own update on its root data (FLTrust Alg. 1, ModelUpdate on D_0).
            context["server_update"] = self.trainer(self.model, self.data.x_train, self.data.y_train,
                                                    [self.root_indices], self.local, self.gen)[0]
        deltas, clipped = self._poison_updates(ids, deltas, counts, context.get("server_update"))
        dp_clipped = None
        if self.accountant is not None:
            # User-level DP: every client clips its update to L2 norm C (the mechanism's sensitivity,
            # McMahan et al. 2018, Alg. 1; counted, not silent) and weighs 1 (equal alphas).
            res = dp.clip_updates(deltas, self.cfg.dp_clip)
            deltas, dp_clipped = res.updates, res.n_clipped
            counts = torch.ones_like(counts)
            context["dp_clip"] = float(self.cfg.dp_clip)
        handle = ClientUpdates(deltas, oracle=self.oracle, secure=self.secure, rule=self.rule.name,
                               num_samples=counts, transcript=self.transcript, context=context)
        if not self.secure:
            handle.reveal()  # without secure aggregation the server receives every update
        self.last_round_clients = ids
        clipped_before = getattr(self.oracle, "total_clipped", 0)
        aborted = None
        try:
            agg = self.rule(handle)
        except SecureAggregationAborted as exc:
            # Too few clients survived a protocol call: a real server gets no sum and keeps its
            # model this round (--on-abort continue), or stops the run (stop). Calls released
            # before the abort stay in the transcript and in the DP accounting.
            aborted, agg = f"{type(exc).__name__}: {exc}", None
        if agg is not None and (agg.shape != (deltas.shape[1],) or not torch.isfinite(agg).all()):
            raise RuntimeError(f"rule {self.rule.name!r} returned an invalid aggregate "
                               f"(shape {tuple(agg.shape)}, finite={bool(torch.isfinite(agg).all())})")
        dp_fields = self._dp_round_fields(dp_clipped)
        if agg is not None:
            with torch.no_grad():
                set_flat_params(self.model, flat_params(self.model) + self.cfg.server_lr * agg)
        elif self.cfg.on_abort == "stop":
            self.stopped = f"round {rnd}: {aborted}"
        self.global_history.append(flat_params(self.model).clone())
        acc, loss = evaluate(self.model, self.data.x_test, self.data.y_test)
        success = self.attack_success()
        client_acc = self.client_accuracy()
        rec = RoundRecord(rnd, acc, loss, handle.oracle_calls, len(ids), time.perf_counter() - t0,
                          corrupted=int(torch.isin(ids, self.corrupted).sum()), attack_clipped=clipped,
                          clipped=getattr(self.oracle, "total_clipped", 0) - clipped_before,
                          attack_success=success, client_accuracy=client_acc, aborted=aborted, **dp_fields)
        self.history.append(rec)
        return rec

    def _empty_round(self, rnd: int, ids: torch.Tensor, t0: float) -> RoundRecord:
        """A Poisson cohort with no client (user-level DP): recorded, not a crash. Central DP still
        releases the round's noise (under add/remove neighbours an empty cohort must look like a
        one-user cohort's noisy sum): each of the rule's calls is a noise-only release, accounted,
        and the model moves by the last one (what the rule returns on all-zero sums). Distributed
        DP has no noise shares to sum and no release (its zero-out relation never empties a cohort
        on one user's account): the model is kept."""
        calls = 0
        if isinstance(self.oracle, dp.CentralDPOracle):
            w = flat_params(self.model)
            calls = self._calls_per_round()
            for _ in range(calls):
                agg = self.oracle.release_noise_only(w.shape[0], device=w.device, dtype=w.dtype)
            with torch.no_grad():
                set_flat_params(self.model, w + self.cfg.server_lr * agg)
        self.last_round_clients = ids
        dp_fields = self._dp_round_fields(None)
        self.global_history.append(flat_params(self.model).clone())
        acc, loss = evaluate(self.model, self.data.x_test, self.data.y_test)
        rec = RoundRecord(rnd, acc, loss, calls, 0, time.perf_counter() - t0, attack_success=self.attack_success(),
                          client_accuracy=self.client_accuracy(), **dp_fields)
        self.history.append(rec)
        return rec

    def _dp_round_fields(self, dp_clipped: Optional[int]) -> Dict[str, Any]:
        """Close the round in the accountant and read epsilon (RoundRecord's DP fields)."""
        cfg = self.cfg
        if self.dpc is not None:
            eps = list(self.record_epsilons().values())
            return {"epsilon": max(eps) if eps else 0.0, "epsilon_mean": sum(eps) / len(eps) if eps else 0.0,
                    "delta": cfg.delta}
        if self.accountant is not None:
            z_round = self.accountant.end_round()
            return {"epsilon": self.accountant.epsilon(cfg.delta, n_records=cfg.clients),
                    "epsilon_without_sampling": self.accountant.epsilon_without_sampling(cfg.delta),
                    "delta": cfg.delta, "dp_clipped": dp_clipped, "round_noise_multiplier": z_round}
        return {}

    def record_epsilons(self, accountant: Optional[str] = None) -> Dict[int, float]:
        """Each record-level client's epsilon at ``cfg.delta`` so far (``dp.RecordLevelClients.epsilons``),
        with ``accountant`` (default: the run's).

        With the RDP accountant the per-step RDP curve of each (sample rate, z) is computed
        once and scaled by the client's step count: exactly Opacus's
        ``RDPAccountant.get_epsilon`` (RDP composes additively, Mironov 2017), without
        recomputing the fractional-order series (about a second per client) every round.
        """
        if (accountant or self.cfg.accountant) != "rdp":
            # PRV: one Opacus evaluation per distinct history (clients that trained alike share it)
            cache = self.__dict__.setdefault("_prv_cache", {})
            out = {}
            for cid, c in self.dpc.clients.items():
                dp.check_delta(self.cfg.delta, c.n_records, unit="records of this client")
                key = tuple(c.engine.accountant.history)
                if key not in cache:
                    cache[key] = 0.0 if not key else math.inf if c.noise_multiplier == 0 else \
                        dp.accounting.opacus_epsilon(list(key), self.cfg.delta, "prv")
                out[cid] = cache[key]
            return out
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis import rdp as rdp_analysis
        alphas = RDPAccountant.DEFAULT_ALPHAS
        cache = self.__dict__.setdefault("_rdp_cache", {})
        out: Dict[int, float] = {}
        for cid, c in self.dpc.clients.items():
            dp.check_delta(self.cfg.delta, c.n_records, unit="records of this client")
            history = c.engine.accountant.history
            if not history:
                out[cid] = 0.0
                continue
            if c.noise_multiplier == 0:
                out[cid] = float("inf")
                continue
            rdp = 0.0
            for z, q, steps in history:
                if (q, z) not in cache:
                    cache[(q, z)] = rdp_analysis.compute_rdp(q=q, noise_multiplier=z, steps=1, orders=alphas)
                rdp = rdp + cache[(q, z)] * steps
            out[cid] = float(rdp_analysis.get_privacy_spent(orders=alphas, rdp=rdp, delta=self.cfg.delta)[0])
        return out

    def dp_summary(self) -> Optional[Dict[str, Any]]:
        """The DP settings and the privacy spent so far (None without DP)."""
        cfg = self.cfg
        if cfg.dp is None:
            return None
        last = self.history[-1] if self.history else None
        out: Dict[str, Any] = {"mode": cfg.dp, "noise_multiplier": self.noise_multiplier,
                               "target_epsilon": cfg.target_epsilon, "delta": cfg.delta,
                               "accountant": cfg.accountant, "noise": dp.noise_label(cfg.dp_seeded_noise),
                               "epsilon": last.epsilon if last else 0.0}
        if self.dpc is not None:
            per = {a: self.record_epsilons(a) for a in ("rdp", "prv")}
            out.update({"max_grad_norm": cfg.max_grad_norm, "level": "record",
                        "neighbouring_relation": "add/remove one record of a client (Poisson lots of rate "
                                                 "1/ceil(n/batch_size), Opacus)",
                        "mechanism": "DP-SGD, Opacus; secure-mode noise construction on OS-reseeded "
                                     "generators" if not cfg.dp_seeded_noise else "DP-SGD, Opacus; seeded",
                        "epsilon_mean": last.epsilon_mean if last else 0.0,
                        "epsilons": {a: max(v.values()) if v else 0.0 for a, v in per.items()},
                        "per_client_epsilon": {str(k): v for k, v in per[cfg.accountant].items()}})
            return out
        acc = self.accountant
        central = cfg.dp == "user-central"
        m = cfg.clients_per_round or cfg.clients
        out.update({"clip": cfg.dp_clip, "level": "user", "sample_rate": acc.sample_rate,
                    "cohort_sampling": "poisson" if m < cfg.clients else "all clients every round",
                    "neighbouring_relation": "add/remove one user" if central else
                    "zero-out one user (its update replaced by 0 while it still sends noise; KLS 2021)",
                    "mechanism": "fine-grid discrete Gaussian by the server, accounted as the Gaussian "
                                 "(dp/grid.py)" if central else
                                 "distributed discrete Gaussian (KLS 2021 Prop. 14), honest survivors' shares",
                    "accountant": acc.accountant, "epsilons": acc.epsilons(cfg.delta),
                    "calls_per_round": self._calls_per_round(),
                    "epsilon_without_sampling": last.epsilon_without_sampling if last else 0.0,
                    "clipped_clients": sum(r.dp_clipped or 0 for r in self.history),
                    "empty_rounds": sum(1 for r in self.history if r.clients == 0),
                    "floored_calls": getattr(self.oracle, "floored_calls", 0),
                    "accounting": acc.to_dict()})
        if not central:
            out["gaussian_estimate"] = {"epsilon": acc.gaussian_estimate(cfg.delta),
                                        "note": "the continuous sampled Gaussian of the same noise multipliers "
                                                "(Opacus RDP): an estimate, not a guarantee"}
            out["corrupt_clients_add_no_noise"] = int(len(self.corrupted))
        if acc.note():
            out["accountant_note"] = acc.note()
        if cfg.rule != "fedavg":
            out["nu"] = float(self.rule.nu)
        return out

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
        """Rounds until ``cfg.rounds``, or until a round aborted with ``on_abort="stop"``
        (``self.stopped`` says why; ``result()["stopped"]`` too)."""
        for rnd in range(len(self.history), self.cfg.rounds):
            if getattr(self, "stopped", None):
                break
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
                      "attack_success": last.attack_success if last else None,
                      "epsilon": last.epsilon if last else None},
            "dp": self.dp_summary(),
            "transcript": self.transcript.summary(),
            "aborted_rounds": [r.round for r in self.history if r.aborted],
            "stopped": getattr(self, "stopped", None),
        }
