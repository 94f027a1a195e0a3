"""Flower integration (protocols.integrations.flower): the strategy adapter, RFA over Flower's SecAgg+,
and equality with fedaudit's own simulation. Needs the optional extra ``flower``."""
import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

from protocols.integrations import flower as F  # noqa: E402
from protocols.integrations.flower.common import to_flat, unflatten  # noqa: E402
from protocols.rules import make_rule  # noqa: E402
from protocols.clients import batch_schedule  # noqa: E402
from protocols.models import flat_params  # noqa: E402
from protocols.simulation import RunConfig, Simulation  # noqa: E402
from secagg import ClientUpdates, SecureAggregationViolation  # noqa: E402

SHAPES = [(3, 2), (2,)]


def _fitres(flat, n):
    arrays = unflatten(np.asarray(flat, dtype=np.float32), SHAPES)
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(n), {})


def _setup(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(8, generator=g)
    models = init + 0.3 * torch.randn(n, 8, generator=g)
    models[-1] += 5.0                        # one outlier, so robust rules differ from the mean
    counts = torch.arange(1, n + 1, dtype=torch.float32) * 10
    return init, models, counts


@pytest.mark.parametrize("rule,args", [("fedavg", {}), ("krum", {"f": 1}), ("median", {})])
def test_strategy_applies_the_rule_to_revealed_deltas(rule, args):
    init, models, counts = _setup()
    strat = F.FedauditStrategy(rule, args, initial_parameters=unflatten(init.numpy(), SHAPES), min_clients=5)
    params, metrics = strat.aggregate_fit(1, [(None, _fitres(m, c)) for m, c in zip(models, counts)], [])
    got = torch.as_tensor(to_flat(parameters_to_ndarrays(params)))
    expect = init + make_rule(rule, **args)(ClientUpdates(models - init, num_samples=counts))
    assert torch.allclose(got, expect, atol=1e-6)
    assert metrics["clients"] == 5 and strat.transcript.reveals   # the server held every update


def test_strategy_refuses_rules_that_need_individual_updates_under_secaggplus():
    init, _, _ = _setup()
    with pytest.raises(ValueError, match="individual client updates"):
        F.FedauditStrategy("krum", {"f": 1}, initial_parameters=[init.numpy()], secure=True)


def test_strategy_under_secaggplus_uses_the_one_average_and_refuses_more():
    init, models, counts = _setup()
    avg = (counts[:, None] * models).sum(0) / counts.sum()   # what SecAggPlusWorkflow hands over
    results = [(None, _fitres(avg, c)) for c in counts]
    strat = F.FedauditStrategy("fedavg", initial_parameters=unflatten(init.numpy(), SHAPES), secure=True)
    params, _ = strat.aggregate_fit(1, results, [])
    assert torch.allclose(torch.as_tensor(to_flat(parameters_to_ndarrays(params))), avg, atol=1e-6)
    assert not strat.transcript.reveals
    rfa = F.FedauditStrategy("rfa", initial_parameters=unflatten(init.numpy(), SHAPES), secure=True)
    with pytest.raises(SecureAggregationViolation, match="one num_examples-weighted average"):
        rfa.aggregate_fit(1, results, [])


def test_secagg_parameters_refuse_a_sum_that_can_wrap():
    assert F.FlowerSecAgg().q(5) * 5 < 2 ** 32
    with pytest.raises(ValueError, match="would wrap"):
        F.FlowerSecAgg(quantization_range=2 ** 30).q(5)
    with pytest.raises(ValueError, match="int32"):
        F.FlowerSecAgg(quantization_range=2 ** 31, modulus_range=2 ** 40).q(2)
    with pytest.raises(ValueError, match="power of two"):
        F.FlowerSecAgg(modulus_range=1000)


def test_check_rfa_config_names_what_flower_cannot_reproduce():
    with pytest.raises(ValueError, match="weight_bound"):
        F.check_rfa_config(RunConfig(clients=4, rule="rfa", secagg="quantized"))
    with pytest.raises(ValueError, match="rule='fedavg'"):
        F.check_rfa_config(RunConfig(clients=4, rule="fedavg", rule_args={}, secagg="quantized"))


def test_replay_generator_gives_each_client_the_simulation_batches():
    sizes, epochs, bs = [7, 12, 5, 9], 2, 4
    parts = [torch.arange(s) + 100 * k for k, s in enumerate(sizes)]
    g = torch.Generator().manual_seed(3)
    batch_schedule(parts, epochs, bs, g)                      # round 0
    full, _ = batch_schedule(parts, epochs, bs, g)            # round 1, all clients together
    for k in range(len(sizes)):
        own, _ = batch_schedule([parts[k]], epochs, bs, F.replay_generator(3, sizes, epochs, 1, k))
        assert torch.equal(own[0, :own.shape[1]], full[k, :own.shape[1]])


def test_client_refuses_inputs_flower_would_clip():
    client = F.FedauditNumPyClient(sim=None, client=0, context=None)   # the check needs no data
    with pytest.raises(ValueError, match="clip it silently"):
        client._payload(torch.tensor(1.0), torch.tensor([0.5, -3.0]), clip=1.0)


def test_client_without_this_rounds_update_refuses_a_weiszfeld_call():
    from types import SimpleNamespace
    from flwr.app import Context, RecordDict
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    client = F.FedauditNumPyClient(SimpleNamespace(client_indices=[torch.arange(10)]), 0, ctx)
    config = {"fedaudit-stage": "rfa-w", "fedaudit-round": 2, "fedaudit-clip": 1.0,
              "fedaudit-max-examples": 100.0, "fedaudit-nu": 1e-2}
    with pytest.raises(ValueError, match="no update for round 2"):
        client.fit([np.zeros(3, dtype=np.float32)], config)


def test_secaggplus_in_process_returns_the_mean_to_its_quantum():
    """One run of Flower's own SecAggPlusWorkflow + secaggplus_mod through InProcessGrid."""
    from protocols.bench.flower import _flower_round  # the bench's harness checks the sum itself
    x = np.random.default_rng(0).uniform(-1, 1, size=(5, 50))
    out = {}
    times = _flower_round(5, 50, 2, 2, x, repeats=1, out=out)
    assert set(times) == {"setup", "share keys", "collect masked vectors", "unmask", "total"}
    assert out["survivors"] == 5
    # the mean of 5 inputs, each rounded stochastically to the quantum 2c/Q (c = 1)
    assert np.abs(out["result"] - x.mean(axis=0)).max() <= 2.0 / out["q"]


@pytest.mark.slow
def test_strategy_in_a_flower_run_equals_the_simulation():
    """Flower's default fit workflow (no secure aggregation) with Krum through the adapter,
    clients running fedaudit's local training: the same model as Simulation(secagg="off")."""
    cfg = RunConfig(dataset="digits", clients=5, rounds=2, partition="iid", rule="krum", rule_args={"f": 1},
                    secagg="off", seed=1)
    strat = F.run_strategy(cfg, engine="inprocess")
    sim = Simulation(cfg)
    sim.run()
    ref = flat_params(sim.model).cpu()
    assert torch.allclose(strat.global_flat, ref, atol=1e-5)
    assert float((strat.global_flat - sim.global_history[0].cpu()).abs().max()) > 1e-2   # it trained
    assert len(strat.transcript.reveals) == cfg.rounds


def _rfa_cfg(rounds):
    return RunConfig(dataset="digits", clients=5, rounds=rounds, partition="iid", rule="rfa",
                     rule_args={"nu": 1e-2, "max_calls": 2, "weight_bound": "nu"},
                     secagg="quantized", bits=64, clip=1.0, seed=0)


@pytest.mark.slow
def test_flower_simulation_equals_fedaudit_simulation_to_the_quantization_bound():
    """Flower's simulation engine (Ray), RFA with each Weiszfeld call one SecAgg+ run, against
    Simulation(secagg="quantized", 64-bit) with the same seed, partitions and local training.

    Per round the server-visible bound on the aggregate's error is n * res * (1 + |v|) /
    (sum u - n * res) (res = 2c/Q, Flower's quantum; the 64-bit oracle's is ~1e-18). Round 1
    starts from the same model, so its difference must lie within its bound plus float32
    rounding (1e-6). Later rounds start from models that differ by earlier rounds' errors,
    which local training carries forward (not expanded by more than 2x here: a few SGD
    steps at lr 0.05); the final model must lie within twice the sum of the bounds plus 1e-6.
    """
    cfg = _rfa_cfg(rounds=2)
    res = F.run_rfa(cfg, secagg=F.FlowerSecAgg(clipping_range=cfg.clip), engine="simulation")
    sim = Simulation(cfg)
    sim.run()
    bounds = [h["aggregate_error_bound"] for h in res.history]
    assert all(0 < b < 1e-5 for b in bounds)
    d1 = float((res.global_history[1] - sim.global_history[1].cpu()).abs().max())
    assert d1 <= bounds[0] + 1e-6
    final = float((res.global_params - flat_params(sim.model).cpu()).abs().max())
    tol = 2 * sum(bounds) + 1e-6
    assert final <= tol
    # The check can fail: the same run with FedAvg instead of RFA lands far outside it.
    other = Simulation(RunConfig(**{**cfg.to_dict(), "rule": "fedavg", "rule_args": {}}))
    other.run()
    assert float((res.global_params - flat_params(other.model).cpu()).abs().max()) > 100 * tol
    assert all(c["survivors"] == cfg.clients for h in res.history for c in h["calls"])


@pytest.mark.slow
def test_example_runs_in_process():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "flower_rfa.py"
    spec = importlib.util.spec_from_file_location("flower_rfa", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res, sim = mod.main(["--rounds", "1", "--calls", "1", "--engine", "inprocess"])
    assert abs(res.test_accuracy - sim.history[-1].test_accuracy) <= 1.0 / len(sim.data.y_test) + 1e-12
