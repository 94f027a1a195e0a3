"""examples/cronus_tables.py reproduces the shapes of the Cronus appendix's Tables 5 and 6 (slow).

Margins come from the measurements in docs/cronus.md (small preset, seed 0), set well inside
them and where the mechanism makes them hold: the server of Cronus sees predictions on
public data (or a robust mean of them), never a model fitted to the members; RobustFilter
removes the prediction vectors that lie far out along the top eigenvector.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load():
    spec = importlib.util.spec_from_file_location("cronus_tables", EXAMPLES / "cronus_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_table6_shape(one_thread):
    rows = _load().table6("small")
    acc = {(r["system"], r["adv_reg"], r["view"], r["attack"]): r["accuracy"] for r in rows}
    plain, reg = 0.0, 3.0
    # measured (docs/cronus.md): loss attack, passive: FedAvg 82.1 / 76.3, Cronus 67.0 / 56.6 (individual /
    # aggregate). Cronus's server sees predictions on public data, never a model fitted to the members.
    assert acc[("cronus", plain, "aggregate", "loss")] < 0.62
    assert acc[("cronus", plain, "aggregate", "loss")] < acc[("fedavg", plain, "aggregate", "loss")] - 0.1
    assert acc[("cronus", plain, "individual", "loss")] < acc[("fedavg", plain, "individual", "loss")] - 0.08
    # active: the ascent raises the loss drop of FedAvg's aggregate (members' owners descend on them;
    # measured +6.8 points) but Cronus's views by at most 1.7 points (the parties never see the targets'
    # ascended loss, only labels on public data)
    assert acc[("fedavg", plain, "active-aggregate", "loss_drop")] > \
        acc[("fedavg", plain, "aggregate", "loss_drop")] + 0.03
    for v in ("individual", "aggregate"):
        for a in ("loss", "loss_drop"):
            assert acc[("cronus", plain, f"active-{v}", a)] <= acc[("cronus", plain, v, a)] + 0.03
    # adversarial regularization (lambda = 3) lowers FedAvg's leakage (measured 82.1 -> 59.9, 76.3 -> 58.2)
    for v in ("individual", "aggregate"):
        assert acc[("fedavg", reg, v, "loss")] < acc[("fedavg", plain, v, "loss")] - 0.1


@pytest.mark.slow
def test_table5_shape(one_thread):
    ex = _load()
    rob = ex.robustness(ex.table5("small", systems=("cronus", "fedavg")))
    # the strongest attack of the four costs Cronus little (measured: robustness 1.00, benign 85.9%);
    # the same attacks break FedAvg (PAF/OFOM: 10.0% of 90.8%)
    assert rob["cronus"]["robustness"] > 0.9
    assert rob["cronus"]["benign"] > 0.8
    assert rob["fedavg"]["robustness"] < 0.5
