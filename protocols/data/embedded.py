"""Datasets that need no file: scikit-learn's bundled digits and a seeded synthetic task."""
from __future__ import annotations

import numpy as np
import torch

from protocols.data.base import Dataset, split_train_test


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], shape [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits as _load
    bunch = _load()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = split_train_test(x, y, test_fraction, seed)
    return Dataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), 10, (1, 8, 8))


def load_synthetic(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 2000,
                   n_features: int = 20, n_classes: int = 4) -> Dataset:
    """A seeded classification task (scikit-learn ``make_classification``)."""
    from sklearn.datasets import make_classification
    x, y = make_classification(n_samples=n_samples, n_features=n_features, n_informative=min(10, n_features),
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=1.5, random_state=seed)
    xtr, xte, ytr, yte = split_train_test(x.astype(np.float32), y.astype(np.int64), test_fraction, seed)
    return Dataset("synthetic", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), n_classes, (n_features,))
