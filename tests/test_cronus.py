"""Cronus (protocols.cronus): batched RobustFilter, the secure-aggregation boundary,
prediction-level poisoning, and the `fedaudit run --protocol cronus` interface."""
import json

import pytest
import torch

from protocols.rules import make_rule
from protocols.cli import main
from protocols.cronus import CronusSimulation, robustfilter_batched
from protocols.runner import make_simulation
from protocols.simulation import RunConfig
from secagg import ClientUpdates, SecureAggregationViolation

TINY = dict(protocol="cronus", dataset="digits", clients=6, partition="iid", model="logreg", rounds=2,
            secagg="off", batch_size=32)
TINY_ARGS = dict(public_size=120, init_epochs=1, student_epochs=1)


def tiny(**kw):
    args = {**TINY_ARGS, **kw.pop("protocol_args", {})}
    return RunConfig(**{**TINY, **kw, "protocol_args": args})


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_batched_robustfilter_is_the_rule_applied_per_example(threshold):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(7, 10, 4, generator=g)
    x[:, :2] += 3 * torch.rand(7, 2, 4, generator=g)   # two outliers per set
    x[5] *= 0.01                                         # a tight set: the threshold stops it early
    rule = make_rule("robustfilter", epsilon=0.3, iterations=2, threshold=threshold)
    expect = torch.stack([rule(ClientUpdates(x[b])) for b in range(x.shape[0])])
    got, kept = robustfilter_batched(x, 0.3, 2, threshold)
    assert torch.allclose(got, expect, atol=1e-6)
    assert kept.shape == (7, 10)
    # eps = 0.3 of n = 10: round(1.5) = 2 removed per iteration, 4 in all (unless stopped early)
    assert (kept.sum(1)[[0, 1, 2, 3, 4, 6]] == 6).all()
    assert not kept[[0, 1, 2, 3, 4, 6], :2].any()        # the outliers are the ones removed
    assert int(kept[5].sum()) == (10 if threshold else 6)


def test_batched_robustfilter_rejects_bad_input():
    with pytest.raises(ValueError, match="leaves none"):
        robustfilter_batched(torch.rand(2, 4, 3), 0.9, 2)
    with pytest.raises(ValueError, match=r"\[B, n, k\]"):
        robustfilter_batched(torch.rand(4, 3), 0.2)
    bad = torch.rand(2, 5, 3)
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        robustfilter_batched(bad, 0.2)


def test_robustfilter_on_predictions_refuses_secure_aggregation():
    with pytest.raises(SecureAggregationViolation, match="aggregator=mean"):
        CronusSimulation(tiny(secagg="quantized", protocol_args={"aggregator": "robustfilter"}))
    # left unset, the aggregator is RobustFilter without secure aggregation and the mean under it
    assert CronusSimulation(tiny()).params.aggregator == "robustfilter"
    assert CronusSimulation(tiny(secagg="quantized")).params.aggregator == "mean"
    # the refusal is also ClientUpdates.reveal()'s, whatever path reaches it
    sim = CronusSimulation(tiny())
    sim.secure = True
    with pytest.raises(SecureAggregationViolation, match="secure aggregation is on"):
        sim.aggregate(sim.predictions())


def test_fedavg_on_predictions_runs_through_the_oracle_under_secagg():
    sim = make_simulation(tiny(secagg="quantized", protocol_args={"aggregator": "mean"}))
    sim.run()
    res = sim.result()
    assert [r.oracle_calls for r in sim.history] == [1, 1]
    assert res["transcript"]["calls"] == 2 and res["transcript"]["individual_reveals"] == 0
    # the quantized mean equals the plaintext weighted mean of what was shared (encoding error only)
    shared, counts = sim.shared_history[-1], sim._counts()
    plain = (shared * counts[:, None, None]).sum(0) / counts.sum()
    assert torch.allclose(sim.aggregate_history[-1], plain, atol=1e-4)


def test_run_from_the_command_line(tmp_path, capsys):
    rc = main(["run", "--protocol", "cronus", "--secagg", "off", "--clients", "6", "--rounds", "2", "--model",
               "logreg", "--partition", "iid", "--protocol-arg", "public_size=120", "--protocol-arg",
               "init_epochs=1", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert len(res["rounds"]) == 2 and res["final"]["test_accuracy"] == res["rounds"][-1]["test_accuracy"]
    assert res["cronus"]["params"]["aggregator"] == "robustfilter" and res["transcript"]["individual_reveals"] == 2
    assert "final test accuracy" in capsys.readouterr().out
    # RobustFilter asked for under the default secagg (masked): one clear line, no traceback
    assert main(["run", "--protocol", "cronus", "--rounds", "1", "--quiet", "--protocol-arg",
                 "aggregator=robustfilter"]) == 2
    assert "aggregator=mean" in capsys.readouterr().err


def test_presets_fill_only_what_is_left_unset():
    p = CronusSimulation(tiny()).params          # digits: the preset
    assert (p.init_lr, p.lr, p.public_lr, p.public_epochs) == (5e-3, 5e-4, 0.1, 3)
    p = CronusSimulation(tiny(protocol_args={"public_lr": 0.01, "init_lr": 1e-3})).params
    assert (p.init_lr, p.public_lr, p.public_epochs) == (1e-3, 0.01, 3)
    p = CronusSimulation(tiny(protocol_args={"public_optimizer": "adam"})).params
    assert (p.public_lr, p.public_epochs) == (1e-3, 1)        # the presets are SGD recipes
    p = CronusSimulation(tiny(dataset="purchase", model="fc-purchase-small")).params
    assert (p.init_lr, p.lr, p.public_lr, p.public_epochs) == (5e-4, 5e-4, 1e-3, 1)   # the paper's D.1
    sim = CronusSimulation(tiny())
    assert sim.private_opts[0].param_groups[0]["lr"] == 5e-3
    sim.initialize()
    assert sim.private_opts[0].param_groups[0]["lr"] == 5e-4      # the collaboration phase


def test_an_aborted_round_trains_privately_and_is_recorded():
    from secagg import SecureAggregationAborted
    sim = make_simulation(tiny(secagg="quantized", rounds=3))
    real = sim.aggregate

    def flaky(shared):
        if sim.transcript.round == 1:
            raise SecureAggregationAborted("only 2 of 6 clients remain")
        return real(shared)

    sim.aggregate = flaky
    sim.run()
    assert [r.aborted is not None for r in sim.history] == [False, True, False]
    assert len(sim.aggregate_history) == 2 and sim.result()["aborted_rounds"] == [1]
    stop = make_simulation(tiny(secagg="quantized", rounds=3, on_abort="stop"))
    stop.aggregate = lambda shared: (_ for _ in ()).throw(SecureAggregationAborted("too few"))
    stop.run()
    assert len(stop.history) == 1 and "too few" in stop.result()["stopped"]


def test_public_set_is_disjoint_from_the_parties():
    sim = CronusSimulation(tiny(client_holdout=0.5, adv_reg=1.0))
    used = torch.cat(sim.client_indices + sim.client_holdout)
    assert len(set(used.tolist())) == len(used)
    assert not set(used.tolist()) & set(sim.public_indices.tolist())
    assert len(sim.public_indices) == 120


@pytest.mark.parametrize("kw, match", [
    (dict(protocol_args={"public_sise": 10}), "unknown cronus protocol argument"),
    (dict(protocol_args={"aggregator": "krum"}), "aggregator='krum'"),
    (dict(protocol_args={"public_size": 5000}), "public_size=5000"),
    (dict(dp="record", noise_multiplier=1.0), "not supported"),
    (dict(adv_reg=1.0), "client-holdout"),
    (dict(clients_per_round=3), "every party"),
])
def test_bad_configurations_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        CronusSimulation(tiny(**kw))


def _poisoned(attack, aggregator, **attack_args):
    sim = CronusSimulation(tiny(attack=attack, corrupt=0.34, attack_args=attack_args,
                                protocol_args={"aggregator": aggregator}))
    sim.initialize()
    preds = sim.predictions()
    shared, _ = sim._poison(preds)
    return sim, preds, shared


def test_label_flip_on_predictions_moves_each_class_mass_to_its_flip():
    sim, preds, shared = _poisoned("labelflip", "robustfilter")
    bad = sim.corrupted.tolist()
    assert len(bad) == 2
    for k in range(6):
        expect = preds[k].flip(1) if k in bad else preds[k]     # l -> 9 - l
        assert torch.allclose(shared[k], expect)


def test_paf_destroys_the_mean_of_predictions_and_robustfilter_removes_it():
    sim, preds, shared = _poisoned("paf", "mean", magnitude=10.0)
    bad = sim.corrupted
    honest = preds[[k for k in range(6) if k not in bad.tolist()]]
    assert torch.allclose(shared[bad], honest.mean(0) + 10.0)   # eq. (8) on prediction vectors
    agg_mean, _ = sim.aggregate(shared)
    assert (agg_mean - honest.mean(0)).abs().min() > 2.0
    rf = CronusSimulation(tiny(attack="paf", corrupt=0.34))     # filter epsilon = the corruption level
    agg_rf, _ = rf.aggregate(shared)
    assert not rf.last_kept[:, bad].any()
    assert rf.last_kept.sum(1).eq(4).all()


@pytest.mark.parametrize("attack", ["lie", "ofom"])
def test_update_attacks_run_on_prediction_vectors(attack):
    sim, preds, shared = _poisoned(attack, "robustfilter")
    bad = sim.corrupted
    assert shared.shape == preds.shape and not torch.allclose(shared[bad], preds[bad])
    good = [k for k in range(6) if k not in bad.tolist()]
    assert torch.equal(shared[good], preds[good])
    sim.step(0)
    assert sim.history[0].corrupted == 2 and torch.isfinite(sim.aggregate_history[0]).all()


def test_same_seed_same_run():
    a, b = make_simulation(tiny()), make_simulation(tiny())
    a.run()
    b.run()
    assert [r.test_accuracy for r in a.history] == [r.test_accuracy for r in b.history]
    assert torch.equal(a.aggregate_history[-1], b.aggregate_history[-1])
    # the server's model on predictions is a function of its inputs (audits rely on it)
    assert torch.equal(a.train_student(a.aggregate_history[-1]), b.train_student(b.aggregate_history[-1]))
