"""The configuration of a run: :class:`RunConfig`, its vocabularies and its validation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

import dp

from protocols.clients import TRAINERS, LocalTraining

SECAGG_MODES = ("off", "plaintext", "quantized", "masked")
DP_MODES = ("record", "user-central", "user-distributed")
# Rules whose every oracle call the user-level DP oracles can noise with a public sensitivity.
USER_DP_RULES = ("fedavg", "rfa", "rfa-onestep", "rfa-personalized")


@dataclass
class RunConfig:
    """Everything that defines a run; every field has a default (``fedaudit run``'s)."""

    protocol: str = "params"                    # "params": clients share model updates (the rules
                                                # aggregate them); "cronus": clients share predictions
                                                # on a public set (Cronus, protocols.cronus)
    protocol_args: Dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: Optional[str] = None              # folder of an on-disk dataset (protocols.data)
    clients: int = 20
    clients_per_round: Optional[int] = None     # None: all clients every round
    rounds: int = 30
    partition: str = "auto"                     # "auto": the dataset's default (digits: dirichlet;
                                                # shakespeare, femnist, sent140: natural)
    alpha: float = 0.5                          # Dirichlet concentration
    labels_per_client: int = 2                  # shards partition
    partition_args: Dict[str, Any] = field(default_factory=dict)  # extra partitioner arguments
    model: str = "auto"                         # "auto": the dataset's default model (digits: mlp)
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
    neighbors: Union[int, str, None] = None     # masked: None complete graph; "auto" SecAgg+ with k and
                                                # t_s from Bell et al.'s bound; an int k: k-regular (unchecked)
    dropout_rate: float = 0.0                   # masked: fraction of the clients dropping per call
    corrupt_fraction: Optional[float] = None    # masked: clients that may collude with the server, the
                                                # bound's gamma (None: max(0.1, corrupt); never below corrupt)
    dropout_fraction: Optional[float] = None    # masked: the bound's delta (None: max(0.1, dropout_rate))
    on_abort: str = "continue"                  # a secure-aggregation call aborts (too few clients
                                                # left): "continue" (the round keeps the model, as a
                                                # real server would) or "stop" (end the run there)
    local_epochs: Optional[int] = None          # None: the dataset's preset, else 2
    batch_size: int = 16
    lr: Optional[float] = None                  # None: the dataset's preset, else 0.05
    momentum: float = 0.5
    weight_decay: float = 0.0
    adv_reg: float = 0.0                        # lambda of adversarial regularization (Nasr et al.
                                                # 2018) in local training; 0: off
    server_lr: float = 1.0
    training: str = "vmap"
    client_batch: Optional[int] = None          # vmap: clients trained together (None: sized from the
                                                # model and the free memory; results do not change)
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None               # torch CPU threads (None: the idle cores, see
                                                # protocols.simulation.base.apply_threads)
    # Differential privacy (package ``dp``): None (off), "record" (Opacus DP-SGD in each
    # client's local training), "user-central" (clip + Gaussian noise by a trusted server),
    # "user-distributed" (clip + discrete Gaussian shares summed by secure aggregation).
    dp: Optional[str] = None
    noise_multiplier: Optional[float] = None    # z; exactly one of this and target_epsilon
    target_epsilon: Optional[float] = None      # z chosen so that the run ends at this epsilon
    delta: float = 1e-5
    max_grad_norm: float = 1.0                  # record: per-example gradient clip
    dp_clip: float = 1.0                        # user-level: L2 clip C of each client's update
    accountant: str = "prv"                     # Opacus accountant: prv (tighter) | rdp; the
                                                # distributed discrete Gaussian is always RDP
    dp_seeded_noise: bool = False               # True: DP noise (and Poisson cohorts) from the run
                                                # seed, for paired runs; the epsilon then does not
                                                # hold against anyone who knows the seed

    def validate(self) -> None:
        if not isinstance(self.protocol, str) or not self.protocol:
            raise ValueError(f"protocol={self.protocol!r} must be a protocol name (`fedaudit run --help` lists them)")
        if not (isinstance(self.adv_reg, (int, float)) and self.adv_reg >= 0):
            raise ValueError(f"adv_reg={self.adv_reg!r} must be a number >= 0 (0 turns it off)")
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
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0 (or None for the dataset's preset)")
        for name in ("client_batch", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer (or None: chosen automatically)")
        if self.local_epochs is not None and not (isinstance(self.local_epochs, int) and self.local_epochs >= 1):
            raise ValueError(f"local_epochs={self.local_epochs!r} must be a positive integer "
                             "(or None for the dataset's preset)")
        self._validate_secagg()
        from protocols.simulation.checks import check_run   # torch and the registries (checks.py)
        check_run(self)
        self._validate_dp()

    def _validate_secagg(self) -> None:
        n = self.neighbors
        if not (n is None or n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and n >= 1)):
            raise ValueError(f"neighbors={n!r} (--neighbors) must be 'auto' (SecAgg+ from Bell et al.'s bound), "
                             "a degree k >= 1, or None (the complete graph)")
        for name in ("corrupt_fraction", "dropout_fraction"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1):
                raise ValueError(f"{name}={v!r} (--{name.replace('_', '-')}) must be a fraction in [0, 1) or None")
        # The poisoning clients may also collude with the server: the protocol must tolerate them.
        if self.corrupt_fraction is not None and isinstance(self.corrupt, (int, float)) \
                and self.corrupt_fraction < self.corrupt:
            raise ValueError(f"corrupt_fraction={self.corrupt_fraction} is below the run's corrupt={self.corrupt}: "
                             "the corrupted clients may collude with the server, so secure aggregation must "
                             f"tolerate at least them; use --corrupt-fraction >= {self.corrupt} (or leave it unset)")
        if self.dropout_fraction is not None and self.dropout_fraction < self.dropout_rate:
            raise ValueError(f"dropout_fraction={self.dropout_fraction} is below dropout_rate={self.dropout_rate}: "
                             "the simulated dropouts would exceed what the bound assumes; use "
                             f"--dropout-fraction >= {self.dropout_rate} (or leave it unset)")

    def _validate_dp(self) -> None:
        if not isinstance(self.dp_seeded_noise, bool):
            raise ValueError(f"dp_seeded_noise={self.dp_seeded_noise!r} must be True or False")
        if self.dp is None:
            if self.noise_multiplier is not None or self.target_epsilon is not None:
                raise ValueError(f"noise_multiplier={self.noise_multiplier!r} / target_epsilon="
                                 f"{self.target_epsilon!r} given without DP; choose --dp {'|'.join(DP_MODES)}")
            if self.dp_seeded_noise:
                raise ValueError("dp_seeded_noise=True (--dp-seeded-noise) without DP: there is no DP noise to "
                                 f"seed; choose --dp {'|'.join(DP_MODES)} or drop the flag")
            return
        if self.dp not in DP_MODES:
            raise ValueError(f"dp={self.dp!r}; choose one of {DP_MODES} (or None for no DP)")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(f"--dp {self.dp} needs exactly one of --noise-multiplier and --target-epsilon "
                             f"(got noise_multiplier={self.noise_multiplier!r}, "
                             f"target_epsilon={self.target_epsilon!r})")
        if self.noise_multiplier is not None:
            dp.check_noise_multiplier(self.noise_multiplier)
        if self.target_epsilon is not None and not (isinstance(self.target_epsilon, (int, float))
                                                    and 0 < self.target_epsilon < float("inf")):
            raise ValueError(f"target_epsilon={self.target_epsilon!r} must be a finite number > 0")
        dp.check_delta(self.delta)
        if self.accountant not in dp.ACCOUNTANTS:
            raise ValueError(f"accountant={self.accountant!r}; choose one of {dp.ACCOUNTANTS}")
        if self.dp == "record":
            dp.check_clip(self.max_grad_norm, "max_grad_norm")
            return
        dp.check_clip(self.dp_clip, "dp_clip")
        dp.check_delta(self.delta, self.clients, unit="clients (users)")
        if self.rule not in USER_DP_RULES:
            raise ValueError(f"rule={self.rule!r} under --dp {self.dp}: user-level DP noises each secure-average "
                             f"call with a public sensitivity, which only {USER_DP_RULES} provide here; use one "
                             "of them, or --dp record (any rule)")
        if self.dp == "user-distributed" and self.secagg not in ("quantized", "masked"):
            raise ValueError(f"--dp user-distributed with secagg={self.secagg!r}: distributed DP sums the "
                             "clients' noise shares in Z_M; use --secagg quantized or --secagg masked "
                             "(or --dp user-central)")
        if self.dp == "user-distributed" and self.noise_multiplier == 0:
            raise ValueError("noise_multiplier=0: distributed DP needs noise_multiplier > 0")
        m = self.clients_per_round or self.clients
        if m < self.clients and self.secagg == "masked" and isinstance(self.threshold, int) \
                and not isinstance(self.threshold, bool):
            raise ValueError(f"threshold={self.threshold} (a client count) under --dp {self.dp}: user-level DP "
                             f"samples Poisson cohorts (about {m} of {self.clients} clients, varying), so give "
                             "the masked protocol's threshold as a fraction of each cohort, e.g. --threshold 0.66")

    def local_training(self) -> LocalTraining:
        """The clients' SGD settings of a config whose dataset defaults are resolved
        (``Simulation.cfg``; lr and local_epochs no longer None)."""
        if self.lr is None or self.local_epochs is None:
            raise ValueError("lr / local_epochs are None (the dataset's preset): resolve them first, "
                             "as the simulations do (protocols.data.dataset_run_defaults)")
        return LocalTraining(self.local_epochs, self.batch_size, self.lr, self.momentum, self.weight_decay,
                             client_batch=self.client_batch)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
