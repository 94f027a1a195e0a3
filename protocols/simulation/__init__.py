"""The parameter-sharing protocol and what every protocol shares: RunConfig, RoundRecord, the
oracle factory, the protocol registry. Imports secagg, dp and the protocols packages below it
(data, models, clients, rules, attacks); never cronus, experiments, integrations or the CLI."""
from protocols.simulation.base import PROTOCOLS, RoundRecord, make_oracle, partition_pool, register_protocol
from protocols.simulation.config import DP_MODES, SECAGG_MODES, USER_DP_RULES, RunConfig
from protocols.simulation.params import Simulation

__all__ = ["PROTOCOLS", "RoundRecord", "make_oracle", "partition_pool", "register_protocol", "DP_MODES",
           "SECAGG_MODES", "USER_DP_RULES", "RunConfig", "Simulation"]
