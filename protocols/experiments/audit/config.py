"""What an audit trains and attacks: :class:`AuditConfig`, the audit's default run, the views.

The default run (:data:`AUDIT_RUN_DEFAULTS`) differs from ``fedaudit run``'s on purpose: 100
IID clients of about 14 digits records each, so that local models overfit their owner's data
(membership leakage needs it), 5 local epochs at lr 0.2, 20 rounds, RFA, ``secagg="off"`` so
that the table shows every view. ``audit.json`` records these defaults and the resolved run.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import membership as M

from protocols.simulation import RunConfig

__all__ = ["AUDIT_RUN_DEFAULTS", "VIEW_KINDS", "CANARY_KINDS", "DEFAULT_ATTACKS", "DEFAULT_REFERENCE_MODELS",
           "ACTIVE_NOTES", "AuditConfig", "audit_run_config", "known_view_name"]

#: The run configuration of ``fedaudit audit`` with no options (see the module docstring).
AUDIT_RUN_DEFAULTS: Dict[str, Any] = dict(dataset="digits", clients=100, partition="iid", model="mlp",
                                          local_epochs=5, lr=0.2, rounds=20, rule="rfa", secagg="off")

VIEW_KINDS = ("individual", "aggregate", "weiszfeld", "active-individual", "active-aggregate")
CANARY_KINDS = ("auto", "client", "record")
#: Attacks of ``fedaudit audit`` with no ``--attacks`` (the library's :class:`AuditConfig` keeps the
#: baseline attacks and no reference models, so that callers such as ``fedaudit tradeoff`` stay cheap).
DEFAULT_ATTACKS = ("loss", "gradient_norm", "lira", "rmia")
#: Reference federations of ``fedaudit audit`` with no ``--reference-models``: with the audited run
#: they give 9 runs x 180 evaluated non-members = 1,620 >= 1,000, so TPR at 0.1% FPR is estimable.
DEFAULT_REFERENCE_MODELS = 8

ACTIVE_NOTES = """\
Malicious-server gradient ascent (Nasr et al. 2019; Cronus B.5) on digits, default run with
FedAvg, 25 pooled target clients (375 members / 360 test non-members, 180 + 180 evaluated),
AUC of the active-individual view vs the passive individual view, seeds 0-3:

* The ascent is on the mean loss of all target records. One ascended broadcast with the
  passive pair's information ([ascended, after]) is not enough: the owner's training
  mostly undoes the ascent direction, common to all targets, so the raw loss drop
  loss(ascended) - loss(after) falls with gamma (0.71 at gamma 1, 0.64 at 3, 0.56 at 10;
  passive loss drop 0.72) and, on an under-trained model (5 local epochs at lr 0.05),
  even ranks members below chance (AUC 0.23): members, fitted better, start lower and
  lose less. The server also holds its honest model theta_a, so the active views are
  [theta_a, ascended, after] and the drop attacks compare theta_a with after.
* gamma 5, one active round, one step (the default): every seed gains on the threshold
  attacks: loss +0.025..+0.045 AUC, gradient_norm +0.026..+0.043, loss_drop
  +0.028..+0.043, gradient_norm_drop +0.004..+0.025; white-box -0.004..+0.079 (seed 0:
  0.726 vs 0.730; -0.020 under the default RFA rule). gamma 2-3 gains less
  (+0.01..+0.03); gamma 10 gains more on the loss (+0.03..+0.07) but is erratic on the
  gradient-norm drop and the white-box attack, and the honest model's test accuracy
  after that round falls to 0.34-0.75.
* Several active rounds hurt here: the simulation's malicious server applies the clients'
  repair of the ascent to its honest model, so after 5 rounds at gamma 1-3 test accuracy
  is ~0.4-0.6 and the individual-view AUC is at or below passive (0.53-0.73).
* The aggregate of 100 clients gains nothing from the ascent (active-aggregate within
  +-0.03 of passive, around 0.5): each target client weighs 1/100 in it.
"""


def audit_run_config(**overrides) -> RunConfig:
    """The default run of an audit (:data:`AUDIT_RUN_DEFAULTS`) with ``overrides``."""
    return RunConfig(**{**AUDIT_RUN_DEFAULTS, **overrides})


def known_view_name(v: str) -> bool:
    """A view name the audit knows: a kind, ``weiszfeld-R`` or ``active``."""
    return v in VIEW_KINDS or v == "active" or bool(re.fullmatch(r"weiszfeld-\d+", str(v)))


def _positive_int(name: str, v, minimum: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name}={v!r} must be an integer >= {minimum}")


@dataclass
class AuditConfig:
    """What to train and how to attack it.

    ``run``: the federation (any :class:`RunConfig`; DP, secagg, rule are its fields).
    ``attacks``: names from :data:`membership.ATTACKS`. ``views``: view names (see the
    package docstring) or ``None`` for every view the setting has. ``target_clients``:
    client indices whose records are the members, or ``None`` (clients 0, 1, ... until
    their records outnumber the test set). ``known_fraction``: the attacker's prior
    knowledge (Nasr et al.): that fraction of the members and as many non-members train
    or calibrate the attack, the rest evaluate it. ``active_gamma`` / ``active_rounds`` /
    ``active_steps``: the malicious server's ascent step, how many final rounds it
    ascends in, and ascent steps per broadcast. ``attack_args``: per-attack parameters,
    e.g. ``{"whitebox": {"epochs": 100}, "lira": {"online": False}}``. ``n_bootstrap``:
    resamples of the AUC and TPR CIs. ``seed``: non-member draw, known/evaluation split,
    reference-run membership, canaries, white-box initialisation.

    ``reference_models``: K shadow federations trained like the target with each target
    record included with probability 1/2 (0: none; LiRA and RMIA need K >= 2).
    ``reference_vectorize``: train them in lockstep, all clients of all runs in one
    vectorized call where the setting allows. ``canaries``: M canaries for the empirical
    epsilon (0: none) of ``canary_kind`` ("auto": record canaries under record-level DP,
    client canaries otherwise). ``confidence``: of every ``epsilon_lower``.
    """

    run: RunConfig = field(default_factory=audit_run_config)
    attacks: Sequence[str] = ("loss", "gradient_norm", "whitebox")
    views: Optional[Sequence[str]] = None
    target_clients: Optional[Sequence[int]] = None
    known_fraction: float = 0.5
    active_gamma: float = 5.0
    active_rounds: int = 1
    active_steps: int = 1
    attack_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    n_bootstrap: int = 1000
    seed: int = 0
    reference_models: int = 0
    reference_vectorize: bool = True
    canaries: int = 0
    canary_kind: str = "auto"
    confidence: float = 0.95

    def validate(self) -> None:
        self.run.validate()
        if self.run.protocol != "params":
            raise ValueError(f"fedaudit audit audits the parameter-sharing protocol (protocol='params'), not "
                             f"{self.run.protocol!r}; Cronus's views are audited by examples/cronus_tables.py")
        if isinstance(self.attacks, str) or not self.attacks:
            raise ValueError(f"attacks={self.attacks!r} must be a non-empty list of names from "
                             f"{sorted(M.ATTACKS)}")
        for a in self.attacks:
            if a not in M.ATTACKS:
                raise ValueError(f"unknown membership attack {a!r}; choose from {sorted(M.ATTACKS)}")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError(f"attacks={list(self.attacks)} lists an attack twice")
        for a, kw in self.attack_args.items():
            if a not in self.attacks:
                raise ValueError(f"attack_args names {a!r}, which is not among attacks={list(self.attacks)}")
            try:  # unknown or bad parameters: a clear error now, not after training
                M.make_attack(a, **kw)
            except TypeError as exc:
                raise ValueError(f"attack_args[{a!r}]: {exc}") from None
        if self.views is not None:
            if isinstance(self.views, str) or not self.views:
                raise ValueError(f"views={self.views!r} must be a non-empty list of view names or None (all)")
            for v in self.views:
                if not known_view_name(v):
                    raise ValueError(f"unknown view {v!r}; choose from {list(VIEW_KINDS)}, 'weiszfeld-R' "
                                     "(R = 0, 1, ...) or 'active' (both active views)")
        if not isinstance(self.known_fraction, (int, float)) or not 0 <= self.known_fraction < 1:
            raise ValueError(f"known_fraction={self.known_fraction!r} must lie in [0, 1)")
        if self.known_fraction == 0:
            needy = [a for a in self.attacks if M.ATTACKS[a].requires_fit]
            if needy:
                raise ValueError(f"known_fraction=0 leaves attack(s) {needy} nothing to train on; "
                                 "use known_fraction > 0 (e.g. 0.5)")
        if not isinstance(self.active_gamma, (int, float)) or not math.isfinite(self.active_gamma) \
                or self.active_gamma <= 0:
            raise ValueError(f"active_gamma={self.active_gamma!r} must be a finite number > 0")
        if not isinstance(self.active_rounds, int) or not 1 <= self.active_rounds <= self.run.rounds:
            raise ValueError(f"active_rounds={self.active_rounds!r} must lie in [1, rounds={self.run.rounds}]")
        _positive_int("active_steps", self.active_steps)
        _positive_int("n_bootstrap", self.n_bootstrap)
        if self.target_clients is not None:
            t = list(self.target_clients)
            if not t:
                raise ValueError("target_clients is empty; give client indices or None (automatic)")
            bad = [k for k in t if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < self.run.clients]
            if bad:
                raise ValueError(f"target client(s) {bad} out of range: clients are 0..{self.run.clients - 1}")
            if len(set(t)) != len(t):
                raise ValueError(f"target_clients={t} lists a client twice")
        self._validate_references()
        self._validate_canaries()

    def _validate_references(self) -> None:
        K = self.reference_models
        _positive_int("reference_models", K, minimum=0)
        if K == 1:
            raise ValueError("reference_models=1: LiRA and RMIA need reference models with and without each record; "
                             "use --reference-models 2 or more (default "
                             f"{DEFAULT_REFERENCE_MODELS}), or 0 for none")
        needy = [a for a in self.attacks if M.ATTACKS[a].requires_references]
        if needy and K == 0:
            raise ValueError(f"attack(s) {needy} need reference models; use --reference-models K (K >= 2, default "
                             f"{DEFAULT_REFERENCE_MODELS}) or drop them from --attacks")
        if K and (self.run.personalize or self.run.client_holdout or self.run.rule == "rfa-personalized"):
            raise ValueError("reference models re-draw each target client's records, which personalization and "
                             "--client-holdout tie to the original partition; use --reference-models 0 here")
        if not isinstance(self.reference_vectorize, bool):
            raise ValueError(f"reference_vectorize={self.reference_vectorize!r} must be True or False")

    def _validate_canaries(self) -> None:
        _positive_int("canaries", self.canaries, minimum=0)
        if self.canaries == 1:
            raise ValueError("canaries=1: a canary audit needs at least 2 canaries (e.g. --canaries 200)")
        if self.canary_kind not in CANARY_KINDS:
            raise ValueError(f"canary_kind={self.canary_kind!r}; choose one of {CANARY_KINDS}")
        if not isinstance(self.confidence, (int, float)) or not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence={self.confidence!r} must lie in (0.5, 1), e.g. 0.95")
        if self.canaries and self.resolved_canary_kind() == "client" and self.run.dp == "record":
            raise ValueError("client canaries audit user-level privacy, but --dp record protects records; use "
                             "--canary-kind record (or auto)")
        if self.canaries and (self.run.personalize or self.run.client_holdout):
            raise ValueError("canary runs re-draw the clients' data; personalization and --client-holdout are not "
                             "supported with --canaries")

    def resolved_canary_kind(self) -> str:
        """``canary_kind`` with "auto" resolved by the DP mode: record canaries under record-level
        DP (the guarantee is per record), client canaries otherwise (per user; Andrew et al.)."""
        if self.canary_kind != "auto":
            return self.canary_kind
        return "record" if self.run.dp == "record" else "client"

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attacks"], d["views"] = list(self.attacks), None if self.views is None else list(self.views)
        d["target_clients"] = None if self.target_clients is None else list(self.target_clients)
        return d
