"""membership: metrics, features, baselines, white-box (Nasr et al. 2019), gradient ascent."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import membership as M

# -- fixtures ------------------------------------------------------------------------


def _mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def overfit():
    """An MLP trained to 100% train accuracy on 100 digits; 100 held-out non-members."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    mi, ni = perm[:100], perm[100:200]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x[mi]), y[mi]).backward()
        opt.step()
    with torch.no_grad():
        assert (model(x[mi]).argmax(1) == y[mi]).all()
    return model, M.Records(x[mi], y[mi]), M.Records(x[ni], y[ni])


# -- metrics: hand-checked ---------------------------------------------------------------

SCORES6 = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
LABELS6 = [1, 1, 0, 1, 0, 0]


def test_metrics_tiny_example_hand_checked():
    # members 0.9, 0.8, 0.6 vs non-members 0.7, 0.5, 0.4: 3 + 3 + 2 = 8 of 9 pairs ordered
    assert M.auc(SCORES6, LABELS6) == pytest.approx(8 / 9)
    # at FPR 0 the top two members are found: TPR 2/3
    assert M.tpr_at_fpr(SCORES6, LABELS6, 0.01) == pytest.approx(2 / 3)
    assert M.tpr_at_fpr(SCORES6, LABELS6, 0.001) == pytest.approx(2 / 3)
    assert M.tpr_at_fpr(SCORES6, LABELS6, 1 / 3) == pytest.approx(1.0)
    # best: threshold 0.8 (TPR 2/3, FPR 0) or 0.6 (TPR 1, FPR 1/3): (1 + TPR - FPR)/2 = 5/6
    acc, thr = M.best_threshold(SCORES6, LABELS6)
    assert acc == pytest.approx(5 / 6) and thr == pytest.approx(0.8)
    assert M.balanced_accuracy(SCORES6, LABELS6) == pytest.approx(5 / 6)
    assert M.balanced_accuracy(SCORES6, LABELS6, threshold=0.45) == pytest.approx((1 + 1 / 3) / 2)
    assert M.balanced_accuracy(SCORES6, LABELS6, threshold=0.65) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert M.balanced_accuracy(SCORES6, LABELS6, threshold=10.0) == pytest.approx(0.5)


def test_metrics_four_scores_and_roc_curve():
    s, y = [0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]
    assert M.auc(s, y) == pytest.approx(0.75)
    fpr, tpr, thr = M.roc(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert M.tpr_at_fpr(s, y, 0.01) == 0.5
    assert M.balanced_accuracy(s, y) == pytest.approx(0.75)
    # torch tensors are accepted as well
    assert M.auc(torch.tensor(s), torch.tensor(y)) == pytest.approx(0.75)


def test_evaluate_scores_result_and_to_dict():
    r = M.evaluate_scores(SCORES6, LABELS6, attack="loss", view="aggregate", n_bootstrap=200, seed=1)
    assert r.auc == pytest.approx(8 / 9) and r.accuracy == pytest.approx(5 / 6)
    # 3 non-members: TPR at 1% / 0.1% FPR is not estimable (null plus a reason, not a number)
    assert r.tpr_at_1pct_fpr is None and r.tpr_at_0_1pct_fpr is None
    assert (r.n_members, r.n_nonmembers) == (3, 3) and r.threshold_source == "best_on_eval"
    assert r.auc_ci[0] <= r.auc <= r.auc_ci[1] <= 1.0
    d = r.to_dict()
    assert "roc" not in d and d["tpr_at_0.1pct_fpr"] is None and d["tpr_at_1pct_fpr_ci"] is None
    assert "only 3 non-member scores" in d["not_estimable"]["tpr_at_0.1pct_fpr"]
    assert "at least 1,000" in d["not_estimable"]["tpr_at_0.1pct_fpr"]
    assert {"view", "attack", "auc", "accuracy", "tpr_at_1pct_fpr", "n_members", "n_nonmembers"} <= set(d)
    json.dumps(d)
    # the raw tpr_at_fpr still answers for any input
    assert M.tpr_at_fpr(SCORES6, LABELS6, 0.01) == pytest.approx(2 / 3)
    # a threshold chosen beforehand is used as given
    r2 = M.evaluate_scores(SCORES6, LABELS6, threshold=0.45, n_bootstrap=10)
    assert r2.accuracy == pytest.approx(2 / 3) and r2.threshold_source == "attack"


def test_tpr_at_low_fpr_is_reported_from_1000_nonmembers_with_a_ci():
    rng = np.random.default_rng(0)
    for n_non, has_01 in ((999, False), (1000, True)):
        s = np.r_[rng.normal(1.5, 1, 800), rng.normal(0, 1, n_non)]
        y = np.r_[np.ones(800), np.zeros(n_non)].astype(int)
        r = M.evaluate_scores(s, y, n_bootstrap=300, seed=2)
        assert r.tpr_at_1pct_fpr == pytest.approx(M.tpr_at_fpr(s, y, 0.01))
        lo, hi = r.tpr_ci["1pct"]
        assert lo <= r.tpr_at_1pct_fpr <= hi
        assert (r.tpr_at_0_1pct_fpr is not None) == has_01
        if has_01:
            assert r.tpr_at_0_1pct_fpr == pytest.approx(M.tpr_at_fpr(s, y, 0.001))
            assert r.tpr_ci["0.1pct"][0] <= r.tpr_at_0_1pct_fpr <= r.tpr_ci["0.1pct"][1]
    assert M.min_nonmembers_for(0.001) == 1000 and M.min_nonmembers_for(0.01) == 100
    assert M.tpr_not_estimable(1000, 0.001) is None


def test_fast_tpr_and_auc_equal_sklearn_with_ties():
    """The vectorized bootstrap statistics equal sklearn's on every row, ties included."""
    from sklearn.metrics import roc_auc_score
    from membership.metrics import _auc_rows, _tpr_from_sorted
    rng = np.random.default_rng(3)
    for scores in (rng.integers(0, 6, (20, 50)).astype(float), rng.normal(size=(5, 50)) * 1e6 + 1e9,
                   np.zeros((2, 50)), rng.normal(size=(3, 50)).astype(np.float32)):
        y = np.r_[np.ones(20), np.zeros(30)].astype(int)
        np.testing.assert_allclose(_auc_rows(scores, 20), [roc_auc_score(y, row) for row in scores], atol=1e-12)
        for f in (0.0, 0.04, 0.1, 0.5, 1.0):
            fast = _tpr_from_sorted(scores[:, :20], -np.sort(-scores[:, 20:], axis=1), f)
            np.testing.assert_allclose(fast, [M.tpr_at_fpr(row, y, f) for row in scores])


def test_bootstrap_ci_is_seeded():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=60) + np.repeat([0.5, 0.0], 30), np.repeat([1, 0], 30)
    a = M.auc_confidence_interval(s, y, n_bootstrap=300, seed=3)
    assert a == M.auc_confidence_interval(s, y, n_bootstrap=300, seed=3)
    assert a != M.auc_confidence_interval(s, y, n_bootstrap=300, seed=4)
    assert a[0] < M.auc(s, y) < a[1]


# -- control and overfit model ------------------------------------------------------------


def test_shuffled_membership_control_auc_is_chance(overfit):
    """No real membership: members and non-members drawn at random from one pool."""
    model, mem, non = overfit
    pool = M.Records(torch.cat([mem.x, non.x]), torch.cat([mem.y, non.y]))
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(7))
    fake_m, fake_n = pool.take(perm[:100]), pool.take(perm[100:])
    for attack in ("loss", "gradient_norm"):
        r = M.run_attack(attack, model, fake_m, fake_n, known_fraction=0.0, n_bootstrap=500, seed=0)
        assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1], (attack, r.auc, r.auc_ci)
        assert abs(r.auc - 0.5) < 0.1
    # while the true labelling is clearly separable on the same records
    r = M.run_attack("loss", model, mem, non, known_fraction=0.0, n_bootstrap=500, seed=0)
    assert r.auc_ci[0] > 0.5


@pytest.mark.parametrize("attack", ["loss", "confidence", "gradient_norm", "whitebox"])
def test_overfit_model_leaks(overfit, attack):
    model, mem, non = overfit
    r = M.run_attack(attack, model, mem, non, known_fraction=0.5, seed=0, n_bootstrap=300)
    assert (r.n_members, r.n_nonmembers) == (50, 50)
    assert r.auc > 0.6, (attack, r.auc)
    assert r.accuracy > 0.55, (attack, r.accuracy)
    assert r.threshold_source in ("known_records", "attack")


def test_flat_params_view_equals_module(overfit):
    model, mem, non = overfit
    flat = M.flatten_params(model)
    other = _mlp()  # different weights; the flat vector must win
    f1 = M.record_features(model, mem)
    f2 = M.record_features((other, flat), mem)
    for k in ("output", "loss", "label", "grad"):
        torch.testing.assert_close(getattr(f1, k), getattr(f2, k))
    s1 = M.LossThreshold().score(model, non)
    s2 = M.LossThreshold().score(M.ModelView(other, flat), non)
    torch.testing.assert_close(s1, s2)


def test_per_sample_last_layer_gradient_matches_autograd(overfit):
    model, mem, _ = overfit
    recs = mem.take(torch.arange(3))
    g = M.last_layer_gradients(model, recs)
    assert g.shape == (3, 10, 65)  # [N, out, in + bias]
    last = model[2]
    for i in range(3):
        model.zero_grad()
        F.cross_entropy(model(recs.x[i:i + 1]), recs.y[i:i + 1]).backward()
        torch.testing.assert_close(g[i, :, :64], last.weight.grad)
        torch.testing.assert_close(g[i, :, 64], last.bias.grad)
    model.zero_grad()
    torch.testing.assert_close(M.per_sample_grad_norm(model, recs), g.flatten(1).norm(dim=1))
    full = M.per_sample_grad_norm(model, recs, layers="all")
    assert torch.all(full >= g.flatten(1).norm(dim=1) - 1e-6)


def test_features_shapes_on_several_views_and_cnn():
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))

    model = CNN()
    assert M.find_last_layer(model) == ("fc", ["fc.weight", "fc.bias"])
    recs = M.Records(torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    flat = M.flatten_params(model)
    f = M.record_features([(model, flat), (model, flat * 0.5)], recs)
    assert f.output.shape == (5, 2, 3) and f.loss.shape == (5, 2) and f.label.shape == (5, 3)
    assert f.grad.shape == (5, 2, 3, 65) and f.n_views == 2
    torch.testing.assert_close(f.output.sum(-1), torch.ones(5, 2))


def test_whitebox_is_seeded_and_checks_view_count(overfit):
    model, mem, non = overfit
    km, kn, em, en = M.split_targets(100, 100, 0.3, seed=2).take(mem, non)
    a = M.WhiteboxAttack(epochs=5, seed=3).fit(model, km, kn)
    b = M.WhiteboxAttack(epochs=5, seed=3).fit(model, km, kn)
    torch.testing.assert_close(a.score(model, em), b.score(model, em))
    assert len(a.history) == 5
    two = M.WhiteboxAttack(epochs=2, seed=0).fit([model, model], km, kn)
    assert two.score([model, model], en).shape == (len(en),)
    with pytest.raises(ValueError, match="fitted on 2 view"):
        two.score(model, en)
    with pytest.raises(RuntimeError, match="fit"):
        M.WhiteboxAttack().score(model, en)


def test_threshold_attacks_over_views():
    model = _mlp()
    recs = M.Records(torch.rand(6, 64), torch.arange(6))
    f0, f1 = M.flatten_params(model), M.flatten_params(model) * 0.9
    last = M.LossThreshold().score([(model, f0), (model, f1)], recs)
    torch.testing.assert_close(last, M.LossThreshold().score((model, f1), recs))
    mean = M.LossThreshold(reduce="mean").score([(model, f0), (model, f1)], recs)
    torch.testing.assert_close(mean, (M.LossThreshold().score((model, f0), recs) + last) / 2)
    conf = M.ConfidenceThreshold(kind="max").score(model, recs)
    assert torch.all(conf >= M.ConfidenceThreshold().score(model, recs))


def test_split_targets_disjoint_balanced_seeded():
    s = M.split_targets(30, 50, known_fraction=0.4, seed=1)
    assert len(s.train_members) == len(s.train_nonmembers) == 12
    assert len(s.eval_members) == len(s.eval_nonmembers) == 18
    assert not set(s.train_members.tolist()) & set(s.eval_members.tolist())
    assert not set(s.train_nonmembers.tolist()) & set(s.eval_nonmembers.tolist())
    assert max(s.train_nonmembers.tolist() + s.eval_nonmembers.tolist()) < 50
    s2 = M.split_targets(30, 50, known_fraction=0.4, seed=1)
    assert torch.equal(s.eval_nonmembers, s2.eval_nonmembers)
    u = M.split_targets(30, 50, known_fraction=0.5, balanced=False)
    assert (len(u.train_members), len(u.eval_nonmembers)) == (15, 25)


# -- active: gradient ascent -----------------------------------------------------------------


def test_gradient_ascent_matches_definition_and_leaves_module_alone():
    model = nn.Linear(8, 3)
    before = M.flatten_params(model).clone()
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    out = M.gradient_ascent(model, None, x, y, gamma=0.7)
    F.cross_entropy(model(x), y).backward()
    g = torch.cat([model.weight.grad.flatten(), model.bias.grad])
    torch.testing.assert_close(out, before + 0.7 * g)
    torch.testing.assert_close(M.flatten_params(model), before)
    two = M.gradient_ascent(model, before, x, y, gamma=0.7, steps=2)
    again = M.gradient_ascent(model, out, x, y, gamma=0.7)
    torch.testing.assert_close(two, again)


def test_active_attack_constructed_case():
    """Ascent raises every target's loss; the owner's training then drops members' loss far
    more than non-members' (nearly orthogonal high-dimensional records, a linear model)."""
    g = torch.Generator().manual_seed(0)
    d, c = 256, 4
    x = 3 * torch.randn(80, d, generator=g) / math.sqrt(d)
    y = torch.randint(0, c, (80,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Linear(d, c)
    theta = M.flatten_params(model)
    targets = M.Records(x[:40], y[:40])  # 0..19 members (in the owner's data), 20..39 non-members
    owner_x, owner_y = torch.cat([x[:20], x[40:]]), torch.cat([y[:20], y[40:]])

    ascended = M.gradient_ascent(model, theta, targets.x, targets.y, gamma=5.0)
    _, loss0 = M.outputs_and_losses((model, theta), targets)
    _, loss1 = M.outputs_and_losses((model, ascended), targets)
    assert torch.all(loss1 > loss0)

    owner = nn.Linear(d, c)
    torch.nn.utils.vector_to_parameters(ascended.clone(), owner.parameters())
    opt = torch.optim.SGD(owner.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(owner(owner_x), owner_y).backward()
        opt.step()
    after = M.flatten_params(owner)

    drop = M.active_scores(model, ascended, after, targets.x, targets.y)
    assert drop[:20].mean() > 3 * drop[20:].mean()
    labels = M.labels_for(20, 20)
    assert M.auc(drop, labels) > 0.9
    gdrop = M.active_scores(model, ascended, after, targets.x, targets.y, signal="grad_norm")
    assert M.auc(gdrop, labels) > 0.8
    # the registered two-view attacks compute the same scores
    views = [(model, ascended), (model, after)]
    torch.testing.assert_close(M.make_attack("loss_drop").score(views, targets), drop)
    torch.testing.assert_close(M.make_attack("gradient_norm_drop").score(views, targets), gdrop)
    r = M.run_attack("loss_drop", views, targets.take(torch.arange(20)), targets.take(torch.arange(20, 40)),
                     known_fraction=0.5, n_bootstrap=100)
    assert r.auc > 0.85


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(overfit):
    model, mem, non = overfit
    empty = M.Records(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="members is empty"):
        M.run_attack("loss", model, empty, non)
    with pytest.raises(ValueError, match="100 rows .* 99 labels"):
        M.LossThreshold().score(model, (mem.x, mem.y[:99]))
    with pytest.raises(ValueError, match="unknown membership attack 'nasr'.*whitebox"):
        M.make_attack("nasr")
    with pytest.raises(TypeError, match="no parameter.*'epoch'.*epochs"):
        M.make_attack("whitebox", epoch=3)
    with pytest.raises(ValueError, match="length 10 .* d=4810"):
        M.LossThreshold().score((model, torch.zeros(10)), mem)
    with pytest.raises(ValueError, match="label 12 is out of range"):
        M.LossThreshold().score(model, (mem.x[:2], torch.tensor([1, 12])))
    with pytest.raises(ValueError, match="integer class indices"):
        M.LossThreshold().score(model, (mem.x[:2], torch.tensor([1.0, 2.0])))
    with pytest.raises(ValueError, match="no views"):
        M.LossThreshold().score([], mem)
    with pytest.raises(ValueError, match="at least 2 views"):
        M.LossDrop().score(model, mem)
    with pytest.raises(ValueError, match="known_fraction=1"):
        M.split_targets(10, 10, known_fraction=1)
    with pytest.raises(ValueError, match="must be trained on known records"):
        M.run_attack("whitebox", model, mem, non, known_fraction=0.0)
    with pytest.raises(ValueError, match="gamma=-1"):
        M.gradient_ascent(model, None, mem.x, mem.y, gamma=-1)
    with pytest.raises(ValueError, match="reduce='max'"):
        M.LossThreshold(reduce="max")
    # metrics
    with pytest.raises(ValueError, match="no members"):
        M.auc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        M.auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        M.auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match=r"1 \(member\) or 0"):
        M.auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="empty"):
        M.auc([], [])


def test_registry_names_and_citations():
    assert set(M.ATTACKS) == {"loss", "confidence", "gradient_norm", "whitebox", "loss_drop", "gradient_norm_drop",
                              "lira", "rmia"}
    assert {n for n, c in M.ATTACKS.items() if c.requires_references} == {"lira", "rmia"}
    assert "Carlini" in M.LiRA.__doc__ and "Zarifzadeh" in M.RMIA.__doc__
    for name, cls in M.ATTACKS.items():
        assert cls.name == name and cls.__doc__
    import membership.attacks.whitebox as wb
    assert "Nasr" in wb.__doc__ and "Yeom" in M.LossThreshold.__doc__


def test_tensors_stay_on_device(overfit):
    # On the accelerator when there is one, else on the CPU: outputs follow the inputs' device.
    model, mem, non = overfit
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flat = M.flatten_params(model).to(dev)
    gpu_model = _mlp().to(dev)
    s = M.GradientNorm().score((gpu_model, flat), mem)
    assert s.device.type == dev.type
    up = M.gradient_ascent(gpu_model, flat, mem.x[:5].to(dev), mem.y[:5].to(dev), gamma=0.1)
    assert up.device.type == dev.type
    r = M.run_attack(M.WhiteboxAttack(epochs=3), (gpu_model, flat), mem, non, n_bootstrap=50)
    assert 0 <= r.auc <= 1


@pytest.mark.slow
def test_whitebox_paper_configuration_leaks(overfit):
    """Adam lr 1e-4 for 100 epochs (Cronus appendix D.1), more prior knowledge."""
    model, mem, non = overfit
    r = M.run_attack(M.WhiteboxAttack(epochs=100, seed=1), model, mem, non, known_fraction=0.7, seed=1,
                     n_bootstrap=1000)
    assert r.auc > 0.6


# -- pooled targets of several clients, each through its own views (membership.server_views) --


def test_pooled_attacks_score_each_record_on_its_own_clients_view():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    flat = M.flatten_params(model)
    v0, v1 = flat, flat + 0.3 * torch.randn_like(flat)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    group = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    pool = M.TargetPool(x, y, group, [[M.ModelView(model, v0)], [M.ModelView(model, v1)]])
    idx = torch.tensor([7, 2, 0, 9, 4])
    got = M.pooled_attack("loss", pool, {}, 0).score(pool.views[0], M.Records(idx, y[idx]))
    want = torch.stack([M.LossThreshold().score((model, v1 if group[i] else v0), (x[i:i + 1], y[i:i + 1]))[0]
                        for i in idx.tolist()])
    torch.testing.assert_close(got, want)
    wb = M.pooled_attack("whitebox", pool, {"epochs": 1}, 0)
    f = wb.features(pool.views[0], M.Records(idx, y[idx]))
    for j, i in enumerate(idx.tolist()):
        ref = M.record_features((model, v1 if group[i] else v0), (x[i:i + 1], y[i:i + 1]))
        torch.testing.assert_close(f.grad[j], ref.grad[0])
        torch.testing.assert_close(f.loss[j], ref.loss[0])
