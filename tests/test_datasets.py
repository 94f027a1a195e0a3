"""On-disk loaders (tiny files written in each format, and a bad file each) and the
embedded Shakespeare and Purchase-style datasets."""
import gzip
import json
import pickle

import numpy as np
import pytest
import torch

from protocols.data import load_dataset, partition
from protocols.data.disk import read_idx
from protocols.data.shakespeare import ALPHABET, OOV, build_examples, encode, parse_play


# --------------------------------------------------------------------------- IDX (MNIST family)

def _idx(path, arr, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    (gzip.open if gz else open)(path, "wb").write(head + arr.tobytes())


def _write_mnist(folder, n_train=12, n_test=5, gz=False, prefix="", test="t10k", side=28, n_cls=10):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), (test, n_test)):
        _idx(folder / f"{prefix}{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, side, side)), gz)
        _idx(folder / f"{prefix}{split}-labels-idx1-ubyte{suffix}", np.arange(n) % n_cls, gz)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, name, gz):
    _write_mnist(tmp_path, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.num_classes == 10 and ds.y_train.tolist() == [k % 10 for k in range(12)]
    assert 0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert torch.allclose(ds.x_train[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))


def test_mnist_bad_files(tmp_path):
    _write_mnist(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:-2])                     # truncated
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*header says shape \(12,\)"):
        load_dataset("mnist", data_dir=tmp_path)
    _idx(p, np.arange(11) % 10)                            # one label short
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    _idx(p, np.full(12, 10))                               # label out of range
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        load_dataset("mnist", data_dir=tmp_path)
    p.write_bytes(b"\x1f\x8b not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    _idx(p, np.arange(12) % 10)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("mnist")


def test_emnist_idx_transposed(tmp_path):
    _write_mnist(tmp_path, prefix="emnist-letters-", test="test", n_cls=27)
    ds = load_dataset("emnist", data_dir=tmp_path, split="letters")
    raw = read_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte")
    assert ds.num_classes == 27 and ds.x_train.shape == (12, 1, 28, 28)
    assert torch.allclose(ds.x_train[3, 0], torch.from_numpy(raw[3].T.astype(np.float32) / 255))
    with pytest.raises(ValueError, match="split='nope'"):
        load_dataset("emnist", data_dir=tmp_path, split="nope")


# --------------------------------------------------------------------------- LEAF JSON

def _leaf(folder, split, users, make_x, make_y, n_per=3):
    (folder / split).mkdir(parents=True, exist_ok=True)
    blob = {"users": users, "num_samples": [n_per] * len(users),
            "user_data": {u: {"x": [make_x(k, i) for i in range(n_per)], "y": [make_y(k, i) for i in range(n_per)]}
                          for k, u in enumerate(users)}}
    (folder / split / "all_data_0.json").write_text(json.dumps(blob))
    return blob


def test_femnist_leaf_json_natural_clients(tmp_path):
    px = lambda k, i: [((k + i) % 5) / 5.0] * 784            # noqa: E731
    _leaf(tmp_path, "train", ["f0001", "f0002", "f0003"], px, lambda k, i: (k * 7 + i) % 62, n_per=4)
    _leaf(tmp_path, "test", ["f0001", "f0002", "f0003"], px, lambda k, i: i, n_per=2)
    ds = load_dataset("femnist", data_dir=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.num_classes == 62 and len(ds.y_test) == 6
    assert ds.meta["user_names"] == ["f0001", "f0002", "f0003"]
    parts = partition(ds.y_train, 3, "natural", users=ds.meta["users_train"])
    assert sorted(len(p) for p in parts) == [4, 4, 4]
    for p in parts:                                            # one writer per client
        assert len(torch.unique(ds.meta["users_train"][p])) == 1
    blob = json.loads((tmp_path / "train" / "all_data_0.json").read_text())
    blob["user_data"]["f0002"]["x"][1] = [0.5] * 783
    (tmp_path / "train" / "all_data_0.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError, match="784 pixel values"):
        load_dataset("femnist", data_dir=tmp_path)
    blob["num_samples"][0] = 9
    (tmp_path / "train" / "all_data_0.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError, match=r"all_data_0.json: user 'f0001' has 4 x, 4 y, num_samples=9"):
        load_dataset("femnist", data_dir=tmp_path)
    (tmp_path / "train" / "all_data_0.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a LEAF JSON file"):
        load_dataset("femnist", data_dir=tmp_path)


def test_sent140_bag_of_words(tmp_path):
    words = ["good", "bad", "happy", "sad"]

    def tweet(k, i):
        return ["id", "date", "NO_QUERY", f"user{k}", f"so {words[(k + i) % 4]} today"]

    _leaf(tmp_path, "train", ["u1", "u2"], tweet, lambda k, i: (k + i) % 2, n_per=4)
    _leaf(tmp_path, "test", ["u1", "u3"], lambda k, i: f"{words[i % 4]} day", lambda k, i: i % 2, n_per=2)
    ds = load_dataset("sent140", data_dir=tmp_path, vocab_size=5)
    vocab = ds.meta["vocabulary"]
    assert ds.num_classes == 2 and ds.x_train.shape == (8, 5) and vocab[:2] == ["so", "today"]
    row = ds.x_train[0]
    assert row[vocab.index("so")] == 1 and row.sum() == 3      # so, <word>, today
    assert ds.meta["user_names"] == ["u1", "u2", "u3"]
    assert ds.meta["users_test"].tolist() == [0, 0, 2, 2]
    _leaf(tmp_path, "train", ["u1"], tweet, lambda k, i: 4, n_per=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        load_dataset("sent140", data_dir=tmp_path)
    _leaf(tmp_path, "train", ["u1"], lambda k, i: [1, 2], lambda k, i: 0, n_per=2)
    with pytest.raises(ValueError, match="tweet string"):
        load_dataset("sent140", data_dir=tmp_path)


# --------------------------------------------------------------------------- CIFAR-10, SVHN

def _cifar(folder, n=4, bad=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        if bad == name:
            d[b"data"] = d[b"data"][:, :3000]
        pickle.dump(d, open(folder / name, "wb"))


def test_cifar10_pickle(tmp_path):
    _cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"))[b"data"]
    assert torch.allclose(ds.x_train[0, 1], torch.from_numpy(raw[0, 1024:2048].reshape(32, 32) / 255).float())
    _cifar(tmp_path / "bad", bad="data_batch_3")
    with pytest.raises(ValueError, match=r"data_batch_3: data must be uint8 \[n, 3072\]"):
        load_dataset("cifar10", data_dir=tmp_path / "bad")
    (tmp_path / "bad" / "test_batch").unlink()
    _cifar(tmp_path / "bad")
    (tmp_path / "bad" / "test_batch").unlink()
    with pytest.raises(ValueError, match="missing .*test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "bad")


def test_svhn_mat(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(2)
    for name, n in (("train_32x32.mat", 6), ("test_32x32.mat", 3)):
        savemat(tmp_path / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                  "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})
    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.y_train.tolist() == [1, 2, 3, 4, 5, 6]
    assert ds.y_test.tolist() == [1, 2, 3]
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [11]])})
    with pytest.raises(ValueError, match=r"test_32x32.mat: SVHN labels must lie in 1..10"):
        load_dataset("svhn", data_dir=tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3), np.uint8), "y": np.array([[1]])})
    with pytest.raises(ValueError, match=r"X must have shape \[32, 32, 3, n\]"):
        load_dataset("svhn", data_dir=tmp_path)


# --------------------------------------------------------------------------- Purchase

def test_purchase100_file(tmp_path):
    rng = np.random.default_rng(3)
    y = np.arange(1, 101).repeat(2)
    x = rng.integers(0, 2, (200, 600))
    np.savetxt(tmp_path / "dataset_purchase", np.c_[y, x], fmt="%d", delimiter=",")
    ds = load_dataset("purchase100", data_dir=tmp_path, test_fraction=0.5)
    assert ds.num_classes == 100 and ds.input_shape == (600,) and len(ds.y_train) == 100
    assert int(ds.y_train.min()) == 0 and int(ds.y_train.max()) == 99
    np.savetxt(tmp_path / "dataset_purchase", np.c_[y, x[:, :599]], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="601 columns, got 600"):
        load_dataset("purchase100", data_dir=tmp_path)
    np.savetxt(tmp_path / "dataset_purchase", np.c_[y - 1, x], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match=r"labels must lie in 1..100, found \[0, 99\]"):
        load_dataset("purchase100", data_dir=tmp_path)


def test_purchase_generated_is_reproducible():
    a, b = load_dataset("purchase", seed=1, n_samples=1000), load_dataset("purchase", seed=1, n_samples=1000)
    assert a.x_train.shape == (800, 600) and a.num_classes == 100
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert set(torch.unique(a.x_train).tolist()) == {0.0, 1.0}
    assert not torch.equal(a.x_train, load_dataset("purchase", seed=2, n_samples=1000).x_train)
    assert a.meta["default_model"] == "fc-purchase"


# --------------------------------------------------------------------------- Shakespeare

PLAY = """THE TRAGEDY OF TESTING

Persons Represented

ALPHA, a king.
BETA.

ACT I.

SCENE I. A hall.

[Enter ALPHA and BETA.]

ALPHA.
Who goes there? [Aside.] Speak!
Stand and unfold.

Beta.
Long live the king!

[Exit ALPHA.]

I am alone now.

SCENE II. Elsewhere.

GAMMA
A third voice,
without a period.
"""


def test_parse_play_speakers_and_directions():
    roles = parse_play(PLAY)
    assert roles == {"ALPHA": ["Who goes there? Speak! Stand and unfold."],
                     "BETA": ["Long live the king!", "I am alone now."],
                     "GAMMA": ["A third voice, without a period."]}
    with pytest.raises(ValueError, match=r"sonnet.txt: no 'ACT I' heading"):
        parse_play("Shall I compare thee\nto a summer's day?\n", "sonnet.txt")


def test_windows_next_char_and_time_split():
    text = "".join(ALPHABET[(3 * k) % 60 + 10] for k in range(400))
    ex = build_examples({"p": {"A": [text]}}, seq_len=10, stride=1, test_fraction=0.25)
    ids = encode(text)
    assert ex["x_train"].shape == (290, 10) and (ex["x_train"][5] == ids[5:15]).all() and ex["y_train"][5] == ids[15]
    assert ex["x_test"][0].tolist() == ids[300:310].tolist()          # test windows start after the cut
    assert encode("a~b").tolist() == [ALPHABET.index("a"), OOV, ALPHABET.index("b")]


def test_shakespeare_embedded_and_folder(tmp_path):
    ds = load_dataset("shakespeare")
    assert ds.input_shape == (80,) and ds.x_train.dtype == torch.long and ds.num_classes == len(ALPHABET) + 1
    assert ds.meta["default_model"] == "charlstm-small" and ds.meta["default_partition"] == "natural"
    assert len(ds.meta["user_names"]) >= 40 and ds.meta["users_train"].shape == ds.y_train.shape
    assert 0.1 < ds.meta["majority_baseline_test"] < 0.3       # the space character
    parts = partition(ds.y_train, 20, "natural", users=ds.meta["users_train"])
    assert len(parts) == 20 and len(torch.unique(torch.cat(parts))) == sum(len(p) for p in parts)
    with pytest.raises(ValueError, match="only 78 users|--clients <="):
        partition(ds.y_train, 10 ** 4, "natural", users=ds.meta["users_train"])
    long_play = PLAY.replace("Long live the king!", "Long live the king! " * 30)
    (tmp_path / "test_gut.txt").write_text(long_play)
    (tmp_path / "sonnets_gut.txt").write_text("I\n\nShall I compare thee\n")
    with pytest.warns(UserWarning, match="sonnets_gut.txt"):
        small = load_dataset("shakespeare", data_dir=tmp_path, seq_len=20)
    assert small.meta["user_names"] == ["test_gut:BETA"] and small.x_train.shape[1] == 20
    with pytest.raises(ValueError, match="no files matching"):
        load_dataset("shakespeare", data_dir=tmp_path, pattern="*.none")


def test_dataset_preset_fills_only_unset_fields():
    """shakespeare presets lr 0.8 and one local epoch; an explicit value (even the global
    default 0.05) is the user's and stays; digits presets nothing (fallbacks 0.05, 2)."""
    from protocols.data import dataset_run_defaults
    from protocols.simulation import RunConfig
    shk = load_dataset("shakespeare")
    assert dataset_run_defaults(shk, RunConfig()) == {"lr": 0.8, "local_epochs": 1}
    assert dataset_run_defaults(shk, RunConfig(lr=0.05)) == {"local_epochs": 1}
    assert dataset_run_defaults(shk, RunConfig(lr=0.05, local_epochs=2)) == {}
    assert dataset_run_defaults(load_dataset("digits"), RunConfig()) == {"lr": 0.05, "local_epochs": 2}
    with pytest.raises(ValueError, match="lr=0"):
        RunConfig(lr=0.0).validate()


# --------------------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
def test_shakespeare_run_beats_the_majority_character():
    """The embedded preset (charlstm-small, LEAF lr, natural clients) learns more than the
    most frequent character within a short RFA run under quantized secure aggregation."""
    from protocols.simulation import RunConfig, Simulation
    sim = Simulation(RunConfig(dataset="shakespeare", clients=10, rounds=12, secagg="quantized"))
    assert sim.partition_scheme == "natural" and sim.model_name == "charlstm-small" and sim.cfg.lr == 0.8
    sim.run()
    base = sim.data.meta["majority_baseline_test"]
    assert sim.history[-1].test_accuracy > base + 0.02


@pytest.mark.slow
def test_purchase_overfits_and_leaks_membership():
    """Train/test gap and a loss-threshold membership AUC well above 1/2 (Shokri et al. 2017)."""
    import torch.nn.functional as F
    from membership.metrics import auc
    from protocols.simulation import RunConfig, Simulation
    sim = Simulation(RunConfig(dataset="purchase", model="fc-purchase-small", clients=5, rounds=8,
                               rule="fedavg", secagg="off", partition="iid"))
    sim.run()
    d, mem = sim.data, torch.cat(sim.client_indices)
    with torch.no_grad():
        lm = F.cross_entropy(sim.model(d.x_train[mem]), d.y_train[mem], reduction="none")[:len(d.y_test)]
        ln = F.cross_entropy(sim.model(d.x_test), d.y_test, reduction="none")
        train_acc = (sim.model(d.x_train[mem]).argmax(1) == d.y_train[mem]).float().mean().item()
    assert train_acc - sim.history[-1].test_accuracy > 0.1
    assert auc(torch.cat([-lm, -ln]).numpy(), [1] * len(lm) + [0] * len(ln)) > 0.6
