import pytest
import torch

from protocols.attacks import ATTACKS, AttackView, corrupted_clients, make_attack
from protocols.simulation import RunConfig, Simulation


def _view(c=3, h=9, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    own, honest = torch.randn(c, d, generator=g), torch.randn(h, d, generator=g)
    return AttackView(own=own, own_weights=torch.rand(c, generator=g) + 0.5,
                      global_params=torch.randn(d, generator=g), generator=g,
                      honest=honest, honest_weights=torch.rand(h, generator=g) + 0.5)


def test_labelflip_untargeted_and_targeted():
    y = torch.arange(10)
    x = torch.zeros(10, 3)
    assert torch.equal(make_attack("labelflip").poison_batch(x, y, 10)[1], 9 - y)
    ty = make_attack("labelflip", source=1, target=7).poison_batch(x, y, 10)[1]
    assert ty[1] == 7 and torch.equal(ty[y != 1], y[y != 1])
    with pytest.raises(ValueError, match="source"):
        make_attack("labelflip", source=1, target=12).poison_batch(x, y, 10)


def test_negate_images():
    x = torch.rand(4, 1, 8, 8)
    px, _ = make_attack("negate").poison_batch(x, torch.zeros(4, dtype=torch.long), 10)
    assert torch.allclose(px, 1 - x)


def test_gaussian_noise_has_the_update_variance():
    v = _view(c=2, d=20_000)
    out = make_attack("gaussian").poison_updates(v)
    noise = out - v.own
    assert torch.allclose(noise.std(dim=1), v.own.std(dim=1), rtol=0.05)


@pytest.mark.parametrize("space", ["update", "params"])
def test_omniscient_negates_the_weighted_mean(space):
    v = _view()
    out = make_attack("omniscient", space=space).poison_updates(v)
    shift = v.global_params if space == "params" else 0
    a = torch.cat([v.honest_weights, v.own_weights])
    clean = torch.cat([v.honest, v.own]) + shift
    poisoned = torch.cat([v.honest, out]) + shift
    assert torch.allclose((a[:, None] * poisoned).sum(0), -(a[:, None] * clean).sum(0), atol=1e-4)


def test_corrupted_set_is_fixed_and_sized():
    a = corrupted_clients(20, 0.25, seed=3)
    assert len(a) == 5 and torch.equal(a, corrupted_clients(20, 0.25, seed=3))
    with pytest.raises(ValueError, match="rho=1.5"):
        corrupted_clients(20, 1.5, seed=0)


@pytest.mark.parametrize("n, rho, k", [(100, 0.29, 29), (10, 0.3, 3), (100, 0.57, 57), (3, 1 / 3, 1),
                                       (7, 0.999, 6), (20, 0.0, 0), (1000, 0.001, 1)])
def test_corrupted_count_is_floor_of_the_fraction_meant(n, rho, k):
    """int(0.29 * 100) is 28 and int(0.57 * 100) 56 in floating point: the count is floor(rho n)
    on the fraction rho stands for, as the trimmed mean counts its trim."""
    a = corrupted_clients(n, rho, seed=1)
    assert len(a) == k and len(set(a.tolist())) == k and all(0 <= i < n for i in a.tolist())


def test_attack_config_errors():
    with pytest.raises(ValueError, match="needs an attack"):
        RunConfig(corrupt=0.2).validate()
    with pytest.raises(ValueError, match="corrupts no client"):
        RunConfig(attack="gaussian").validate()
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("nope")
    assert {"labelflip", "negate", "gaussian", "omniscient"} <= set(ATTACKS)


def test_omniscient_breaks_fedavg_in_simulation():
    cfg = dict(rounds=4, clients=8, model="logreg", secagg="off", rule="fedavg")
    clean = Simulation(RunConfig(**cfg)).run()
    bad = Simulation(RunConfig(attack="omniscient", corrupt=0.25, **cfg)).run()
    assert bad[-1].test_loss > clean[-1].test_loss + 0.5
    assert all(r.corrupted == 2 for r in bad)


def test_data_poisoning_only_touches_corrupted_clients():
    sim = Simulation(RunConfig(rounds=1, clients=8, model="logreg", attack="labelflip", corrupt=0.25))
    ids = torch.arange(8)
    y = torch.zeros(8, 4, dtype=torch.long)
    _, py = sim.batch_transform(torch.zeros(8, 4, 1, 8, 8), y, ids)
    flipped = (py == 9).all(dim=1)
    assert torch.equal(flipped, torch.isin(ids, sim.corrupted))
