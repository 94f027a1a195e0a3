"""Datasets and partitioners.

The embedded default is scikit-learn's bundled digits (1,797 8x8 images, no
network). ``synthetic`` is a seeded Gaussian-cluster classification task.
Also embedded: ``shakespeare`` (next character, one client per speaking role;
:mod:`protocols.data_shakespeare`) and ``purchase`` (Purchase100-style tabular
task; :mod:`protocols.data_purchase`). On-disk formats (MNIST, Fashion-MNIST,
EMNIST/FEMNIST, CIFAR-10, SVHN, Sent140, Purchase100) are read from ``data_dir``
by :mod:`protocols.data_disk`; see docs/datasets.md.

Partitioners split the training set across clients: IID, Dirichlet(alpha)
label skew (Hsu et al. 2019), label-sorted shards with k labels per client
(McMahan et al. 2017), the FLTrust q-group bias (Cao et al. 2021, Sec. VI-A) and
natural clients (the dataset's own users, LEAF).

A dataset's per-sample users (natural clients) live in ``meta["users_train"]``
(int64 tensor) with names in ``meta["user_names"]``; its defaults for a run in
``meta["default_model"]`` and ``meta["default_partition"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

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


from .data_disk import (load_cifar10, load_emnist, load_fashion_mnist, load_femnist,  # noqa: E402
                        load_mnist, load_purchase100_file, load_sent140, load_svhn)
from .data_purchase import load_purchase  # noqa: E402
from .data_shakespeare import load_shakespeare  # noqa: E402

DATASETS: Dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "shakespeare": load_shakespeare,
    "purchase": load_purchase,
    "purchase100": load_purchase100_file,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "emnist": load_emnist,
    "femnist": load_femnist,
    "cifar10": load_cifar10,
    "svhn": load_svhn,
    "sent140": load_sent140,
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


def partition_qgroup(labels: Tensor, n_clients: int, q: float = 0.5, seed: int = 0,
                     n_groups: Optional[int] = None) -> List[Tensor]:
    """FLTrust's non-IID scheme with bias probability q (Cao et al. 2021, Sec. VI-A).

    Clients are split evenly into as many groups as classes (``n_groups``, default the
    number of distinct labels, sorted). A sample of label l goes to group l with
    probability q and to each other group with probability (1 - q) / (G - 1); within its
    group it goes to a client uniformly at random. q = 1/G is IID; larger q is more skewed.
    Refuses (rather than dropping) when a client would get no sample.
    """
    y = labels.cpu().numpy()
    classes = np.unique(y)
    G = len(classes) if n_groups is None else n_groups
    if not isinstance(G, int) or G < 2:
        raise ValueError(f"n_groups={n_groups!r} must be an integer >= 2 (default: the number of classes)")
    if G != len(classes):
        raise ValueError(f"n_groups={G} but the labels have {len(classes)} classes; q-group maps class l to "
                         "group l, so n_groups must equal the number of classes")
    if not 0 <= q <= 1:
        raise ValueError(f"q={q!r} must lie in [0, 1] (FLTrust uses 0.1 .. 0.8; 1/classes is IID)")
    _check_clients(n_clients, len(y))
    if n_clients < G:
        raise ValueError(f"n_clients={n_clients} is fewer than the {G} groups (one per class); q-group needs "
                         f"at least {G} clients")
    rng = np.random.default_rng(seed)
    groups = np.array_split(np.arange(n_clients), G)
    label_group = np.searchsorted(classes, y)
    other = rng.integers(0, G - 1, size=len(y))
    other = other + (other >= label_group)                      # uniform over the G - 1 other groups
    group = np.where(rng.random(len(y)) < q, label_group, other)
    client = np.empty(len(y), dtype=np.int64)
    for g, members in enumerate(groups):
        ix = np.flatnonzero(group == g)
        client[ix] = rng.choice(members, size=len(ix))
    parts = [np.flatnonzero(client == k) for k in range(n_clients)]
    empty = [k for k, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(f"q-group (q={q}) left client(s) {empty} without samples; use fewer clients or a "
                         "larger dataset")
    return [torch.from_numpy(p) for p in parts]


def partition_natural(labels: Tensor, n_clients: int, users: Optional[Tensor] = None, seed: int = 0,
                      min_samples: int = 1) -> List[Tensor]:
    """Natural clients: the dataset's own users (LEAF: a speaking role, a writer, a Twitter user).

    ``users`` holds the user id of every sample (``dataset.meta["users_train"]``). With
    more users than ``n_clients`` the ``n_clients`` users with the most samples are the
    clients (ties by lower id; the others' samples are not used, as LEAF subsamples
    users); with fewer, it refuses. ``seed`` is unused (the choice is deterministic).
    """
    if users is None:
        raise ValueError("partition 'natural' needs the per-sample users (users=...); only datasets with "
                         "natural clients have them (shakespeare, femnist, sent140: meta['users_train'])")
    users = torch.as_tensor(users).cpu()
    if users.shape != (len(labels),):
        raise ValueError(f"users has shape {tuple(users.shape)} but there are {len(labels)} samples")
    if not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} must be a positive integer")
    ids, counts = torch.unique(users, return_counts=True)
    keep = counts >= min_samples
    ids, counts = ids[keep], counts[keep]
    if n_clients > len(ids):
        raise ValueError(f"n_clients={n_clients} but the data has only {len(ids)} users with >= {min_samples} "
                         f"samples; partition 'natural' has one client per user, so use --clients <= {len(ids)}")
    order = sorted(range(len(ids)), key=lambda k: (-int(counts[k]), int(ids[k])))[:n_clients]
    unused = len(labels) - sum(int(counts[k]) for k in order)
    if unused:
        import warnings
        warnings.warn(f"partition 'natural': {n_clients} clients are the {n_clients} largest of {len(ids)} users; "
                      f"the other users' {unused} of {len(labels)} training samples are not used (as LEAF "
                      f"subsamples users); use --clients {len(ids)} to use them all", stacklevel=2)
    return [torch.nonzero(users == ids[k]).flatten() for k in order]


PARTITIONERS: Dict[str, Callable[..., List[Tensor]]] = {
    "iid": partition_iid,
    "dirichlet": partition_dirichlet,
    "shards": partition_shards,
    "qgroup": partition_qgroup,
    "natural": partition_natural,
}


def resolve_partition(name: str, dataset: Dataset) -> str:
    """``"auto"``: the dataset's default partition (``meta["default_partition"]``, else dirichlet)."""
    if name == "auto":
        return str(dataset.meta.get("default_partition", "dirichlet"))
    return name


# Run fields a dataset may preset (local training only: they change no protocol or privacy claim),
# and what a field left at None takes when the dataset presets nothing.
RUN_DEFAULT_FIELDS = ("lr", "local_epochs")
RUN_FALLBACKS: Dict[str, object] = {"lr": 0.05, "local_epochs": 2}


def dataset_run_defaults(dataset: Dataset, cfg) -> Dict[str, object]:
    """Values for the fields of ``cfg`` left at None (:data:`RUN_DEFAULT_FIELDS`): the
    dataset's training preset ``meta["run_defaults"]``, else :data:`RUN_FALLBACKS`.
    A field the user set is never replaced."""
    preset = dict(dataset.meta.get("run_defaults", {}))
    bad = sorted(set(preset) - set(RUN_DEFAULT_FIELDS))
    if bad:
        raise ValueError(f"dataset {dataset.name!r}: meta['run_defaults'] may only set {RUN_DEFAULT_FIELDS}, "
                         f"not {bad}")
    return {k: preset.get(k, RUN_FALLBACKS[k]) for k in RUN_DEFAULT_FIELDS if getattr(cfg, k) is None}


def partition(labels: Tensor, n_clients: int, scheme: str = "dirichlet", seed: int = 0,
              **kwargs) -> List[Tensor]:
    """Split training indices across clients with the named scheme."""
    if scheme not in PARTITIONERS:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {sorted(PARTITIONERS)}")
    return PARTITIONERS[scheme](labels, n_clients, seed=seed, **kwargs)
