"""What the server observed, call by call, kept apart from audit-only ground truth.

docs/architecture.md, "The server-view contract": every oracle call appends one
:class:`OracleCall`. ``output``, ``revealed``, ``survivors`` and ``server_view``
are what the server really holds; ``ground_truth`` (e.g. the effective weights
w_i / sum w, which RFA's s-privacy of Definition 1 bounds) is for audits only and
is never part of :meth:`Transcript.server_view`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch


@dataclass
class OracleCall:
    """One secure-average oracle call."""

    index: int
    round: Optional[int]
    label: str
    oracle: str
    output: Optional[torch.Tensor]
    revealed: Dict[str, Any] = field(default_factory=dict)
    survivors: List[int] = field(default_factory=list)
    server_view: Dict[str, Any] = field(default_factory=dict)
    ground_truth: Dict[str, Any] = field(default_factory=dict)

    @property
    def max_effective_weight(self) -> float:
        w = self.ground_truth.get("effective_weights")
        return float(w.max()) if w is not None and w.numel() else float("nan")


@dataclass
class Reveal:
    """A plaintext reveal of the individual updates (only without secure aggregation).
    ``updates`` is the [n, d] matrix the server received when the transcript keeps reveals
    (an audit of the individual view needs it), else None; ``clients`` is n either way."""

    round: Optional[int]
    rule: str
    updates: Optional[torch.Tensor]
    clients: int = 0


class Transcript:
    """Append-only record of what the server observed.

    Parameters
    ----------
    keep_outputs : bool
        Store each oracle output (the averages) and the server views. Audits
        need them; long runs at model scale may turn this off to save memory.
    keep_reveals : bool, optional
        Store a copy of every revealed [n, d] update matrix (default: as ``keep_outputs``).
        Only the audit of the individual view reads them; a simulation keeps them only when
        an audit asks (``Simulation(keep_reveals=True)``): at model scale a copy is the size
        of the updates every round (5.3 GB for 1,000 fc-purchase clients).
    """

    def __init__(self, keep_outputs: bool = True, keep_reveals: Optional[bool] = None):
        self.keep_outputs = keep_outputs
        self.keep_reveals = keep_outputs if keep_reveals is None else bool(keep_reveals)
        self.calls: List[OracleCall] = []
        self.reveals: List[Reveal] = []
        self.round: Optional[int] = None

    def record_call(self, *, label: str, oracle: str, output: torch.Tensor,
                    revealed: Optional[Dict[str, Any]] = None,
                    survivors: Optional[List[int]] = None,
                    server_view: Optional[Dict[str, Any]] = None,
                    ground_truth: Optional[Dict[str, Any]] = None) -> OracleCall:
        call = OracleCall(
            index=len(self.calls), round=self.round, label=label, oracle=oracle,
            output=output.detach().clone() if self.keep_outputs else None,
            revealed=dict(revealed or {}), survivors=list(survivors or []),
            server_view=dict(server_view or {}) if self.keep_outputs else {},
            ground_truth=dict(ground_truth or {}))
        self.calls.append(call)
        return call

    def record_reveal(self, rule: str, updates: torch.Tensor) -> None:
        self.reveals.append(Reveal(self.round, rule, updates.detach().clone() if self.keep_reveals else None,
                                   clients=int(updates.shape[0])))

    def calls_in_round(self, rnd: int) -> List[OracleCall]:
        return [c for c in self.calls if c.round == rnd]

    def server_view(self) -> List[Dict[str, Any]]:
        """Everything the server saw, in order, without the ground truth."""
        return [{"index": c.index, "round": c.round, "label": c.label, "oracle": c.oracle,
                 "output": c.output, "revealed": c.revealed, "survivors": c.survivors,
                 **c.server_view} for c in self.calls]

    @property
    def max_effective_weight(self) -> float:
        vals = [c.max_effective_weight for c in self.calls]
        vals = [v for v in vals if v == v]
        return max(vals) if vals else float("nan")

    def summary(self) -> Dict[str, Any]:
        return {
            "calls": len(self.calls),
            # Each oracle call shows one average; each reveal shows every client's row.
            "server_visible_outputs": len(self.calls) + sum(r.clients for r in self.reveals),
            "individual_reveals": len(self.reveals),
            "max_effective_weight": self.max_effective_weight,
        }

    def __len__(self) -> int:
        return len(self.calls)
