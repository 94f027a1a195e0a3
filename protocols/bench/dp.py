"""``fedaudit bench dp``: Opacus DP-SGD local training vs the same plain local training.

One client's local training on digits-sized data (the first n records of scikit-learn's
bundled digits), 1 epoch, batch 16, for the small CNN and the MLP of
:mod:`protocols.models`, in one run:

- ``plain``: :func:`protocols.clients.train_loop`, the per-client loop of the simulation
  (``torch.optim.SGD`` over shuffled minibatches): the baseline.
- ``dp-sgd``: :class:`dp.RecordLevelClient` (Opacus ``make_private``, Poisson lots,
  per-example clipping and noise), built once and reused, as across rounds.
- ``dp-sgd+setup``: the same, building the client (``make_private``) every time.

``ratio`` = seconds / the plain case's seconds (Abadi et al. 2016's DP-SGD overhead:
per-example gradients and clipping). The cases of one model are timed round-robin
(one run of each per repeat, after a warm-up of each), so a burst of load on a shared
machine hits them alike; each row is the median of its repeats.
"""
from __future__ import annotations

from typing import List

import torch

import dp
from protocols.clients import LocalTraining, train_loop
from protocols.data import load_digits
from protocols.models import build_model, flat_params

from .timing import add_ratios, time_interleaved


def run(*, quick: bool = False, device: str = "cpu") -> List[dict]:
    data = load_digits(seed=0).to(device)
    sizes = [100] if quick else [100, 500]
    repeats = 5 if quick else 15
    epochs, batch, lr = 1, 16, 0.05
    cfg = LocalTraining(epochs=epochs, batch_size=batch, lr=lr, momentum=0.0)
    rows: List[dict] = []
    for n in sizes:
        x, y = data.x_train[:n], data.y_train[:n]
        for name in ("cnn", "mlp"):
            model = build_model(name, data.input_shape, data.num_classes, seed=0).to(device)
            d = int(flat_params(model).numel())
            g = torch.Generator().manual_seed(0)
            parts = [torch.arange(n)]
            base = f"plain {name} n={n}"
            kw = dict(noise_multiplier=1.0, max_grad_norm=1.0, epochs=epochs, batch_size=batch, lr=lr, generator=0)
            client = dp.RecordLevelClient(model, x, y, **kw)
            start = flat_params(model)
            cases = {
                base: lambda: train_loop(model, x, y, parts, cfg, g),
                f"dp-sgd {name} n={n}": lambda: client.train(start),
                f"dp-sgd+setup {name} n={n}": lambda: dp.RecordLevelClient(model, x, y, **kw).train(start),
            }
            for case, secs in time_interleaved(cases, repeats, device).items():
                rows.append({"case": case, "seconds": secs, "baseline": base, "n": n, "d": d,
                             "note": "Opacus (hooks), z=1, C=1" if case != base else "torch.optim.SGD loop"})
    return add_ratios(rows)
