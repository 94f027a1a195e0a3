"""Per-record features of the white-box membership attack (Nasr, Shokri, Houmansadr,
S&P 2019, arXiv:1812.00910), computed on one or several model views.

For a target record (x, y) and an observed model theta, Nasr et al. feed the attack
network with

* the **output vector** f(x; theta) (here: the softmax probabilities),
* the **loss** L(f(x; theta), y) (cross-entropy),
* the **one-hot label** y,
* the **gradient of the loss w.r.t. the last layer** dL/dW, dL/db — the features the
  Cronus appendix (D.1, "we use the gradients and outputs of its last layer, in
  addition to ... prediction of input and its cross-entropy loss") attacks with.

Per-sample gradients are vectorised with ``torch.func``: ``vmap(grad(loss))`` over the
records, with the parameters supplied by ``functional_call`` from a flat vector in
``model.parameters()`` order (see :mod:`membership.views`). Everything is computed on
the view's device; records are moved there. Models are evaluated in ``eval()`` mode
(restored afterwards), as deployed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .views import ModelView, Records, as_records, as_single_view, as_views

Tensor = torch.Tensor

__all__ = ["Features", "find_last_layer", "outputs_and_losses", "last_layer_gradients",
           "per_sample_grad_norm", "record_features"]

# Per-sample gradients of all parameters are materialised in chunks of at most this many floats.
_MAX_CHUNK_FLOATS = 1 << 24


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in ``eval()`` mode for the block, its training flag restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def find_last_layer(model: nn.Module, name: Optional[str] = None) -> Tuple[str, List[str]]:
    """The module whose gradient the attack reads, and its parameter names.

    Default: the last module (in ``named_modules()`` order) that owns a 2-D ``weight``
    parameter — the final ``nn.Linear`` classifier of the project's models. ``name``
    selects another module by its qualified name (e.g. ``"net.4"``).
    Returns ``(module_name, [weight_name, bias_name?])``.
    """
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            candidates = [k for k, m in modules.items() if isinstance(getattr(m, "weight", None), nn.Parameter)]
            raise ValueError(f"last_layer={name!r} is not a module of {type(model).__name__}; "
                             f"choose one of {candidates}")
        chosen = name
    else:
        chosen = None
        for k, m in modules.items():
            w = m._parameters.get("weight") if hasattr(m, "_parameters") else None
            if isinstance(w, nn.Parameter) and w.ndim == 2:
                chosen = k
        if chosen is None:
            raise ValueError(f"{type(model).__name__} has no module with a 2-D weight (e.g. nn.Linear); "
                             "pass last_layer='<module name>' to choose the layer whose gradient to use")
    mod = modules[chosen]
    names = []
    for pn in ("weight", "bias"):
        p = mod._parameters.get(pn)
        if isinstance(p, nn.Parameter):
            names.append(f"{chosen}.{pn}" if chosen else pn)
    if not names or not names[0].endswith("weight"):
        raise ValueError(f"module {chosen!r} has no weight parameter; pass another last_layer")
    return chosen, names


def _prepare(view: ModelView, records: Records) -> Tuple[Dict[str, Tensor], Tensor, Tensor]:
    dev = view.device
    return view.param_dict(), records.x.to(dev), records.y.to(dev)


def _check_labels(y: Tensor, n_classes: int, where: str) -> None:
    if y.numel() and int(y.max()) >= n_classes:
        raise ValueError(f"{where}: label {int(y.max())} is out of range for a model with {n_classes} outputs; "
                         "labels must be class indices in [0, n_classes)")


def outputs_and_losses(view, records, batch_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """Softmax outputs ``[N, C]`` and cross-entropy losses ``[N]`` of ``view`` on ``records``."""
    view = as_single_view(view, "outputs_and_losses")
    records = as_records(records)
    params, x, y = _prepare(view, records)
    probs, losses = [], []
    with eval_mode(view.model), torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = functional_call(view.model, params, (x[i:i + batch_size],))
            if logits.ndim != 2:
                raise ValueError(f"the model must return logits [B, n_classes], got shape {tuple(logits.shape)}")
            _check_labels(y[i:i + batch_size], logits.shape[1], f"view {view.name!r}")
            probs.append(torch.softmax(logits, dim=1))
            losses.append(F.cross_entropy(logits, y[i:i + batch_size], reduction="none"))
    return torch.cat(probs), torch.cat(losses)


def _per_sample_grads(view: ModelView, records: Records, names: Sequence[str], batch_size: int) -> Dict[str, Tensor]:
    params, x, y = _prepare(view, records)
    wrt = {k: params[k] for k in names}
    rest = {k: v for k, v in params.items() if k not in wrt}
    model = view.model

    def loss_one(p, xi, yi):
        logits = functional_call(model, {**rest, **p}, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    out: Dict[str, List[Tensor]] = {k: [] for k in names}
    with eval_mode(model):
        with torch.no_grad():  # validate the labels once, cheaply
            n_out = functional_call(model, params, (x[:1],)).shape[1]
        _check_labels(y, n_out, f"view {view.name!r}")
        for i in range(0, len(y), batch_size):
            g = g_fn(wrt, x[i:i + batch_size], y[i:i + batch_size])
            for k in names:
                out[k].append(g[k].detach())
    return {k: torch.cat(v) for k, v in out.items()}


def last_layer_gradients(view, records, last_layer: Optional[str] = None, batch_size: int = 256) -> Tensor:
    """Per-record gradient of the loss w.r.t. the last layer: ``[N, out, in (+1)]``.

    Row ``j`` holds dL/dW[j, :] followed by dL/db[j] (when the layer has a bias), so a
    convolution with kernel ``(1, in + 1)`` sees one output unit at a time, as in the
    gradient component of Nasr et al.'s attack network.
    """
    view = as_single_view(view, "last_layer_gradients")
    records = as_records(records)
    _, names = find_last_layer(view.model, last_layer)
    g = _per_sample_grads(view, records, names, batch_size)
    w = g[names[0]]
    w = w.reshape(w.shape[0], w.shape[1], -1)
    if len(names) == 2:
        w = torch.cat([w, g[names[1]].reshape(w.shape[0], w.shape[1], 1)], dim=2)
    return w


def per_sample_grad_norm(view, records, layers: str = "last", last_layer: Optional[str] = None,
                         batch_size: int = 256) -> Tensor:
    """Per-record L2 norm of the loss gradient ``[N]``.

    ``layers="last"`` (default): w.r.t. the last layer's weight and bias, the quantity of
    the Cronus appendix Figure 3; ``"all"``: w.r.t. every parameter (chunked so that at
    most ~16M gradient floats are held at once).
    """
    view = as_single_view(view, "per_sample_grad_norm")
    records = as_records(records)
    if layers == "last":
        return last_layer_gradients(view, records, last_layer, batch_size).flatten(1).norm(dim=1)
    if layers != "all":
        raise ValueError(f"layers={layers!r} is not supported; use 'last' (last layer, Cronus Fig. 3) or 'all'")
    names = [k for k, _ in view.model.named_parameters()]
    d = sum(p.numel() for p in view.model.parameters())
    chunk = max(1, min(batch_size, _MAX_CHUNK_FLOATS // max(d, 1)))
    g = _per_sample_grads(view, records, names, chunk)
    sq = sum(v.flatten(1).pow(2).sum(dim=1) for v in g.values())
    return sq.sqrt()


@dataclass
class Features:
    """White-box features of N records on V views.

    ``output`` [N, V, C] softmax, ``loss`` [N, V], ``label`` [N, C] one-hot,
    ``grad`` [N, V, out, in(+1)] last-layer gradient.
    """

    output: Tensor
    loss: Tensor
    label: Tensor
    grad: Tensor

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.loss.shape[1])

    def take(self, index: Tensor) -> "Features":
        index = index.to(self.loss.device)
        return Features(self.output[index], self.loss[index], self.label[index], self.grad[index])

    @staticmethod
    def cat(parts: Sequence["Features"]) -> "Features":
        return Features(*(torch.cat([getattr(p, f) for p in parts]) for f in ("output", "loss", "label", "grad")))


def record_features(views, records, last_layer: Optional[str] = None, batch_size: int = 256) -> Features:
    """White-box features of ``records`` on every view (Nasr et al. 2019).

    ``views``: one model / ``(model, flat_params)`` / ``ModelView``, or a list of them
    (e.g. successive global models); the per-view features are stacked along axis 1,
    so an attack trained on V views needs V views to score.
    """
    views = as_views(views)
    records = as_records(records)
    outs, losses, grads = [], [], []
    for v in views:
        p, l = outputs_and_losses(v, records, batch_size=max(batch_size, 1024))
        outs.append(p)
        losses.append(l)
        grads.append(last_layer_gradients(v, records, last_layer, batch_size))
    shapes = {tuple(g.shape[1:]) for g in grads}
    if len(shapes) != 1 or len({o.shape[1] for o in outs}) != 1:
        raise ValueError(f"views disagree on the architecture (last-layer gradient shapes {sorted(shapes)}); "
                         "all views of one attack must share the model")
    n_classes = outs[0].shape[1]
    label = F.one_hot(records.y.to(outs[0].device), n_classes).to(outs[0].dtype)
    return Features(torch.stack(outs, 1), torch.stack(losses, 1), label, torch.stack(grads, 1))
