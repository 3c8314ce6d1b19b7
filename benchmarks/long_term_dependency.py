"""Plain RNNs forget, LSTMs remember: the long-term dependency problem, measured.

Run ``python benchmarks/long_term_dependency.py`` (the default grid: 209-253 s
wall on 2 shared CPU cores, data-parallel over 2 CPU devices; 236-276 s on
one device, run right after; 244-269 s before the LSTM and GRU trained on
their batched kernels), ``--quick`` (64-97 s) or ``--smoke`` (seconds;
what the tests run).
Options: ``--task adding|recall|both``, ``--cells rnn,lstm,peephole,gru``,
``--lengths 10,25,50,100,200``, ``--steps``, ``--batch``, ``--hidden``,
``--lr``, ``--seed``, ``--forget-bias`` (LSTM cells' initial forget-gate bias,
default 1.0), ``--cpu-devices`` (default 2; 1 trains on one device),
``--out results/`` and ``--quiet`` (no progress bars).

Lives here: the experiment, its table, its JSON and its two figures. Not
here: the tasks (`jaxrnn.tasks`) and the training loop (`jaxrnn.train`).

Colah's "Understanding LSTM Networks" claims that a plain RNN can connect
information a few steps apart but, "as that gap grows, RNNs become unable
to learn to connect the information", while LSTMs are "explicitly designed
to avoid the long-term dependency problem" (Bengio et al. 1994; Hochreiter
& Schmidhuber 1997). This script tests the claim on two tasks whose gap T
we choose:

* ``adding``: sum the two marked values of a sequence of T random numbers,
  one marker in each half (`jaxrnn.tasks.adding`). Score: MSE on held-out
  sequences; predicting 1.0 scores 0.167, "solved" means MSE < 0.01.
* ``recall``: at the end of T + 1 steps, name the symbol (one of 8) shown
  at the first step, with T distractors between (`jaxrnn.tasks.recall`).
  Score: accuracy on held-out sequences; chance is 1/8, "solved" means
  accuracy >= 0.99.

Method. For every task, length T and cell (tanh RNN, LSTM with forget
gate, peephole LSTM, GRU): the same model around the cell (a linear
readout of the last step's output, `jaxrnn.tasks.readout_model`), the same
hidden size, the same budget (steps, batch, Adam learning rate, gradient
clipping at global norm 1), the same seed, so the same initial readout and
the same training batches. Training runs ``--steps`` steps, or stops early
once the mean training loss of the last 100 steps shows the task solved
(adding: MSE under 0.005, half the threshold; recall: cross-entropy under
0.01, every answer right with probability about 0.99): more steps would not
change the verdict, and the run saves its time for the cells that need it.
Each (cell, T) compiles its train step once. Then the score is measured on 1024
held-out sequences from a key never used in training. The parameter count
of every cell is printed: the gated cells have 3-4x the tanh RNN's
parameters at the same hidden size, which is the usual comparison
(Greff et al. 2015; Jozefowicz et al. 2015) and is stated beside the table.

Reading the results. On the adding problem the claim shows as stated: the
tanh RNN solves short gaps only, the gated cells solve every T of the grid.
The recall task is harder for the gated cells than its size suggests: at
initialisation an LSTM's forget gate is about sigma(1) = 0.73 (a GRU's
update gate 0.5), so what the first step wrote has decayed by 0.73^T before
the answer is read and the gradient that would teach the gates to hold it
vanishes with it. The adding problem's random marker positions give a
curriculum (the second value is sometimes needed only a few steps later,
which teaches the gates to hold values longer and longer); recall, with one
fixed gap, gives none. The orthogonally initialised tanh RNN, whose
recurrence is close to an isometry at the start, is not stuck in that way.
``--forget-bias 3`` (f = 0.95 at the start) tests this explanation: it
lets the LSTM learn recall over longer gaps. Whatever happens, the table
reports it.

Outputs in ``--out``: ``long_term_dependency.json`` (settings, scores,
training curves, times), ``long_term_dependency.png`` (score vs T, one line
per cell) and ``long_term_dependency_curves.png`` (the training loss of
every run). The table is printed. The numbers are what the run produced,
on this machine, from this seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(ROOT))

import jaxrnn  # noqa: E402
from jaxrnn import train  # noqa: E402
from benchmarks.cli import positive, positive_list  # noqa: E402
from jaxrnn.tasks import (ADDING_BASELINE_MSE, ADDING_SOLVED_MSE,  # noqa: E402
                          adding, last_step_classification_loss, param_count,
                          readout_model, recall)

CELLS = {
    "rnn": ("tanh RNN", jaxrnn.simple_rnn),
    "lstm": ("LSTM", jaxrnn.lstm),
    "peephole": ("peephole LSTM", jaxrnn.peephole_lstm),
    "gru": ("GRU", jaxrnn.gru),
}
RECALL_SYMBOLS = 8
RECALL_SOLVED_ACCURACY = 0.99
EVAL_SIZE = 1024
EARLY_STOP_WINDOW = 100

# Settings of the default run and of the short ones (times measured in the
# module docstring). Early stopping makes the gated cells' runs short, so
# most of the time goes to the runs that do not learn.
PRESETS = {
    "default": dict(lengths=dict(adding=(10, 25, 50, 100, 200),
                                 recall=(10, 25, 50, 100)),
                    steps=1500, batch=32, hidden=64, lr=1e-2),
    "quick": dict(lengths=dict(adding=(10, 50, 100), recall=(10, 50)),
                  steps=700, batch=32, hidden=64, lr=1e-2),
    "smoke": dict(lengths=dict(adding=(5,), recall=(5,)), steps=20, batch=16,
                  hidden=16, lr=1e-2),
}


class Task(NamedTuple):
  name: str
  generate: Callable          # (key, batch_size, length) -> (xs, target)
  input_size: int
  output_size: int
  metric: str                 # what the score is
  loss_fn: Callable           # (model) -> loss_fn(params, batch), whole batch
  score: Callable             # (eval metrics) -> the score
  solved: Callable            # (score) -> bool
  chance: float               # the score of a model that learned nothing
  threshold: float            # the score that counts as solved
  stop_loss: float            # training loss under which a run stops early


def adding_loss(model):
  """Squared error of the last step's readout against the sum, over a batch."""
  def loss_fn(params, batch):
    xs, targets = batch
    _, outputs = model.apply_batch(params, xs)   # the batched LSTM/GRU kernels
    total, count = train.mse(outputs[:, -1, 0], targets)
    return total, count, {}
  return loss_fn


TASKS = {
    "adding": Task(
        name="adding", generate=adding, input_size=2, output_size=1,
        metric="MSE", loss_fn=adding_loss,
        score=lambda m: m["loss"],
        solved=lambda s: s < ADDING_SOLVED_MSE,
        chance=ADDING_BASELINE_MSE, threshold=ADDING_SOLVED_MSE,
        stop_loss=ADDING_SOLVED_MSE / 2),
    "recall": Task(
        name="recall",
        generate=partial(recall, num_symbols=RECALL_SYMBOLS),
        input_size=2 * RECALL_SYMBOLS, output_size=RECALL_SYMBOLS,
        metric="accuracy",
        loss_fn=partial(last_step_classification_loss, batched=True),
        score=lambda m: m["correct"],
        solved=lambda s: s >= RECALL_SOLVED_ACCURACY,
        chance=1.0 / RECALL_SYMBOLS, threshold=RECALL_SOLVED_ACCURACY,
        stop_loss=0.01),
}


def run_one(task: Task, cell_name: str, length: int, args) -> dict:
  """Trains one cell on one task at one length; returns its record."""
  make_cell = CELLS[cell_name][1]
  if cell_name in ("lstm", "peephole"):
    make_cell = partial(make_cell, forget_bias=args.forget_bias)
  model = readout_model(make_cell(args.hidden), task.output_size)
  key = jax.random.key(args.seed)
  k_init, k_data, k_eval = jax.random.split(key, 3)
  params = model.init(k_init, task.input_size)
  opt = train.optimizer(args.lr, clip_norm=1.0)
  state = train.init_state(params, opt)
  loss_fn = task.loss_fn(model)
  train_step = train.make_train_step(loss_fn, opt, batched=True)
  generate = jax.jit(partial(task.generate, batch_size=args.batch,
                             length=length))
  place = lambda batch: batch
  if args.mesh is not None:        # data-parallel: batches split, state replicated
    state = train.replicate(state, args.mesh)
    place = partial(train.shard_batch, mesh=args.mesh)
  batches = (place(generate(k)) for k in jax.random.split(k_data, args.steps))
  label = f"{task.name} T={length} {cell_name}"
  start = time.perf_counter()
  state, history = train.fit(
      train_step, state, batches, steps=args.steps, desc=label,
      quiet=args.quiet, stop=early_stop(task.stop_loss))
  train_seconds = time.perf_counter() - start
  eval_step = train.make_eval_step(loss_fn, batched=True)
  metrics = eval_step(state.params, place(task.generate(k_eval, EVAL_SIZE, length)))
  score = float(task.score(metrics))
  losses = [float(m["loss"]) for m in history]
  return dict(task=task.name, cell=cell_name, length=length,
              params=param_count(params), score=score,
              solved=bool(task.solved(score)), steps=len(losses),
              train_seconds=round(train_seconds, 2), losses=losses)


def early_stop(stop_loss: float):
  """A ``stop(history)`` predicate: the last 100 losses average under stop_loss."""
  def stop(history):
    if len(history) < EARLY_STOP_WINDOW:
      return False
    recent = history[-EARLY_STOP_WINDOW:]
    return sum(float(m["loss"]) for m in recent) / len(recent) < stop_loss
  return stop


def table(task: Task, records: list[dict], cells, lengths) -> str:
  """The scores as a text table: one row per cell, one column per T."""
  by = {(r["cell"], r["length"]): r for r in records if r["task"] == task.name}
  chance = (f"predicting 1.0 scores {task.chance:.3f}" if task.name == "adding"
            else f"chance is {task.chance:.3f}")
  lines = [f"{task.name}: held-out {task.metric} after training "
           f"({chance}; * = solved, {task.metric} "
           f"{'<' if task.name == 'adding' else '>='} {task.threshold:g}; "
           f"steps used in brackets)"]
  header = f"  {'cell':<14}{'params':>8}" + "".join(f"{'T=' + str(t):>17}"
                                                    for t in lengths)
  lines.append(header)
  for cell in cells:
    row = [f"  {CELLS[cell][0]:<14}"]
    n_params = next((r["params"] for r in by.values() if r["cell"] == cell), 0)
    row.append(f"{n_params:>8}")
    for t in lengths:
      r = by.get((cell, t))
      if r is None:
        row.append(f"{'-':>17}")
        continue
      mark = "*" if r["solved"] else " "
      row.append(f"{r['score']:>9.4f}{mark}{'(' + str(r['steps']) + ')':>7}")
    lines.append("".join(row))
  return "\n".join(lines)


def plot(records, tasks, cells, lengths, out: Path) -> tuple[Path, Path]:
  """Score vs T (one line per cell) and the training curves, as two PNGs."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  colors = dict(rnn="tab:red", lstm="tab:blue", peephole="tab:purple",
                gru="tab:green")
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for cell in cells:
      rs = sorted((r for r in records if r["task"] == task.name
                   and r["cell"] == cell), key=lambda r: r["length"])
      ax.plot([r["length"] for r in rs], [r["score"] for r in rs], "o-",
              color=colors[cell], label=CELLS[cell][0])
    ax.axhline(task.chance, color="gray", ls=":", label="no memory")
    ax.axhline(task.threshold, color="black", ls="--", lw=0.8, label="solved")
    ax.set_xscale("log")
    ax.set_xticks(lengths[task.name], [str(t) for t in lengths[task.name]])
    ax.set_xlabel("T (steps between the information and its use)")
    ax.set_ylabel(f"held-out {task.metric}")
    if task.name == "adding":
      ax.set_yscale("log")
    else:
      ax.set_ylim(0, 1.05)
    ax.set_title(task.name)
    ax.legend(fontsize=8)
  fig.suptitle("Long-term dependencies: held-out score vs the gap T "
               "(same hidden size and budget for every cell)")
  fig.tight_layout()
  scores_png = out / "long_term_dependency.png"
  fig.savefig(scores_png, dpi=110)
  plt.close(fig)

  n_cols = max(len(lengths[task.name]) for task in tasks)
  fig, axes = plt.subplots(len(tasks), n_cols,
                           figsize=(3 * n_cols, 2.6 * len(tasks)),
                           squeeze=False, sharey="row")
  for row, task in zip(axes, tasks):
    for ax in row[len(lengths[task.name]):]:
      ax.axis("off")
    for ax, t in zip(row, lengths[task.name]):
      for cell in cells:
        r = next((r for r in records if r["task"] == task.name
                  and r["cell"] == cell and r["length"] == t), None)
        if r is None:
          continue
        ax.plot(smooth(r["losses"]), color=colors[cell], lw=1,
                label=CELLS[cell][0])
      ax.set_yscale("log")
      ax.set_title(f"{task.name}, T={t}", fontsize=9)
      ax.set_xlabel("step", fontsize=8)
    row[0].set_ylabel("training loss")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  curves_png = out / "long_term_dependency_curves.png"
  fig.savefig(curves_png, dpi=100)
  plt.close(fig)
  return scores_png, curves_png


def smooth(values, window: int = 25) -> np.ndarray:
  """A running mean, so that the curves show the trend over the batch noise."""
  values = np.asarray(values, dtype=float)
  if len(values) < window:
    return values
  return np.convolve(values, np.ones(window) / window, mode="valid")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  size = p.add_mutually_exclusive_group()
  size.add_argument("--quick", action="store_true",
                    help="a shorter grid, under 2 minutes on 2 CPU cores")
  size.add_argument("--smoke", action="store_true",
                    help="a tiny grid for the tests (seconds)")
  p.add_argument("--task", choices=("adding", "recall", "both"),
                 default="both")
  p.add_argument("--cells", default=",".join(CELLS),
                 help=f"comma-separated, from {', '.join(CELLS)}")
  p.add_argument("--lengths", type=positive_list, help="comma-separated T values")
  p.add_argument("--steps", type=positive, help="training steps per run (maximum)")
  p.add_argument("--batch", type=positive)
  p.add_argument("--hidden", type=positive)
  p.add_argument("--lr", type=float)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--forget-bias", type=float, default=1.0,
                 help="initial forget-gate bias of the LSTM cells (the "
                      "library's default 1.0; try 3 on recall)")
  p.add_argument("--out", default=str(ROOT / "results"),
                 help="folder for the JSON and the PNGs")
  p.add_argument("--cpu-devices", type=positive, default=2,
                 help="split the CPU into this many JAX devices and train "
                      "data-parallel over them (default 2; 1: one device)")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  args = p.parse_args(argv)
  preset = PRESETS["quick" if args.quick else "smoke" if args.smoke
                   else "default"]
  for name, value in preset.items():
    if getattr(args, name, None) is None:
      setattr(args, name, value)
  if isinstance(args.lengths, tuple):   # --lengths applies to every task
    if min(args.lengths) < 2:
      p.error(f"--lengths: the tasks put their two markers in different "
              f"halves, so T must be 2 or more; got {min(args.lengths)}")
    args.lengths = {name: args.lengths for name in TASKS}
  args.cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
  unknown = [c for c in args.cells if c not in CELLS]
  if unknown:
    p.error(f"--cells: unknown {unknown}; choose from {', '.join(CELLS)}")
  return args


def data_parallel_mesh(cpu_devices: int, batch: int):
  """The mesh to train over: ``cpu_devices`` CPU devices, or None for one device.

  Splitting 2 CPU cores into 2 JAX devices, each with half of every batch,
  trains the batched LSTM/GRU 1.1-1.5x faster per step (B = 32, H = 64):
  each device's loop runs half-size matmuls, side by side with the other's.
  The count is fixed, not the machine's core count, so that every machine
  sums the gradients in the same order and prints the same table. It must
  be set before JAX first runs; where JAX ran already with fewer CPU
  devices (``main`` called twice in one process), or on a GPU, the run
  uses one device.
  """
  if cpu_devices == 1:
    return None
  try:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  except (RuntimeError, AttributeError):   # JAX started already, or too old a JAX
    pass
  devices = jax.devices()
  why = (f"JAX runs on {jax.default_backend()}" if jax.default_backend() != "cpu"
         else f"JAX started with {len(devices)} CPU device(s)" if len(devices) < cpu_devices
         else f"--batch {batch} and the {EVAL_SIZE} evaluation sequences must divide by "
              f"{cpu_devices}" if batch % cpu_devices or EVAL_SIZE % cpu_devices
         else None)
  if why:
    print(f"long_term_dependency: training on one device: {why}.", flush=True)
    return None
  return train.data_mesh(devices[:cpu_devices])


def main(argv=None) -> dict:
  args = parse_args(argv)
  args.mesh = data_parallel_mesh(args.cpu_devices, args.batch)
  tasks = ([TASKS["adding"], TASKS["recall"]] if args.task == "both"
           else [TASKS[args.task]])
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  settings = dict(cells=args.cells,
                  lengths={t.name: args.lengths[t.name] for t in tasks},
                  steps=args.steps,
                  batch=args.batch, hidden=args.hidden, lr=args.lr,
                  clip_norm=1.0, seed=args.seed, eval_size=EVAL_SIZE,
                  forget_bias=args.forget_bias,
                  devices=1 if args.mesh is None else args.mesh.devices.size)
  print(f"long_term_dependency: tasks {[t.name for t in tasks]}, settings "
        f"{settings}", flush=True)
  start, cpu_start = time.perf_counter(), time.process_time()
  records = []
  for task in tasks:
    for length in args.lengths[task.name]:
      for cell in args.cells:
        records.append(run_one(task, cell, length, args))
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  print()
  for task in tasks:
    print(table(task, records, args.cells, args.lengths[task.name]))
    print()
  scores_png, curves_png = plot(records, tasks, args.cells, args.lengths, out)
  report = dict(
      settings=settings, records=records,
      wall_seconds=round(wall, 1), cpu_seconds=round(cpu, 1),
      machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                   jax=jax.__version__, backend=jax.default_backend()))
  json_path = out / "long_term_dependency.json"
  json_path.write_text(json.dumps(report, indent=1))
  print(f"Same hidden size ({args.hidden}) for every cell: the gated cells "
        f"have more parameters (column 'params').")
  print(f"wall time {wall:.0f} s (process CPU time {cpu:.0f} s); wrote "
        f"{json_path}, {scores_png}, {curves_png}")
  return report


if __name__ == "__main__":
  main()
