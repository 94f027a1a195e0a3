"""Adversarial regularization (protocols.clients.advreg; Nasr, Shokri, Houmansadr CCS 2018) in local training."""
import copy

import pytest
import torch
import torch.nn.functional as F

from protocols.clients import AdvRegParty, InferenceModel
from protocols.models import build_model, flat_params
from protocols.simulation import RunConfig, Simulation

SIM = dict(dataset="digits", clients=4, partition="iid", model="logreg", rounds=1, rule="fedavg", secagg="off",
           local_epochs=1, client_holdout=0.5)


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_inference_model_scores_prediction_label_pairs():
    h = InferenceModel(10)
    p = F.softmax(torch.randn(5, 10), 1)
    out = h(p, torch.tensor([0, 1, 2, 3, 9]))
    assert out.shape == (5,) and torch.isfinite(out).all()


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_classifier_step_is_cross_entropy_plus_lambda_log_h(lam):
    """Alg. 1: after h's step, f descends L(f) + lambda * mean log h(x, y, f(x)) on the member batch."""
    x, y = _batch()
    xr, yr = _batch(seed=1)
    xall, yall = torch.cat([x, xr]), torch.cat([y, yr])
    f = build_model("logreg", (1, 8, 8), 10, seed=0)
    party = AdvRegParty(lam, 10, torch.arange(32, 64), seed=0, device="cpu")
    f_ref = copy.deepcopy(f)
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    party.step(f, opt, x, y, xall, yall)
    # replay: h after its step is party.h; the classifier loss with that h
    opt_ref = torch.optim.SGD(f_ref.parameters(), lr=0.5)
    logits = f_ref(x)
    loss = F.cross_entropy(logits, y) + lam * F.logsigmoid(party.h(F.softmax(logits, 1), y)).mean()
    opt_ref.zero_grad()
    loss.backward()
    opt_ref.step()
    assert torch.allclose(flat_params(f), flat_params(f_ref), atol=1e-6)
    plain = copy.deepcopy(build_model("logreg", (1, 8, 8), 10, seed=0))
    o = torch.optim.SGD(plain.parameters(), lr=0.5)
    F.cross_entropy(plain(x), y).backward()
    o.step()
    assert torch.allclose(flat_params(f), flat_params(plain), atol=1e-6) == (lam == 0)


def test_inference_model_ascends_the_gain():
    x, y = _batch()
    xr, yr = _batch(seed=1)
    f = build_model("logreg", (1, 8, 8), 10, seed=0)
    party = AdvRegParty(1.0, 10, torch.arange(32, 64), seed=0, device="cpu", steps_h=20)
    before = float(party.gain(f, x, y, xr, yr).detach())
    frozen = torch.optim.SGD(f.parameters(), lr=0.0)     # f fixed: only h moves
    party.step(f, frozen, x, y, torch.cat([x, xr]), torch.cat([y, yr]))
    assert float(party.gain(f, x, y, xr, yr).detach()) > before


def test_fedavg_clients_train_with_adversarial_regularization():
    plain = Simulation(RunConfig(**SIM))
    reg = Simulation(RunConfig(**SIM, adv_reg=3.0))
    ids = torch.arange(4)
    d0, d1 = plain.client_updates(ids), reg.client_updates(ids)
    assert d1.shape == d0.shape and torch.isfinite(d1).all()
    assert not torch.allclose(d0, d1)
    assert sorted(reg._advreg_parties) == [0, 1, 2, 3]
    # each client's reference set is its held-out data, never its training data
    for k, party in reg._advreg_parties.items():
        assert torch.equal(party.reference, reg.client_holdout[k])
    reg.run()
    assert reg.history[-1].test_accuracy > 0.3


@pytest.mark.parametrize("extra, match", [
    (dict(client_holdout=0.0), "client-holdout"),
    (dict(dp="record", noise_multiplier=1.0), "dp record"),
])
def test_unsupported_combinations_are_refused(extra, match):
    sim = Simulation(RunConfig(**{**SIM, **extra}, adv_reg=1.0))
    with pytest.raises(ValueError, match=match):
        sim.client_updates(torch.arange(4))


def test_negative_lambda_is_refused():
    with pytest.raises(ValueError, match="adv_reg"):
        RunConfig(**SIM, adv_reg=-1.0).validate()
