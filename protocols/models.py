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


class FCNet(nn.Module):
    """Fully connected net with tanh hidden layers: the Purchase100 model of Nasr, Shokri,
    Houmansadr 2019 (Sec. IV-A; 600-1024-512-256-128-100, as Cronus, Chang et al. 2019,
    Table 2, uses for Purchase100)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int,
                 hidden: Sequence[int] = (1024, 512, 256, 128)):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


class _LSTMLayer(nn.Module):
    """One LSTM layer written from matmuls (Hochreiter & Schmidhuber 1997, with forget gate):
    i, f, g, o = W_ih x_t + b + W_hh h_{t-1}; c_t = s(f) c_{t-1} + s(i) tanh(g);
    h_t = s(o) tanh(c_t). Unlike ``nn.LSTM`` it is a pure function of its parameters
    that ``torch.func.vmap`` can batch over stacked client parameters."""

    def __init__(self, input_size: int, hidden: int, forget_bias: float = 1.0):
        super().__init__()
        self.hidden = hidden
        self.ih = nn.Linear(input_size, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        bound = 1.0 / math.sqrt(hidden)
        with torch.no_grad():
            for p in (self.ih.weight, self.ih.bias, self.hh.weight):
                p.uniform_(-bound, bound)
            # TF BasicLSTMCell's forget_bias=1.0, which LEAF's model uses
            self.ih.bias[hidden:2 * hidden] += forget_bias

    def forward(self, x):                              # x [B, T, in] -> [B, T, H]
        # input projections of every step at once; unbind (not xi[:, t]) keeps backward O(T)
        xs = self.ih(x).unbind(1)
        h = x.new_zeros(x.shape[0], self.hidden)
        c = torch.zeros_like(h)
        out = []
        for xt in xs:
            i, f, g, o = (xt + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, dim=1)


class CharLSTM(nn.Module):
    """Next-character model of LEAF (Caldas et al. 2018) used by RFA (Pillutla et al. 2022,
    Sec. 5, Shakespeare): embedding 8, two LSTM layers of 256, linear to the vocabulary.

    Input: token ids [B, T] (int64, T = 80); output: logits [B, V] for the character after
    the window, V = ``num_classes`` (the same alphabet as the inputs).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, embed: int = 8,
                 hidden: int = 256, layers: int = 2):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"CharLSTM needs token sequences [T], got input_shape={tuple(input_shape)}; "
                             "use it with a text dataset such as shakespeare")
        self.embed = nn.Embedding(num_classes, embed)
        self.lstm = nn.ModuleList(_LSTMLayer(embed if k == 0 else hidden, hidden) for k in range(layers))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        if x.dtype.is_floating_point:
            raise ValueError(f"CharLSTM takes integer token ids, got dtype {x.dtype}")
        h = self.embed(x)
        for layer in self.lstm:
            h = layer(h)
        return self.fc(h[:, -1])


def _preset(cls, doc, **defaults):
    def make(input_shape, num_classes, **kwargs):
        return cls(input_shape, num_classes, **{**defaults, **kwargs})
    make.__doc__ = doc
    return make


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "cnn": SmallCNN,
    "fc-purchase": FCNet,
    "fc-purchase-small": _preset(FCNet, "FCNet preset for CPU runs: 600-256-128-100 tanh.", hidden=(256, 128)),
    "charlstm": CharLSTM,
    "charlstm-small": _preset(CharLSTM, "CharLSTM preset for CPU runs: embedding 8, one LSTM layer of 128.",
                              hidden=128, layers=1),
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
        return MODELS[name](tuple(input_shape), num_classes, **kwargs)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def set_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(flat, model.parameters())
