"""One entry point for a run of any protocol: :func:`make_simulation` picks the simulation
registered under ``cfg.protocol``. Importing this module registers both protocols:
``params`` (:class:`protocols.simulation.Simulation`) and ``cronus``
(:class:`protocols.cronus.CronusSimulation`)."""
from __future__ import annotations

from typing import Optional, Tuple

import protocols.cronus  # noqa: F401  (registers "cronus")
from protocols.data import Dataset
from protocols.simulation import PROTOCOLS, RunConfig
from protocols.simulation.base import apply_threads

__all__ = ["make_simulation", "protocol_names"]


def protocol_names() -> Tuple[str, ...]:
    """The registered protocols, in registration order ("params" first)."""
    return tuple(PROTOCOLS)


def make_simulation(cfg: RunConfig, dataset: Optional[Dataset] = None):
    """The simulation for ``cfg.protocol``, with torch's CPU threads set for the run
    (:func:`protocols.simulation.base.apply_threads`: ``cfg.threads``, or the idle cores).
    Every protocol exposes ``run(progress)``, ``history``, ``transcript`` and ``result()``."""
    cfg.validate()
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"protocol={cfg.protocol!r}; choose one of {protocol_names()}")
    apply_threads(cfg.threads)
    return PROTOCOLS[cfg.protocol](cfg, dataset=dataset)
