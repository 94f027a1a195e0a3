"""The dataset record every loader returns, and the seeded stratified split they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

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


def split_train_test(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Stratified train/test split (scikit-learn), seeded; the loaders all use it."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r} must lie in (0, 1)")
    from sklearn.model_selection import train_test_split
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
