"""Datasets and partitioners.

The embedded default is scikit-learn's bundled digits (1,797 8x8 images, no
network). ``synthetic`` is a seeded Gaussian-cluster classification task.
Partitioners split the training set across clients: IID, Dirichlet(alpha)
label skew (Hsu et al. 2019), and label-sorted shards with k labels per client
(McMahan et al. 2017).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass
class Dataset:
    """A train/test split held as tensors."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: Tuple[int, ...]
    meta: Dict[str, object] = field(default_factory=dict)

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.num_classes,
                       self.input_shape, dict(self.meta))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"classes={self.num_classes}, input_shape={self.input_shape})")


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r} must lie in (0, 1)")
    from sklearn.model_selection import train_test_split
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], shape [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits as _load
    bunch = _load()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed)
    return Dataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), 10, (1, 8, 8))


def load_synthetic(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 2000,
                   n_features: int = 20, n_classes: int = 4) -> Dataset:
    """A seeded classification task (scikit-learn ``make_classification``)."""
    from sklearn.datasets import make_classification
    x, y = make_classification(n_samples=n_samples, n_features=n_features, n_informative=min(10, n_features),
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=1.5, random_state=seed)
    xtr, xte, ytr, yte = _split(x.astype(np.float32), y.astype(np.int64), test_fraction, seed)
    return Dataset("synthetic", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), n_classes, (n_features,))


DATASETS: Dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
}


def load_dataset(name: str, seed: int = 0, data_dir=None, **kwargs) -> Dataset:
    """Load a registered dataset; ``data_dir`` is the folder of an on-disk one."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    try:
        return DATASETS[name](seed=seed, **kwargs)
    except TypeError as exc:
        if data_dir is not None and "data_dir" in str(exc):
            raise ValueError(f"dataset {name!r} is embedded and reads no --data-dir "
                             f"(got data_dir={str(data_dir)!r}); drop --data-dir") from None
        raise


# --------------------------------------------------------------------------- partitioners

def _check_clients(n_clients: int, n_samples: int) -> None:
    if not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
    if n_clients > n_samples:
        raise ValueError(f"n_clients={n_clients} exceeds the {n_samples} training samples; "
                         "use fewer clients or a larger dataset")


def partition_iid(labels: Tensor, n_clients: int, seed: int = 0) -> List[Tensor]:
    """Uniformly random, equal-size (up to one) client shards."""
    _check_clients(n_clients, len(labels))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    return [torch.from_numpy(np.sort(p)) for p in np.array_split(perm, n_clients)]


def partition_dirichlet(labels: Tensor, n_clients: int, alpha: float = 0.5, seed: int = 0,
                        min_size: int = 2) -> List[Tensor]:
    """Label skew: each class is split across clients in Dirichlet(alpha) proportions.

    Hsu, Qi, Brown 2019. Redraws (seeded) until every client has at least
    ``min_size`` samples, and refuses after 100 draws rather than dropping clients.
    """
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be > 0 (smaller is more skewed)")
    _check_clients(n_clients, len(labels))
    y = labels.cpu().numpy()
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: List[List[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]
    raise ValueError(f"Dirichlet(alpha={alpha}) could not give all {n_clients} clients >= {min_size} "
                     "samples in 100 draws; raise alpha or use fewer clients")


def partition_shards(labels: Tensor, n_clients: int, labels_per_client: int = 2,
                     seed: int = 0) -> List[Tensor]:
    """Sort by label, cut into n_clients * k shards, give each client k shards (McMahan et al. 2017)."""
    _check_clients(n_clients, len(labels))
    if not isinstance(labels_per_client, int) or labels_per_client < 1:
        raise ValueError(f"labels_per_client={labels_per_client!r} must be a positive integer")
    n_shards = n_clients * labels_per_client
    if n_shards > len(labels):
        raise ValueError(f"{n_shards} shards exceed the {len(labels)} samples; lower labels_per_client")
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    order = np.lexsort((rng.random(len(y)), y))  # by label, random within label
    shards = np.array_split(order, n_shards)
    assign = rng.permutation(n_shards)
    return [torch.from_numpy(np.sort(np.concatenate([shards[s] for s in
                                                     assign[k * labels_per_client:(k + 1) * labels_per_client]])))
            for k in range(n_clients)]


PARTITIONERS: Dict[str, Callable[..., List[Tensor]]] = {
    "iid": partition_iid,
    "dirichlet": partition_dirichlet,
    "shards": partition_shards,
}


def partition(labels: Tensor, n_clients: int, scheme: str = "dirichlet", seed: int = 0,
              **kwargs) -> List[Tensor]:
    """Split training indices across clients with the named scheme."""
    if scheme not in PARTITIONERS:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {sorted(PARTITIONERS)}")
    return PARTITIONERS[scheme](labels, n_clients, seed=seed, **kwargs)
