"""fedaudit tradeoff: grid parsing, cell hashing, refusals, resume, aggregation, plots, backends."""
import importlib.util
import json
from pathlib import Path

import pytest

from protocols.experiments import tradeoff as T
from protocols.experiments.tradeoff import cells as tradeoff_cells
from protocols.cli import main

TINY_RUN = {"rounds": 1, "clients": 6, "local_epochs": 1}


def _grid(**kw):
    base = dict(rules=["fedavg"], attacks=["none"], corrupt=[0.2], dp=["none"], secagg=["off"], seeds=[0],
                run=dict(TINY_RUN), audit=False)
    base.update(kw)
    return T.make_grid(base)


# -- grid parsing ------------------------------------------------------------------------------


def test_parse_dp_strings_and_mappings():
    assert T.parse_dp("none") == T.DPSetting()
    s = T.parse_dp("user-central:z=1.5")
    assert (s.mode, s.noise_multiplier, s.target_epsilon, s.label) == ("user-central", 1.5, None, "user-central:z=1.5")
    e = T.parse_dp({"mode": "record", "target_epsilon": 8})
    assert (e.mode, e.target_epsilon, e.label) == ("record", 8, "record:eps=8")


@pytest.mark.parametrize("bad, match", [("user-central", "MODE:z="), ("user-central:z=abc", "not a number"),
                                        ("nonsense:z=1", "mode 'nonsense'"), ({"mode": "record"}, "exactly one"),
                                        ({"noise_multiplier": 1.0}, "without a mode"), (3, "string")])
def test_parse_dp_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        T.parse_dp(bad)


@pytest.mark.parametrize("kw, match", [(dict(rules=["nope"]), "rule 'nope' unknown"),
                                       (dict(attacks=["none", "nope"]), "attack 'nope' unknown"),
                                       (dict(corrupt=[0.0]), r"must lie in \(0, 1\)"),
                                       (dict(secagg=["sometimes"]), "secagg mode"),
                                       (dict(seeds=[0, 0]), "twice"), (dict(rules=[]), "non-empty"),
                                       (dict(run={"rule": "rfa"}), "grid axis"),
                                       (dict(run={"roundz": 3}), "not a RunConfig field"),
                                       (dict(rule_args={"krum": {}}), "not in the grid")])
def test_grid_validation_names_the_bad_value(kw, match):
    with pytest.raises(ValueError, match=match):
        _grid(**kw)


def test_grid_files_toml_json_and_yaml(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text('rules = ["fedavg", "rfa"]\nseeds = [0, 1]\ndp = ["none", "user-central:z=1"]\n'
                    '[run]\nrounds = 2\n[audit]\nattacks = ["loss"]\n')
    data = T.load_grid(toml)
    assert data["rules"] == ["fedavg", "rfa"] and data["run"] == {"rounds": 2} and data["audit"]["attacks"] == ["loss"]
    js = tmp_path / "g.json"
    js.write_text(json.dumps({"attacks": ["none", "lie"], "corrupt": [0.1, 0.3]}))
    assert T.make_grid(T.load_grid(js)).corrupt == [0.1, 0.3]
    (tmp_path / "bad.json").write_text(json.dumps({"rulez": ["fedavg"]}))
    with pytest.raises(ValueError, match="unknown key"):
        T.load_grid(tmp_path / "bad.json")
    (tmp_path / "g.ini").write_text("")
    with pytest.raises(ValueError, match="unknown format"):
        T.load_grid(tmp_path / "g.ini")
    yml = tmp_path / "g.yaml"
    yml.write_text("rules: [rfa]\nseeds: [3]\n")
    if importlib.util.find_spec("yaml") is None:
        with pytest.raises(ValueError, match="PyYAML"):
            T.load_grid(yml)
    else:
        assert T.load_grid(yml) == {"rules": ["rfa"], "seeds": [3]}


def test_cli_options_override_the_grid_file(tmp_path):
    import argparse
    from protocols.cli import build_parser
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"rules": ["fedavg", "rfa"], "seeds": [0, 1], "run": {"rounds": 4}}))
    args = build_parser().parse_args(["tradeoff", "--config", str(f), "--seeds", "5", "--rounds", "2",
                                      "--set", "partition=iid", "--no-audit"])
    assert isinstance(args, argparse.Namespace)
    g = T.grid_from_args(args)
    assert g.rules == ["fedavg", "rfa"] and g.seeds == [5] and g.audit is False
    assert g.run["rounds"] == 2 and g.run["partition"] == "iid" and g.run["clients"] == 20


# -- cells -------------------------------------------------------------------------------------


def test_expand_collapses_the_benign_cell_and_hashes_are_stable():
    g = _grid(rules=["fedavg", "rfa"], attacks=["none", "lie"], corrupt=[0.1, 0.2], seeds=[0, 1])
    cells = T.expand(g)
    # per rule and seed: one benign cell + one per corruption level
    assert len(cells) == 2 * 2 * (1 + 2)
    assert len({c["key"] for c in cells}) == len(cells)
    assert all(c["corrupt"] == 0.0 and "attack" not in c["run"] for c in cells if c["attack"] == "none")
    again = T.expand(_grid(rules=["fedavg", "rfa"], attacks=["none", "lie"], corrupt=[0.1, 0.2], seeds=[0, 1]))
    assert [c["key"] for c in again] == [c["key"] for c in cells]
    other = T.expand(_grid(rules=["fedavg", "rfa"], attacks=["none", "lie"], corrupt=[0.1, 0.2], seeds=[0, 1],
                           run={**TINY_RUN, "rounds": 2}))
    assert not {c["key"] for c in other} & {c["key"] for c in cells}


def test_refusals_carry_the_library_reason():
    cells = {(c["rule"], c["secagg"], c["dp"]): c for c in T.expand(
        _grid(rules=["fedavg", "krum"], secagg=["off", "quantized"], dp=["none", "user-central:z=1"]))}
    assert T.refusal(cells[("fedavg", "off", "none")]) is None
    assert T.refusal(cells[("fedavg", "quantized", "user-central:z=1")]) is None
    assert "secure aggregation" in T.refusal(cells[("krum", "quantized", "none")])
    assert "user-level DP" in T.refusal(cells[("krum", "off", "user-central:z=1")])
    res = T.run_cell(cells[("krum", "quantized", "none")])
    assert res["status"] == "refused" and "reveal" in res["reason"]


@pytest.mark.slow
def test_tiny_grid_end_to_end_with_refused_rows(tmp_path, capsys):
    rc = main(["tradeoff", "--rules", "fedavg,krum", "--attacks", "none", "--dp", "none", "--secagg", "off,quantized",
               "--seeds", "0", "--rounds", "1", "--clients", "6", "--set", "local_epochs=1", "--no-audit", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    rows = {(r["rule"], r["secagg"]): r for r in __import__("csv").DictReader((tmp_path / "results.csv").open())}
    assert len(rows) == 4
    assert rows[("krum", "quantized")]["status"] == "refused" and "secure aggregation" in rows[("krum", "quantized")]["reason"]
    ok = rows[("fedavg", "quantized")]
    assert ok["status"] == "ok" and 0 <= float(ok["accuracy_mean"]) <= 1 and float(ok["oracle_calls_per_round_mean"]) == 1
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4
    for png in ("accuracy_vs_epsilon", "mia_vs_accuracy", "robustness_heatmap", "privacy_vs_robustness"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "refused" in out and "4 cells (3 ok, 1 refused, 0 failed)" in out


def test_resume_skips_finished_cells_and_reruns_failed(tmp_path, monkeypatch):
    g = _grid(seeds=[0, 1, 2])
    cells = T.expand(g)
    (tmp_path / "cells").mkdir()
    done = {**{k: cells[0][k] for k in ("key", "rule", "attack", "corrupt", "dp", "secagg", "seed")},
            "status": "ok", "reason": "", "metrics": {m: 0.5 for m in T.METRICS}, "views": {}}
    (tmp_path / "cells" / f"{cells[0]['key']}.json").write_text(json.dumps(done))
    failed = {**done, "key": cells[1]["key"], "seed": 1, "status": "failed", "reason": "boom"}
    (tmp_path / "cells" / f"{cells[1]['key']}.json").write_text(json.dumps(failed))
    calls = []

    def fake(cell, threads=1):
        calls.append(cell["key"])
        return {**{k: cell[k] for k in ("key", "rule", "attack", "corrupt", "dp", "secagg", "seed")},
                "status": "ok", "reason": "", "metrics": {m: 0.7 for m in T.METRICS}, "views": {}}

    monkeypatch.setattr(tradeoff_cells, "run_cell", fake)   # looked up by run_grid
    res = T.run_grid(g, tmp_path, progress=False)
    assert calls == [cells[1]["key"], cells[2]["key"]]      # finished cell skipped, failed one rerun
    assert [r["metrics"]["accuracy"] for r in res] == [0.5, 0.7, 0.7]
    stored = json.loads((tmp_path / "cells" / f"{cells[1]['key']}.json").read_text())
    assert stored["status"] == "ok"
    calls.clear()
    T.run_grid(g, tmp_path, progress=False)
    assert calls == []
    assert not list((tmp_path / "cells").glob(".*.tmp"))


# -- aggregation and plots ---------------------------------------------------------------------


def _fake(rule, attack, seed, acc, auc, dp="none", secagg="off", status="ok", eps=None):
    r = {"key": f"{rule}{attack}{seed}{dp}{secagg}", "rule": rule, "attack": attack,
         "corrupt": 0.0 if attack == "none" else 0.2, "dp": dp, "secagg": secagg, "seed": seed, "status": status,
         "reason": "" if status == "ok" else "because", "views": {"aggregate": {"auc": auc, "tpr_at_1pct_fpr": 0.0,
                                                                              "attack": "loss"}}}
    if status == "ok":
        leak = None if auc is None else max(auc, 1 - auc)
        r["metrics"] = {"accuracy": acc, "attack_success": 0.9 if attack == "backdoor" else None, "mia_auc": auc,
                        "mia_leakage": leak, "mia_leakage_lo": None if leak is None else max(0.5, leak - 0.05),
                        "mia_leakage_hi": None if leak is None else leak + 0.05,
                        "mia_tpr1": 0.01, "epsilon": eps, "oracle_calls_per_round": 1.0, "aborted_rounds": 0,
                        "seconds": 1.0}
    return r


FAKE = [_fake("fedavg", "none", 0, 0.8, 0.6), _fake("fedavg", "none", 1, 0.9, 0.7),
        _fake("fedavg", "backdoor", 0, 0.6, 0.6), _fake("fedavg", "backdoor", 1, 0.7, 0.6),
        _fake("fedavg", "none", 0, 0.7, 0.52, dp="user-central:z=1", eps=5.0),
        _fake("fedavg", "none", 1, 0.7, 0.54, dp="user-central:z=1", eps=5.0),
        _fake("krum", "none", 0, None, None, secagg="quantized", status="refused"),
        _fake("krum", "none", 1, None, None, secagg="quantized", status="refused")]


def test_aggregate_means_stds_and_robustness():
    rows = {(r["rule"], r["attack"], r["dp"], r["secagg"]): r for r in T.aggregate(FAKE)}
    b = rows[("fedavg", "none", "none", "off")]
    assert b["accuracy_mean"] == pytest.approx(0.85) and b["accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert b["seeds"] == b["seeds_ok"] == 2 and b["attack_success_mean"] is None
    a = rows[("fedavg", "backdoor", "none", "off")]
    assert a["robustness"] == pytest.approx(0.65 / 0.85) and a["attack_success_mean"] == pytest.approx(0.9)
    assert rows[("fedavg", "none", "user-central:z=1", "off")]["epsilon_mean"] == 5.0
    k = rows[("krum", "none", "none", "quantized")]
    assert k["status"] == "refused" and k["reason"] == "because" and k["accuracy_mean"] is None


def test_csv_has_one_row_per_cell(tmp_path):
    rows = T.aggregate(FAKE)
    T.write_csv(rows, tmp_path / "r.csv")
    import csv
    got = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(got) == 4 and list(got[0]) == T.CSV_FIELDS
    assert {g["status"] for g in got} == {"ok", "refused"}


def test_pareto_front():
    pts = [(0.9, 0.8), (0.8, 0.5), (0.85, 0.6), (0.7, 0.7), (0.9, 0.9), (0.6, 0.5)]
    assert T.pareto_front(pts) == [1, 2, 0]


def test_plots_are_written(tmp_path):
    paths = T.write_plots(T.aggregate(FAKE), tmp_path)
    assert [p.name for p in paths] == ["accuracy_vs_epsilon.png", "mia_vs_accuracy.png", "robustness_heatmap.png",
                                       "privacy_vs_robustness.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_bad_backend_and_jobs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        T.run_grid(_grid(), tmp_path, backend="dask")
    with pytest.raises(ValueError, match="jobs"):
        T.run_grid(_grid(), tmp_path, jobs=0)
    with pytest.raises(ValueError, match="--backend ray"):
        T.run_grid(_grid(), tmp_path, address="ray://x:1")


# -- slow: real cells, processes, Ray, the example ---------------------------------------------


def _numbers(results):
    return [(r["key"], r["status"], r.get("metrics", {}).get("accuracy"), r.get("metrics", {}).get("mia_auc"),
             r.get("metrics", {}).get("epsilon"), r.get("metrics", {}).get("attack_success"),
             r.get("views")) for r in results]


# paired_noise: DP noise comes from the OS CSPRNG unless seeded, and this compares numbers across backends
SMALL = dict(rules=["fedavg", "rfa"], attacks=["none"], dp=["none", "user-central:z=1"],
             secagg=["off", "quantized"], seeds=[0], run={"rounds": 2, "clients": 10, "local_epochs": 1},
             audit={"attacks": ["loss"], "n_bootstrap": 50, "active": False}, paired_noise=True)


@pytest.mark.slow
def test_processes_give_the_same_numbers_as_serial(tmp_path):
    g = T.make_grid(SMALL)
    serial = T.run_grid(g, tmp_path / "a", jobs=1, progress=False)
    parallel = T.run_grid(g, tmp_path / "b", jobs=2, progress=False)
    assert _numbers(serial) == _numbers(parallel)
    ok = [r for r in serial if r["status"] == "ok"]
    assert len(ok) == len(serial) == 8
    # the server's views follow secure aggregation: the individual view only without it
    assert all(("individual" in r["views"]) == (r["secagg"] == "off") for r in ok)
    assert all(("weiszfeld-0" in r["views"]) == (r["rule"] == "rfa") for r in ok)
    assert all((r["metrics"]["epsilon"] is not None) == (r["dp"] != "none") for r in ok)


@pytest.mark.slow
def test_ray_backend_gives_the_same_numbers():
    pytest.importorskip("ray", reason="Ray is the optional extra fedaudit[ray]; not installed here")
    import tempfile
    g = T.make_grid({**SMALL, "rules": ["fedavg"], "attacks": ["none", "backdoor"], "dp": ["none"]})
    with tempfile.TemporaryDirectory() as d:
        local = T.run_grid(g, Path(d) / "local", jobs=1, progress=False)
        ray = T.run_grid(g, Path(d) / "ray", jobs=2, backend="ray", progress=False)
    assert _numbers(local) == _numbers(ray)
    assert all(r["status"] == "ok" for r in ray)


@pytest.mark.slow
def test_example_tradeoff_sweep(tmp_path):
    spec = importlib.util.spec_from_file_location("tradeoff_sweep", Path(__file__).resolve().parents[1] / "examples"
                                                  / "tradeoff_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {(r["rule"], r["attack"], r["dp"], r["secagg"]): r
            for r in mod.main(tmp_path, jobs=2, rules=["fedavg"], progress=False)}
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 8
    for rule in ("fedavg",):
        off, on = rows[(rule, "none", "none", "off")], rows[(rule, "none", "none", "quantized")]
        # Without secure aggregation the server attacks each client's own update (individual view);
        # with it only averages: leakage falls towards chance (Cronus appendix Table 6 shape).
        assert off["mia_auc_mean"] > on["mia_auc_mean"] + 0.1
    # the backdoor plants its trigger in FedAvg: far above the ~2% of a model that ignores it
    assert rows[("fedavg", "backdoor", "none", "off")]["attack_success_mean"] > 0.2
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "robustness_heatmap.png").is_file()


def test_ray_backend_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)      # import ray -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'fedaudit\[ray\]'"):
        T.run_grid(_grid(), tmp_path, backend="ray", progress=False)


# -- configuration errors are errors, refusals are combinations ---------------------------------


@pytest.mark.parametrize("kw, match", [(dict(dp=["none", "user-central:z=-1"]), "negative"),
                                       (dict(rule_args={"fedavg": {"weighted": "yes"}}), "weighted"),
                                       (dict(rule_args={"fedavg": {"nope": 1}}), "no parameter"),
                                       (dict(attacks=["none", "backdoor-scale"],
                                             attack_args={"backdoor-scale": {"scale": "abc"}}), "scale"),
                                       (dict(run={**TINY_RUN, "device": "foo"}), "device")])
def test_configuration_errors_in_a_grid_fail_before_any_cell(kw, match, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tradeoff_cells, "run_cell", lambda cell, threads=1: calls.append(cell))
    with pytest.raises(ValueError, match=match):
        T.run_grid(_grid(**kw), tmp_path, progress=False)
    assert calls == []


def test_cli_grid_typo_exits_2_without_running(tmp_path, capsys):
    rc = main(["tradeoff", "--rules", "fedavg", "--attacks", "none", "--dp", "none,user-central:z=-1",
               "--secagg", "off", "--seeds", "0", "--rounds", "1", "--clients", "6", "--no-audit", "--quiet",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "grid cell" in err and "z=-1" in err
    assert not (tmp_path / "o" / "cells").exists()


def test_out_that_is_a_file_is_refused_before_any_cell(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    rc = main(["tradeoff", "--rules", "fedavg", "--attacks", "none", "--dp", "none", "--secagg", "off",
               "--seeds", "0", "--no-audit", "--quiet", "--out", str(f)])
    assert rc == 2 and "existing file" in capsys.readouterr().err and f.read_text() == "x"


def test_refusals_are_combinations_not_values():
    cells = {(c["rule"], c["secagg"], c["dp"]): c for c in T.expand(
        _grid(rules=["fedavg", "krum"], secagg=["off", "quantized"], dp=["none", "user-distributed:z=1"]))}
    assert "Z_M" in T.refusal(cells[("fedavg", "off", "user-distributed:z=1")])
    assert T.refusal(cells[("fedavg", "quantized", "user-distributed:z=1")]) is None
    g = _grid(rules=["fedavg", "krum"], secagg=["off", "quantized"])
    assert len(g.refused) == 1 and "secure aggregation" in next(iter(g.refused.values()))


def test_breakdown_warnings_are_collected_once(tmp_path):
    g = _grid(rules=["rfa"], attacks=["none", "lie"], corrupt=[0.6], seeds=[0, 1])
    assert len(g.warnings) == 1 and "breakdown point" in g.warnings[0]


def test_paired_noise_seeds_only_the_dp_cells_and_changes_the_key():
    plain = {(c["dp"]): c for c in T.expand(_grid(dp=["none", "user-central:z=1"]))}
    paired = {(c["dp"]): c for c in T.expand(_grid(dp=["none", "user-central:z=1"], paired_noise=True))}
    assert paired["user-central:z=1"]["run"]["dp_seeded_noise"] is True
    assert "dp_seeded_noise" not in paired["none"]["run"] and "dp_seeded_noise" not in plain["user-central:z=1"]["run"]
    assert paired["user-central:z=1"]["key"] != plain["user-central:z=1"]["key"]
    assert paired["none"]["key"] == plain["none"]["key"]
    with pytest.raises(ValueError, match="paired_noise"):
        _grid(run={**TINY_RUN, "dp_seeded_noise": True})


# -- locks: several sweeps on one --out share the cells ----------------------------------------


def test_two_sweeps_on_one_out_run_each_cell_once(tmp_path, monkeypatch):
    import threading
    import time
    g = _grid(seeds=list(range(8)))
    ran, guard = [], threading.Lock()

    def fake(cell, threads=1):
        time.sleep(0.05)
        with guard:
            ran.append((threading.current_thread().name, cell["key"]))
        return {**{k: cell[k] for k in ("key", "rule", "attack", "corrupt", "dp", "secagg", "seed")},
                "status": "ok", "reason": "", "metrics": {m: 0.5 for m in T.METRICS}, "views": {}}

    monkeypatch.setattr(tradeoff_cells, "run_cell", fake)
    out = {}
    threads = [threading.Thread(target=lambda n=n: out.__setitem__(n, T.run_grid(g, tmp_path, progress=False)),
                                name=f"sweep{n}") for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [k for _, k in ran]
    assert sorted(keys) == sorted(c["key"] for c in T.expand(g))      # every cell ran exactly once
    assert {n for n, _ in ran} == {"sweep1", "sweep2"}                  # and the two sweeps shared them
    assert [r["key"] for r in out[1]] == [r["key"] for r in out[2]] and len(out[1]) == 8


def test_leakage_is_symmetric_around_one_half():
    assert T.leakage(0.3) == pytest.approx(0.7) and T.leakage(0.8) == 0.8 and T.leakage(0.5) == 0.5
    assert T.leakage_ci(0.6, 0.7) == (0.6, 0.7)
    assert T.leakage_ci(0.2, 0.3) == pytest.approx((0.7, 0.8))
    assert T.leakage_ci(0.45, 0.52) == (0.5, 0.55)


def test_pareto_front_does_not_reward_an_auc_below_one_half():
    # an AUC of 0.30 leaks as much as 0.70: same accuracy, it must not dominate a 0.55 cell
    rows = T.aggregate([_fake("fedavg", "none", 0, 0.8, 0.30), _fake("rfa", "none", 0, 0.8, 0.55)])
    by = {r["rule"]: r for r in rows}
    assert by["fedavg"]["mia_leakage_mean"] == pytest.approx(0.70)
    front = T.pareto_front([(r["accuracy_mean"], r["mia_leakage_mean"]) for r in rows])
    assert [rows[i]["rule"] for i in front] == ["rfa"]


def test_heatmap_shows_absolute_accuracy_not_the_ratio(tmp_path, monkeypatch):
    """Krum at 23% benign accuracy with 0.26 under attack: the ratio (1.14) looks robust, the
    absolute value does not; the heatmap's matrix holds the absolute values."""
    rows = T.aggregate([_fake("krum", "none", 0, 0.23, 0.6), _fake("krum", "lie", 0, 0.26, 0.6),
                        _fake("fedavg", "none", 0, 0.9, 0.6), _fake("fedavg", "lie", 0, 0.7, 0.6)])
    shown = []
    import matplotlib.axes
    orig = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, m, **kw: (shown.append(m), orig(self, m, **kw))[1])
    T.plot_robustness_heatmap(rows, tmp_path / "h.png")
    m = shown[0]
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    k, f = rules.index("krum"), rules.index("fedavg")
    assert float(m[k, 0]) == pytest.approx(0.23) and float(m[k, 1]) == pytest.approx(0.26)   # benign, then attack
    assert float(m[f, 1]) == pytest.approx(0.7)


@pytest.mark.slow
def test_ctrl_c_then_two_processes_share_the_rest(tmp_path):
    """A sweep interrupted with SIGINT exits 130 and keeps its finished cells; two sweeps then
    started on the same --out finish the grid between them, each cell run once."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "protocols.cli", "tradeoff", "--rules", "fedavg", "--attacks", "none",
            "--dp", "none", "--secagg", "off", "--seeds", ",".join(map(str, range(12))), "--rounds", "1",
            "--clients", "6", "--set", "local_epochs=1", "--set", "model=logreg", "--no-audit", "--quiet",
            "--out", str(out)]
    first = subprocess.Popen(argv + ["--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 2 and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    kept = {p.name for p in (out / "cells").glob("*.json")}
    assert first.returncode in (130, 0), err            # 0 only if it finished before the signal
    assert "Traceback" not in err
    if first.returncode == 130:
        assert "run the same command again to resume" in err and len(kept) < 12
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("ran twice" in e for _, e in outs)
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(cells) == 12 and all(c["status"] == "ok" for c in cells)
    fresh = [c for c in cells if f"{c['key']}.json" not in kept]
    assert {c["sweep"]["pid"] for c in fresh} == {p.pid for p in procs}     # the two sweeps shared them


def test_paired_noise_cells_differ_only_in_secagg_get_the_same_noise():
    """What --paired-noise promises: two DP cells that differ only in their secagg mode (off vs
    plaintext, the same plaintext sum) train the same model; with CSPRNG noise they do not."""
    import torch
    from protocols.models import flat_params
    from protocols.runner import make_simulation
    from protocols.simulation import RunConfig

    def final(secagg, paired):
        cfg = RunConfig(rule="fedavg", clients=6, rounds=2, model="logreg", local_epochs=1, secagg=secagg,
                        dp="user-central", noise_multiplier=1.0, dp_seeded_noise=paired)
        sim = make_simulation(cfg)
        sim.run()
        return flat_params(sim.model)
    assert torch.equal(final("off", True), final("plaintext", True))
    assert not torch.equal(final("off", False), final("plaintext", False))
