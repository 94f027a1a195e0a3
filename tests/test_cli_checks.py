"""Bad input is refused before any training with one line naming the option and the fix (exit
status 2), output locations are checked before the work, results are written atomically and
kept on Ctrl-C, and an aborted secure-aggregation round is recorded instead of killing the run."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from protocols.cli import DATASET_TABLE, main
from protocols.data import DATASETS, load_dataset
from protocols.experiments.options import prepare_output_dir
from protocols.report import atomic_write_json, atomic_write_text, provenance
from protocols.rules.base import BreakdownWarning
from protocols.simulation import RunConfig, Simulation
from secagg import SecureAggregationAborted, SecureAggregationViolation

FAST = ["--rounds", "1", "--clients", "6", "--model", "logreg", "--quiet"]


def _fails_fast(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedaudit: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


# -- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize("argv, needles", [
    (["--rule", "krum"], ["krum", "--secagg off", "fedavg"]),
    (["--rule", "median", "--secagg", "quantized"], ["median", "--secagg quantized"]),
    (["--device", "foo"], ["device='foo'", "--device", "cpu"]),
    (["--device", "cuda:7"] if torch.cuda.is_available() else ["--device", "cuda"], ["--device"]),
    (["--attack", "backdoor-scale", "--attack-arg", "scale=abc", "--corrupt", "0.2"],
     ["scale='abc'", "--attack-arg scale="]),
    (["--rule-arg", "nu=abc"], ["nu='abc'", "--rule-arg"]),
    (["--rule", "krum", "--secagg", "off", "--rule-arg", "f=30"], ["f=30", "Lower f"]),
    (["--rule", "trimmedmean", "--secagg", "off", "--rule-arg", "beta=0.7"], ["beta=0.7"]),
    (["--seed", "-1"], ["seed=-1", "--seed"]),
    (["--rule-arg", "nokey"], ["key=value"]),
    (["--on-abort", "stop", "--clients", "0"], ["clients=0"]),
])
def test_bad_options_fail_before_training_in_one_line(capsys, argv, needles):
    _fails_fast(capsys, ["run", *argv, "--quiet", "--rounds", "1"], *needles)


def test_rule_secagg_refusal_is_a_secagg_violation_in_the_api():
    with pytest.raises(SecureAggregationViolation, match="individual update"):
        RunConfig(rule="bulyan", secagg="masked").validate()
    RunConfig(rule="bulyan", secagg="off").validate()                     # without secagg it runs


def test_breakdown_point_warning_names_the_rule_and_its_point(capsys):
    with pytest.warns(BreakdownWarning, match=r"breakdown point of rule 'rfa': 1/2"):
        RunConfig(rule="rfa", attack="gaussian", corrupt=0.6).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunConfig(rule="rfa", attack="gaussian", corrupt=0.4).validate()   # within it: silent
    assert main(["run", "--rule", "rfa", "--attack", "gaussian", "--corrupt", "0.6", *FAST]) == 0
    err = capsys.readouterr().err
    assert "fedaudit: warning:" in err and "breakdown point" in err and "Traceback" not in err


def test_nan_in_leaf_pixels_is_an_error_naming_the_writer(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        users = ["w1", "w2"]
        blob = {"users": users, "num_samples": [2, 2],
                "user_data": {u: {"x": [[0.5] * 784, [0.25] * 784], "y": [1, 2]} for u in users}}
        if split == "train":
            blob["user_data"]["w2"]["x"][1][3] = float("nan")
        (tmp_path / split / "d.json").write_text(json.dumps(blob))      # json writes NaN, and reads it back
    with pytest.raises(ValueError, match=r"NaN or infinite.*'w2'"):
        load_dataset("femnist", data_dir=tmp_path)


def test_list_datasets_says_where_each_comes_from(capsys):
    assert set(DATASET_TABLE) == set(DATASETS)
    for name in ("synthetic", "shakespeare", "purchase"):                 # the quick embedded loaders
        ds = load_dataset(name)
        _, model, part = DATASET_TABLE[name]
        assert model == ds.meta.get("default_model", "mlp") and part == ds.meta.get("default_partition", "dirichlet")
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "--data-dir DIR" in out and "embedded" in out and "default model" in out


# -- output locations and atomic writes ---------------------------------------------------------


def test_prepare_output_dir_creates_and_refuses_clearly(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(ValueError, match="existing file"):
        prepare_output_dir(f)
    with pytest.raises(ValueError, match="parent of this path is a file"):
        prepare_output_dir(f / "sub")
    assert f.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes to read-only folders")
def test_prepare_output_dir_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            prepare_output_dir(ro)
    finally:
        ro.chmod(0o700)


def test_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated: the probe file cannot be created) or a file at --out: exit
    2 before any round runs, the path named."""
    import tempfile
    ran = []
    monkeypatch.setattr(Simulation, "run", lambda self, progress=None: ran.append(1))
    f = tmp_path / "result"
    f.write_text("x")
    _fails_fast(capsys, ["run", *FAST, "--out", str(f)], str(f), "existing file")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    _fails_fast(capsys, ["run", *FAST, "--out", str(tmp_path / "ro")], "not writable", "Permission denied")
    assert ran == []


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}

    with pytest.raises(TypeError):
        atomic_write_text(p, object())      # fails while writing
    assert json.loads(p.read_text()) == {"a": 1} and sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1} and sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_result_json_has_provenance_and_the_threshold_used(tmp_path):
    assert main(["run", *FAST, "--secagg", "masked", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "result.json").read_text())
    prov = res["provenance"]
    assert prov["fedaudit_version"] and prov["utc"].endswith("Z")
    assert "git_commit" in prov
    from protocols.simulation.base import make_oracle
    used = make_oracle(RunConfig(secagg="masked", clients=6), 6).threshold_for(6)
    assert res["config"]["threshold"] is None and res["secagg"]["threshold"] == used and 3 < used <= 6
    assert res["secagg"]["clients_per_call"] == 6 and res["aborted_rounds"] == []
    assert provenance()["utc"] >= prov["utc"]


# -- aborted secure-aggregation rounds ----------------------------------------------------------


def _flaky_oracle(sim, bad_rounds):
    real = sim.oracle.average

    def average(*a, **k):
        if sim.transcript.round in bad_rounds:
            raise SecureAggregationAborted("only 3 of 6 clients remain, fewer than the threshold t=4")
        return real(*a, **k)
    sim.oracle.average = average


def test_an_aborted_round_keeps_the_model_and_the_run_goes_on():
    sim = Simulation(RunConfig(clients=6, rounds=3, model="logreg", secagg="quantized"))
    _flaky_oracle(sim, {1})
    sim.run()
    assert [r.aborted is not None for r in sim.history] == [False, True, False]
    assert torch.equal(sim.global_history[1], sim.global_history[2])          # round 1 kept the model
    assert not torch.equal(sim.global_history[2], sim.global_history[3])
    res = sim.result()
    assert res["aborted_rounds"] == [1] and res["stopped"] is None and len(res["rounds"]) == 3


def test_on_abort_stop_ends_the_run_with_the_reason(tmp_path, capsys, monkeypatch):
    sim = Simulation(RunConfig(clients=6, rounds=4, model="logreg", secagg="quantized", on_abort="stop"))
    _flaky_oracle(sim, {1})
    sim.run()
    assert len(sim.history) == 2 and "threshold" in sim.result()["stopped"]
    with pytest.raises(ValueError, match="on_abort"):
        RunConfig(on_abort="retry").validate()


def test_a_dropout_rate_that_would_abort_every_call_is_refused_up_front(tmp_path, capsys):
    rc = main(["run", "--rounds", "2", "--clients", "6", "--model", "logreg", "--quiet", "--secagg", "masked",
               "--dropout-rate", "0.5", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "leaving 3 < the threshold t=5" in err and "--dropout-rate <= 0.167" in err
    assert not (tmp_path / "r" / "result.json").exists()


def test_dropout_that_aborts_every_call_still_writes_result_json(tmp_path, capsys, monkeypatch):
    # the up-front refusal off: the abort path itself (a real deployment's clients drop at will)
    monkeypatch.setattr("secagg.MaskedOracle.check_dropouts", lambda self, n: None)
    rc = main(["run", "--rounds", "2", "--clients", "6", "--model", "logreg", "--quiet", "--secagg", "masked",
               "--dropout-rate", "0.5", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "fewer than the threshold" in err
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["aborted_rounds"] == [0, 1] and all(r["aborted"] for r in res["rounds"])
    rc = main(["run", "--rounds", "3", "--clients", "6", "--model", "logreg", "--quiet", "--secagg", "masked",
               "--dropout-rate", "0.5", "--on-abort", "stop", "--out", str(tmp_path / "s")])
    assert rc == 1 and "--on-abort stop" in capsys.readouterr().err
    res = json.loads((tmp_path / "s" / "result.json").read_text())
    assert len(res["rounds"]) == 1 and res["stopped"].startswith("round 0")


# -- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigint_keeps_the_rounds_done_and_exits_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "protocols.cli", "run", "--rounds", "100000", "--clients", "6",
                             "--model", "logreg", "--secagg", "off", "--rule", "fedavg", "--quiet",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:       # let it train a few rounds (start-up takes a few seconds)
        time.sleep(2)
        if proc.poll() is not None:
            break
        if time.time() > deadline - 110:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["interrupted"].startswith("interrupted") and len(res["rounds"]) >= 0
