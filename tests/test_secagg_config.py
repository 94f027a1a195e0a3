"""The run configuration's secure-aggregation options: ``--neighbors auto``, the bound's
``--corrupt-fraction`` / ``--dropout-fraction``, and how the run's own poisoning fraction
(``--corrupt``) sets the threat model the masked oracle must tolerate."""
import argparse

import pytest

from protocols.experiments.options import add_run_options, config_from_args
from protocols.simulation import RunConfig, make_oracle


def _parse(*argv):
    p = argparse.ArgumentParser()
    add_run_options(p)
    return config_from_args(p.parse_args(list(argv)))


def test_cli_accepts_auto_and_the_fractions():
    cfg = _parse("--neighbors", "auto", "--corrupt-fraction", "0.2", "--dropout-fraction", "0.15")
    assert (cfg.neighbors, cfg.corrupt_fraction, cfg.dropout_fraction) == ("auto", 0.2, 0.15)
    assert _parse("--neighbors", "6").neighbors == 6 and _parse().neighbors is None
    with pytest.raises(SystemExit):
        _parse("--neighbors", "sparse")


def test_the_oracle_tolerates_at_least_the_runs_own_corruption():
    oracle = make_oracle(RunConfig(neighbors="auto", corrupt=0.25, attack="negate"), 20)
    assert oracle.neighbors == "auto" and oracle.corrupt_fraction == 0.25     # max(0.1, rho)
    assert make_oracle(RunConfig(), 20).corrupt_fraction == 0.1 and make_oracle(RunConfig(), 20).threshold is None
    assert make_oracle(RunConfig(corrupt_fraction=0.3, corrupt=0.2, attack="negate"), 20).corrupt_fraction == 0.3
    assert make_oracle(RunConfig(dropout_fraction=0.2), 20).dropout_fraction == 0.2
    assert not make_oracle(RunConfig(), 20).insecure_reproducible


@pytest.mark.parametrize("bad, match", [
    (dict(neighbors="sparse"), "neighbors"),
    (dict(neighbors=0), "neighbors"),
    (dict(corrupt_fraction=1.0), "corrupt_fraction"),
    (dict(dropout_fraction=-0.1), "dropout_fraction"),
    (dict(corrupt=0.3, attack="negate", corrupt_fraction=0.2), "below the run's corrupt"),
    (dict(dropout_rate=0.3, dropout_fraction=0.1), "below dropout_rate"),
])
def test_bad_secagg_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**bad).validate()
