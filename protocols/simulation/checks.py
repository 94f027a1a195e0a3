"""The checks of a :class:`RunConfig` that need torch or the registries, run by
``RunConfig.validate()`` before any data is loaded: the seed, the device, the rule and
attack parameters (names, types, values against the number of clients), the rule against
``secagg`` (a rule that needs individual updates is refused under secure aggregation), and
the warning for more corrupted clients than the rule's breakdown point.

Each error is one line naming the field (and its command-line option) and the fix.
"""
from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from typing import Any, Dict, Optional

import torch

from secagg import SecureAggregationViolation

from protocols.attacks import corrupted_clients, make_attack
from protocols.rules import RULES, make_rule
from protocols.rules.base import AggregationRule, BreakdownWarning, breakdown_warning

#: Seeds seed numpy / scikit-learn too, which take 0 <= seed < 2**32; offsets are added to it.
MAX_SEED = 2 ** 31 - 1
#: What a run does when a secure-aggregation call aborts (RunConfig.on_abort).
ON_ABORT = ("continue", "stop")


class RuleNeedsIndividualUpdates(SecureAggregationViolation, ValueError):
    """A rule that reads individual updates asked to run under secure aggregation: refused
    before training (a ``SecureAggregationViolation``, and a ``ValueError`` so that
    ``fedaudit`` prints one line and exits with status 2)."""


def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} (--seed) must be an integer in [0, {MAX_SEED}]")


def check_device(device: Any) -> torch.device:
    """``device`` as a torch device that exists on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} (--device) is not a torch device; use cpu, cuda or cuda:N "
                         "(an NVIDIA GPU), or mps (Apple)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={device!r} (--device) but {why}; use --device cpu, or install a CUDA "
                             "build of torch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} (--device): this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s), numbered from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r} (--device) but MPS (Apple GPU) is not available here; "
                             "use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} (--device): fedaudit runs on cpu, cuda or mps")
    return dev


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, typing.Sequence) or hint in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    return True     # a type this check does not know: the component validates it


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        parts = [_describe(h) for h in typing.get_args(hint)]
        return " or ".join(p for p in parts if p != "null") + (" or null" if "null" in parts else "")
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a text",
            type(None): "null"}.get(hint, "a list" if origin in (tuple, list, typing.Sequence) else str(hint))


def check_params(cls: type, params: Dict[str, Any], kind: str, name: str, option: str) -> None:
    """Each parameter in ``params`` against the type of ``cls``'s dataclass field."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:      # an annotation this module cannot resolve: the component checks
        return
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key, value in params.items():
        hint = hints.get(key)
        if key in fields and hint is not None and not _matches(value, hint):
            default = fields[key].default
            example = "" if default is dataclasses.MISSING or default is None else \
                f" (default {json_text(default)})"
            raise ValueError(f"{kind} {name!r}: {key}={value!r} must be {_describe(hint)}{example}; "
                             f"fix {option} {key}=...")


def json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def check_rule(cfg) -> AggregationRule:
    """The configured rule, built (unknown names and parameters refused), type- and
    n-checked, and refused under secure aggregation when it reads individual updates."""
    rule = make_rule(cfg.rule, **cfg.rule_args)
    check_params(type(rule), cfg.rule_args, "rule", cfg.rule, "--rule-arg")
    if cfg.secagg != "off" and not rule.secagg_compatible:
        ok = ", ".join(sorted(n for n, c in RULES.items() if c.secagg_compatible))
        raise RuleNeedsIndividualUpdates(
            f"rule {cfg.rule!r} needs every client's individual update, which secure aggregation "
            f"(--secagg {cfg.secagg}) never gives the server; run it with --secagg off, or choose a rule "
            f"that runs under secure aggregation: {ok}")
    rule.check(cfg.clients_per_round or cfg.clients)
    return rule


def check_attack(cfg) -> None:
    if cfg.attack is None:
        if cfg.attack_args:
            raise ValueError(f"attack_args={cfg.attack_args!r} (--attack-arg) given without an attack; "
                             "add --attack NAME or drop them")
        return
    attack = make_attack(cfg.attack, **cfg.attack_args)
    check_params(type(attack), cfg.attack_args, "attack", cfg.attack, "--attack-arg")


def warn_breakdown(cfg, rule: Optional[AggregationRule]) -> Optional[str]:
    """Warn (``BreakdownWarning``) when the run corrupts more clients than ``rule`` tolerates."""
    if rule is None or not cfg.corrupt or cfg.attack is None:
        return None
    if not 0 <= cfg.corrupt < 1:
        return None     # corrupted_clients refuses it with its own message
    f = len(corrupted_clients(cfg.clients, cfg.corrupt, 0))
    msg = breakdown_warning(rule, f, cfg.clients)
    if msg is not None:
        warnings.warn(msg, BreakdownWarning, stacklevel=3)
    return msg


def check_run(cfg) -> None:
    """Everything above, for ``cfg`` (``RunConfig.validate`` calls it last)."""
    check_seed(cfg.seed)
    check_device(cfg.device)
    for key in ("clients", "batch_size"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}={v!r} (--{key.replace('_', '-')}) must be a positive integer")
    if not isinstance(cfg.corrupt, (int, float)) or isinstance(cfg.corrupt, bool) or not 0 <= cfg.corrupt < 1:
        raise ValueError(f"corrupt={cfg.corrupt!r} (--corrupt) must lie in [0, 1): the fraction of corrupted clients")
    if cfg.on_abort not in ON_ABORT:
        raise ValueError(f"on_abort={cfg.on_abort!r} (--on-abort); choose one of {ON_ABORT}")
    rule = check_rule(cfg) if cfg.protocol == "params" else None
    check_attack(cfg)
    warn_breakdown(cfg, rule)
