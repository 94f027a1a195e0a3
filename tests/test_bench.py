"""`fedaudit bench`: the registry, the options, the report, and the fast encoding paths.

The speed work must not change results: the fused encode-and-sum and the lazily built
secure-average payload give bit for bit what encoding the full payload gives (which is
what MaskedOracle sums), on every rounding path. Speed itself is measured by
`fedaudit bench`, never asserted here.
"""
import json

import numpy as np
import pytest
import torch

from protocols.bench import ROW_KEYS, add_ratios, parse_count, run_suite
from protocols.bench.report import format_rows, goal_met, peer_report, to_markdown, write_report
from protocols.cli import build_parser, main
from secagg import FixedPointEncoder, MaskedOracle, QuantizedOracle, modular_sum


# ------------------------------------------------------------------ encoding fast paths

def _payload(x, u):
    return torch.cat([x * u[:, None], u[:, None]], dim=1)


@pytest.mark.parametrize("bits", [16, 32, 48, 64])          # int64 fixed-point path (16, 32), float path (48, 64)
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_encode_with_weights_equals_encoding_the_payload(bits, rounding):
    g = torch.Generator().manual_seed(0)
    x, u = torch.rand(7, 300, generator=g) * 4 - 2, torch.rand(7, generator=g)
    clip = torch.full((301,), 2.0, dtype=torch.float64)
    clip[-1] = 1.0
    enc = FixedPointEncoder(bits, clip, 7, rounding=rounding)
    want = enc.encode(_payload(x, u), generator=np.random.default_rng(3))
    got = enc.encode(x, generator=np.random.default_rng(3), weights=u)
    assert torch.equal(want, got)
    fused = enc.encode_sum(x, generator=np.random.default_rng(3), weights=u)
    assert torch.equal(fused, modular_sum(want, bits))


def test_encode_sum_equals_sum_of_encode_across_chunks(monkeypatch):
    import secagg.encoding as encoding
    monkeypatch.setattr(encoding, "_HOST_COLS", 64)              # many blocks, a ragged last one
    monkeypatch.setattr(encoding, "_HOST_ELEMS", 128)
    monkeypatch.setattr(encoding, "_THREAD_ELEMS", 256)         # and several threads
    enc = FixedPointEncoder(32, clip=1.0, n_summands=5)
    x = torch.rand(5, 1001, dtype=torch.float64) * 2 - 1
    a = enc.encode(x, generator=np.random.default_rng(1))
    b = enc.encode_sum(x, generator=np.random.default_rng(1))
    assert torch.equal(modular_sum(a, 32), b)
    # the torch-generator path too
    c = enc.encode(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(modular_sum(c, 32), enc.encode_sum(x, generator=torch.Generator().manual_seed(2)))


def test_quantized_and_masked_oracles_stay_identical_with_the_fused_sum():
    g = torch.Generator().manual_seed(1)
    x, w = torch.rand(12, 2000, generator=g) * 2 - 1, torch.rand(12, generator=g) + 0.1
    q, m = QuantizedOracle(clip=1.0, seed=5), MaskedOracle(clip=1.0, seed=5, neighbors=4)
    for _ in range(2):
        assert torch.equal(q.average(x, w), m.average(x, w))


def test_oracle_reuses_its_input_scan_only_for_that_input():
    # average() checks max |x| once and hands it to the encoder; a sum over other
    # vectors (a wrapper calling secure_sum itself) must scan and refuse its own overflow.
    oracle = QuantizedOracle(clip=1.0)
    x, u = torch.rand(3, 50) * 2 - 1, torch.ones(3)
    oracle.average(x, u)
    assert oracle._vectors_absmax is None
    with pytest.raises(ValueError, match="exceeds the clip bound"):
        oracle.secure_sum(x * 5, u)


def test_stochastic_rounding_probability_matches_the_fraction():
    # 0.3 of a step above a grid point: P(round up) must be 0.3 on the int64 path.
    enc = FixedPointEncoder(32, clip=1.0, n_summands=1)
    step = float(enc.resolution)
    x = torch.full((1, 40_000), 1000 * step + 0.3 * step, dtype=torch.float64)
    q = enc.to_signed(enc.encode(x, generator=np.random.default_rng(0)))
    assert set(q.unique().tolist()) <= {1000, 1001}
    p_up = float((q == 1001).double().mean())
    assert abs(p_up - 0.3) < 4.5 * (0.21 / 40_000) ** 0.5


def test_clip_mode_counts_with_weights():
    enc = FixedPointEncoder(32, clip=torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), n_summands=2,
                            overflow="clip", rounding="nearest")
    x = torch.tensor([[0.5, 3.0], [-2.0, 0.1]])
    u = torch.tensor([1.0, 0.5])
    dec = enc.decode(enc.encode(x, weights=u))
    assert enc.last_clipped == 1                      # only 3.0 * 1.0 exceeds 1 (-2.0 * 0.5 does not)
    assert torch.allclose(dec, torch.tensor([[0.5, 1.0, 1.0], [-1.0, 0.05, 0.5]], dtype=torch.float64), atol=1e-8)
    raising = FixedPointEncoder(32, clip=torch.ones(3, dtype=torch.float64), n_summands=2)
    with pytest.raises(ValueError, match=r"value 3 at \[row 0, coordinate 1\]"):
        raising.encode(x, weights=u)


# ------------------------------------------------------------------ registry and options

@pytest.mark.parametrize("text, value", [("100", 100), ("1e5", 100_000), ("1_000", 1000), ("2.0", 2)])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "abc", "inf"])
def test_parse_count_refuses(text):
    with pytest.raises(ValueError, match="--dim"):
        parse_count(text, "--dim")


def test_suites_that_do_not_take_clients_refuse_them():
    with pytest.raises(ValueError, match=r"'dp'.*does not take --clients"):
        run_suite("dp", quick=True, clients=10)
    with pytest.raises(ValueError, match=r"'run'.*does not take --dim"):
        run_suite("run", quick=True, dim=10)
    with pytest.raises(ValueError, match="unknown bench suite"):
        run_suite("nope")


def test_cli_parses_all_and_sizes():
    args = build_parser().parse_args(["bench", "all", "--quick", "--out", "dir"])
    assert args.suite == "all" and args.quick and args.clients is None
    args = build_parser().parse_args(["bench", "oracle", "--clients", "1e3", "--dim", "1e5"])
    assert (args.clients, args.dim) == (1000, 100_000)


def test_cli_refuses_sizes_for_all_and_flower_elsewhere(capsys):
    assert main(["bench", "all", "--dim", "1e5"]) == 2
    assert "--clients/--dim" in capsys.readouterr().err
    assert main(["bench", "oracle", "--with-flower"]) == 2
    assert "--with-flower" in capsys.readouterr().err


def test_oracle_suite_takes_clients_and_dim(tmp_path):
    rows = run_suite("oracle", quick=True, clients=4, dim=50)
    assert {(r["n"], r["d"]) for r in rows} == {(4, 50)}
    assert all(set(ROW_KEYS) <= set(r) for r in rows)
    base = [r for r in rows if r["case"] == r["baseline"]]
    assert len(base) == 1 and base[0]["ratio"] == 1.0


# ------------------------------------------------------------------ report

def _rows():
    rows = [{"suite": "s", "case": "a", "seconds": 1.0, "baseline": "a", "n": 1, "d": 2, "device": "cpu"},
            {"suite": "s", "case": "b", "seconds": 2.0, "baseline": "a", "n": 1, "d": 2, "device": "cpu",
             "goal": "<= 3x a"},
            {"suite": "s", "case": "c", "seconds": 4.0, "baseline": "a", "n": 1, "d": 2, "device": "cpu",
             "goal": ">= 5 (c slower)"},
            {"suite": "t", "case": "e", "seconds": 70.0, "baseline": "e", "n": 1, "d": 2, "device": "cpu",
             "goal": "< 60 s", "goal_met": False},
            {"suite": "t", "case": "p", "seconds": float("nan"), "baseline": "e", "n": 1, "d": 2, "device": "cpu",
             "goal": "<= 1"}]
    return add_ratios(rows)


def test_goal_met_reads_the_ratio_or_the_suites_verdict():
    a, b, c, e, p = _rows()
    assert goal_met(a) is None
    assert goal_met(b) is True            # ratio 2 <= 3
    assert goal_met(c) is False           # ratio 4 < 5
    assert goal_met(e) is False           # decided by the suite
    assert goal_met(p) is None            # nan ratio: cannot be judged


def test_report_files(tmp_path):
    result = {"rows": _rows(), "skipped": {"byzfl": "not importable (pip install --no-deps byzfl)"},
              "failed": {"x": "RuntimeError: boom"}, "seconds": {"s": 1.0, "t": 2.0, "rules": 0.5}}
    paths = write_report(result, tmp_path / "out", {"device": "cpu", "quick": True, "load_average": [1, 1, 1]})
    data = json.loads(paths["json"].read_text())
    assert all(set(ROW_KEYS) <= set(r) for r in data["rows"])
    assert [r["goal_met"] for r in data["rows"]] == [None, True, False, False, None]
    assert data["rows"][4]["seconds"] is None           # NaN -> null: strict JSON
    md = paths["md"].read_text()
    assert "| s | b | <= 3x a | 2 | yes |" in md and "| s | c | >= 5 (c slower) | 4 | no |" in md
    assert "byzfl" in md and "FAILED" in md
    assert md == to_markdown(result, {"device": "cpu", "quick": True, "load_average": [1, 1, 1]})


def test_peers_are_reported_only_for_the_suites_that_ran_with_what_happened():
    rows = [{"suite": "rules", "case": "krum", "seconds": 1.0, "baseline": "krum"},
            {"suite": "rules", "case": "byzfl Krum", "seconds": 2.0, "baseline": "krum"},
            {"suite": "rfa", "case": "geom_median torch", "seconds": float("nan"), "baseline": "rfa",
             "note": "geom_median failed: boom"}]
    ok = {"byzfl": "", "geom_median": "", "flwr": "not importable (pip install flwr)"}
    one = peer_report({"rows": rows[:2], "seconds": {"rules": 1.0}}, ok)
    assert one == {"byzfl": "measured (1 rows)"}            # rfa and flower did not run: not listed
    both = peer_report({"rows": rows, "seconds": {"rules": 1.0, "rfa": 1.0}, "skipped": {"flower": "x"}}, ok)
    assert both["geom_median"] == "installed, not measured: geom_median failed: boom"
    assert both["flwr"].startswith("not importable")
    missing = peer_report({"rows": rows[:1], "seconds": {"rules": 1.0}}, dict(ok, byzfl="not importable (pip)"))
    assert missing == {"byzfl": "not importable (pip)"}
    md = to_markdown({"rows": rows[:2], "seconds": {"rules": 1.0}, "peers": one}, {})
    assert "`byzfl` (suite `rules`): measured (1 rows)" in md and "geom_median" not in md and "flwr" not in md


def test_terminal_table_says_whether_each_goal_is_met():
    text = format_rows(_rows())
    lines = text.splitlines()
    assert lines[0].split()[-1] == "met" and "goal" in lines[0]
    met = [ln.split()[-1] for ln in lines[2:]]
    assert met[1:] == ["yes", "no", "no", "?"] and not lines[2].rstrip().endswith(("yes", "no", "?"))


def test_report_refuses_a_file_as_folder(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        write_report({"rows": []}, f, {})


# ------------------------------------------------------------------ the whole suite

@pytest.mark.slow
def test_bench_all_quick(tmp_path):
    assert main(["bench", "all", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["failed"] == {}
    suites = {r["suite"] for r in data["rows"]}
    assert {"oracle", "secagg", "rfa", "rules", "clients", "dp", "run"} <= suites
    for r in data["rows"]:
        assert set(ROW_KEYS) <= set(r), r
        assert r["seconds"] is None or r["seconds"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "## Goals" in md and "<= 3x plaintext" in md and "| met |" in md
    for s in suites:
        assert f"## {s}" in md


# ------------------------------------------------------------------ issue 20 suites

def test_keystream_suite_rows(monkeypatch):
    rows = run_suite("keystream", quick=True, clients=3, dim=2048)
    cases = [r["case"] for r in rows]
    assert any(c.startswith("openssl chacha20") for c in cases) and any("torch chacha20" in c for c in cases)
    assert any(c.startswith("expand_masks 1 thread") for c in cases)
    assert all(r["seconds"] > 0 and set(ROW_KEYS) <= set(r) for r in rows)


def test_scale_suite_refuses_what_cannot_fit_and_reports_the_rest(monkeypatch):
    from protocols.bench import scale
    calls = []

    def fake(kw, cap_mb, timeout):
        calls.append(kw["secagg"])
        return {"seconds": 2.0, "peak_rss_mb": 3 * 1024, "accuracy": 0.5, "threads": 1}
    monkeypatch.setattr(scale, "_run_case", fake)
    monkeypatch.setattr(scale, "free_memory_bytes", lambda dev: 16e9)
    rows = scale.run(clients=1000)
    assert calls == ["off", "quantized", "masked"]       # the masked oracle works in groups: ~8.6 GB
    assert "SecAgg+ auto (erdos-renyi, k=116, t_s=44)" in rows[-1]["note"]
    calls.clear()
    monkeypatch.setattr(scale, "free_memory_bytes", lambda dev: 13e9)
    rows = scale.run(clients=1000)
    assert calls == ["off", "quantized"]                 # 60% of 13 GB: masked not started
    masked = rows[-1]
    assert masked["seconds"] != masked["seconds"] and "not started: needs ~" in masked["note"]
    assert rows[1]["goal_met"] is True and rows[1]["peak_rss_gb"] == 3.0
    assert 1.0 < scale.estimate_gb("masked", 1000, scale._D) - scale.estimate_gb("quantized", 1000, scale._D) < 1.5


def test_rfa_suite_gives_geom_median_host_tensors(monkeypatch):
    from protocols.bench import rfa
    seen = []

    def fake_gm(points, weights, maxiter, ftol):
        seen.append((points.device.type, weights.device.type))
        import types
        return types.SimpleNamespace(median=points.mean(0), logs=[0.0])
    monkeypatch.setattr(rfa, "compute_geometric_median", fake_gm)
    rows = rfa.run(quick=True, clients=5, dim=40)
    assert seen and all(s == ("cpu", "cpu") for s in seen)
    assert any(r["case"].startswith("geom_median") for r in rows)


def test_bench_suites_move_tensors_to_the_host_before_numpy():
    # Every `.numpy()` in a suite is on a host tensor (`.cpu()` first or a *_cpu/_host name), so
    # `--device cuda` never asks numpy for a device tensor.
    import ast
    import pathlib
    import protocols.bench as bench
    for path in pathlib.Path(bench.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
                recv = node.func.value
                ok = (isinstance(recv, ast.Call) and isinstance(recv.func, ast.Attribute) and recv.func.attr == "cpu") \
                    or (isinstance(recv, ast.Name) and recv.id.endswith(("_cpu", "_host")))
                assert ok, f"{path.name}:{node.lineno} calls .numpy() on a tensor that may live on the device"
