"""protocols.experiments.audit: membership audits of the server's real views (`fedaudit audit`)."""
import json

import pytest
import torch
from torch import nn

import membership as M
from protocols.experiments import audit as A
from protocols.cli import main
from protocols.simulation import RunConfig

ROW_KEYS = {"view", "attack", "auc", "accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "n_members", "n_nonmembers"}


def _small(**kw):
    base = dict(clients=6, rounds=2, model="logreg", rule="fedavg", secagg="off", local_epochs=1, partition="iid")
    return RunConfig(**{**base, **kw})


def _audit(run, **kw):
    return A.run_audit(A.AuditConfig(run=run, **{"attacks": ("loss",), "n_bootstrap": 50, **kw}))


# -- which views exist under which setting ----------------------------------------------------


def test_masked_secagg_audits_aggregate_views_only():
    rows = _audit(_small(secagg="masked"))
    assert {r["view"] for r in rows} == {"aggregate", "active-aggregate"}
    for r in rows:
        assert ROW_KEYS <= set(r) and 0 <= r["auc"] <= 1
    for view in ("individual", "active-individual"):
        with pytest.raises(ValueError, match=rf"view '{view}' needs each client's individual update.*"
                                             r"secagg='masked'.*--secagg off"):
            _audit(_small(secagg="masked"), views=(view,))


def test_no_secagg_has_individual_views_and_respects_the_request():
    rows = _audit(_small())
    assert [r["view"] for r in rows] == ["individual", "aggregate", "active-individual", "active-aggregate"]
    assert rows.info["target_clients"] == [0, 1]          # 2 x 240 records outnumber the 360 test records
    assert rows.info["members"] == 480 and rows.info["nonmembers"] == 360
    only = _audit(_small(), views=("aggregate",), attacks=("loss", "gradient_norm"))
    assert [(r["view"], r["attack"]) for r in only] == [("aggregate", "loss"), ("aggregate", "gradient_norm")]
    # the honest run is the same with or without the active continuation: identical aggregate rows
    assert only[0]["auc"] == rows[1]["auc"]


def test_rfa_audit_has_one_row_per_weiszfeld_intermediate():
    rows = _audit(_small(rule="rfa", secagg="quantized"), views=("aggregate", "weiszfeld"))
    assert [r["view"] for r in rows] == ["aggregate", "weiszfeld-0", "weiszfeld-1", "weiszfeld-2", "weiszfeld-3"]
    # v^(R), the last Weiszfeld iterate, is the aggregate (server_lr = 1)
    assert rows[-1]["auc"] == pytest.approx(rows[0]["auc"])
    one = _audit(_small(rule="rfa", secagg="quantized"), views=("weiszfeld-1",))
    assert [r["view"] for r in one] == ["weiszfeld-1"] and one[0]["auc"] == rows[2]["auc"]
    with pytest.raises(ValueError, match="weiszfeld-7.*weiszfeld-0.*weiszfeld-3"):
        _audit(_small(rule="rfa", secagg="quantized"), views=("weiszfeld-7",))
    with pytest.raises(ValueError, match="exists only for RFA.*rule='fedavg'"):
        _audit(_small(), views=("weiszfeld",))


def test_default_views_under_rfa_without_secagg_cover_every_kind():
    rows = _audit(_small(rule="rfa"))
    assert [r["view"] for r in rows] == ["individual", "aggregate", "weiszfeld-0", "weiszfeld-1", "weiszfeld-2",
                                         "weiszfeld-3", "active-individual", "active-aggregate"]


def test_bad_audit_config_is_a_clear_error():
    run = _small()
    cases = [
        (dict(attacks=("nasr",)), "unknown membership attack 'nasr'"),
        (dict(attacks="loss"), "non-empty list"),
        (dict(views=("everything",)), "unknown view 'everything'"),
        (dict(target_clients=(9,)), r"target client\(s\) \[9\] out of range"),
        (dict(target_clients=(1, 1)), "lists a client twice"),
        (dict(known_fraction=1.0), "known_fraction=1.0"),
        (dict(known_fraction=0.0, attacks=("whitebox",)), r"\['whitebox'\] nothing to train on"),
        (dict(active_gamma=-1.0), "active_gamma=-1.0"),
        (dict(active_rounds=5), r"active_rounds=5 must lie in \[1, rounds=2\]"),
        (dict(attacks=("loss",), attack_args={"whitebox": {"epochs": 3}}), "attack_args names 'whitebox'"),
        (dict(attack_args={"whitebox": {"epoch": 3}}), r"no parameter\(s\) \['epoch'\]"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            A.AuditConfig(run=run, **kw).validate()


def test_explicit_targets_and_progress():
    seen = []
    rows = A.run_audit(A.AuditConfig(run=_small(), attacks=("loss",), n_bootstrap=20, target_clients=(3,),
                                     views=("individual", "aggregate")),
                       progress=lambda done, total, what: seen.append((done, total, what)))
    assert rows.info["target_clients"] == [3]
    n = rows.info["members"]
    assert rows.info["nonmembers"] == n and rows[0]["n_members"] + round(0.5 * n) == n
    assert seen[-1][0] == seen[-1][1] and [d for d, _, _ in seen] == list(range(1, len(seen) + 1))
    assert any("round 2/2" in w for _, _, w in seen) and "aggregate / loss" in seen[-1][2]


def test_audit_is_seeded():
    a = _audit(_small(), views=("individual",), attacks=("loss", "whitebox"),
               attack_args={"whitebox": {"epochs": 2}})
    b = _audit(_small(), views=("individual",), attacks=("loss", "whitebox"),
               attack_args={"whitebox": {"epochs": 2}})
    assert [r["auc"] for r in a] == [r["auc"] for r in b]


# -- pooling targets of several clients, each through its own views ---------------------------


def test_pooled_shared_view_equals_run_attack_on_the_union():
    """With one view for every target the pooled audit is exactly membership.run_attack."""
    col = A._collect(A.AuditConfig(run=_small(), attacks=("loss",), views=("aggregate",), n_bootstrap=50),
                     lambda *a, **k: None)
    cfg = A.AuditConfig(run=_small(), attacks=("loss",), n_bootstrap=50)
    res = M.attack_server_view(col.model, col.views[0], col.records, "loss", known_fraction=cfg.known_fraction,
                               seed=cfg.seed, n_bootstrap=cfg.n_bootstrap)
    n, r = col.records.n_members, col.records
    b, o = col.views[0].models[0]
    ref = M.run_attack("loss", [(col.model, b), (col.model, o)], (r.x[:n], r.y[:n]), (r.x[n:], r.y[n:]),
                       known_fraction=0.5, seed=0, n_bootstrap=50)
    assert res.auc == ref.auc and res.accuracy == ref.accuracy and res.auc_ci == ref.auc_ci


# -- the command line -------------------------------------------------------------------------


def test_cli_writes_audit_json_and_roc_png(tmp_path, capsys):
    rc = main(["audit", "--rounds", "2", "--clients", "6", "--model", "logreg", "--rule", "fedavg",
               "--local-epochs", "1", "--attacks", "loss,gradient_norm", "--bootstrap", "50", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "audit.json").read_text())
    assert len(rows) == 8 and {r["view"] for r in rows} == {"individual", "aggregate", "active-individual",
                                                            "active-aggregate"}
    for r in rows:
        assert ROW_KEYS <= set(r) and "roc" not in r
        assert 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_0.1pct_fpr"] <= r["tpr_at_1pct_fpr"] <= 1
        assert r["n_members"] == r["n_nonmembers"] == 180
    png = (tmp_path / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    out = capsys.readouterr().out
    assert "individual" in out and "auc 95% CI" in out and "audit.json" in out


def test_cli_individual_view_under_secagg_is_a_clear_error(tmp_path, capsys):
    rc = main(["audit", "--rounds", "1", "--clients", "6", "--model", "logreg", "--rule", "fedavg",
               "--secagg", "masked", "--views", "individual", "--attacks", "loss", "--quiet", "--out", str(tmp_path)])
    assert rc == 2
    assert "needs each client's individual update" in capsys.readouterr().err
    assert not (tmp_path / "audit.json").exists()


def test_cli_audit_defaults_are_the_audit_configuration():
    from protocols.cli import build_parser
    args = build_parser().parse_args(["audit"])
    cfg = A.audit_config_from_args(args)
    assert cfg.run == A.audit_run_config()
    assert tuple(cfg.attacks) == ("loss", "gradient_norm", "whitebox") and cfg.views is None
    args = build_parser().parse_args(["audit", "--views", "aggregate,active", "--target-client", "3",
                                      "--target-client", "5", "--whitebox-epochs", "7", "--secagg", "masked"])
    cfg = A.audit_config_from_args(args)
    assert cfg.views == ("aggregate", "active") and cfg.target_clients == (3, 5)
    assert cfg.attack_args == {"whitebox": {"epochs": 7}} and cfg.run.secagg == "masked"
    # `fedaudit run` keeps its own defaults
    assert build_parser().parse_args(["run"]).clients == RunConfig().clients


# -- leakage (slow) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_audit():
    """The audit defaults (digits, 100 IID clients of ~14 records, MLP), FedAvg, no secagg."""
    return A.run_audit(A.AuditConfig(run=A.audit_run_config(rule="fedavg"), attacks=("loss", "gradient_norm"),
                                     n_bootstrap=500))


def _row(rows, view, attack):
    return next(r for r in rows if r["view"] == view and r["attack"] == attack)


@pytest.mark.slow
def test_individual_view_leaks_more_than_the_aggregate(default_audit):
    for attack in ("loss", "gradient_norm"):
        ind, agg = _row(default_audit, "individual", attack), _row(default_audit, "aggregate", attack)
        assert ind["auc_ci"][0] > 0.55, ind            # clearly above chance
        assert ind["auc"] > agg["auc"] + 0.05, (ind["auc"], agg["auc"])


@pytest.mark.slow
def test_active_attack_at_least_passive_on_the_same_targets(default_audit):
    for attack in ("loss", "gradient_norm"):
        act, pas = _row(default_audit, "active-individual", attack), _row(default_audit, "individual", attack)
        assert (act["n_members"], act["n_nonmembers"]) == (pas["n_members"], pas["n_nonmembers"])
        assert act["auc"] >= pas["auc"], (attack, act["auc"], pas["auc"])
