import pytest
import torch

from protocols.clients import LocalTraining, evaluate, train_loop, train_vmap
from protocols.models import MODELS, CharLSTM, build_model, resolve_model


def _tokens(n=48, T=12, V=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (n, T), generator=g)
    return x, (x[:, -1] + 1) % V                      # learnable: next token after the last


def test_char_lstm_matches_a_reference_lstm():
    """The hand-written cell computes what torch's nn.LSTM computes with the same weights."""
    net = CharLSTM((12,), 20, hidden=16, layers=2)
    ref = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(net.lstm):
            getattr(ref, f"weight_ih_l{k}").copy_(layer.ih.weight)
            getattr(ref, f"weight_hh_l{k}").copy_(layer.hh.weight)
            getattr(ref, f"bias_ih_l{k}").copy_(layer.ih.bias)
            getattr(ref, f"bias_hh_l{k}").zero_()
    x, _ = _tokens()
    out, _ = ref(net.embed(x))
    assert torch.allclose(net(x), net.fc(out[:, -1]), atol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_char_lstm_vmap_equals_loop_on_integer_inputs(momentum):
    x, y = _tokens()
    net = build_model("charlstm", (12,), 20, seed=1, hidden=16)
    parts = [torch.arange(0, 10), torch.arange(10, 30), torch.arange(30, 48)]
    cfg = LocalTraining(epochs=2, batch_size=8, lr=0.5, momentum=momentum)
    a = train_vmap(net, x, y, parts, cfg, torch.Generator().manual_seed(2))
    b = train_loop(net, x, y, parts, cfg, torch.Generator().manual_seed(2))
    assert a.abs().max() > 1e-3
    assert torch.allclose(a, b, atol=2e-5, rtol=1e-4)
    acc, loss = evaluate(net, x, y)
    assert 0 <= acc <= 1 and loss > 0


def test_char_lstm_learns_and_rejects_floats():
    x, y = _tokens(n=64)
    net = build_model("charlstm-small", (12,), 20, seed=0)
    assert (len(net.lstm), net.lstm[0].hidden) == (1, 128) and build_model("charlstm", (80,), 81).lstm[0].hidden == 256
    before = evaluate(net, x, y)[1]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert evaluate(net, x, y)[1] < before - 0.5
    with pytest.raises(ValueError, match="integer token ids"):
        net(x.float())
    with pytest.raises(ValueError, match="token sequences"):
        CharLSTM((1, 8, 8), 10)


def test_fc_purchase_architecture():
    net = build_model("fc-purchase", (600,), 100)
    dims = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert dims == [(600, 1024), (1024, 512), (512, 256), (256, 128), (128, 100)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.modules()) == 4
    small = build_model("fc-purchase-small", (600,), 100)
    assert small(torch.zeros(3, 600)).shape == (3, 100)
    assert {"charlstm", "charlstm-small", "fc-purchase", "fc-purchase-small"} <= set(MODELS)


def test_resolve_model_uses_dataset_default():
    from protocols.data import load_dataset
    ds = load_dataset("purchase", n_samples=1000)
    assert resolve_model("auto", ds) == "fc-purchase" and resolve_model("mlp", ds) == "mlp"
