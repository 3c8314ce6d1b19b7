"""Reading each step's input a step early: the forward loops with and without it.

`jaxrnn.fused_cell`'s ``read_ahead`` (and `jaxrnn._fused.read_ahead_sequence`,
for a cell with a plain step) carries step t's projected input into the
loop a step early (`jaxrnn._fused.scan_ahead`), so XLA CPU does not fuse
the per-step slice of the input into the step's elementwise work. This
script times `jaxrnn.scan`'s forward (inference) loop of each cell both
ways, interleaved in one process, and prints the medians and their ratio;
the cells that gain are built with it (both GRUs, the peephole LSTM).

    python benchmarks/read_ahead.py                 # ~1 min on 2 CPU cores
    python benchmarks/read_ahead.py --shapes 16,128,64,128 --calls 41

Shapes are ``B,T,I,H``; B = 1 runs one sequence, a larger B runs
``jax.vmap`` over the batch (the per-example path of the README's first
example; `jaxrnn.scan_batch` runs its own kernels instead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # jaxrnn from this checkout

from benchmarks.cli import positive, shape_bthi  # noqa: E402

CELLS = ("gru", "cho_gru", "peephole_lstm", "lstm", "cifg_lstm", "simple_rnn")
BUILT_AHEAD = ("gru", "cho_gru", "peephole_lstm")     # the cells built reading ahead


def make_cell(name: str, H: int):
  import jaxrnn
  if name == "cho_gru":                    # Cho et al.'s: reset before the matmul
    return jaxrnn.gru(H, reset_after=False)
  return getattr(jaxrnn, name)(H)


def forward(cell, params, xs):
  """The jitted forward of one sequence (B = 1) or of the vmapped batch."""
  import jax
  import jaxrnn
  if xs.shape[0] == 1:
    return jax.jit(lambda p, x: jaxrnn.scan(cell, p, x[0])[1])
  return jax.jit(lambda p, x: jax.vmap(lambda s: jaxrnn.scan(cell, p, s))(x)[1])


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="1,512,128,128;16,128,64,128;32,128,256,256",
                      help="semicolon-separated B,T,I,H shapes")
  parser.add_argument("--cells", default=",".join(CELLS))
  parser.add_argument("--calls", type=positive, default=25, help="timed calls per variant")
  args = parser.parse_args(argv)
  shapes = [shape_bthi(s) for s in args.shapes.split(";")]
  cells = args.cells.split(",")
  unknown = [c for c in cells if c not in CELLS]
  if unknown:
    parser.error(f"--cells: unknown {unknown}; choose from {', '.join(CELLS)}")

  import jax
  import numpy as np
  from jaxrnn import _fused

  built = _fused.forward_loop
  print(f"forward of jaxrnn.scan, read ahead or not (jax {jax.__version__}, "
        f"{jax.default_backend()}); medians of {args.calls} interleaved calls")
  rows = []
  for B, T, I, H in shapes:
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    for name in cells:
      cell = make_cell(name, H)
      params = cell.init(jax.random.key(0), I)
      fns = {}
      for label, loop in (("read ahead", _fused.scan_ahead), ("in the step", jax.lax.scan)):
        _fused.forward_loop = lambda ahead, loop=loop: loop   # read as the loop is traced
        try:
          fns[label] = forward(cell, params, xs)
          jax.block_until_ready(fns[label](params, xs))
        finally:
          _fused.forward_loop = built
      np.testing.assert_allclose(*(f(params, xs) for f in fns.values()), atol=1e-6)
      times = {label: [] for label in fns}
      for _ in range(args.calls):
        for label, fn in fns.items():
          start = time.perf_counter()
          jax.block_until_ready(fn(params, xs))
          times[label].append(time.perf_counter() - start)
      ahead, plain = (statistics.median(times[k]) * 1e3 for k in ("read ahead", "in the step"))
      rows.append(dict(cell=name, shape=(B, T, I, H), ahead_ms=ahead, plain_ms=plain))
      print(f"  {name:14s} B,T,I,H = {B},{T},{I},{H}:  read ahead {ahead:7.2f} ms, in the "
            f"step {plain:7.2f} ms, ratio {ahead / plain:.2f}"
            f"{'  (built read ahead)' if name in BUILT_AHEAD else ''}", flush=True)
  return rows


if __name__ == "__main__":
  main()
