import json

import pytest

from protocols.cli import main


def test_run_writes_result_json(tmp_path, capsys):
    rc = main(["run", "--rounds", "2", "--clients", "6", "--model", "logreg", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert set(res) >= {"config", "rounds", "final", "transcript"}
    assert len(res["rounds"]) == 2
    assert set(res["rounds"][0]) >= {"round", "test_accuracy", "test_loss", "oracle_calls"}
    assert res["final"]["test_accuracy"] == res["rounds"][-1]["test_accuracy"]
    assert res["transcript"]["calls"] == 2 * 4 and res["config"]["secagg"] == "masked"  # rfa: v0 + 3 calls
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "round" in out


def test_unknown_rule_is_a_clear_error(capsys):
    assert main(["run", "--rule", "krumm", "--quiet", "--rounds", "1"]) == 2
    assert "unknown rule 'krumm'" in capsys.readouterr().err


def test_bench_oracle_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "oracle", "--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["case"].split(" ")[0] for r in rows} >= {"plaintext", "quantized-32"}
    for r in rows:
        assert set(r) >= {"case", "seconds", "baseline", "ratio"} and r["seconds"] > 0
        base = next(b for b in rows if b["case"] == r["baseline"])
        assert r["ratio"] == pytest.approx(r["seconds"] / base["seconds"])


def test_list_rules(capsys):
    assert main(["list", "rules"]) == 0
    assert "fedavg" in capsys.readouterr().out


def test_run_masked_options(tmp_path):
    rc = main(["run", "--rounds", "1", "--clients", "6", "--model", "logreg", "--quiet", "--secagg", "masked",
               "--threshold", "4", "--neighbors", "4", "--dropout-rate", "0.2", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["config"]["threshold"] == 4 and res["config"]["neighbors"] == 4
    assert res["transcript"]["calls"] == 4          # rfa: v0 + 3 Weiszfeld calls
