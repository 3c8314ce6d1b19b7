#!/usr/bin/env bash
# The checks that need a GPU, in one run, for a machine that has one:
#   bash benchmarks/gpu_check.sh [OUT_DIR] [speed.py options...]
#
# 1. The tests of the paths a GPU changes (the cuDNN LSTM against the XLA
#    kernel, the batched and fused kernels, every cell against its NumPy
#    oracle), on the GPU at float32 matmul precision (tests/conftest.py).
# 2. benchmarks/speed.py for the LSTM and GRU at the issue's three shapes:
#    cuDNN through jaxrnn, jax.experimental.rnn and torch beside jaxrnn's
#    kernels and the JAX peers, each checked before it is timed.
#
# Needs jax with CUDA, flax, optax, chex, pytest, hypothesis and torch (the
# peers that are missing are reported absent); jaxrnn runs from this
# checkout, not installed. Writes the logs and the benchmark's JSON and PNG
# to OUT_DIR (default results/gpu). Any further options go to speed.py
# (--quick checks this script itself in seconds, on any machine).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
shift || true
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Four test processes share the GPU: none may take most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python=${PYTHON:-python3}

"$python" -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"
"$python" -m pytest -q -n 4 -p no:cacheprovider tests/test_cudnn.py tests/test_scan_batch.py \
    tests/test_fused.py tests/test_cells.py 2>&1 | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
"$python" benchmarks/speed.py --cells lstm,gru \
    --shapes 32,128,256,256 1,512,128,128 128,64,512,512 \
    --out "$out/speed.json" "$@" 2>&1 | tee "$out/speed.txt"
speed=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, speed exit $speed; files in $out"
exit $(( tests || speed ))
