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
