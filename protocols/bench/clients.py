"""``fedaudit bench clients``: local training of all clients at once vs one after another.

100 clients (``--clients N``) on an IID split of scikit-learn's bundled digits, 1 epoch
of local SGD (batch 16, lr 0.05), for the small CNN and the MLP of
:mod:`protocols.models`, in one run:

- ``loop``: :func:`protocols.clients.train_loop`, one ``torch.optim.SGD`` client after
  another (what Opacus DP-SGD still needs): the baseline;
- ``vmap``: :func:`protocols.clients.train_vmap`, every client in one ``torch.func``
  ``vmap(grad(loss))`` over stacked parameters (the simulation's default).

Both train the same schedule from the same seed and give the same updates (to float
tolerance; tests/test_clients.py). ``ratio`` = vmap seconds / loop seconds; goal: vmap
>= 3x faster on a CPU (ratio <= 1/3), >= 20x on a GPU (ratio <= 0.05). The cases are
timed round-robin so that load drift on a shared machine hits both alike.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from protocols.clients import LocalTraining, train_loop, train_vmap
from protocols.data import load_digits, partition_iid
from protocols.models import build_model, flat_params

from .timing import add_ratios, time_interleaved


def run(*, quick: bool = False, device: str = "cpu", clients: Optional[int] = None) -> List[dict]:
    n = 100 if clients is None else clients
    data = load_digits(seed=0).to(device)
    parts = partition_iid(data.y_train, n, seed=0)
    cfg = LocalTraining(epochs=1, batch_size=16, lr=0.05, momentum=0.0)
    repeats = 2 if quick else 5
    gpu = torch.device(device).type == "cuda"
    goal = "<= 0.05 (vmap >= 20x faster)" if gpu else "<= 0.333 (vmap >= 3x faster)"
    rows: List[dict] = []
    for name in ("cnn", "mlp"):
        model = build_model(name, data.input_shape, data.num_classes, seed=0).to(device)
        d = int(flat_params(model).numel())
        loop, vm = f"loop {name} n={n}", f"vmap {name} n={n}"

        def train(fn):
            return lambda: fn(model, data.x_train, data.y_train, parts, cfg, torch.Generator().manual_seed(0))
        times = time_interleaved({loop: train(train_loop), vm: train(train_vmap)}, repeats, device=device)
        rows.append({"case": loop, "seconds": times[loop], "baseline": loop, "n": n, "d": d,
                     "note": "torch.optim.SGD, one client after another"})
        rows.append({"case": vm, "seconds": times[vm], "baseline": loop, "n": n, "d": d, "goal": goal,
                     "note": f"{times[loop] / times[vm]:.1f}x faster than the loop"})
    return add_ratios(rows)
