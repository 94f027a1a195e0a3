"""protocols.experiments.audit: membership audits of the server's real views (`fedaudit audit`)."""
import json

import pytest
import torch
from torch import nn

import membership as M
from protocols.experiments import audit as A
from protocols.cli import main
from protocols.simulation import RunConfig

ROW_KEYS = {"view", "attack", "auc", "accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "n_members", "n_nonmembers",
            "epsilon_lower", "epsilon_estimate", "epsilon_accountant"}


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
        (dict(attacks=("lira",)), r"need reference models; use --reference-models K"),
        (dict(reference_models=1), "reference_models=1"),
        (dict(canaries=1), "canaries=1"),
        (dict(canary_kind="user"), "canary_kind='user'"),
        (dict(confidence=1.0), "confidence=1.0"),
        (dict(attacks=("loss", "loss")), "lists an attack twice"),
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
    col = A.collect(A.AuditConfig(run=_small(), attacks=("loss",), views=("aggregate",), n_bootstrap=50),
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
               "--local-epochs", "1", "--attacks", "loss,gradient_norm", "--reference-models", "0", "--bootstrap",
               "50", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "audit.json").read_text())
    rows = doc["rows"]
    assert len(rows) == 8 and {r["view"] for r in rows} == {"individual", "aggregate", "active-individual",
                                                            "active-aggregate"}
    for r in rows:
        assert ROW_KEYS <= set(r) and "roc" not in r and r["kind"] == "membership"
        assert 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_1pct_fpr"] <= 1
        # 180 non-member scores: TPR at 0.1% FPR is not estimable, and says so
        assert r["tpr_at_0.1pct_fpr"] is None and "1,000" in r["not_estimable"]["tpr_at_0.1pct_fpr"]
        assert r["n_members"] == r["n_nonmembers"] == 180 and r["target_runs"] == 1
        assert r["epsilon_lower"] >= 0 and r["epsilon_accountant"] is None and r["epsilon_estimate"] is None
    # self-describing: provenance, the resolved run, the defaults note, seeds, accuracy, per-view counts
    assert doc["format"].startswith("fedaudit-audit") and doc["interrupted"] is False
    assert doc["config"]["run_resolved"]["model"] == "logreg" and doc["config"]["run_resolved"]["lr"] == 0.2
    assert "differ from fedaudit run's" in doc["config"]["audit_defaults"]["note"]
    assert doc["seed"] == {"run": 0, "audit": 0} and 0 < doc["target"]["test_accuracy"] <= 1
    assert doc["views"]["individual"] == {"members": 180, "nonmembers": 180, "target_runs": 1}
    assert "fedaudit_version" in doc["provenance"]
    png = (tmp_path / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    out = capsys.readouterr().out
    assert "individual" in out and "auc 95% CI" in out and "audit.json" in out and "n/e" in out


def test_cli_attacks_as_words_with_reference_models(tmp_path):
    rc = main(["audit", "--rounds", "2", "--clients", "6", "--model", "logreg", "--rule", "fedavg",
               "--local-epochs", "1", "--views", "individual", "aggregate", "--attacks", "loss", "lira,rmia",
               "--reference-models", "5", "--bootstrap", "50", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 0
    doc = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert [(r["view"], r["attack"]) for r in doc["rows"]] == [
        ("individual", "loss"), ("individual", "lira"), ("individual", "rmia"),
        ("aggregate", "loss"), ("aggregate", "lira"), ("aggregate", "rmia")]
    refs = doc["reference_models"]
    assert refs["count"] == 5 and refs["vectorized"] is True and refs["seconds"] > 0
    for r in doc["rows"]:
        # 6 runs x 180 evaluated non-members: TPR at 0.1% FPR is estimable, with a CI
        assert r["target_runs"] == 6 and r["n_nonmembers"] >= 1000
        assert r["tpr_at_0.1pct_fpr"] is not None and len(r["tpr_at_0.1pct_fpr_ci"]) == 2
        assert r["target_run"]["n_members"] > 0


def test_cli_out_is_checked_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["audit", "--rounds", "50", "--out", str(blocker), "--quiet"])
    assert rc == 2 and "is an existing file" in capsys.readouterr().err
    rc = main(["audit", "--rounds", "50", "--out", str(blocker / "sub"), "--quiet"])
    assert rc == 2 and "a parent of this path is a file" in capsys.readouterr().err


def test_cli_interrupted_audit_keeps_the_finished_rows(tmp_path, monkeypatch, capsys):
    import protocols.experiments.audit.command as C

    def interrupted(cfg, progress, sink):
        sink.info.update({"run": cfg.run.to_dict(), "audit": cfg.to_dict()})
        sink.append({"kind": "membership", "view": "aggregate", "attack": "loss", "auc": 0.5,
                     "auc_ci": [0.4, 0.6], "tpr_at_1pct_fpr": None, "tpr_at_0.1pct_fpr": None, "n_members": 10,
                     "n_nonmembers": 10, "roc": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0]}})
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "run_audit", interrupted)
    rc = main(["audit", "--reference-models", "0", "--quiet", "--out", str(tmp_path)])
    assert rc == 130
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["interrupted"] is True and [r["attack"] for r in doc["rows"]] == ["loss"]
    assert "interrupted" in capsys.readouterr().err and (tmp_path / "roc.png").exists()


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
    assert cfg.run == A.audit_run_config(threads=cfg.run.threads)
    assert tuple(cfg.attacks) == A.DEFAULT_ATTACKS == ("loss", "gradient_norm", "lira", "rmia") and cfg.views is None
    assert cfg.reference_models == A.DEFAULT_REFERENCE_MODELS == 8 and cfg.canaries == 0
    # without reference models the default attacks are the ones that need none
    cfg = A.audit_config_from_args(build_parser().parse_args(["audit", "--reference-models", "0"]))
    assert tuple(cfg.attacks) == ("loss", "gradient_norm")
    args = build_parser().parse_args(["audit", "--views", "aggregate,active", "--target-client", "3",
                                      "--target-client", "5", "--whitebox-epochs", "7", "--secagg", "masked",
                                      "--attacks", "whitebox", "lira", "--lira-offline", "--canaries", "40"])
    cfg = A.audit_config_from_args(args)
    assert cfg.views == ("aggregate", "active") and cfg.target_clients == (3, 5)
    assert cfg.attack_args == {"whitebox": {"epochs": 7}, "lira": {"online": False}} and cfg.run.secagg == "masked"
    assert cfg.canaries == 40 and cfg.resolved_canary_kind() == "client"
    # `fedaudit run` keeps its own defaults; the audit's --help says how they differ
    assert build_parser().parse_args(["run"]).clients == RunConfig().clients
    assert "clients=100 (run: 20)" in A.defaults_note()


# The leakage of the default setting (individual > aggregate, active >= passive, LiRA / RMIA at low
# FPR) is asserted, slow, in tests/test_audit_reference.py on the pooled reference-model audit.
