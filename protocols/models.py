"""Models of the seeds, small enough to stack per client for vectorized training.

No batch norm or dropout: local training must be a pure function of
(parameters, batch) so that ``torch.func.vmap`` over stacked client parameters
and the per-client loop compute the same thing.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import nn


class LogisticRegression(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Fully connected net with ReLU hidden layers."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,)):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with 2x2 max-pooling, then a linear classifier (for 8x8 digits)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Tuple[int, int] = (16, 32)):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"SmallCNN needs image inputs [C, H, W], got input_shape={tuple(input_shape)}; "
                             "use --model mlp or logreg for flat features")
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(channels[1] * (h // 4) * (w // 4), num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "cnn": SmallCNN,
}


def resolve_model(name: str, dataset) -> str:
    """``"auto"``: the dataset's default model (``dataset.meta["default_model"]``, else mlp)."""
    if name == "auto":
        return str(dataset.meta.get("default_model", "mlp"))
    return name


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0, **kwargs) -> nn.Module:
    """Instantiate a registered model with seeded initial weights."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](input_shape, num_classes, **kwargs)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def set_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(flat, model.parameters())
