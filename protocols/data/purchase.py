"""A Purchase100-style tabular task, generated reproducibly.

Shokri et al. 2017 (Sec. V-A, "Purchases") built Purchase100 from customers'
purchase histories: 600 binary features (bought a product or not), with the
records clustered into 100 classes by k-means. We draw the same structure from a
seed: 100 binary class prototypes around a few shared "shopper types" (so that
classes overlap, as k-means clusters of real data do), and each record is its
class prototype with every feature flipped independently with probability
``flip``. With few records per class and the wide fully connected model of Nasr
et al. 2019 (``fc-purchase``) the task overfits, which is what membership audits
need to show leakage.
"""
from __future__ import annotations

import numpy as np
import torch

from protocols.data.base import Dataset, split_train_test


def make_purchase(n_samples: int = 10000, n_features: int = 600, n_classes: int = 100, n_types: int = 10,
                  density: float = 0.2, type_flip: float = 0.05, flip: float = 0.3,
                  seed: int = 0):
    """(x [n, n_features] float32 in {0, 1}, y [n] int64), classes balanced up to one."""
    for name, v in (("density", density), ("type_flip", type_flip), ("flip", flip)):
        if not 0 <= v <= 0.5:
            raise ValueError(f"{name}={v!r} must lie in [0, 0.5]")
    for name, v in (("n_samples", n_samples), ("n_features", n_features), ("n_classes", n_classes),
                    ("n_types", n_types)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if n_samples < 2 * n_classes:
        raise ValueError(f"n_samples={n_samples} gives fewer than 2 records per class for "
                         f"n_classes={n_classes}; raise n_samples")
    rng = np.random.default_rng(seed)
    types = rng.random((n_types, n_features)) < density
    proto = types[rng.integers(0, n_types, n_classes)] ^ (rng.random((n_classes, n_features)) < type_flip)
    y = rng.permutation(np.arange(n_samples) % n_classes)
    x = proto[y] ^ (rng.random((n_samples, n_features)) < flip)
    return x.astype(np.float32), y.astype(np.int64)


def load_purchase(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 10000, flip: float = 0.3,
                  **kwargs):
    """The generated Purchase100-style task (600 binary features, 100 classes).

    The data are drawn from ``seed`` (so each experiment seed is its own dataset, as
    every other loader's split is). Default model: ``fc-purchase`` (Nasr et al. 2019,
    600-1024-512-256-128-100 tanh); ``fc-purchase-small`` for quick CPU runs.
    """
    n_classes = kwargs.get("n_classes", 100)
    if 0 < test_fraction < 1 and min(test_fraction, 1 - test_fraction) * n_samples < n_classes:
        raise ValueError(f"n_samples={n_samples} with test_fraction={test_fraction} leaves fewer records than "
                         f"the {n_classes} classes in a split; raise n_samples to at least "
                         f"{int(n_classes / min(test_fraction, 1 - test_fraction)) + 1}")
    x, y = make_purchase(n_samples=n_samples, flip=flip, seed=seed, **kwargs)
    xtr, xte, ytr, yte = split_train_test(x, y, test_fraction, seed)
    t = torch.from_numpy
    return Dataset("purchase", t(xtr), t(ytr), t(xte), t(yte), int(y.max()) + 1, (x.shape[1],),
                   {"default_model": "fc-purchase", "generator": "prototypes with feature flips",
                    "flip": flip})
