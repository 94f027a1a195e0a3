#!/usr/bin/env bash
# GPU check of issue 20, for a session with a CUDA device (an H200): < 10 minutes.
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. CUDA/CPU equality: the ChaCha20 backends (eager, torch.compile, Triton) against OpenSSL,
#    the encoding and the oracles on CUDA against the CPU (same seeds, same sums), the masked
#    protocol's data plane on CUDA (keystreams from secagg.chacha20 on the device; the host
#    engine must not run) against OpenSSL's host path (same masked inputs and sums), the
#    grouped MaskedOracle on CUDA against the CPU (the tests marked for CUDA; they skip on a CPU box).
# 2. The GPU goals, measured: torch ChaCha20 GB/s (goal >= 200 GB/s), the quantized oracle
#    against plaintext, the masked protocol against its keystream bound with the data plane on
#    the GPU, RFA against geom_median, every suite's --device cuda path.
# Results: OUT_DIR (default gpu-check/): pytest.log, bench-*.json, bench/ (bench.md). Write
# docs/bench-gpu.md from them.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
python -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 1)" \
  || { echo "no CUDA device: nothing to check"; exit 1; }
# the project's light dependencies, never torch (the machine's CUDA torch stays)
for mod in cryptography:cryptography numpy:numpy opacus:opacus sklearn:scikit-learn tqdm:tqdm pytest:pytest \
           hypothesis:hypothesis matplotlib:matplotlib geom_median:geom_median; do
  python -c "import ${mod%%:*}" 2>/dev/null || pip install -q --no-deps "${mod##*:}" || exit 1
done
python -c "import opacus" 2>/dev/null || exit 1
python -c "import triton" 2>/dev/null && echo "triton importable" || echo "triton missing: the compiled backend serves"
status=0
# 1. equality on CUDA (about 1-2 minutes, most of it torch.compile)
timeout 180 python -m pytest -q -x -p no:cacheprovider -k "cuda" \
  tests/test_chacha20.py tests/test_encoding.py tests/test_oracle.py tests/test_secagg_protocol.py \
  tests/test_masked_oracle.py 2>&1 | tee "$out/pytest.log" | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# 2. the goals (each suite bounded; the rows go to JSON)
# (worst case 180 + 40 + 70 + 90 + 170 + 40 s = 9 min 50 s)
for spec in "keystream 40" "oracle 70" "secagg 90 --dim 1e6" "rfa 170 --dim 1e6"; do
  set -- $spec
  suite=$1; limit=$2; shift 2
  timeout "$limit" python -m protocols.cli bench "$suite" --device cuda "$@" --out "$out/bench-$suite.json" \
    > "$out/bench-$suite.txt" 2>&1 || { echo "bench $suite failed or timed out"; status=1; }
  tail -12 "$out/bench-$suite.txt"
done
timeout 40 python -m protocols.cli bench oracle --device cuda --clients 1000 --dim 1e6 --out "$out/bench-oracle-1000.json" \
  > "$out/bench-oracle-1000.txt" 2>&1 || { echo "bench oracle n=1000 failed or timed out"; status=1; }
tail -6 "$out/bench-oracle-1000.txt"
exit $status
