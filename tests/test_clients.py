import pytest
import torch

from protocols.clients import LocalTraining, batch_schedule, client_group_size, evaluate, train_loop, train_vmap
from protocols.data import load_digits, partition
from protocols.models import build_model


@pytest.fixture(scope="module")
def digits():
    ds = load_digits()
    return ds, partition(ds.y_train, 6, "dirichlet", alpha=0.5, seed=1)


def test_batch_schedule_visits_each_sample_once_per_epoch():
    parts = [torch.arange(0, 10), torch.arange(10, 33)]
    index, mask = batch_schedule(parts, epochs=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert index.shape == (2, 3 * 6, 4)
    for k, ix in enumerate(parts):
        seen = index[k][mask[k]]
        counts = torch.bincount(seen, minlength=33)[ix]
        assert (counts == 3).all()
        assert mask[k].sum() == 3 * len(ix)


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 1e-3)])
def test_vmap_equals_loop(digits, model, momentum, wd):
    ds, parts = digits
    net = build_model(model, ds.input_shape, ds.num_classes, seed=3)
    cfg = LocalTraining(epochs=2, batch_size=16, lr=0.05, momentum=momentum, weight_decay=wd)
    a = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(4))
    b = train_loop(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(4))
    d = sum(p.numel() for p in net.parameters())
    assert a.shape == b.shape == (len(parts), d)
    assert a.abs().max() > 1e-3                      # training moved the weights
    assert torch.allclose(a, b, atol=2e-5, rtol=1e-4)


def test_batch_transform_is_applied_in_both_paths(digits):
    ds, parts = digits
    net = build_model("logreg", ds.input_shape, ds.num_classes)
    cfg = LocalTraining(epochs=1)

    def flip_client0(x, y, ids):
        return x, torch.where(ids.unsqueeze(-1) == 0, 9 - y, y)

    a = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(0),
                   batch_transform=flip_client0)
    b = train_loop(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(0),
                   batch_transform=flip_client0)
    clean = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=2e-5)
    assert not torch.allclose(a[0], clean[0], atol=1e-4)
    assert torch.allclose(a[1:], clean[1:], atol=1e-6)


def test_updates_stay_on_model_device_and_are_deterministic(digits):
    ds, parts = digits
    net = build_model("mlp", ds.input_shape, ds.num_classes)
    cfg = LocalTraining(epochs=1)
    a = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(9))
    b = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(9))
    assert a.device == next(net.parameters()).device
    assert torch.equal(a, b)


def test_evaluate_counts(digits):
    ds, _ = digits
    net = build_model("logreg", ds.input_shape, ds.num_classes)
    acc, loss = evaluate(net, ds.x_test, ds.y_test)
    assert 0 <= acc <= 1 and loss > 0


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"momentum": 1.0},
                                 {"weight_decay": -1.0}])
def test_bad_local_training(bad):
    with pytest.raises(ValueError):
        LocalTraining(**bad)


def test_per_client_start_points(digits):
    ds, parts = digits
    net = build_model("mlp", ds.input_shape, ds.num_classes)
    d = sum(p.numel() for p in net.parameters())
    start = torch.randn(len(parts), d) * 0.1
    cfg = LocalTraining(epochs=1, momentum=0.5)
    a = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(2), start=start)
    b = train_loop(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(2), start=start)
    same = train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator().manual_seed(2))
    assert torch.allclose(a, b, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(a, same, atol=1e-3)
    with pytest.raises(ValueError, match="start must have shape"):
        train_vmap(net, ds.x_train, ds.y_train, parts, cfg, torch.Generator(), start=start[:, :5])


@pytest.mark.parametrize("model, group", [("mlp", 1), ("mlp", 4), ("logreg", 3),
                                          pytest.param("cnn", 4, marks=pytest.mark.slow)])
def test_client_groups_equal_all_at_once(digits, model, group):
    # Training the clients in groups (bounded memory) gives the all-at-once updates: exactly for
    # groups of several clients; vmap over a single client takes other matmul kernels, so
    # float rounding may differ in the last bits there.
    ds, parts = digits
    net = build_model(model, ds.input_shape, ds.num_classes, seed=5)
    kw = dict(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)
    whole = train_vmap(net, ds.x_train, ds.y_train, parts, LocalTraining(**kw, client_batch=len(parts)),
                       torch.Generator().manual_seed(7))
    grouped = train_vmap(net, ds.x_train, ds.y_train, parts, LocalTraining(**kw, client_batch=group),
                         torch.Generator().manual_seed(7))
    assert whole.abs().max() > 1e-3
    if group > 1:
        assert torch.equal(whole, grouped)
    else:
        assert torch.allclose(whole, grouped, rtol=1e-5, atol=1e-6)


def test_client_group_size_follows_the_budget(digits):
    ds, _ = digits
    net = build_model("mlp", ds.input_shape, ds.num_classes)
    cfg = LocalTraining(batch_size=16)
    d = sum(p.numel() for p in net.parameters())
    one = client_group_size(net, ds.x_train, 1000, cfg, budget=10 ** 12)
    assert one == 1000                                        # everything fits: one group
    small = client_group_size(net, ds.x_train, 1000, cfg, budget=4 * 6 * d * 10)
    assert 1 <= small <= 10                                   # about ten clients' parameters
    assert client_group_size(net, ds.x_train, 1000, cfg, budget=1) == 1
    with pytest.raises(ValueError, match="client_batch"):
        LocalTraining(client_batch=0)
