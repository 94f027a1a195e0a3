"""The runs behind ``fedaudit reproduce`` (:mod:`protocols.experiments.reproduce`): the presets
and :class:`Runner`, which trains each configuration once per seed, caches it in memory and,
given a folder, on disk (so that an interrupted reproduce resumes). May import the runner,
the simulation and protocols.report; never the claims or the CLI.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from protocols.report import atomic_write_json
from protocols.runner import make_simulation
from protocols.simulation import RunConfig

__all__ = ["Preset", "QUICK", "FULL", "BASE", "STORE_FORMAT", "Runner"]


@dataclass(frozen=True)
class Preset:
    """Sizes of the re-measurement (the data, the model and the partitions are the claims' own)."""

    name: str
    rounds: int
    seeds: Tuple[int, ...]
    audit_rounds: int
    cronus_rounds: int
    cronus_init_epochs: int


QUICK = Preset("quick", rounds=10, seeds=(0,), audit_rounds=10, cronus_rounds=3, cronus_init_epochs=10)
FULL = Preset("full", rounds=30, seeds=(0, 1, 2), audit_rounds=20, cronus_rounds=10, cronus_init_epochs=50)

# Every run: digits, secure aggregation off so that the rules that need individual updates
# (Krum, median, MixTailor, residual reweighting) can run; 20 clients unless the claim's paper says otherwise.
BASE: Dict[str, Any] = {"dataset": "digits", "clients": 20, "secagg": "off", "partition": "dirichlet", "alpha": 0.5}


#: Bumped when a stored run or claim would no longer be what the code measures.
STORE_FORMAT = 1


class Runner:
    """Runs federations for the claims, each configuration once (cached), averaged over the preset's seeds.

    ``store``: a folder (``DIR/runs``) where every finished seed's run is kept as
    ``<hash>.json`` (the hash covers the configuration, the seed and :data:`STORE_FORMAT`), so
    that an interrupted ``fedaudit reproduce`` resumes without training those runs again.
    """

    def __init__(self, preset: Preset, threads: int = 1, log: Optional[Callable[[str], None]] = None,
                 store: Optional[Path] = None):
        self.preset, self.threads, self.log, self.store = preset, threads, log, store
        self.cache: Dict[str, Dict[str, Optional[float]]] = {}
        self.runs = 0
        self.reused = 0

    def _stored(self, spec: Dict[str, Any]) -> Tuple[Optional[Path], Optional[Dict[str, Optional[float]]]]:
        if self.store is None:
            return None, None
        import hashlib
        text = json.dumps({"format": STORE_FORMAT, **spec}, sort_keys=True, default=str)
        path = Path(self.store) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        try:
            data = json.loads(path.read_text())
            return path, data["last"] if data.get("spec") == json.loads(json.dumps(spec, default=str)) else None
        except (OSError, ValueError, KeyError):
            return path, None

    def run(self, **kw) -> Dict[str, Optional[float]]:
        """Mean final ``accuracy``, ``attack_success``, ``client_accuracy`` over the seeds."""
        import torch
        if self.threads:
            torch.set_num_threads(self.threads)
        kw = {**BASE, "rounds": self.preset.rounds, **kw}
        key = json.dumps(kw, sort_keys=True, default=str)
        if key in self.cache:
            return self.cache[key]
        vals: Dict[str, List[float]] = {"accuracy": [], "attack_success": [], "client_accuracy": []}
        for seed in self.preset.seeds:
            spec = {**kw, "seed": seed}
            path, last = self._stored(spec)
            if last is None:
                sim = make_simulation(RunConfig(**spec))
                sim.run()
                rec = sim.history[-1]
                last = {k: getattr(rec, "test_accuracy" if k == "accuracy" else k) for k in vals}
                self.runs += 1
                if path is not None:
                    atomic_write_json(path, {"spec": spec, "last": last}, indent=None)
            else:
                self.reused += 1
            for k in vals:
                v = last.get(k)
                if v is not None:
                    vals[k].append(float(v))
        out = {k: (sum(v) / len(v) if v else None) for k, v in vals.items()}
        if self.log:
            desc = ", ".join(f"{k}={v}" for k, v in kw.items() if BASE.get(k, None) != v and k != "rounds")
            self.log(f"  {desc}: accuracy {out['accuracy']:.3f}")
        self.cache[key] = out
        return out

    def acc(self, **kw) -> float:
        return self.run(**kw)["accuracy"]
