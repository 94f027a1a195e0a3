import pytest
import torch

from protocols.data import load_dataset, partition


def test_digits_embedded():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert 0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1


def test_synthetic():
    ds = load_dataset("synthetic", seed=3)
    assert ds.x_train.shape[1] == 20 and ds.num_classes == 4


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnistt'.*digits"):
        load_dataset("mnistt")


@pytest.mark.parametrize("scheme,kw", [("iid", {}), ("dirichlet", {"alpha": 0.3}),
                                       ("shards", {"labels_per_client": 2})])
def test_partitions_are_disjoint_and_cover(scheme, kw):
    y = load_dataset("digits").y_train
    parts = partition(y, 20, scheme, seed=1, **kw)
    allix = torch.cat(parts)
    assert len(parts) == 20 and all(len(p) > 0 for p in parts)
    assert len(allix) == len(y) and len(torch.unique(allix)) == len(y)


def test_shards_limit_labels_and_dirichlet_skews():
    y = load_dataset("digits").y_train
    shards = partition(y, 20, "shards", labels_per_client=2, seed=0)
    assert max(len(torch.unique(y[p])) for p in shards) <= 3   # a shard may straddle two labels
    iid = partition(y, 20, "iid", seed=0)
    skew = partition(y, 20, "dirichlet", alpha=0.1, seed=0)

    def mean_labels(parts):
        return sum(len(torch.unique(y[p])) for p in parts) / len(parts)

    assert mean_labels(skew) < mean_labels(iid) - 3


def test_bad_partition_args():
    y = load_dataset("digits").y_train
    with pytest.raises(ValueError, match="alpha"):
        partition(y, 10, "dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="n_clients=5000"):
        partition(y, 5000, "iid")
    with pytest.raises(ValueError, match="unknown partition"):
        partition(y, 10, "natural")
