"""membership.reference: LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al. 2024) against plain
per-record reference computations, the leave-one-out game, and the pooled server-view attacks."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import membership as M
from membership.reference import ReferenceGame


def _plain_lira(target, ref, inside, online, fix, use_in=None, use_out=None):
    """Carlini et al. Algorithm 1, one record at a time, with scipy's normal distribution
    (``use_in`` / ``use_out``: the references each record uses, default all IN / all OUT)."""
    K, N = ref.shape
    use_in = inside if use_in is None else use_in
    use_out = ~inside if use_out is None else use_out
    res_in = [ref[use_in[:, i], i] - ref[use_in[:, i], i].mean() for i in range(N)]
    res_out = [ref[use_out[:, i], i] - ref[use_out[:, i], i].mean() for i in range(N)]
    g_in = math.sqrt(sum((r ** 2).sum() for r in res_in) / sum(len(r) for r in res_in))
    g_out = math.sqrt(sum((r ** 2).sum() for r in res_out) / sum(len(r) for r in res_out))
    out = []
    for i in range(N):
        xin, xout = ref[use_in[:, i], i], ref[use_out[:, i], i]
        sd_in = g_in if fix or len(xin) < 2 else xin.std()
        sd_out = g_out if fix or len(xout) < 2 else xout.std()
        if online:
            out.append(stats.norm.logpdf(target[i], xin.mean(), sd_in) - stats.norm.logpdf(target[i], xout.mean(), sd_out))
        else:
            out.append(stats.norm.logcdf(target[i], xout.mean(), sd_out))
    return np.array(out)


def _plain_rmia(tx, rx, tz, rz, ix, iz, gamma, a):
    def pr(ref, ins, j):
        if a is None:
            return ref[:, j].mean()
        outs = ref[~ins[:, j], j]
        return (1 + a) / 2 * outs.mean() + (1 - a) / 2
    scores = []
    for i in range(len(tx)):
        lr_x = tx[i] / pr(rx, ix, i)
        count = sum(1 for z in range(len(tz)) if lr_x / (tz[z] / pr(rz, iz, z)) > gamma)
        scores.append(count / len(tz))
    return np.array(scores)


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    K, N = 6, 9
    inside = np.zeros((K, N), dtype=bool)
    for i in range(N):
        inside[rng.permutation(K)[:3], i] = True
    ref = rng.normal(size=(K, N)) + 2.0 * inside
    target = rng.normal(size=N) + 1.0
    return target, ref, inside


@pytest.mark.parametrize("online,fix", [(True, False), (True, True), (False, False), (False, True)])
def test_lira_equals_a_plain_per_record_computation(tiny, online, fix):
    target, ref, inside = tiny
    got = M.lira_scores(target, ref, inside, online=online, fix_variance=fix)
    np.testing.assert_allclose(got.numpy(), _plain_lira(target, ref, inside, online, fix), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma,a", [(1.0, None), (2.0, None), (1.0, 0.3), (1.5, 0.0)])
def test_rmia_equals_a_plain_per_record_computation(gamma, a):
    rng = np.random.default_rng(1)
    K, N, Z = 4, 7, 11
    ix = rng.random((K, N)) < 0.5
    ix[0], ix[1] = False, True          # offline needs an OUT model for every record
    iz = np.zeros((K, Z), dtype=bool)
    tx, rx = rng.random(N), rng.random((K, N))
    tz, rz = rng.random(Z), rng.random((K, Z))
    got = M.rmia_scores(tx, rx, tz, rz, inside_x=ix, inside_z=iz, gamma=gamma, offline_a=a)
    np.testing.assert_allclose(got.numpy(), _plain_rmia(tx, rx, tz, rz, ix, iz, gamma, a))


def test_signals_logit_confidence_is_exact_and_stable():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(8, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    phi = M.logit_confidence(model, (x, y))
    p = torch.softmax(model(x).double(), 1).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(phi, torch.log(p) - torch.log1p(-p))
    torch.testing.assert_close(M.true_label_probability(model, (x, y)), p)
    # a confident model: p rounds to 1 in float64, phi stays finite (the logits' difference)
    big = nn.Linear(5, 3)
    with torch.no_grad():
        big.weight.zero_()
        big.bias.copy_(torch.tensor([60.0, 0.0, -60.0]))
    phi = M.logit_confidence(big, (x[:1], torch.tensor([0])))
    assert torch.isfinite(phi).all() and float(phi) == pytest.approx(60.0 - math.log(1 + math.exp(-60)), rel=1e-9)


def _null_game(R=9, N=3000, seed=0):
    """Signals with run offsets and per-record levels but no membership effect; membership as in
    the audit (run 0: the first half; runs 1..R-1: each record IN for a random half)."""
    from protocols.experiments.audit.reference import reference_membership
    g = torch.Generator().manual_seed(seed)
    inside = torch.cat([(torch.arange(N) < N // 2).view(1, -1), reference_membership(R - 1, N, seed)])
    phi = (torch.randn(R, 1, generator=g) + 2 * torch.randn(1, N, generator=g)
           + 0.5 * torch.randn(R, N, generator=g)).double().unsqueeze(1)
    return ReferenceGame(phi, torch.sigmoid(phi), torch.zeros(N, dtype=torch.long), inside)


def test_game_leave_one_out_equals_a_plain_computation_on_balanced_references():
    rng = np.random.default_rng(2)
    R, G, N = 5, 2, 12
    phi = torch.tensor(rng.normal(size=(R, G, N)))
    prob = torch.tensor(rng.random((R, G, N)))
    group = torch.tensor(rng.integers(0, G, N))
    inside = torch.zeros(R, N, dtype=torch.bool)
    for i in range(N):
        inside[torch.tensor(rng.permutation(R)[:2]), i] = True
    game = ReferenceGame(phi, prob, group, inside)
    own = game.own(phi)
    assert torch.equal(own[:, 3], phi[:, group[3], 3])
    for fix in (False, True):
        scores = game.lira(online=True, fix_variance=fix)
        for r in range(R):
            keep = [k for k in range(R) if k != r]
            b_in, b_out = game.balanced(r)
            assert torch.equal(b_in.sum(0), b_out.sum(0))                 # as many IN as OUT per record
            assert not (b_in & ~inside[keep]).any() and not (b_out & inside[keep]).any()
            ref = _plain_lira(own[r].numpy(), own[keep].numpy(), inside[keep].numpy(), True, fix,
                              b_in.numpy(), b_out.numpy())
            np.testing.assert_allclose(scores[r].numpy(), ref, rtol=1e-9, atol=1e-9)
    # offline LiRA uses every OUT run: exactly lira_scores on the other runs
    off = game.lira(online=False, fix_variance=False)
    keep = [k for k in range(R) if k != 1]
    torch.testing.assert_close(off[1], M.lira_scores(own[1], own[keep], inside[keep], online=False,
                                                     fix_variance=False))
    # RMIA online: Pr(x) and Pr(z) over the balanced set, then the pairwise count
    pop = [torch.nonzero(~inside[r]).flatten()[:3] for r in range(R)]
    rs = game.rmia(pop, gamma=1.0)
    r = 2
    keep = [k for k in range(R) if k != r]
    b_in, b_out = game.balanced(r)
    both = (b_in | b_out).numpy()
    for g in range(G):
        den = (prob[keep][:, g].numpy() * both).sum(0) / both.sum(0)
        lr = prob[r, g].numpy() / den
        for i in torch.nonzero(group == g).flatten().tolist():
            want = np.mean([lr[i] / lr[z] > 1.0 for z in pop[r].tolist()])
            assert float(rs[r, i]) == pytest.approx(want)


def test_the_game_scores_chance_without_leakage():
    """No membership effect: every attack of the leave-one-out game must score AUC 0.5. Without the
    balanced references online LiRA is biased against members (the reason for balancing)."""
    from sklearn.metrics import roc_auc_score
    game = _null_game()
    y = game.inside.reshape(-1).numpy()
    for online in (True, False):
        assert abs(roc_auc_score(y, game.lira(online=online).reshape(-1).numpy()) - 0.5) < 0.015
    pop = [torch.nonzero(~game.inside[r]).flatten()[:400] for r in range(game.n_runs)]
    for a in (None, 0.3):
        assert abs(roc_auc_score(y, game.rmia(pop, offline_a=a).reshape(-1).numpy()) - 0.5) < 0.015
    x, R = game.own(game.phi), game.n_runs
    naive = torch.stack([M.lira_scores(x[r], x[torch.arange(R) != r], game.inside[torch.arange(R) != r])
                         for r in range(R)])
    assert roc_auc_score(y, naive.reshape(-1).numpy()) < 0.485


def test_reference_attacks_refuse_bad_input():
    with pytest.raises(ValueError, match="no IN reference model"):
        M.lira_scores(np.zeros(2), np.zeros((2, 2)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="no OUT reference model"):
        M.lira_scores(np.zeros(2), np.zeros((2, 2)), np.ones((2, 2), dtype=bool), online=False)
    with pytest.raises(ValueError, match="must agree"):
        M.lira_scores(np.zeros(3), np.zeros((2, 2)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="gamma=0"):
        M.RMIA(gamma=0)
    with pytest.raises(ValueError, match="offline_a=2"):
        M.RMIA(offline_a=2)
    with pytest.raises(ValueError, match="population records z"):
        M.rmia_scores(np.ones(2), np.ones((2, 2)), np.ones(0), np.ones((2, 0)))
    with pytest.raises(RuntimeError, match="needs reference models"):
        M.LiRA().score(nn.Linear(2, 2), (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)))


def test_pooled_reference_attack_on_a_server_view_separates_members():
    """A planted signal: records IN a run have a lower loss on that run's model. LiRA and RMIA
    read it through attack_server_view's leave-one-out game, the loss attack too."""
    torch.manual_seed(0)
    d, C, N, K = 6, 3, 80, 6
    x, y = torch.randn(N, d), torch.randint(0, C, (N,))
    model = nn.Linear(d, C)
    inside = M.TargetSet(x, y, torch.zeros(N, dtype=torch.long), 40, 40, 1).labels()  # row 0 only
    ref_inside = torch.zeros(K, N, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    for i in range(N):
        ref_inside[torch.randperm(K, generator=g)[:K // 2], i] = True
    allin = torch.cat([inside, ref_inside])

    def fitted(mask):     # least squares towards the IN records' one-hot labels: memorises them
        w = torch.zeros(C, d + 1)
        xi = torch.cat([x[mask], torch.ones(int(mask.sum()), 1)], 1)
        w = torch.linalg.lstsq(xi, 4 * torch.nn.functional.one_hot(y[mask], C).float()).solution.T
        return torch.cat([w[:, :d].reshape(-1), w[:, d]])

    runs = [fitted(allin[r]) for r in range(K + 1)]
    view = M.ServerView("aggregate", {0: (runs[0],)}, True, runs=[{0: (p,)} for p in runs[1:]])
    targets = M.TargetSet(x, y, torch.zeros(N, dtype=torch.long), 40, 40, 1, inside=ref_inside)
    game = M.reference_game(model, view, targets)
    for attack in ("lira", "rmia", "loss"):
        res = M.attack_server_view(model, view, targets, attack, known_fraction=0.5, n_bootstrap=50, game=game)
        assert res.extra["target_runs"] == K + 1
        assert res.n_members + res.n_nonmembers == (K + 1) * N // 2   # the pooled evaluation half
        assert res.auc_ci[0] > 0.6, (attack, res.auc, res.auc_ci)
        assert "target_run" in res.extra
    with pytest.raises(ValueError, match="needs reference models"):
        M.attack_server_view(model, M.ServerView("aggregate", {0: (runs[0],)}, True),
                             M.TargetSet(x, y, torch.zeros(N, dtype=torch.long), 40, 40, 1), "lira")
