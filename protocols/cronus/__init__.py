"""Cronus (Chang et al. 2019): the prediction-sharing protocol, its batched RobustFilter and its
membership views next to FedAvg's. Imports the simulation machinery and the packages below it."""
from protocols.cronus.audit import VIEWS, audit_cronus_and_fedavg, private_dataset
from protocols.cronus.robustfilter import robustfilter_batched, soft_cross_entropy
from protocols.cronus.simulation import (AGGREGATORS, CronusParams, CronusSimulation,
                                         RobustFilterUnderSecureAggregation)

__all__ = ["CronusParams", "CronusSimulation", "AGGREGATORS", "RobustFilterUnderSecureAggregation",
           "robustfilter_batched", "soft_cross_entropy", "VIEWS", "audit_cronus_and_fedavg", "private_dataset"]
