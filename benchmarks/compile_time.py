"""Compile time of the training step: jaxrnn beside every installed JAX peer.

`benchmarks/speed.py`'s "compile s" column compiles each row once, and a
single compile on a shared host moves by 0.1-0.2 s between runs. This
script compiles each JAX implementation's training step (``jax.grad`` of
the summed outputs, with respect to params and inputs, as in `speed.py`)
``--rounds`` times, the implementations alternating round by round, and
prints medians of the trace-and-lower time, the compile time and their
sum in each round (so the total need not be the sum of the two medians),
with each total over ``jaxrnn.scan_batch``'s (above 1: jaxrnn compiles
faster).
Each round jits a new function, so nothing comes from JAX's caches.

Run: ``python benchmarks/compile_time.py`` (about a minute on 2 cores);
``--shape B,T,I,H``, ``--cells lstm,gru,rnn``, ``--rounds``, ``--quick``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import peers  # noqa: E402
from benchmarks.cli import positive, shape_bthi  # noqa: E402

BASELINE = "jaxrnn.scan_batch"


def jax_programs(kind: str, shape: tuple) -> dict:
  """Every installed JAX implementation of ``kind``: name -> `peers.JaxProgram`."""
  B, T, I, H = shape
  params = peers.KINDS[kind].make(H, jnp.float32).init(jax.random.key(0), I)
  programs = {}
  for peer in peers.PEERS:
    if kind not in peer.kinds:
      continue
    try:
      program = peer.build(kind, params, jnp.float32, shape)
    except peers.Absent:
      continue
    if isinstance(program, peers.JaxProgram):       # not torch
      programs[peer.name] = program
  return programs


def time_compile(program: peers.JaxProgram, xs) -> tuple[float, float]:
  """Seconds to trace and lower, then to compile, a new jit of the training step."""
  def loss(p, x):
    return jnp.sum(program.apply(p, x).astype(jnp.float32))
  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  start = time.perf_counter()
  lowered = step.lower(program.params, xs)
  lowered_at = time.perf_counter()
  lowered.compile()
  return lowered_at - start, time.perf_counter() - lowered_at


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", type=shape_bthi,
                      help="B,T,I,H (default 32,128,256,256; --quick: 2,4,4,4)")
  parser.add_argument("--cells", default="lstm,gru,rnn",
                      help=f"comma-separated, from {','.join(peers.KINDS)}")
  parser.add_argument("--rounds", type=positive, help="default 7 (--quick: 2)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny shape, 2 rounds: seconds (options given win)")
  args = parser.parse_args(argv)
  unknown = [k for k in args.cells.split(",") if k not in peers.KINDS]
  if unknown:
    parser.error(f"--cells: unknown {unknown}; expected some of {','.join(peers.KINDS)}")
  shape = args.shape or ((2, 4, 4, 4) if args.quick else (32, 128, 256, 256))
  rounds = args.rounds or (2 if args.quick else 7)
  print(f"Training-step compile time, medians of {rounds} alternating rounds; "
        f"B,T,I,H = {shape}; {jax.default_backend()}\n")
  print(f"| cell | implementation | trace+lower s | compile s | total s | total / {BASELINE}'s |")
  print("| --- | --- | --- | --- | --- | --- |")
  for kind in args.cells.split(","):
    programs = jax_programs(kind, shape)
    xs = jnp.ones(shape[:3], jnp.float32)
    times = {name: [] for name in programs}
    for _ in range(rounds):
      for name, program in programs.items():
        times[name].append(time_compile(program, xs))
    total = {name: statistics.median(a + b for a, b in ts) for name, ts in times.items()}
    for name, ts in times.items():
      lower = statistics.median(a for a, _ in ts)
      compile_ = statistics.median(b for _, b in ts)
      ratio = f"{total[name] / total[BASELINE]:.2f}" if BASELINE in total else "-"
      print(f"| {kind} | {name} | {lower:.3f} | {compile_:.3f} | {total[name]:.3f} | {ratio} |")


if __name__ == "__main__":
  main()
