"""Datasets and partitioners: the ``Dataset`` record, one module per source, the registry.
Imports nothing from fedaudit but itself (torch, numpy, scikit-learn, scipy for SVHN).
"""
from protocols.data.base import Dataset, split_train_test
from protocols.data.embedded import load_digits, load_synthetic
from protocols.data.partition import (PARTITIONERS, partition, partition_dirichlet, partition_iid,
                                      partition_natural, partition_qgroup, partition_shards)
from protocols.data.registry import (DATASETS, RUN_DEFAULT_FIELDS, RUN_FALLBACKS, dataset_run_defaults,
                                     load_dataset, resolve_partition)

__all__ = ["Dataset", "split_train_test", "load_digits", "load_synthetic", "PARTITIONERS", "partition",
           "partition_iid", "partition_dirichlet", "partition_shards", "partition_qgroup", "partition_natural",
           "DATASETS", "RUN_DEFAULT_FIELDS", "RUN_FALLBACKS", "dataset_run_defaults", "load_dataset",
           "resolve_partition"]
