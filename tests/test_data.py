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
        partition(y, 10, "naturall")


def test_qgroup_bias_and_cover():
    """FLTrust Sec. VI-A: a label-l sample lands in group l with probability q."""
    y = load_dataset("digits").y_train
    for q, lo, hi in ((0.8, 0.72, 0.88), (0.1, 0.05, 0.15)):
        parts = partition(y, 20, "qgroup", q=q, seed=0)
        assert len(parts) == 20 and len(torch.unique(torch.cat(parts))) == len(y) == len(torch.cat(parts))
        # 20 clients in 10 groups of 2: clients 2l, 2l + 1 form group l
        home = sum(int((y[p] == k // 2).sum()) for k, p in enumerate(parts)) / len(y)
        assert lo < home < hi
    with pytest.raises(ValueError, match=r"q=1.5 must lie in \[0, 1\]"):
        partition(y, 20, "qgroup", q=1.5)
    with pytest.raises(ValueError, match="fewer than the 10 groups"):
        partition(y, 5, "qgroup", q=0.5)


def test_natural_takes_largest_users_and_refuses_too_many():
    users = torch.tensor([3, 3, 3, 1, 1, 2, 2, 2, 2, 0])
    y = torch.zeros(10, dtype=torch.long)
    with pytest.warns(UserWarning, match="other users' 3 of 10 training samples are not used"):
        parts = partition(y, 2, "natural", users=users)
    assert [p.tolist() for p in parts] == [[5, 6, 7, 8], [0, 1, 2]]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # every user a client: nothing unused, no warning
        assert len(partition(y, 4, "natural", users=users)) == 4
    with pytest.raises(ValueError, match="n_clients=5 but the data has only 4 users"):
        partition(y, 5, "natural", users=users)
    with pytest.raises(ValueError, match="needs the per-sample users"):
        partition(y, 2, "natural")


def test_auto_partition_follows_the_dataset():
    from protocols.data import resolve_partition
    assert resolve_partition("auto", load_dataset("digits")) == "dirichlet"
    assert resolve_partition("auto", load_dataset("shakespeare")) == "natural"
    assert resolve_partition("iid", load_dataset("digits")) == "iid"
