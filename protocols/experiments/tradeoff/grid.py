"""The sweep's grid: aggregation rules x poisoning attacks x corruption levels rho x DP settings x
secure-aggregation modes x seeds (:class:`Grid`, from options or a grid file), and its cells.

:func:`expand` turns the grid into JSON-ready cell specs, each named by a hash of everything that
determines its numbers (:func:`cell_key`; ``DIR/cells/<hash>.json``). :func:`refusal` says, before
any training, why the product refuses a cell (Krum under secure aggregation, user-level DP with a
rule that has no public sensitivity); such a cell is reported as ``refused``, never dropped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from protocols.attacks import ATTACKS
from protocols.rules import RULES
from protocols.simulation import DP_MODES, SECAGG_MODES, RunConfig
from protocols.simulation.config import USER_DP_RULES

#: Bumped when a cell's measurement changes, so that old cell files are not reused.
CELL_FORMAT = 2

# The default grid shows each trade-off on digits in about two minutes on two cores: three rules
# (Krum needs individual updates: refused under secure aggregation and user-level DP),
# benign + a backdoor (its success rate) + RFA's omniscient corruption (FedAvg falls to ~10%,
# RFA keeps ~33-71%), no DP and two user-level noise levels (z = 0.5: epsilon ~46, little cost;
# z = 2: epsilon ~7.5, FedAvg 84% -> ~45-50%), secure aggregation off (the server's individual
# view) and on, two seeds (plots show both). docs/tradeoff.md has the measured table.
DEFAULT_GRID: Dict[str, Any] = {
    "rules": ["fedavg", "rfa", "krum"],
    "attacks": ["none", "backdoor", "omniscient"],
    "corrupt": [0.2],
    "dp": ["none", "user-central:z=0.5", "user-central:z=2.0"],
    "secagg": ["off", "quantized"],
    "seeds": [0, 1],
    "run": {"rounds": 10, "clients": 20},
}


# -- the grid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPSetting:
    """One DP setting of the grid: ``mode`` None (off) or one of :data:`DP_MODES`, with
    exactly one of ``noise_multiplier`` (z) and ``target_epsilon``."""

    mode: Optional[str] = None
    noise_multiplier: Optional[float] = None
    target_epsilon: Optional[float] = None

    @property
    def label(self) -> str:
        if self.mode is None:
            return "none"
        return f"{self.mode}:z={self.noise_multiplier:g}" if self.noise_multiplier is not None \
            else f"{self.mode}:eps={self.target_epsilon:g}"

    def run_fields(self) -> Dict[str, Any]:
        return {"dp": self.mode, "noise_multiplier": self.noise_multiplier, "target_epsilon": self.target_epsilon}


def parse_dp(spec: Any) -> DPSetting:
    """A DP setting from ``"none"``, ``"MODE:z=Z"``, ``"MODE:eps=E"`` or a mapping
    ``{mode, noise_multiplier | target_epsilon}``."""
    if isinstance(spec, DPSetting):
        return spec
    if spec is None:
        return DPSetting()
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"mode", "noise_multiplier", "target_epsilon"})
        if unknown:
            raise ValueError(f"DP setting {spec!r}: unknown key(s) {unknown}; use mode, noise_multiplier, "
                             "target_epsilon")
        mode = spec.get("mode")
        mode = None if mode in (None, "none", "off") else mode
        s = DPSetting(mode, spec.get("noise_multiplier"), spec.get("target_epsilon"))
    elif isinstance(spec, str):
        text = spec.strip()
        if text in ("none", "off", ""):
            return DPSetting()
        mode, sep, param = text.partition(":")
        key, eq, value = param.partition("=")
        if not sep or not eq or key not in ("z", "eps"):
            raise ValueError(f"DP setting {spec!r}: write none, MODE:z=NOISE_MULTIPLIER or MODE:eps=TARGET_EPSILON "
                             f"(MODE one of {DP_MODES}), e.g. user-central:z=1.0")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"DP setting {spec!r}: {value!r} is not a number") from None
        s = DPSetting(mode, v if key == "z" else None, v if key == "eps" else None)
    else:
        raise ValueError(f"DP setting {spec!r} must be a string (none, MODE:z=Z, MODE:eps=E) or a mapping")
    if s.mode is None:
        if s.noise_multiplier is not None or s.target_epsilon is not None:
            raise ValueError(f"DP setting {spec!r} gives a noise level without a mode; add mode (one of {DP_MODES})")
        return s
    if s.mode not in DP_MODES:
        raise ValueError(f"DP setting {spec!r}: mode {s.mode!r} is not one of {DP_MODES}")
    if (s.noise_multiplier is None) == (s.target_epsilon is None):
        raise ValueError(f"DP setting {spec!r} needs exactly one of noise_multiplier (z=) and target_epsilon (eps=)")
    return s


@dataclass
class Grid:
    """The sweep: every combination of the lists, over ``run`` (RunConfig overrides shared by
    all cells). ``attacks`` may include ``"none"`` (the benign cell, rho = 0; it is the
    denominator of the robustness ratio, so the heatmap needs it). ``rule_args`` /
    ``attack_args``: per-name parameters. ``audit``: False, or the membership audit's preset
    (``attacks``, ``n_bootstrap``, ``active``: also the malicious server's active views)."""

    rules: Sequence[str] = tuple(DEFAULT_GRID["rules"])
    attacks: Sequence[str] = tuple(DEFAULT_GRID["attacks"])
    corrupt: Sequence[float] = tuple(DEFAULT_GRID["corrupt"])
    dp: Sequence[Any] = tuple(DEFAULT_GRID["dp"])
    secagg: Sequence[str] = tuple(DEFAULT_GRID["secagg"])
    seeds: Sequence[int] = tuple(DEFAULT_GRID["seeds"])
    run: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GRID["run"]))
    rule_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    attack_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    audit: Any = field(default_factory=lambda: {"attacks": ["loss", "gradient_norm"], "n_bootstrap": 200,
                                                "active": False})
    paired_noise: bool = False

    def validate(self) -> None:
        for name in ("rules", "attacks", "corrupt", "dp", "secagg", "seeds"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
                raise ValueError(f"grid {name}={v!r} must be a non-empty list")
            if len(set(map(repr, v))) != len(v):
                raise ValueError(f"grid {name}={list(v)} lists a value twice")
        for r in self.rules:
            if r not in RULES:
                raise ValueError(f"grid rule {r!r} unknown; choose from {sorted(RULES)} (`fedaudit list rules`)")
        for a in self.attacks:
            if a != "none" and a not in ATTACKS:
                raise ValueError(f"grid attack {a!r} unknown; choose 'none' or from {sorted(ATTACKS)} "
                                 "(`fedaudit list attacks`)")
        for c in self.corrupt:
            if not isinstance(c, (int, float)) or isinstance(c, bool) or not 0 < c < 1:
                raise ValueError(f"grid corruption level {c!r} must lie in (0, 1); the benign cell is attack 'none'")
        for s in self.secagg:
            if s not in SECAGG_MODES:
                raise ValueError(f"grid secagg mode {s!r}; choose from {SECAGG_MODES}")
        for s in self.seeds:
            if not isinstance(s, int) or isinstance(s, bool):
                raise ValueError(f"grid seed {s!r} must be an integer")
        for d in self.dp:
            parse_dp(d)
        known = {f.name for f in dataclasses.fields(RunConfig)}
        owned = {"rule", "rule_args", "attack", "attack_args", "corrupt", "secagg", "seed", "dp",
                 "noise_multiplier", "target_epsilon", "dp_seeded_noise"}
        for k in self.run:
            if k not in known:
                raise ValueError(f"grid run option {k!r} is not a RunConfig field; choose from {sorted(known - owned)}")
            if k == "dp_seeded_noise":
                raise ValueError("grid run option 'dp_seeded_noise' is set by the grid's paired_noise "
                                 "(--paired-noise), which labels its outputs")
            if k in owned:
                raise ValueError(f"grid run option {k!r} is a grid axis; set it with the grid's own list instead")
        for what, args, names in (("rule_args", self.rule_args, self.rules), ("attack_args", self.attack_args,
                                                                                self.attacks)):
            for k in args:
                if k not in names:
                    raise ValueError(f"grid {what} names {k!r}, which is not in the grid ({list(names)})")
        if self.audit not in (False, None) and not isinstance(self.audit, dict):
            raise ValueError(f"grid audit={self.audit!r} must be false or a mapping (attacks, n_bootstrap, active)")
        if isinstance(self.audit, dict):
            unknown = sorted(set(self.audit) - {"attacks", "n_bootstrap", "active"})
            if unknown:
                raise ValueError(f"grid audit has unknown key(s) {unknown}; use attacks, n_bootstrap, active")
        if not isinstance(self.paired_noise, bool):
            raise ValueError(f"grid paired_noise={self.paired_noise!r} must be true or false")
        self.refused, self.warnings = check_cells(expand(self))

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = json.loads(json.dumps(d, default=str))
        d["dp"] = [parse_dp(x).label for x in self.dp]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_GRID_KEYS = {f.name for f in dataclasses.fields(Grid)}


def load_grid(path) -> Dict[str, Any]:
    """The grid mapping of a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file (keys: the fields of :class:`Grid`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    elif suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"grid file {str(path)!r} is YAML, which needs PyYAML (pip install pyyaml); "
                             "or write the grid as .toml or .json") from None
        data = yaml.safe_load(path.read_text())
    else:
        raise ValueError(f"grid file {str(path)!r}: unknown format {suffix!r}; use .toml, .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"grid file {str(path)!r} must hold a mapping of grid keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _GRID_KEYS)
    if unknown:
        raise ValueError(f"grid file {str(path)!r} has unknown key(s) {unknown}; use {sorted(_GRID_KEYS)}")
    return data


def make_grid(data: Optional[Dict[str, Any]] = None, **overrides) -> Grid:
    """A validated :class:`Grid` from a mapping (a grid file) and keyword overrides (options)."""
    merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    g = Grid(**merged)
    g.validate()
    return g


# -- cells of the grid -----------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cell_key(cell: Dict[str, Any]) -> str:
    """The cell's file name stem: a hash of everything that determines its numbers."""
    return hashlib.sha256(_canonical({"format": CELL_FORMAT, **cell}).encode()).hexdigest()[:16]


def group_of(cell: Dict[str, Any]) -> Tuple:
    """The results.csv row of a cell: its coordinates without the seed."""
    return (cell["rule"], cell["attack"], cell["corrupt"], cell["dp"], cell["secagg"])


def expand(grid: Grid) -> List[Dict[str, Any]]:
    """Every cell of the grid, as JSON-ready specs (the benign ``attack="none"`` has rho 0, once)."""
    cells = []
    for rule, attack, secagg, dp_spec, seed in itertools.product(grid.rules, grid.attacks, grid.secagg,
                                                                 grid.dp, grid.seeds):
        dps = parse_dp(dp_spec)
        for rho in ([0.0] if attack == "none" else list(grid.corrupt)):
            run = {**grid.run, "rule": rule, "rule_args": dict(grid.rule_args.get(rule, {})),
                   "secagg": secagg, "seed": int(seed), **dps.run_fields()}
            if grid.paired_noise and dps.mode is not None:
                # seeded DP noise, the same draws in every secagg mode: paired comparisons (insecure)
                run["dp_seeded_noise"] = True
            if attack != "none":
                run.update(attack=attack, corrupt=float(rho), attack_args=dict(grid.attack_args.get(attack, {})))
            cell = {"rule": rule, "attack": attack, "corrupt": float(rho), "dp": dps.label, "secagg": secagg,
                    "seed": int(seed), "run": run, "audit": grid.audit or False}
            cell["key"] = cell_key(cell)
            cells.append(cell)
    return cells


def refusal(cell: Dict[str, Any]) -> Optional[str]:
    """Why the product refuses this cell's *combination* (None: it runs): a rule that reads
    individual updates under secure aggregation, user-level DP with a rule that has no public
    sensitivity, distributed DP without a secure sum, a data-poisoning attack under Opacus
    DP-SGD clients, DP with Cronus. Checked before any training. A bad *value* (a negative
    noise multiplier, an unknown parameter) is not a refusal: :func:`check_cells` raises it."""
    run = cell["run"]
    protocol = run.get("protocol", "params")
    rule = RULES.get(run["rule"])
    mode = run.get("dp")
    if protocol == "params" and rule is not None and run["secagg"] != "off" and not rule.secagg_compatible:
        return (f"rule {run['rule']!r} needs individual updates (reveal), which secure aggregation "
                f"(secagg={run['secagg']!r}) never gives the server")
    if protocol == "cronus" and mode is not None:
        return f"--dp {mode} with --protocol cronus is not supported"
    if mode in ("user-central", "user-distributed") and protocol == "params" and run["rule"] not in USER_DP_RULES:
        return (f"rule {run['rule']!r} under --dp {mode}: user-level DP noises each secure-average call with a "
                f"public sensitivity, which only {USER_DP_RULES} provide")
    if mode == "user-distributed" and run["secagg"] not in ("quantized", "masked"):
        return (f"--dp user-distributed with secagg={run['secagg']!r}: distributed DP sums the clients' noise "
                "shares in Z_M, which needs --secagg quantized or masked")
    attack = ATTACKS.get(run.get("attack") or "")
    if mode == "record" and attack is not None and getattr(attack, "kind", None) in ("data", "both"):
        return (f"attack {run['attack']!r} poisons training batches, which the Opacus DP-SGD clients of "
                "--dp record do not support")
    return None


def describe_cell(cell: Dict[str, Any]) -> str:
    rho = "" if cell["attack"] == "none" else f" rho={cell['corrupt']:g}"
    return (f"rule={cell['rule']} attack={cell['attack']}{rho} dp={cell['dp']} secagg={cell['secagg']} "
            f"seed={cell['seed']}")


def check_cells(cells: Sequence[Dict[str, Any]]) -> Tuple[Dict[str, str], List[str]]:
    """Validate every cell before any runs. Returns the refused cells (key -> reason) and the
    distinct warnings (e.g. a corrupt fraction above a rule's breakdown point); a cell whose
    configuration is wrong (``RunConfig.validate()`` fails) raises ``ValueError`` naming the
    cell, since no combination excuses a bad value."""
    import warnings
    refused: Dict[str, str] = {}
    seen: Dict[str, Optional[str]] = {}
    warned: Dict[str, None] = {}
    for c in cells:
        reason = refusal(c)
        if reason is not None:
            refused[c["key"]] = reason
            continue
        spec = _canonical(c["run"])
        if spec in seen:
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                RunConfig(**c["run"]).validate()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"grid cell {describe_cell(c)}: {exc}") from None
        for w in caught:
            warned.setdefault(f"rule={c['rule']} attack={c['attack']}: {w.message}", None)
        seen[spec] = None
    return refused, list(warned)
