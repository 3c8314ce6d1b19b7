"""Plain RNNs forget, LSTMs remember: the long-term dependency problem, measured.

Run ``python benchmarks/long_term_dependency.py`` (the default grid: 195 s
wall on 2 shared CPU cores, data-parallel over 2 CPU devices, 2026-12-05),
``--quick`` (92 s) or ``--smoke`` (seconds; what the tests run).
Options: ``--task adding|recall|both``, ``--cells rnn,lstm,peephole,gru``,
``--lengths 10,25,50,100,200``, ``--steps``, ``--batch``, ``--hidden``,
``--lr`` (Adam's rates, tried in turn: default ``1e-2,1e-3``), ``--seed``,
``--forget-bias`` (LSTM cells' initial forget-gate bias,
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
hidden size, the same budget per learning rate (steps, batch, Adam,
gradient clipping at global norm 1), the same seed, so the same initial
readout and the same training batches. Adam's learning rate is 1e-2, and
a run that does not solve a validation set runs again from the same start
at 1e-3 (``--lr``): a cell that fails gets a second budget. The run with
the better validation score counts, scored on a test set of its own.
1e-2 alone held the tanh RNN to T = 10 on adding and the LSTMs to T = 25
on recall; 1e-3 solves T = 25 and T = 50 there.
Training runs ``--steps`` steps, or stops early once the mean training
loss of the last 100 steps shows the task solved (adding: MSE under 0.005,
half the threshold; recall: cross-entropy under 0.01, every answer right
with probability about 0.99): more steps would not change the verdict, and
the run saves its time for the cells that need it. Each (cell, T, rate)
compiles its train step once. Then the score is measured on 1024
held-out sequences from a key never used in training. The parameter count
of every cell is printed: the gated cells have 3-4x the tanh RNN's
parameters at the same hidden size, which is the usual comparison
(Greff et al. 2015; Jozefowicz et al. 2015) and is stated beside the table.

Memory reach. For every run the script measures `memory_reach`, the
median ``|d h_T / d x_s|`` over held-out sequences, with ``x_s`` the input
that holds what the task asks for: the factor by which the gradient that
would teach the cell to keep ``x_s`` reaches it (Bengio et al. 1994), at
initialisation and after training. It is a local measure and a median: a
model that holds the answer in a saturated state can recall it with a
reach near 0.

Reading the results. On the adding problem the claim shows as stated: the
tanh RNN solves short gaps only and the gated cells every T of the grid.
At initialisation the reach falls with T for every cell; after training
the gated cells' is 1-3 at every T (the LSTMs' cell state carries the
value), while the tanh RNN's stays near its start where that start is tiny
(T = 100 and 200). A reach of a few is not enough on its own: the tanh
RNN's is 3 at T = 50, where it still fails. The adding problem's random
marker positions give a curriculum (the second value is sometimes needed
only a few steps later, which teaches the gates to hold values longer and
longer); recall, with one fixed gap, gives none. There the GRU, whose
update gate starts near 0.5 (each step halves what it keeps) and whose
reach at T = 50 starts 1e5 times below the LSTM's, fails first.
``--forget-bias 3`` (f = 0.95 at the start) raises the LSTM's reach at
initialisation above 1 and lets it learn recall over longer gaps.
Whatever happens, the table reports it.

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
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(ROOT))

import jaxrnn  # noqa: E402
from jaxrnn import train  # noqa: E402
from benchmarks.cli import positive, positive_floats, positive_list  # noqa: E402
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
REACH_SEQUENCES = 16     # held-out sequences over which memory_reach takes its median
# Adam's learning rates, tried in turn until one solves the task: 1e-2 alone
# held the tanh RNN to T = 10 on adding, where 1e-3 solves T = 25 (three seeds).
LEARNING_RATES = (1e-2, 1e-3)

# Settings of the default run and of the short ones (times measured in the
# module docstring). Early stopping makes the gated cells' runs short, so
# most of the time goes to the runs that do not learn.
PRESETS = {
    "default": dict(lengths=dict(adding=(10, 25, 50, 100, 200),
                                 recall=(10, 25, 50, 100)),
                    steps=1500, batch=32, hidden=64, lr=LEARNING_RATES),
    "quick": dict(lengths=dict(adding=(10, 50, 100), recall=(10, 50)),
                  steps=700, batch=32, hidden=64, lr=LEARNING_RATES),
    "smoke": dict(lengths=dict(adding=(5,), recall=(5,)), steps=20, batch=16,
                  hidden=16, lr=LEARNING_RATES),
}
LR_MARKS = " bcdefgh"     # the table's mark of the rate a score was trained at


class Task(NamedTuple):
  name: str
  generate: Callable          # (key, batch_size, length) -> (xs, target)
  input_size: int
  output_size: int
  metric: str                 # what the score is
  sign: int                   # +1 where a higher score is better, -1 where lower
  loss_fn: Callable           # (model) -> loss_fn(params, batch), whole batch
  score: Callable             # (eval metrics) -> the score
  solved: Callable            # (score) -> bool
  chance: float               # the score of a model that learned nothing
  threshold: float            # the score that counts as solved
  stop_loss: float            # training loss under which a run stops early
  informative_step: Callable  # (xs [N, T, I]) -> int[N], the step the answer needs


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
        metric="MSE", sign=-1, loss_fn=adding_loss,
        score=lambda m: m["loss"],
        solved=lambda s: s < ADDING_SOLVED_MSE,
        chance=ADDING_BASELINE_MSE, threshold=ADDING_SOLVED_MSE,
        stop_loss=ADDING_SOLVED_MSE / 2,
        informative_step=lambda xs: jnp.argmax(xs[..., 1], axis=1)),   # the first marker
    "recall": Task(
        name="recall",
        generate=partial(recall, num_symbols=RECALL_SYMBOLS),
        input_size=2 * RECALL_SYMBOLS, output_size=RECALL_SYMBOLS,
        metric="accuracy", sign=1,
        loss_fn=partial(last_step_classification_loss, batched=True),
        score=lambda m: m["correct"],
        solved=lambda s: s >= RECALL_SOLVED_ACCURACY,
        chance=1.0 / RECALL_SYMBOLS, threshold=RECALL_SOLVED_ACCURACY,
        stop_loss=0.01,
        informative_step=lambda xs: jnp.zeros(len(xs), int)),          # the symbol
}


def run_one(task: Task, cell_name: str, length: int, args) -> dict:
  """Trains one cell on one task at one length at each learning rate of
  ``args.lr`` in turn, until one solves its validation set; returns the
  record of the run with the best validation score (the first that solved
  it, else the best), whose ``score`` is on a test set of its own, with
  every try's learning rate, scores and steps under ``"tries"``, and the
  memory reach (`memory_reach`) at initialisation and after that run."""
  make_cell = CELLS[cell_name][1]
  if cell_name in ("lstm", "peephole"):
    make_cell = partial(make_cell, forget_bias=args.forget_bias)
  cell = make_cell(args.hidden)
  model = readout_model(cell, task.output_size)
  k_init, k_data, k_eval = jax.random.split(jax.random.key(args.seed), 3)
  params = model.init(k_init, task.input_size)
  probe, _ = task.generate(jax.random.fold_in(k_eval, 1), REACH_SEQUENCES, length)
  evaluate = train.make_eval_step(task.loss_fn(model), batched=True)  # compiled once
  tries = []
  for lr in args.lr:      # every rate from the same params, on the same batches
    record, trained = train_at(task, cell_name, model, params, length, lr,
                               (k_data, k_eval), evaluate, args)
    tries.append((record, trained))
    if task.solved(record["valid_score"]):
      break
  rank = lambda s: task.sign * s if s == s else -np.inf     # a NaN score ranks last
  best, trained = max(tries, key=lambda t: rank(t[0]["valid_score"]))
  summary = ("lr", "valid_score", "score", "solved", "steps", "train_seconds")
  reach_of = memory_reach(cell)      # compiled once for both params
  # On the host, so that params trained data-parallel (replicated) take the same program.
  reach = [reach_of(jax.device_get(p.core), probe, task.informative_step(probe))
           for p in (params, trained)]
  return dict(best, reach_init=reach[0], reach_trained=reach[1],
              tries=[{k: r[k] for k in summary} for r, _ in tries])


def train_at(task: Task, cell_name: str, model, params, length: int, lr: float, keys,
             evaluate, args):
  """Trains ``model`` (around the cell ``cell_name``) from ``params`` on one
  task at one length at learning rate ``lr``; returns its record (the
  score, by ``evaluate``, on the test set, and on the validation set,
  which chooses between rates) and the trained params."""
  k_data, k_eval = keys
  opt = train.optimizer(lr, clip_norm=1.0)
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
  label = f"{task.name} T={length} {cell_name} lr={lr:g}"
  start = time.perf_counter()
  state, history = train.fit(
      train_step, state, batches, steps=args.steps, desc=label,
      quiet=args.quiet, stop=early_stop(task.stop_loss))
  train_seconds = time.perf_counter() - start
  score, valid_score = (
      float(task.score(evaluate(state.params, place(task.generate(k, EVAL_SIZE, length)))))
      for k in (k_eval, jax.random.fold_in(k_eval, 2)))
  losses = [float(m["loss"]) for m in history]
  return dict(task=task.name, cell=cell_name, length=length, lr=lr,
              params=param_count(params), score=score, valid_score=valid_score,
              solved=bool(task.solved(score)), steps=len(losses),
              train_seconds=round(train_seconds, 2), losses=losses), state.params


def memory_reach(cell) -> Callable:
  """``reach(params, xs, steps) -> float``: how far the information travels,
  the median over the sequences ``xs [N, T, I]`` of ``|d h_T / d x_s|``
  (Frobenius norm), the change of the last state per change of the input
  at step ``s = steps[n]``, the step that holds what the task asks for. It
  is the factor by which the gradient that would teach a cell to keep
  ``x_s`` reaches ``x_s``, the quantity Bengio et al. (1994) showed
  vanishing in a plain RNN and the LSTM's cell state is built to keep
  (Colah's conveyor belt)."""
  apply = jaxrnn.rnn(cell).apply

  def one(params, x, s):
    last = lambda x_s: apply(params, x.at[s].set(x_s))[1][-1]
    return jnp.linalg.norm(jax.jacfwd(last)(x[s]))

  median = jax.jit(lambda params, xs, steps: jnp.median(
      jax.vmap(one, in_axes=(None, 0, 0))(params, xs, steps)))
  return lambda params, xs, steps: float(median(params, xs, steps))


def early_stop(stop_loss: float):
  """A ``stop(history)`` predicate: the last 100 losses average under stop_loss."""
  def stop(history):
    if len(history) < EARLY_STOP_WINDOW:
      return False
    recent = history[-EARLY_STOP_WINDOW:]
    return sum(float(m["loss"]) for m in recent) / len(recent) < stop_loss
  return stop


def table(task: Task, records: list[dict], cells, lengths, lrs) -> str:
  """The scores as a text table: one row per cell, one column per T; a
  letter marks a score trained at a learning rate after the first."""
  by = {(r["cell"], r["length"]): r for r in records if r["task"] == task.name}
  chance = (f"predicting 1.0 scores {task.chance:.3f}" if task.name == "adding"
            else f"chance is {task.chance:.3f}")
  lines = [f"{task.name}: held-out {task.metric} after training "
           f"({chance}; * = solved, {task.metric} "
           f"{'<' if task.name == 'adding' else '>='} {task.threshold:g}; "
           f"steps used in brackets)"]
  if len(lrs) > 1:
    others = ", ".join(f"{LR_MARKS[i]} = {lr:g}" for i, lr in enumerate(lrs) if i)
    lines.append(f"  Adam lr {lrs[0]:g}, or where marked {others}: a run that fails its "
                 f"validation set is retried at the next rate, the better on validation shown")
  header = f"  {'cell':<14}{'params':>8}" + "".join(f"{'T=' + str(t):>18}"
                                                    for t in lengths)
  lines.append(header)
  for cell in cells:
    row = [f"  {CELLS[cell][0]:<14}"]
    n_params = next((r["params"] for r in by.values() if r["cell"] == cell), 0)
    row.append(f"{n_params:>8}")
    for t in lengths:
      r = by.get((cell, t))
      if r is None:
        row.append(f"{'-':>18}")
        continue
      mark = "*" if r["solved"] else " "
      lr_mark = LR_MARKS[lrs.index(r["lr"])]
      row.append(f"{r['score']:>9.4f}{mark}{lr_mark}{'(' + str(r['steps']) + ')':>7}")
    lines.append("".join(row))
  return "\n".join(lines)


def reach_table(task: Task, records: list[dict], cells, lengths) -> str:
  """`memory_reach` at initialisation and after training, one row per cell."""
  by = {(r["cell"], r["length"]): r for r in records if r["task"] == task.name}
  step = "the first marker" if task.name == "adding" else "the symbol"
  lines = [f"{task.name}: memory reach |d h_T / d x_s|, s = {step} (median over "
           f"{REACH_SEQUENCES} held-out sequences), at initialisation -> after training",
           f"  {'cell':<22}" + "".join(f"{'T=' + str(t):>18}" for t in lengths)]
  for cell in cells:
    row = [f"  {CELLS[cell][0]:<22}"]
    for t in lengths:
      r = by.get((cell, t))
      row.append(f"{'-':>18}" if r is None else
                 f"{r['reach_init']:.0e} -> {r['reach_trained']:.0e}".rjust(18))
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
               "(same hidden size and budget per learning rate for every cell)")
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
  p.add_argument("--lr", type=positive_floats,
                 help="Adam learning rates, comma-separated, tried in turn until one "
                      "solves the task (default 1e-2,1e-3)")
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
  if len(args.lr) > len(LR_MARKS):
    p.error(f"--lr: at most {len(LR_MARKS)} rates (the table marks each); got {len(args.lr)}")
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
                  batch=args.batch, hidden=args.hidden, lr=list(args.lr),
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
    print(table(task, records, args.cells, args.lengths[task.name], args.lr))
    print()
  for task in tasks:
    print(reach_table(task, records, args.cells, args.lengths[task.name]))
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
