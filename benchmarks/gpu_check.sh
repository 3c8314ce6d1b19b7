#!/usr/bin/env bash
# The checks that need a GPU, in one run, for a machine that has one:
#   bash benchmarks/gpu_check.sh [OUT_DIR] [speed.py options...]
#
# 1. The tests of the paths a GPU changes (cuDNN's real LSTM kernels against
#    the XLA kernel, the batched and fused kernels, every cell against its
#    NumPy oracle), on the GPU at float32 matmul precision (tests/conftest.py).
# 2. benchmarks/speed.py for the LSTM and GRU at the issue's three shapes:
#    cuDNN through jaxrnn, jax.experimental.rnn and torch beside jaxrnn's
#    kernels and the JAX peers, each checked before it is timed. A row that
#    failed or computed something else fails this script.
#
# Needs jax with CUDA, flax, optax, chex, tqdm, matplotlib, pytest,
# pytest-xdist, hypothesis and torch (peers that are missing are reported
# absent); jaxrnn runs from this checkout, not installed. Writes the logs
# and the benchmark's JSON and PNG to OUT_DIR (default results/gpu). Options
# after it go to speed.py (--quick: the benchmark part in seconds).
# TEST_WORKERS (default 4) test processes share the GPU; TEST_TIMEOUT_S
# (default 1800) stops the tests so that the benchmark still runs.
set -uo pipefail
out=results/gpu
if [[ $# -gt 0 && $1 != -* ]]; then out=$1; shift; fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The test processes share the GPU: none may take most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
unset JAX_PLATFORMS               # the tests' cuDNN stand-in runs on the CPU beside the GPU
python=${PYTHON:-python3}

"$python" -c "import jax; from jaxrnn._cells import lstm_cudnn
print(jax.__version__, jax.devices(), 'cuDNN path:', lstm_cudnn.platform_reason() or 'runs')" \
    2>&1 | tee "$out/devices.txt"
timeout "${TEST_TIMEOUT_S:-1800}" "$python" -m pytest -q -n "${TEST_WORKERS:-4}" \
    -p no:cacheprovider tests/test_cudnn.py tests/test_scan_batch.py \
    tests/test_fused.py tests/test_cells.py 2>&1 | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
shapes=(--shapes 32,128,256,256 1,512,128,128 128,64,512,512)
for arg in "$@"; do [[ $arg == --quick ]] && shapes=(); done   # --quick sets its own
"$python" benchmarks/speed.py --cells lstm,gru "${shapes[@]}" \
    --out "$out/speed.json" "$@" 2>&1 | tee "$out/speed.txt"
speed=${PIPESTATUS[0]}
if [[ $speed == 0 ]]; then
  "$python" - "$out/speed.json" <<'EOF' || speed=1
import json, sys
report = json.load(open(sys.argv[1]))
wrong = [f"{g['kind']} {tuple(g['shape'].values())} {r['impl']}"
         for g in report["groups"] for r in g["rows"]
         if r["status"] == "ok" and r.get("check") and
         not all(c["ok"] for c in r["check"].values())]
for name, why in report["failed"].items():
  print(f"gpu_check: {name} failed: {why}")
for row in wrong:
  print(f"gpu_check: {row} did not compute what jaxrnn computes")
sys.exit(1 if report["failed"] or wrong else 0)
EOF
fi
echo "gpu_check: tests exit $tests, speed exit $speed; files in $out"
exit $(( tests || speed ))
