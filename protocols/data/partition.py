"""Partitioners: split a training set's indices across clients.

IID, Dirichlet(alpha) label skew (Hsu et al. 2019), label-sorted shards with k labels
per client (McMahan et al. 2017), the FLTrust q-group bias (Cao et al. 2021, Sec. VI-A)
and natural clients (the dataset's own users, LEAF). Each refuses rather than drops.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

Tensor = torch.Tensor


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


def partition(labels: Tensor, n_clients: int, scheme: str = "dirichlet", seed: int = 0,
              **kwargs) -> List[Tensor]:
    """Split training indices across clients with the named scheme."""
    if scheme not in PARTITIONERS:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {sorted(PARTITIONERS)}")
    return PARTITIONERS[scheme](labels, n_clients, seed=seed, **kwargs)
