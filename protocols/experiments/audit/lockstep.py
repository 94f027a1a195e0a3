"""Several federations stepped round by round together, their local training in one call.

Reference federations (LiRA's shadow runs) share the model, the data tensor and the local
training; only which records each client holds differs. Each round, :func:`step_together`
samples every run's clients, gathers all their start models and record indices, and trains
them in one call of the run's trainer (``vmap`` over the clients of all runs:
:func:`protocols.clients.train_vmap` takes a start model per client), then lets each run
finish its round unchanged (poisoning, DP clipping, secure aggregation, the rule, the
transcript) from its own slice of the updates. The batch order of every client comes from
one generator, drawn client by client in run order, so the vectorized call and a loop of
per-run calls (``vectorize=False``, the CPU twin the tests compare) train on identical
batches.

A run whose local training has per-client state or per-client data transforms (record-level
DP through Opacus, adversarial regularization, personalization, data poisoning) cannot share
a call: :func:`vectorizable` says so, and such runs step alone with their own generator.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from protocols.simulation import Simulation

__all__ = ["vectorizable", "step_together", "MAX_STACKED_FLOATS"]

#: Clients x parameters trained in one call at most (stacked parameters, gradients and momentum
#: buffers take a few times this many floats); more are split into several calls.
MAX_STACKED_FLOATS = 1 << 25


def vectorizable(sim: Simulation) -> bool:
    """Whether ``sim``'s local training can share one call with other runs."""
    return (sim.dpc is None and not sim.cfg.adv_reg and not sim.personalized and sim.batch_transform is None)


def _updates(sims: Sequence[Simulation], plans, generator: torch.Generator, vectorize: bool) -> List[torch.Tensor]:
    lead = sims[0]
    model, x, y = lead.model, lead.data.x_train, lead.data.y_train
    d = sum(p.numel() for p in model.parameters())
    if vectorize:
        groups: List[List[int]] = [[]]
        size = 0
        for k, (ids, _) in enumerate(plans):
            if groups[-1] and (size + len(ids)) * d > MAX_STACKED_FLOATS:
                groups.append([])
                size = 0
            groups[-1].append(k)
            size += len(ids)
    else:
        groups = [[k] for k in range(len(sims))]
    out: Dict[int, torch.Tensor] = {}
    for grp in groups:
        parts, starts = [], []
        for k in grp:
            ids, b = plans[k]
            parts += [sims[k].client_indices[i] for i in ids.tolist()]
            starts.append(b.unsqueeze(0).expand(len(ids), -1))
        if not parts:      # empty Poisson cohorts (user-level DP): nothing to train this round
            u = torch.zeros(0, d, device=plans[grp[0]][1].device)
        else:
            u = lead.trainer(model, x, y, parts, lead.local, generator, start=torch.cat(starts))
        offset = 0
        for k in grp:
            n = len(plans[k][0])
            out[k] = u[offset:offset + n]
            offset += n
    return [out[k] for k in range(len(sims))]


def step_together(sims: Sequence[Simulation], rnd: int, generator: torch.Generator,
                  vectorize: bool = True) -> list:
    """Round ``rnd`` of every run in ``sims`` (which must share the model architecture, the data
    tensors and the local training, and be :func:`vectorizable`); returns their RoundRecords."""
    lead = sims[0]
    for s in sims:
        if not vectorizable(s):
            raise ValueError("step_together: a run with record-level DP, adversarial regularization, "
                             "personalization or data poisoning trains alone; step it with sim.step")
        if s.data.x_train is not lead.data.x_train or s.local != lead.local or s.trainer is not lead.trainer:
            raise ValueError("step_together: the runs must share the training data tensor and the local training")
    plans = []
    for s in sims:
        ids = s.sample_clients()
        plans.append((ids, s.broadcast_params(rnd)))
    updates = _updates(sims, plans, generator, vectorize)
    records = []
    for s, (ids, b), u in zip(sims, plans, updates):
        # The run finishes its round from the precomputed pieces (instance attributes shadow the methods).
        s.sample_clients = lambda ids=ids: ids
        s.broadcast_params = lambda r, b=b: b
        s.client_updates = lambda i, broadcast=None, u=u: u
        try:
            records.append(s.step(rnd))
        finally:
            del s.sample_clients, s.broadcast_params, s.client_updates
    return records
