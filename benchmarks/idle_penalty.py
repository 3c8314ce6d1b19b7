"""How much slower a call runs after idle time: why `speed.py` times short calls in bursts.

Times one LSTM call in a loop, with a pause of 0, 1, 10 or 50 ms before
each call, and prints the median and the 90th percentile of 41 calls per
pause. One framework per process, so that the other's threads are absent:

    python benchmarks/idle_penalty.py --framework torch
    python benchmarks/idle_penalty.py --framework jax

``--shape B,T,I,H`` (default 1,512,128,128), ``--mode fwd|fwd_bwd``. torch's
forward runs under ``torch.no_grad()``; JAX's is jaxrnn's `scan_batch`,
jitted. See `benchmarks/timing.py` for what was measured and why it matters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # jaxrnn from this checkout

from benchmarks.cli import positive, shape_bthi  # noqa: E402

PAUSES_S = (0.0, 0.001, 0.01, 0.05)


def torch_call(shape, mode: str, threads: int):
  import torch
  torch.set_num_threads(threads)
  B, T, I, H = shape
  module = torch.nn.LSTM(I, H, batch_first=True)
  xs = torch.randn(B, T, I, requires_grad=mode == "fwd_bwd")

  def call():
    if mode == "fwd":
      with torch.no_grad():
        return module(xs)[0]
    ys = module(xs)[0]
    return torch.autograd.grad(ys.sum(), list(module.parameters()) + [xs])
  return call


def jax_call(shape, mode: str):
  import jax
  import jax.numpy as jnp
  import jaxrnn
  B, T, I, H = shape
  cell = jaxrnn.lstm(H)
  params = cell.init(jax.random.key(0), I)
  xs = jnp.ones((B, T, I))

  def loss(p, x):
    return jnp.sum(jaxrnn.scan_batch(cell, p, x)[1])
  fn = jax.jit(lambda p, x: jaxrnn.scan_batch(cell, p, x)[1]) if mode == "fwd" else (
      jax.jit(jax.grad(loss, argnums=(0, 1))))
  return lambda: jax.block_until_ready(fn(params, xs))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--framework", choices=("torch", "jax"), required=True)
  parser.add_argument("--shape", type=shape_bthi, default=(1, 512, 128, 128),
                      help="B,T,I,H (default 1,512,128,128)")
  parser.add_argument("--mode", choices=("fwd", "fwd_bwd"), default="fwd")
  parser.add_argument("--threads", type=positive, default=2, help="torch threads")
  parser.add_argument("--calls", type=positive, default=41)
  args = parser.parse_args(argv)
  shape = args.shape
  call = (torch_call(shape, args.mode, args.threads) if args.framework == "torch"
          else jax_call(shape, args.mode))
  for _ in range(5):
    call()
  print(f"{args.framework} LSTM {args.mode}, B,T,I,H = {shape}: ms per call")
  for pause in PAUSES_S:
    times = []
    for _ in range(args.calls):
      if pause:
        time.sleep(pause)
      start = time.perf_counter()
      call()
      times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(f"  after {pause * 1e3:4.0f} ms idle: median {statistics.median(times):7.2f}  "
          f"p90 {times[int(0.9 * (len(times) - 1))]:7.2f}")


if __name__ == "__main__":
  main()
