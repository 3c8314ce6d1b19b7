"""`jaxrnn.scan_batch`'s kernels against the per-example kernel and the plain step.

For each cell, times one jitted program per form, interleaved call by call
in one process, and prints medians and their ratios to the first form:

* ``batched``: `jaxrnn.scan_batch` as it runs, on the cell's batched kernel
  (the generic one of `jaxrnn._fused_batch` for the LSTM variants but the
  peephole LSTM, and for the simple RNN);
* ``per-example``: the same cell without ``Cell.batched``, so `scan_batch`
  runs `jaxrnn.scan` under `jax.vmap` on the per-example fused kernel (on
  the plain step for ``gru_reset_before``, Cho et al.'s GRU, which has no
  per-example kernel);
* ``unfused``: `jaxrnn.unfused(cell)`, the plain `lax.scan` of the step;
* ``hand`` (the ``lstm`` row only): the standard LSTM's hand-written kernel.
  That row's cell is the standard LSTM built with an input activation that
  is ``tanh`` but not ``jnp.tanh`` itself, so it runs the generic kernel on
  the same equations: the two kernels side by side.
* ``generic`` (the ``peephole`` row only): the peephole LSTM built the same
  way, so that it runs the generic kernel beside ``batched``, the
  hand-written kernel with its peephole terms.

With ``--precision`` the forms are instead the cell in float32, with
bfloat16 params (``param_dtype``) and with float32 params computing in
bfloat16 (``dtype``, mixed precision), each on `jaxrnn.scan_batch` as it
runs; there, and with ``--dropout``, ``lstm`` is the standard LSTM. With ``--dropout`` they are
``jaxrnn.rnn(cell)`` without dropout, with ``dropout=0.2`` and with
``recurrent_dropout=0.2``, each through `jaxrnn.apply_batch` with a key.

Run: ``python benchmarks/batched_kernels.py`` (a few minutes on 2 cores);
``--shape B,T,I,H``, ``--cells`` (some of `CELLS`, comma-separated;
``gru_relu_hard`` is the GRU with ``activation="relu"`` and
``gate_activation="hard_sigmoid"``), ``--rounds``, ``--forward`` (no
gradient), ``--precision``, ``--dropout``, ``--cpu-devices 2`` (the batch
split over 2 CPU devices, as `jaxrnn.train.shard_batch` does), ``--quick``
(tiny, seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(ROOT))

from benchmarks.cli import positive, shape_bthi  # noqa: E402

CELLS = ("lstm", "gru", "gru_reset_before", "gru_relu_hard", "gru_reset_before_relu_hard",
         "peephole", "cifg", "lstmp", "rnn")


def cell_forms(name: str, H: int, precision: bool = False, dropout: bool = False) -> dict:
  import jax.numpy as jnp
  import jaxrnn
  make = {
      "lstm": (jaxrnn.lstm if precision or dropout else
               lambda H, **kw: jaxrnn.lstm(H, input_activation=lambda z: jnp.tanh(z), **kw)),
      "gru": jaxrnn.gru,
      "gru_reset_before": lambda H, **kw: jaxrnn.gru(H, reset_after=False, **kw),
      # Keras' activation="relu" and recurrent_activation="hard_sigmoid" (Keras 3's)
      "gru_relu_hard": lambda H, **kw: jaxrnn.gru(
          H, activation="relu", gate_activation="hard_sigmoid", **kw),
      "gru_reset_before_relu_hard": lambda H, **kw: jaxrnn.gru(
          H, reset_after=False, activation="relu", gate_activation="hard_sigmoid", **kw),
      "peephole": jaxrnn.peephole_lstm,
      "cifg": jaxrnn.cifg_lstm,
      "lstmp": lambda H, **kw: jaxrnn.lstm(H, proj_size=H // 2, **kw),
      "rnn": jaxrnn.simple_rnn,
  }[name]
  if precision:
    return {"float32": make(H), "bf16-params": make(H, param_dtype=jnp.bfloat16),
            "dtype=bf16": make(H, dtype=jnp.bfloat16)}
  if dropout:
    return {"no-dropout": jaxrnn.rnn(make(H)), "dropout=0.2": jaxrnn.rnn(make(H), dropout=0.2),
            "recurrent_dropout=0.2": jaxrnn.rnn(make(H), recurrent_dropout=0.2)}
  cell = make(H)
  forms = {"batched": cell, "per-example": cell._replace(batched=None),
           "unfused": jaxrnn.unfused(cell)}
  if name == "lstm":
    forms["hand"] = jaxrnn.lstm(H)
  if name == "peephole":
    forms["generic"] = jaxrnn.lstm(H, peephole=True, input_activation=lambda z: jnp.tanh(z))
  return forms


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shape", type=shape_bthi,
                 help="B,T,I,H (default 32,128,256,256; --quick: 4,8,8,8)")
  p.add_argument("--cells", default=",".join(CELLS))
  p.add_argument("--rounds", type=positive, help="default 21 (--quick: 3)")
  p.add_argument("--forward", action="store_true", help="time the forward pass alone")
  p.add_argument("--precision", action="store_true",
                 help="forms float32, bfloat16 params, float32 params with dtype=bfloat16")
  p.add_argument("--dropout", action="store_true",
                 help="forms rnn(cell) without dropout, dropout=0.2, recurrent_dropout=0.2")
  p.add_argument("--cpu-devices", type=positive, default=1)
  p.add_argument("--quick", action="store_true",
                 help="B,T,I,H = 4,8,8,8 and 3 rounds (options given win)")
  args = p.parse_args(argv)
  shape = args.shape or ((4, 8, 8, 8) if args.quick else (32, 128, 256, 256))
  rounds = args.rounds or (3 if args.quick else 21)
  cells = args.cells.split(",")
  unknown = set(cells) - set(CELLS)
  if unknown:
    p.error(f"--cells: unknown {sorted(unknown)}; expected some of {','.join(CELLS)}")
  if shape[0] % args.cpu_devices:
    p.error(f"--shape: B = {shape[0]} does not split over --cpu-devices {args.cpu_devices}")

  import jax                                   # after the device option is set
  if args.cpu_devices > 1:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  from jaxrnn.train.parallel import data_mesh, replicate, shard_batch

  B, T, I, H = shape
  xs = jax.random.normal(jax.random.key(1), (B, T, I))
  mesh = data_mesh() if args.cpu_devices > 1 else None
  if mesh is not None:
    xs = shard_batch(xs, mesh)

  programs = {}
  for name in cells:
    for form, cell in cell_forms(name, H, args.precision, args.dropout).items():
      params = cell.init(jax.random.key(0), I)
      if mesh is not None:
        params = replicate(params, mesh)

      def loss(params, xs, cell=cell):
        import jaxrnn        # a Cell runs scan_batch; a layer's dropout draws from the key
        return (jaxrnn.apply_batch(cell, params, xs, key=jax.random.key(2))[1] ** 2).mean()
      f = jax.jit(loss if args.forward else jax.value_and_grad(loss))
      jax.block_until_ready(f(params, xs))        # compile
      jax.block_until_ready(f(params, xs))        # warm
      programs[name, form] = (f, params)

  times = {key: [] for key in programs}
  for _ in range(rounds):                        # interleaved, call by call
    for key, (f, params) in programs.items():
      start = time.perf_counter()
      jax.block_until_ready(f(params, xs))
      times[key].append(time.perf_counter() - start)

  what = "forward" if args.forward else "forward+backward"
  print(f"{what} ms, medians of {rounds} interleaved rounds; B,T,I,H = {shape}; "
        f"{args.cpu_devices} CPU device(s); (x) = time / the first form's time")
  for name in cells:
    row = {form: 1e3 * statistics.median(ts) for (n, form), ts in times.items()
           if n == name}
    base = next(iter(row.values()))
    print(f"  {name:27s}" + "  ".join(f"{form} {ms:8.2f} ({ms / base:.2f}x)"
                                      for form, ms in row.items()))


if __name__ == "__main__":
  main()
