"""Loaders for datasets a user keeps on disk (``--dataset NAME --data-dir DIR``).

Nothing is downloaded. Each loader reads its standard distribution format,
checks what it reads (magic numbers, shapes, counts, label range) and names the
file and the problem when something is off:

- ``mnist``, ``fashion-mnist``: IDX files (LeCun et al. 1998; Xiao et al. 2017),
  ``train-images-idx3-ubyte[.gz]`` etc.
- ``emnist``: EMNIST IDX files (Cohen et al. 2017), ``emnist-<split>-train-images-idx3-ubyte[.gz]``.
- ``femnist``: LEAF JSON (Caldas et al. 2018), ``train/*.json`` and ``test/*.json``, one user per writer.
- ``cifar10``: the CIFAR-10 python pickle batches (Krizhevsky 2009).
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` (Netzer et al. 2011) through scipy.
- ``sent140``: LEAF JSON of Sentiment140 (Go et al. 2009), one user per Twitter account,
  as binary bag-of-words features.
- ``purchase100``: Shokri et al. 2017's ``dataset_purchase`` (label, then 600 binary features).
"""
from __future__ import annotations

import gzip
import json
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from protocols.data.base import Dataset, split_train_test


def _folder(data_dir, name: str) -> Path:
    if data_dir is None:
        raise ValueError(f"dataset {name!r} is read from disk; give its folder with --data-dir DIR "
                         "(data_dir=...); see docs/datasets.md for the expected files")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"data_dir={str(data_dir)!r} for dataset {name!r} is not a folder")
    return folder


def _find(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` (each also tried with ``.gz``) in ``folder`` or its ``raw/``."""
    for sub in (folder, folder / "raw"):
        for n in names:
            for cand in (sub / n, sub / (n + ".gz")):
                if cand.is_file():
                    return cand
    raise ValueError(f"{what}: none of {list(names)} (or .gz) in {str(folder)!r}")


def _check_finite(x: np.ndarray, what, users: Optional[np.ndarray] = None, names=None) -> None:
    """Features must be finite: a NaN (JSON's NaN, a corrupt file) would pass every range check
    and poison training silently. Names the file(s) and, for LEAF, the first user concerned."""
    if not np.issubdtype(x.dtype, np.floating) or not x.size:
        return
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        who = ""
        if users is not None:
            u = int(users[first])
            who = f" (first in user {names[u] if names is not None else u!r})"
        raise ValueError(f"{what}: {int(bad.sum())} record(s) have NaN or infinite feature values{who}; fix or "
                         "drop them in the files (every value must be a finite number)")


def _dataset(name, xtr, ytr, xte, yte, num_classes, meta):
    src = meta.get("source", name)
    _check_finite(xtr, f"{name} training data in {src}")
    _check_finite(xte, f"{name} test data in {src}")
    t = torch.from_numpy
    return Dataset(name, t(np.ascontiguousarray(xtr)), t(ytr.astype(np.int64)),
                   t(np.ascontiguousarray(xte)), t(yte.astype(np.int64)), num_classes,
                   tuple(xtr.shape[1:]), meta)


def _check_labels(y: np.ndarray, num_classes: int, path) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), found [{y.min()}, {y.max()}]")


# --------------------------------------------------------------------------- IDX (MNIST family)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """One IDX file (gzip or not): magic 0x0000, a type byte, the number of dimensions,
    the dimensions as big-endian int32, then the data (LeCun's MNIST format)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'empty'}; expected 0000 then a type "
                         "byte 08..0e and the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">i4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {dims} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _idx_pair(folder: Path, images: Sequence[str], labels: Sequence[str], num_classes: int, what: str,
              transpose: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    ip, lp = _find(folder, images, what), _find(folder, labels, what)
    x, y = read_idx(ip), read_idx(lp)
    if x.ndim != 3:
        raise ValueError(f"{ip}: images must have 3 dimensions [N, H, W], got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{lp}: labels must have 1 dimension [N], got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{ip} has {len(x)} images but {lp} has {len(y)} labels")
    y = y.astype(np.int64)
    _check_labels(y, num_classes, lp)
    if transpose:
        x = x.transpose(0, 2, 1)       # EMNIST's IDX images are stored transposed
    return (x.astype(np.float32) / 255.0)[:, None], y


def _load_idx_dataset(name: str, folder: Path, prefix: str, num_classes: int, transpose: bool = False,
                      meta: Optional[dict] = None):
    tr = _idx_pair(folder, [f"{prefix}train-images-idx3-ubyte", f"{prefix}train-images.idx3-ubyte"],
                   [f"{prefix}train-labels-idx1-ubyte", f"{prefix}train-labels.idx1-ubyte"], num_classes,
                   f"{name} training set", transpose)
    te = _idx_pair(folder, [f"{prefix}t10k-images-idx3-ubyte", f"{prefix}test-images-idx3-ubyte",
                            f"{prefix}t10k-images.idx3-ubyte"],
                   [f"{prefix}t10k-labels-idx1-ubyte", f"{prefix}test-labels-idx1-ubyte",
                    f"{prefix}t10k-labels.idx1-ubyte"], num_classes, f"{name} test set", transpose)
    if tr[0].shape[1:] != te[0].shape[1:]:
        raise ValueError(f"{name}: training images are {tr[0].shape[2:]} but test images {te[0].shape[2:]}")
    return _dataset(name, tr[0], tr[1], te[0], te[1], num_classes,
                    {"default_model": "cnn", "source": str(folder), **(meta or {})})


def load_mnist(seed: int = 0, data_dir=None):
    """MNIST from its four IDX files (gzip or not) in ``data_dir`` (or ``data_dir/raw``)."""
    return _load_idx_dataset("mnist", _folder(data_dir, "mnist"), "", 10)


def load_fashion_mnist(seed: int = 0, data_dir=None):
    """Fashion-MNIST (Xiao et al. 2017): the same IDX layout and file names as MNIST."""
    return _load_idx_dataset("fashion-mnist", _folder(data_dir, "fashion-mnist"), "", 10)


EMNIST_CLASSES = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 27, "digits": 10, "mnist": 10}


def load_emnist(seed: int = 0, data_dir=None, split: str = "byclass"):
    """EMNIST (Cohen et al. 2017) IDX files ``emnist-<split>-{train,test}-{images,labels}-idx?-ubyte[.gz]``.

    ``letters`` labels run 1..26 as distributed (27 classes, class 0 unused). For
    per-writer clients use ``femnist`` (LEAF JSON).
    """
    if split not in EMNIST_CLASSES:
        raise ValueError(f"split={split!r}; choose one of {sorted(EMNIST_CLASSES)}")
    folder = _folder(data_dir, "emnist")
    p = f"emnist-{split}-"
    tr = _idx_pair(folder, [p + "train-images-idx3-ubyte"], [p + "train-labels-idx1-ubyte"],
                   EMNIST_CLASSES[split], "emnist training set", transpose=True)
    te = _idx_pair(folder, [p + "test-images-idx3-ubyte"], [p + "test-labels-idx1-ubyte"],
                   EMNIST_CLASSES[split], "emnist test set", transpose=True)
    return _dataset("emnist", tr[0], tr[1], te[0], te[1], EMNIST_CLASSES[split],
                    {"default_model": "cnn", "source": str(folder), "split": split})


# --------------------------------------------------------------------------- LEAF JSON

def read_leaf_json(paths: Sequence[Path]) -> Tuple[List[str], Dict[str, dict]]:
    """LEAF's JSON files: ``{"users": [...], "num_samples": [...], "user_data": {u: {"x": [...], "y": [...]}}}``.

    Returns (users in file order, merged user_data); checks that every user's x and y
    have the ``num_samples`` the file states.
    """
    users: List[str] = []
    data: Dict[str, dict] = {}
    for path in paths:
        try:
            blob = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a LEAF JSON file ({exc})") from None
        if not isinstance(blob, dict) or not {"users", "user_data"} <= set(blob):
            raise ValueError(f"{path}: a LEAF JSON file needs the keys 'users' and 'user_data' "
                             f"(found {sorted(blob) if isinstance(blob, dict) else type(blob).__name__})")
        counts = blob.get("num_samples", [None] * len(blob["users"]))
        if len(counts) != len(blob["users"]):
            raise ValueError(f"{path}: {len(blob['users'])} users but {len(counts)} num_samples entries")
        for u, n in zip(blob["users"], counts):
            d = blob["user_data"].get(u)
            if d is None or "x" not in d or "y" not in d:
                raise ValueError(f"{path}: user {u!r} has no user_data with 'x' and 'y'")
            if len(d["x"]) != len(d["y"]) or (n is not None and len(d["y"]) != n):
                raise ValueError(f"{path}: user {u!r} has {len(d['x'])} x, {len(d['y'])} y, num_samples={n}")
            if u in data:
                raise ValueError(f"{path}: user {u!r} appears in more than one file of the same split")
            users.append(u)
            data[u] = d
    return users, data


def _leaf_splits(folder: Path, name: str) -> Tuple[List[Path], List[Path]]:
    tr, te = sorted((folder / "train").glob("*.json")), sorted((folder / "test").glob("*.json"))
    if not tr or not te:
        raise ValueError(f"{name}: expected LEAF JSON files in {str(folder / 'train')!r} and "
                         f"{str(folder / 'test')!r} (LEAF's data/{name}/data/train and test); found "
                         f"{len(tr)} and {len(te)}")
    return tr, te


def _read_leaf(data_dir, name: str):
    """LEAF's train and test JSON of ``name``: paths, users and data of each split, all user
    names (train first, then test-only users) and their index (the natural-client id)."""
    trp, tep = _leaf_splits(_folder(data_dir, name), name)
    tr_users, tr = read_leaf_json(trp)
    te_users, te = read_leaf_json(tep)
    names = tr_users + [u for u in te_users if u not in tr]
    return trp, tep, tr_users, tr, te_users, te, names, {u: k for k, u in enumerate(names)}


def _flatten_users(order: List[str], data: Dict[str, dict], index: Dict[str, int]):
    xs, ys, us = [], [], []
    for u in order:
        xs.extend(data[u]["x"])
        ys.extend(data[u]["y"])
        us.extend([index[u]] * len(data[u]["y"]))
    return xs, np.asarray(ys), np.asarray(us, dtype=np.int64)


def load_femnist(seed: int = 0, data_dir=None, num_classes: int = 62):
    """FEMNIST of LEAF: 28x28 handwritten characters, 62 classes, one user per writer.

    ``data_dir`` holds LEAF's ``train/*.json`` and ``test/*.json`` (each x a list of 784
    floats in [0, 1]). ``meta["users_train"]`` gives the writers (partition ``natural``).
    """
    trp, tep, tr_users, tr, te_users, te, names, index = _read_leaf(data_dir, "femnist")
    out = []
    for users, data, paths in ((tr_users, tr, trp), (te_users, te, tep)):
        xs, y, u = _flatten_users(users, data, index)
        try:
            x = np.asarray(xs, dtype=np.float32)
        except ValueError:
            x = None
        if x is None or x.ndim != 2 or x.shape[1] != 784:
            raise ValueError(f"{[str(p) for p in paths]}: every FEMNIST x must be a list of 784 pixel values "
                             f"(28x28), got {'ragged lists' if x is None else f'shape {x.shape}'}")
        _check_finite(x, [str(p) for p in paths], u, names)
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{[str(p) for p in paths]}: pixel values must lie in [0, 1], found "
                             f"[{x.min()}, {x.max()}]")
        y = y.astype(np.int64)
        _check_labels(y, num_classes, [str(p) for p in paths])
        out.append((x.reshape(-1, 1, 28, 28), y, u))
    (xtr, ytr, utr), (xte, yte, ute) = out
    return _dataset("femnist", xtr, ytr, xte, yte, num_classes,
                    {"default_model": "cnn", "default_partition": "natural", "source": str(trp[0].parent.parent),
                     "users_train": torch.from_numpy(utr), "users_test": torch.from_numpy(ute),
                     "user_names": names})


_TOKEN = re.compile(r"[a-z0-9']+")


def _tweet_text(x, path) -> str:
    # LEAF's sent140 x is [id, date, query, user, text]: its model reads e[4]
    if isinstance(x, str):
        return x
    if isinstance(x, list) and len(x) >= 5 and isinstance(x[4], str):
        return x[4]
    raise ValueError(f"{path}: a Sent140 x must be a tweet string or LEAF's [id, date, query, user, text] "
                     f"list, got {str(x)[:80]!r}")


def load_sent140(seed: int = 0, data_dir=None, vocab_size: int = 2000):
    """Sent140 of LEAF (tweets, sentiment 0/1, one user per account) as binary bag-of-words.

    The vocabulary is the ``vocab_size`` most frequent lower-cased tokens of the training
    tweets (ties alphabetical); each record is a {0, 1} vector over it (LEAF's baseline is
    an LSTM on GloVe vectors, which would need a download; a bag-of-words with ``logreg``
    or ``mlp`` keeps it offline and quick).
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r} must be a positive integer")
    trp, tep, tr_users, tr, te_users, te, names, index = _read_leaf(data_dir, "sent140")
    tokens = {}
    parts = {}
    for split, users, data, paths in (("train", tr_users, tr, trp), ("test", te_users, te, tep)):
        xs, y, u = _flatten_users(users, data, index)
        tokens[split] = [_TOKEN.findall(_tweet_text(x, paths).lower()) for x in xs]
        try:
            y = y.astype(np.int64)
        except (TypeError, ValueError):
            raise ValueError(f"{[str(p) for p in paths]}: Sent140 labels must be integers 0/1") from None
        _check_labels(y, 2, [str(p) for p in paths])
        parts[split] = (y, u)
    counts = Counter(t for doc in tokens["train"] for t in set(doc))
    vocab = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]]
    col = {w: k for k, w in enumerate(vocab)}

    def bow(docs):
        x = np.zeros((len(docs), len(vocab)), dtype=np.float32)
        for r, doc in enumerate(docs):
            for t in doc:
                if t in col:
                    x[r, col[t]] = 1.0
        return x

    (ytr, utr), (yte, ute) = parts["train"], parts["test"]
    return _dataset("sent140", bow(tokens["train"]), ytr, bow(tokens["test"]), yte, 2,
                    {"default_model": "logreg", "default_partition": "natural", "source": str(trp[0].parent.parent),
                     "users_train": torch.from_numpy(utr), "users_test": torch.from_numpy(ute),
                     "user_names": names, "vocabulary": vocab})


# --------------------------------------------------------------------------- CIFAR-10, SVHN

def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR python pickle batch ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a CIFAR batch is a dict with b'data' and b'labels', got {type(d).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path}: a CIFAR-10 batch needs the keys b'data' and b'labels', found {sorted(d)}")
    return d


def load_cifar10(seed: int = 0, data_dir=None):
    """CIFAR-10 "python version": ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``
    (in ``data_dir`` or ``data_dir/cifar-10-batches-py``), each a pickled dict with
    ``data`` uint8 [n, 3072] (channel-major 32x32) and ``labels`` in [0, 10)."""
    folder = _folder(data_dir, "cifar10")
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"

    def read(names):
        xs, ys = [], []
        for n in names:
            path = folder / n
            if not path.is_file():
                raise ValueError(f"cifar10: missing {str(path)!r} (the python version has data_batch_1 .. "
                                 "data_batch_5 and test_batch)")
            d = _unpickle(path)
            x = np.asarray(d["data"])
            y = np.asarray(d["labels"])
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
                raise ValueError(f"{path}: data must be uint8 [n, 3072], got {x.dtype} {x.shape}")
            if y.shape != (len(x),):
                raise ValueError(f"{path}: {len(x)} images but labels of shape {y.shape}")
            y = y.astype(np.int64)
            _check_labels(y, 10, path)
            xs.append(x)
            ys.append(y)
        return (np.concatenate(xs).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, np.concatenate(ys))

    xtr, ytr = read([f"data_batch_{k}" for k in range(1, 6)])
    xte, yte = read(["test_batch"])
    return _dataset("cifar10", xtr, ytr, xte, yte, 10, {"default_model": "cnn", "source": str(folder)})


def load_svhn(seed: int = 0, data_dir=None):
    """SVHN cropped digits: ``train_32x32.mat`` and ``test_32x32.mat`` with ``X`` uint8
    [32, 32, 3, n] and ``y`` [n, 1] in 1..10 (10 is the digit 0, mapped to label 0)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ValueError("dataset 'svhn' reads .mat files through scipy; pip install scipy") from None
    folder = _folder(data_dir, "svhn")

    def read(name):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"svhn: missing {str(path)!r} (expected train_32x32.mat and test_32x32.mat)")
        try:
            d = loadmat(path)
        except Exception as exc:    # scipy raises several types for a bad file
            raise ValueError(f"{path}: not a MATLAB .mat file scipy can read ({exc})") from None
        if "X" not in d or "y" not in d:
            raise ValueError(f"{path}: needs variables X and y, found {sorted(k for k in d if not k.startswith('__'))}")
        x, y = np.asarray(d["X"]), np.asarray(d["y"]).reshape(-1)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"{path}: X must have shape [32, 32, 3, n], got {x.shape}")
        if x.shape[3] != len(y):
            raise ValueError(f"{path}: X has {x.shape[3]} images but y has {len(y)} labels")
        y = y.astype(np.int64)
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise ValueError(f"{path}: SVHN labels must lie in 1..10 (10 is the digit 0), found "
                             f"[{y.min()}, {y.max()}]")
        return x.transpose(3, 2, 0, 1).astype(np.float32) / 255.0, y % 10

    xtr, ytr = read("train_32x32.mat")
    xte, yte = read("test_32x32.mat")
    return _dataset("svhn", xtr, ytr, xte, yte, 10, {"default_model": "cnn", "source": str(folder)})


# --------------------------------------------------------------------------- Purchase100

def load_purchase100_file(seed: int = 0, data_dir=None, test_fraction: float = 0.2,
                          filename: str = "dataset_purchase", n_features: int = 600, n_classes: int = 100):
    """The real Purchase100 (Shokri et al. 2017): ``data_dir/dataset_purchase``, one record
    per line, ``label,f1,...,f600`` with labels 1..100 and binary features. Labels are
    shifted to 0..99; the train/test split is stratified and seeded."""
    path = _folder(data_dir, "purchase100") / filename
    if not path.is_file():
        raise ValueError(f"purchase100: missing {str(path)!r} (Shokri et al.'s dataset_purchase; another "
                         "name with filename=...)")
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not comma-separated integers ({exc})") from None
    if a.shape[1] != n_features + 1:
        raise ValueError(f"{path}: rows must have 1 label + {n_features} features = {n_features + 1} columns, "
                         f"got {a.shape[1]}")
    y, x = a[:, 0], a[:, 1:]
    if len(y) and (y.min() < 1 or y.max() > n_classes):
        raise ValueError(f"{path}: labels must lie in 1..{n_classes}, found [{y.min()}, {y.max()}]")
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"{path}: features must be 0 or 1, found values {np.unique(x[~np.isin(x, (0, 1))])[:5]}")
    xtr, xte, ytr, yte = split_train_test(x.astype(np.float32), y - 1, test_fraction, seed)
    return _dataset("purchase100", xtr, ytr, xte, yte, n_classes, {"default_model": "fc-purchase",
                                                                    "source": str(path)})
