"""Flower integration (extra ``flower``): common, client, strategy (fedaudit rules), rfa (RFA over SecAgg+), engine.
May import protocols.simulation and the packages below it, and flwr; never experiments, bench or the CLI."""
import importlib.util
import os

if importlib.util.find_spec("flwr") is None:  # pragma: no cover - only without the extra
    raise ImportError("protocols.integrations.flower needs Flower: pip install -e '.[flower]' "
                      "(flwr[simulation] >= 1.42; Ray is only needed for the simulation engine)")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network from tests and examples; before flwr loads

from protocols.integrations.flower.common import (FlowerSecAgg, check_rfa_config, replay_generator,  # noqa: E402
                                                  rfa_client_weight)
from protocols.integrations.flower.client import FedauditNumPyClient, make_client_app  # noqa: E402
from protocols.integrations.flower.engine import InProcessGrid  # noqa: E402
from protocols.integrations.flower.strategy import FedauditStrategy, run_strategy  # noqa: E402
from protocols.integrations.flower.rfa import FlowerRFAResult, RFASecAggPlusWorkflow, run_rfa  # noqa: E402

__all__ = ["FlowerSecAgg", "FedauditStrategy", "RFASecAggPlusWorkflow", "FedauditNumPyClient",
           "InProcessGrid", "replay_generator", "rfa_client_weight", "make_client_app", "run_rfa", "run_strategy",
           "FlowerRFAResult", "check_rfa_config"]
