"""Run resources: torch's thread count, and the size check of the complete SecAgg graph."""
import pytest
import torch

from protocols.simulation import RunConfig, make_oracle
from protocols.simulation.base import COMPLETE_GRAPH_MAX_PAIRS, STARTUP_THREADS, apply_threads


def test_apply_threads_explicit_and_automatic(monkeypatch):
    from secagg.keystream import available_cores
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(STARTUP_THREADS)                              # torch's own count: auto applies
        monkeypatch.setattr("os.getloadavg", lambda: (100.0, 0.0, 0.0))      # a crowded machine
        assert apply_threads(None) == 1
        monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))        # an idle one: every core
        assert apply_threads(None) == available_cores()                     # re-evaluated: its own count
        if STARTUP_THREADS > 1:
            torch.set_num_threads(STARTUP_THREADS - 1)                      # a program's own choice stays
            assert apply_threads(None) == STARTUP_THREADS - 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")                          # and the environment's
        torch.set_num_threads(1)
        assert apply_threads(None) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_threads_and_client_batch(bad):
    with pytest.raises(ValueError, match="threads"):
        RunConfig(threads=bad).validate()
    with pytest.raises(ValueError, match="client_batch"):
        RunConfig(client_batch=bad).validate()


def test_complete_graph_refused_where_its_masks_cannot_fit():
    n = 1000
    assert n * (n - 1) // 2 > COMPLETE_GRAPH_MAX_PAIRS
    with pytest.raises(ValueError, match=r"complete graph with 1000 clients expands 499,500 pairwise masks.*"
                                         r"--neighbors auto"):
        make_oracle(RunConfig(secagg="masked", clients=n, threads=1), n)
    # SecAgg+ at the same n, and the complete graph at n = 100, are accepted
    assert make_oracle(RunConfig(secagg="masked", clients=n, neighbors=20, threads=1), n) is not None
    assert make_oracle(RunConfig(secagg="masked", clients=100, threads=1), 100) is not None


def test_make_simulation_sets_the_threads_and_make_oracle_leaves_them():
    from protocols.runner import make_simulation
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        make_oracle(RunConfig(secagg="masked", clients=6, threads=1), 6)
        assert torch.get_num_threads() == 2                      # building an oracle changes nothing
        make_simulation(RunConfig(rounds=1, clients=3, model="logreg", secagg="off", threads=1))
        assert torch.get_num_threads() == 1                      # the run's own count
    finally:
        torch.set_num_threads(before)


def test_reveals_are_kept_only_when_asked():
    # Without secure aggregation every round reveals the [n, d] updates; a copy per round is kept
    # only for an audit (keep_reveals=True), the count of revealed rows always.
    from protocols.simulation import Simulation
    cfg = RunConfig(rounds=2, clients=4, model="logreg", rule="fedavg", secagg="off", threads=1)
    plain, audited = Simulation(cfg), Simulation(cfg, keep_reveals=True)
    plain.run(), audited.run()
    assert [r.updates for r in plain.transcript.reveals] == [None, None]
    assert all(r.updates.shape[0] == 4 for r in audited.transcript.reveals)
    assert plain.transcript.summary() == audited.transcript.summary()
    assert plain.transcript.summary()["server_visible_outputs"] == 2 + 2 * 4      # 2 averages, 8 rows
    assert plain.transcript.calls[-1].output is not None        # the averages stay
    masked = Simulation(RunConfig(rounds=1, clients=4, model="logreg", rule="fedavg", secagg="masked", threads=1))
    masked.run()
    view = masked.transcript.calls[-1].server_view
    assert view["masked_inputs"].shape[1] == 0 and not view["masked_inputs_kept"]
