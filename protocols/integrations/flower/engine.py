"""Where a Flower server workflow runs: :class:`InProcessGrid` and :func:`run_server`.

:class:`InProcessGrid` runs a Flower ``ServerApp`` workflow against ``ClientApp`` objects
in this process (no Ray): the benchmark (:mod:`protocols.bench.flower`) and the fast tests
use it. :func:`run_server` runs a workflow on it (``engine="inprocess"``) or on Flower's
simulation engine (``engine="simulation"``: ``flwr.simulation.run_simulation``, needs
``flwr[simulation]``, i.e. Ray); :func:`protocols.integrations.flower.run_rfa` and
:func:`protocols.integrations.flower.run_strategy` use it.
"""
from __future__ import annotations

import copy
import os
import uuid
from typing import Any, Dict, Iterable, Optional

from flwr.app import Context, Message, RecordDict
from flwr.client import ClientApp
from flwr.server import ServerApp
from flwr.serverapp.grid import Grid

from protocols.simulation import RunConfig

__all__ = ["InProcessGrid", "run_server", "ENGINES"]

ENGINES = ("simulation", "inprocess")


class InProcessGrid(Grid):
    """A Flower ``Grid`` that delivers each message to a ``ClientApp`` in this process.

    Every node n has its own ``Context`` (``node_config`` ``partition-id`` = n - 1, its
    state persisting across messages), as on Flower's simulation engine, without Ray,
    threads or serialization: the benchmark uses it to time SecAgg+'s computation, and
    fast tests to run workflows. Nodes in the set ``dropped`` receive no further messages
    and answer nothing (dropouts, from the moment they are added).
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, *, run_id: int = 1):
        from flwr.supercore.run import Run
        from flwr.supercore.task_identity import TaskIdentity
        # Messages read the process's task identity (set by Flower's own runtimes); this
        # grid is the runtime here, so it sets one if none is set.
        for attr, value in (("_run_id", run_id), ("_task_id", run_id), ("_node_id", 0)):
            if getattr(TaskIdentity, attr) is None:
                setattr(TaskIdentity, attr, value)
        self.client_app = client_app
        self._run = Run.create_empty(run_id) if hasattr(Run, "create_empty") else None
        self.node_ids = list(range(1, num_nodes + 1))
        self.contexts = {nid: Context(run_id=run_id, node_id=nid,
                                      node_config={"partition-id": nid - 1, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config={}) for nid in self.node_ids}
        self._replies: Dict[str, Message] = {}
        self.dropped: set = set()

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_src_node_id"] = 0
            nid = msg.metadata.dst_node_id
            if nid in self.dropped:
                continue
            # A copy per node, as after serialization: secaggplus_mod pops keys of its config.
            self._replies[mid] = self.client_app(copy.deepcopy(msg), self.contexts[nid])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_server(server_fn, client_app: ClientApp, cfg: RunConfig, engine: str,
               backend_config: Optional[Dict[str, Any]], verbose: bool) -> None:
    """Run ``server_fn(grid, legacy_context)`` against ``client_app`` on ``engine``
    (one of :data:`ENGINES`; ``cfg.clients`` nodes)."""
    if engine == "simulation":
        from flwr.simulation import run_simulation
        app = ServerApp()

        @app.main()
        def main(grid, context):
            server_fn(grid, context)

        if backend_config is None:
            backend_config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                              "init_args": {"num_cpus": max(1, min(2, os.cpu_count() or 1)),
                                            "include_dashboard": False, "log_to_driver": verbose}}
        run_simulation(app, client_app, num_supernodes=cfg.clients, backend_config=backend_config,
                       verbose_logging=verbose)
    elif engine == "inprocess":
        server_fn(InProcessGrid(client_app, cfg.clients),
                  Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    else:
        raise ValueError(f"engine={engine!r}; choose 'simulation' (Flower + Ray) or 'inprocess'")
