"""Every poisoning attack's defining property, and what each one may know."""
import math
from statistics import NormalDist

import pytest
import torch

from protocols.rules import make_rule
from protocols.rules.krum import krum_select
from protocols.attacks import ATTACKS, AttackView, make_attack
from secagg import ClientUpdates

NEW_ATTACKS = ["gaussian-mult", "paf", "lie", "ofom", "fang-krum", "fang-trim", "ipm", "backdoor",
               "backdoor-scale", "fltrust-adaptive", "tailored"]


def make_view(c=4, h=16, d=50, seed=0, rule=None, honest=True, spread=0.3, mean=0.5):
    g = torch.Generator().manual_seed(seed)
    center = mean * torch.randn(d, generator=g)
    own = center + spread * torch.randn(c, d, generator=g)
    hon = center + spread * torch.randn(h, d, generator=g)
    return AttackView(own=own, own_weights=torch.full((c,), 10.0), global_params=torch.randn(d, generator=g),
                      generator=torch.Generator().manual_seed(seed + 1),
                      honest=hon if honest else None, honest_weights=torch.full((h,), 10.0) if honest else None,
                      rule=rule, n_selected=c + h)


def test_every_new_attack_is_registered_with_a_citation():
    for name in NEW_ATTACKS:
        cls = ATTACKS[name]
        assert cls.citation and cls.knowledge in ("own", "honest-updates") and cls.kind in ("data", "update", "both")


@pytest.mark.parametrize("name", [n for n in NEW_ATTACKS if ATTACKS[n].kind != "data"])
def test_attacks_use_only_what_their_knowledge_allows(name):
    attack = make_attack(name)
    view = make_view(honest=False)
    if attack.knowledge == "own":
        out = attack.poison_updates(view)                 # never touches view.honest
        assert out.shape == view.own.shape and torch.isfinite(out).all()
    else:
        with pytest.raises(ValueError, match="needs the honest clients' updates"):
            attack.poison_updates(view)
        out = attack.poison_updates(make_view())
        assert out.shape == view.own.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------- Cronus attacks

def test_lie_shifts_each_coordinate_by_z_sigma():
    view = make_view(c=4, h=16)
    attack = make_attack("lie")
    out = attack.poison_updates(view)
    # n = 20, f = 4: s = floor(20/2 + 1) - 4 = 7, z = Phi^-1((16 - 7) / 16)
    z = NormalDist().inv_cdf(9 / 16)
    assert math.isclose(attack.last_z, z)
    mu, sigma = view.own.mean(0), view.own.std(0)
    assert torch.allclose(out - mu, (z * sigma).expand_as(out), atol=1e-6)
    assert torch.equal(out[0], out[-1])


def test_lie_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="at least 2 of them"):
        make_attack("lie").poison_updates(make_view(c=1))
    with pytest.raises(ValueError, match="no finite z"):
        make_attack("lie").poison_updates(make_view(c=4, h=2))          # a corrupted majority


def test_paf_is_the_benign_mean_plus_theta_prime():
    view = make_view()
    out = make_attack("paf", magnitude=7.0).poison_updates(view)
    assert torch.allclose(out, (view.honest.mean(0) + 7.0).expand_as(out))


def test_ofom_follows_eq_9_and_captures_mwu_avg():
    view = make_view(c=2, h=10, d=30)
    out = make_attack("ofom", magnitude=20.0).poison_updates(view)
    theta1 = view.honest.mean(0) + 20.0
    theta2 = (view.honest.sum(0) + theta1) / 11
    assert torch.allclose(out[0], theta1) and torch.allclose(out[1], theta2)
    handle = ClientUpdates(torch.cat([out, view.honest]), secure=False, rule="mwu-avg")
    make_rule("mwu-avg")(handle)
    eff = handle.transcript.calls[-1].ground_truth["effective_weights"]
    assert eff[1] > 0.9                                        # theta_2's party takes almost all the weight
    with pytest.raises(ValueError, match="at least 2 corrupted"):
        make_attack("ofom").poison_updates(make_view(c=1))


# --------------------------------------------------------------------------- Fang et al.

def test_fang_krum_attack_makes_krum_select_a_malicious_update():
    rule = make_rule("krum", f=4)
    view = make_view(c=4, h=16, d=200, rule=rule, mean=0.05)     # noise dominates the mean, as for SGD updates
    clean = torch.cat([view.own, view.honest])
    assert int(krum_select(clean, 4)[0]) >= 0                 # Krum on clean updates picks someone
    attack = make_attack("fang-krum")
    out = attack.poison_updates(view)
    assert attack.last_selected
    s = torch.sign(clean.mean(0))
    assert torch.allclose(out, (-attack.last_lambda * s).expand_as(out))
    attacked = torch.cat([out, view.honest])
    assert int(krum_select(attacked, 4)[0]) < 4               # Krum selects a corrupted update
    agg = rule(ClientUpdates(attacked, secure=False, rule="krum"))
    assert float(agg @ s) < 0                                 # which points against the benign direction


def test_fang_trim_values_lie_beyond_the_benign_extremes_against_s():
    view = make_view(c=5, h=15, d=300)
    out = make_attack("fang-trim").poison_updates(view)
    s = torch.sign(torch.cat([view.own, view.honest]).mean(0))
    wmax, wmin = view.honest.amax(0), view.honest.amin(0)
    up, down = s < 0, s > 0
    assert torch.all(out[:, up] >= wmax[up] - 1e-6) and torch.all(out[:, down] <= wmin[down] + 1e-6)
    hi = torch.where(wmax > 0, 2 * wmax, wmax / 2)
    lo = torch.where(wmin > 0, wmin / 2, 2 * wmin)
    assert torch.all(out[:, up] <= hi[up] + 1e-6) and torch.all(out[:, down] >= lo[down] - 1e-6)
    trimmed = make_rule("trimmedmean", beta=0.25)(ClientUpdates(torch.cat([out, view.honest]), rule="t"))
    clean = make_rule("trimmedmean", beta=0.25)(ClientUpdates(torch.cat([view.own, view.honest]), rule="t"))
    assert float((trimmed - clean) @ s) < 0


# --------------------------------------------------------------------------- IPM and tailored

def test_ipm_inner_product_with_the_true_mean_is_negative():
    view = make_view()
    true_mean = view.honest.mean(0)
    out = make_attack("ipm", epsilon=0.1).poison_updates(view)
    assert torch.allclose(out, (-0.1 * true_mean).expand_as(out))
    assert torch.all(out @ true_mean < 0)
    big = make_attack("ipm", epsilon=10.0).poison_updates(view)
    mean_after = torch.cat([big, view.honest]).mean(0)
    assert float(mean_after @ true_mean) < 0                  # epsilon large enough flips the mean itself


def test_tailored_attack_fixed_and_optimised_epsilon():
    view = make_view(c=4, h=16, d=100, rule=make_rule("krum", f=4), mean=0.05)
    gbar = torch.cat([view.own, view.honest]).mean(0)
    fixed = make_attack("tailored", epsilon=10.0).poison_updates(view)
    assert torch.allclose(fixed, (-10.0 * gbar).expand_as(fixed))
    attack = make_attack("tailored")
    out = attack.poison_updates(view)
    assert attack.last_epsilon in attack.grid
    clean_agg = view.rule(ClientUpdates(torch.cat([view.own, view.honest]), rule="krum"))
    attacked_agg = view.rule(ClientUpdates(torch.cat([out, view.honest]), rule="krum"))
    assert float(attacked_agg @ clean_agg) < 0                # g' = -lambda g with lambda > 0
    mix = make_attack("tailored", pool_samples=3).poison_updates(make_view(rule=make_rule("mixtailor")))
    assert torch.isfinite(mix).all()


# --------------------------------------------------------------------------- backdoor

def test_backdoor_trigger_on_images_and_flat_features():
    attack = make_attack("backdoor", target=3, patch=2, value=1.0)
    x = torch.zeros(5, 1, 8, 8)
    t = attack.triggered(x)
    assert torch.all(t[..., -2:, -2:] == 1) and t.sum() == 5 * 4 and x.sum() == 0
    flat = make_attack("backdoor", stride=20, value=9.0).triggered(torch.zeros(2, 45))
    assert torch.equal(flat[0].nonzero().flatten(), torch.tensor([0, 20, 40])) and flat.max() == 9


def test_backdoor_poisons_a_fraction_of_each_batch():
    attack = make_attack("backdoor", target=3, fraction=0.25)
    x, y = torch.rand(6, 8, 1, 8, 8) * 0.5, torch.arange(48).reshape(6, 8) % 10      # vmap layout [n, B, ...]
    px, py = attack.poison_batch(x, y, 10)
    assert torch.all(py[:, :2] == 3) and torch.equal(py[:, 2:], y[:, 2:])
    assert torch.all(px[:, :2, :, -2:, -2:] == 1) and torch.equal(px[:, 2:], x[:, 2:])
    lx, ly = attack.poison_batch(x[0], y[0], 10)                                     # loop layout [B, ...]
    assert torch.equal(lx, px[0]) and torch.equal(ly, py[0])
    with pytest.raises(ValueError, match="target=12"):
        make_attack("backdoor", target=12).poison_batch(x, y, 10)


def test_model_replacement_scales_by_n():
    view = make_view(c=2, h=8)
    attack = make_attack("backdoor-scale")
    assert torch.allclose(attack.poison_updates(view), view.own * 10) and attack.last_scale == 10
    assert torch.allclose(make_attack("backdoor-scale", scale=3.0).poison_updates(view), view.own * 3)
    assert ATTACKS["backdoor-scale"].kind == "both" and ATTACKS["backdoor"].kind == "data"


@pytest.mark.slow
def test_backdoor_success_is_measured_in_simulation():
    from protocols.simulation import RunConfig, Simulation
    sim = Simulation(RunConfig(rounds=1, clients=6, model="logreg", attack="backdoor-scale", corrupt=0.34,
                               secagg="off", local_epochs=1))
    rec = sim.run()[-1]
    assert rec.attack_success is not None and 0 <= rec.attack_success <= 1


# --------------------------------------------------------------------------- noise and FLTrust-adaptive

@pytest.mark.parametrize("space", ["update", "params"])
def test_gaussian_mult_multiplies_by_n_1_sigma2(space):
    view = make_view(c=2, d=40_000)
    out = make_attack("gaussian-mult", std=2.0, space=space).poison_updates(view)
    base = view.own if space == "update" else view.own + view.global_params
    eps = (out if space == "update" else out + view.global_params) / base
    assert abs(float(eps.mean()) - 1) < 0.05 and abs(float(eps.std()) - 2) < 0.05


def test_fltrust_adaptive_attack_pushes_fltrust_against_its_direction():
    view = make_view(c=4, h=16, d=60, mean=1.0)
    g0 = torch.cat([view.own, view.honest]).mean(0) * 1.3
    view.server_update = g0
    attack = make_attack("fltrust-adaptive", V=2, Q=5)
    out = attack.poison_updates(view)
    assert torch.allclose(out.norm(dim=1), g0.norm().expand(4), rtol=1e-5)
    rule = make_rule("fltrust")
    clean = rule(ClientUpdates(torch.cat([view.own, view.honest]), rule="f", context={"server_update": g0}))
    attacked = rule(ClientUpdates(torch.cat([out, view.honest]), rule="f", context={"server_update": g0}))
    s = torch.sign(clean)
    assert float(s @ attacked) < float(s @ clean) and attack.last_objective > 0


@pytest.mark.slow
def test_fang_krum_attack_ruins_krum_while_fltrust_holds_on_digits():
    """FLTrust Table III's claim on digits (20 clients, rho = 0.2, full knowledge)."""
    from protocols.simulation import RunConfig, Simulation
    base = dict(rounds=15, clients=20, model="mlp", secagg="off", attack="fang-krum", corrupt=0.2)
    krum = Simulation(RunConfig(rule="krum", rule_args={"f": 4}, **base)).run()[-1]
    fltrust = Simulation(RunConfig(rule="fltrust", **base)).run()[-1]
    assert krum.test_accuracy < 0.3 and fltrust.test_accuracy > 0.8
