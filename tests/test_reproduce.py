"""fedaudit reproduce: the claims registry, the verdict logic, the report, and the --quick run (slow)."""
import json

import pytest

from protocols.experiments import reproduce as R
from protocols.cli import main


class FakeRunner(R.Runner):
    """Answers from a table keyed by (rule, attack) instead of training."""

    def __init__(self, table):
        super().__init__(R.QUICK)
        self.table = table

    def run(self, **kw):
        key = (kw.get("rule", "fedavg"), kw.get("attack"))
        acc = self.table[key]
        return {"accuracy": acc, "attack_success": None, "client_accuracy": acc}


def test_registry_is_complete_and_unique():
    ids = [c.id for c in R.CLAIMS]
    assert len(ids) == len(set(ids)) >= 13
    for c in R.CLAIMS:
        assert c.claim and c.source and c.paper and c.criterion and callable(c.measure)
    assert {"rfa-data", "rfa-omniscient", "rfa-clean", "rfa-onestep", "rfa-personalization", "fang-krum",
            "fltrust-holds", "lie", "mixtailor", "residual", "mia-views", "user-dp", "cronus"} <= set(ids)


def test_verdicts_follow_the_measurement():
    holds = R._rfa_omniscient(FakeRunner({("rfa", "omniscient"): 0.6, ("fedavg", "omniscient"): 0.1}))
    assert holds.holds is True and holds.margin == pytest.approx(0.5)
    fails = R._rfa_omniscient(FakeRunner({("rfa", "omniscient"): 0.1, ("fedavg", "omniscient"): 0.6}))
    assert fails.holds is False and fails.margin == pytest.approx(-0.5)
    clean = R._rfa_clean(FakeRunner({("rfa", None): 0.80, ("fedavg", None): 0.85}))
    assert clean.holds is False and clean.margin == pytest.approx(R.CLEAN_TOLERANCE - 0.05)
    # one-step: RFA gaining nothing over FedAvg is a miss, reported, not a division by zero
    none = R._onestep(FakeRunner({("rfa-onestep", "omniscient"): 0.5, ("rfa", "omniscient"): 0.4,
                                  ("fedavg", "omniscient"): 0.4}))
    assert none.holds is False and none.margin is None and "gains nothing" in none.measured
    kept = R._onestep(FakeRunner({("rfa-onestep", "omniscient"): 0.4, ("rfa", "omniscient"): 0.6,
                                  ("fedavg", "omniscient"): 0.2}))
    assert kept.holds is True and kept.details["kept"] == pytest.approx(0.5)


def test_cronus_claim_reports_a_missing_module(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "protocols.cronus"
                        else real(name, *a))
    out = R._cronus(FakeRunner({}))
    assert out.holds is None and out.status == "not run: protocols.cronus missing"


def test_unknown_claim_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown claim"):
        R.run_claims(R.QUICK, only=["rfa-dat"], progress=False)
    assert main(["reproduce", "--only", "nope", "--quiet"]) == 2
    assert "unknown claim" in capsys.readouterr().err


def test_report_files(tmp_path):
    rows = [{"id": "a", "claim": "A beats B", "source": "Paper, Table 1", "paper": "90% vs 10%", "criterion": "A > B",
             "measured": "A 80% vs B 20%", "holds": "holds", "margin": 0.6, "status": "run", "details": {},
             "seconds": 1.0},
            {"id": "c", "claim": "C", "source": "S", "paper": "P", "criterion": "K", "measured": "-",
             "holds": "not run", "margin": None, "status": "not run: protocols.cronus missing", "details": {},
             "seconds": 0.0}]
    js, md = R.write_report(rows, tmp_path, R.QUICK, 3.0)
    data = json.loads(js.read_text())
    assert [c["id"] for c in data["claims"]] == ["a", "c"] and data["preset"]["name"] == "quick"
    text = md.read_text()
    assert "| A beats B | Paper, Table 1 | 90% vs 10% | A > B | A 80% vs B 20% | **holds** | +0.600 |" in text
    assert "not run: protocols.cronus missing" in text and "Closing notes" in text
    table = R.format_table(rows)
    assert "A beats B" in table and "+0.600" in table


@pytest.mark.slow
def test_reproduce_quick_runs_every_claim(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "reproduce.json").read_text())
    rows = data["claims"]
    assert [r["id"] for r in rows] == [c.id for c in R.CLAIMS]
    for r in rows:
        assert r["holds"] in ("holds", "does not hold", "not run")
        if r["holds"] == "not run":
            assert r["status"].startswith("not run")
        elif r["margin"] is not None:
            # the verdict and the margin agree: a claim holds exactly when its criterion is met
            assert (r["margin"] > 0) == (r["holds"] == "holds") or r["margin"] == 0
    # the measurement is real: omniscient corruption drives FedAvg far below RFA (RFA Fig. 2)
    omni = next(r for r in rows if r["id"] == "rfa-omniscient")["details"]
    assert omni["rfa"] > omni["fedavg"] + 0.2
    assert (tmp_path / "reproduce.md").read_text().count("\n| ") == len(rows) + 1
    assert "hold" in capsys.readouterr().out


# -- resumable: finished claims and runs are kept in --out -------------------------------------


def _claims(calls, interrupt_at=None):
    def measure_of(cid):
        def measure(r):
            calls.append(cid)
            if cid == interrupt_at:
                raise KeyboardInterrupt
            return R.Outcome(f"{cid} measured", True, 0.1, {"x": 1})
        return measure
    return [R.Claim(cid, f"claim {cid}", "src", "paper", "crit", measure_of(cid)) for cid in ("a", "b", "c")]


def test_finished_claims_are_kept_and_read_back(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(R, "CLAIMS", _claims(calls))
    rows = R.run_claims(R.QUICK, progress=False, out_dir=tmp_path)
    assert calls == ["a", "b", "c"] and len(list((tmp_path / "claims").glob("*.json"))) == 3
    again = R.run_claims(R.QUICK, progress=False, out_dir=tmp_path)
    assert calls == ["a", "b", "c"] and [r["measured"] for r in again] == [r["measured"] for r in rows]
    R.run_claims(R.FULL, progress=False, out_dir=tmp_path)            # another preset: measured again
    assert calls == ["a", "b", "c"] * 2


def test_ctrl_c_keeps_finished_claims_reports_them_and_exits_130(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(R, "CLAIMS", _claims(calls, interrupt_at="b"))
    assert main(["reproduce", "--quick", "--quiet", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
    data = json.loads((tmp_path / "reproduce.json").read_text())
    assert data["interrupted"] is True and data["provenance"]["utc"]
    assert [(r["id"], r["holds"]) for r in data["claims"]] == [("a", "holds"), ("b", "not run"), ("c", "not run")]
    assert "Interrupted" in (tmp_path / "reproduce.md").read_text()
    monkeypatch.setattr(R, "CLAIMS", _claims(calls))
    assert main(["reproduce", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    assert calls == ["a", "b", "b", "c"]                                # a was read back, not measured
    assert "read back" in capsys.readouterr().err


def test_runner_keeps_each_run_on_disk(tmp_path, monkeypatch):
    from protocols.experiments import runs
    made = []

    class Sim:
        def __init__(self, cfg):
            made.append(cfg.seed)
            self.history = [type("Rec", (), {"test_accuracy": 0.5 + cfg.seed / 10, "attack_success": None,
                                             "client_accuracy": None})()]

        def run(self):
            pass

    monkeypatch.setattr(runs, "make_simulation", Sim)
    preset = R.Preset("t", rounds=1, seeds=(0, 1), audit_rounds=1, cronus_rounds=1, cronus_init_epochs=1)
    first = R.Runner(preset, store=tmp_path).acc(rule="fedavg")
    assert made == [0, 1] and first == pytest.approx(0.55)
    again = R.Runner(preset, store=tmp_path)
    assert again.acc(rule="fedavg") == pytest.approx(0.55) and made == [0, 1] and again.reused == 2
    R.Runner(preset, store=tmp_path).acc(rule="rfa")                   # another configuration: trained
    assert made == [0, 1, 0, 1]


def test_reproduce_out_that_is_a_file_fails_before_any_claim(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(R, "CLAIMS", _claims(calls))
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["reproduce", "--quick", "--quiet", "--out", str(f)]) == 2
    assert calls == [] and "existing file" in capsys.readouterr().err
