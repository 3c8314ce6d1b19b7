"""Which parts of the LSTM matter? Greff et al.'s variant study, small.

Run ``python benchmarks/variant_study.py`` (the default: 11 cells, 5
seeds, two tasks; 15.5 CPU-minutes, 18 minutes of wall time measured on 2
CPU cores shared with other jobs, about 10 on idle ones) or ``--quick``
(tiny models, a few steps; under a minute, mostly compilation). Options: ``--tasks digits,char``,
``--variants vanilla,NFG,...``, ``--seeds 5``, ``--steps 1500``,
``--hidden``, ``--batch``, ``--lr``, ``--out results/``, ``--quiet``.

Lives here: the study (variants x seeds x tasks), its table, its box plot,
its JSON and its verdicts on Greff's findings. Not here: the variants
themselves (the switches of `jaxrnn.lstm`), the tasks (`jaxrnn.tasks`),
the training loop (`jaxrnn.train`), the figures (`benchmarks/plots.py`).

Greff, Srivastava, Koutnik, Steunebrink & Schmidhuber (2015), "LSTM: A
Search Space Odyssey", trained eight variants of the peephole LSTM
("vanilla", V) on speech, handwriting and music, and found: removing the
forget gate (NFG) or the output activation (NOAF) hurts most, on all
three; coupling the input and forget gates (CIFG) or removing the
peepholes (NP) does not hurt significantly; removing the input gate (NIG),
the output gate (NOG) or the input activation (NIAF) hurts on speech and
handwriting but not on music; full gate recurrence (FGR) changes nothing
significant on speech and handwriting and is worse on music. The verdicts
below check the five findings that hold on every dataset or on two of
three (FGR's "no gain"). This script runs
the same variants, plus the GRU and the tanh RNN, on tasks that train in
minutes on a laptop:

* ``digits``: scikit-learn's 8x8 digits read one pixel per step (T = 64),
  the class read out at the last step (`jaxrnn.tasks.sequential_digits`).
  Score: test classification error in %, lower is better (chance 90%).
* ``char``: a character-level language model of the Python reference
  (`jaxrnn.tasks.reference_text`), trained on random windows of ``--window``
  characters from the training text, each read from a zero carry. Score:
  bits per character on held-out test windows of ``2 * window`` characters
  (also from a zero carry), lower is better (uniform guess: log2 V).

Method. Every variant gets the same model around its cell (a linear readout,
`jaxrnn.tasks.readout_model`), the same hidden size H (so the variants
differ in parameter count, as in Greff's study: CIFG and NIG have one gate
block fewer, the GRU three blocks, the tanh RNN one), the same optimiser
(Adam, gradient clipping at global norm 1), the same steps and batch size.
Greff drew the hyper-parameters at random for every trial; here they are
fixed, and the seeds vary the initial weights and the order of the batches
(seed s sees the same batches for every variant). The seeds train together:
the train step is vmapped over a stack of per-seed params and optimiser
states, so S seeds cost one compiled step on S times the batch.

Verdicts follow Greff: a variant differs from vanilla when Welch's t-test on
its per-seed scores gives p < 0.05 (diverged runs score chance). With 5
seeds this test sees large effects only; the table prints the medians and
the raw scores are in the JSON.

Outputs in ``--out``: ``variant_study.json`` (settings, every raw score
and held-out loss per seed, the seed-mean training loss every
``steps // 100`` steps, p-values, verdicts, times), ``variant_study.png`` (box plots, one panel
per task) and the table on stdout. The numbers are what this run produced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

if "--quick" in sys.argv:   # a run of seconds is mostly XLA compilation
  os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(ROOT))

import jaxrnn  # noqa: E402
from jaxrnn import train  # noqa: E402
from jaxrnn.tasks import (DIGITS_CLASSES, Vocab,  # noqa: E402
                          last_step_classification_loss, param_count,
                          readout_model, reference_text, sequential_digits,
                          split_tokens)
from benchmarks.inside_lstm import next_character_loss  # noqa: E402
from benchmarks.cli import at_least, positive  # noqa: E402
from benchmarks.plots import score_boxplot  # noqa: E402

# Greff's names. "vanilla" is the peephole LSTM and every LSTM variant
# changes one thing in it (NP removes the peepholes: jaxrnn.lstm's default).
VARIANTS: dict[str, Callable[[int], jaxrnn.Cell]] = {
    "vanilla": lambda H: jaxrnn.lstm(H, peephole=True),
    "NIG": lambda H: jaxrnn.lstm(H, peephole=True, input_gate=False),
    "NFG": lambda H: jaxrnn.lstm(H, peephole=True, forget_gate=False),
    "NOG": lambda H: jaxrnn.lstm(H, peephole=True, output_gate=False),
    "NIAF": lambda H: jaxrnn.lstm(H, peephole=True, input_activation=None),
    "NOAF": lambda H: jaxrnn.lstm(H, peephole=True, output_activation=None),
    "NP": lambda H: jaxrnn.lstm(H),
    "CIFG": lambda H: jaxrnn.lstm(H, peephole=True, coupled_input_forget=True),
    "FGR": lambda H: jaxrnn.lstm(H, peephole=True, full_gate_recurrence=True),
    "GRU": lambda H: jaxrnn.gru(H),
    "RNN": lambda H: jaxrnn.simple_rnn(H),
}
REFERENCE = "vanilla"

# What Greff et al. (2015) report, as (variant, expected verdict vs vanilla).
GREFF_FINDINGS = [
    ("NFG", "worse", "removing the forget gate hurts"),
    ("NOAF", "worse", "removing the output activation hurts"),
    ("CIFG", "same", "coupling input and forget gates does not hurt"),
    ("NP", "same", "removing the peepholes does not hurt"),
    ("FGR", "same", "full gate recurrence brings no gain (worse on music)"),
]

PRESETS = {
    "default": dict(seeds=5, hidden=dict(digits=32, char=64),
                    steps=dict(digits=1500, char=1000), batch=32, window=48,
                    lr=dict(digits=5e-3, char=5e-3)),
    "quick": dict(seeds=2, hidden=dict(digits=8, char=8),
                  steps=dict(digits=6, char=6), batch=8, window=12,
                  lr=dict(digits=1e-2, char=1e-2)),
}
CHAR_EVAL_WINDOWS = 128   # held-out windows of 2 * window characters


class Task(NamedTuple):
  name: str
  metric: str            # what the score is (lower is better for both)
  input_size: int
  output_size: int
  loss_fn: Callable      # (model) -> loss_fn(params, example)
  batches: Callable      # (rng, steps, seeds, batch) -> iterator of [S, B, ...]
  eval_batch: tuple      # held-out examples, [N, ...]
  score: Callable        # (eval metrics of one seed) -> score
  chance: float          # the score of a model that learned nothing


def digits_task() -> Task:
  train_set, test_set = sequential_digits(jax.random.key(0))

  def batches(rng, steps, seeds, batch):
    for _ in range(steps):
      idx = rng.integers(0, len(train_set.y), (seeds, batch))
      yield train_set.xs[idx], train_set.y[idx]

  return Task(
      name="digits", metric="test error %", input_size=1,
      output_size=DIGITS_CLASSES, loss_fn=last_step_classification_loss,
      batches=batches, eval_batch=(test_set.xs, test_set.y),
      score=lambda m: 100.0 * (1.0 - float(m["correct"])),
      chance=100.0 * (1 - 1 / DIGITS_CLASSES))


def char_task(window: int) -> Task:
  text = reference_text()
  vocab = Vocab.from_text(text)
  train_ids, _, test_ids = split_tokens(vocab.encode(text))
  V = len(vocab)
  starts = np.linspace(0, len(test_ids) - 2 * window - 2, CHAR_EVAL_WINDOWS)
  eval_windows = np.stack([test_ids[s:s + 2 * window + 1]
                           for s in starts.astype(int)])

  def batches(rng, steps, seeds, batch):
    offsets = np.arange(window + 1)
    for _ in range(steps):
      start = rng.integers(0, len(train_ids) - window - 1, (seeds, batch))
      yield (train_ids[start[..., None] + offsets],)

  return Task(
      name="char", metric="test bits/char", input_size=V, output_size=V,
      loss_fn=lambda model: next_character_loss(model, V), batches=batches,
      eval_batch=(eval_windows,),
      score=lambda m: float(m["loss"]) / math.log(2), chance=math.log2(V))


def unpack(example):
  """A batch is a tuple; the char task's has one element (the windows)."""
  return example[0] if len(example) == 1 else example


def run_variant(task: Task, variant: str, args) -> dict:
  """Trains ``args.seeds`` seeds of one variant on one task, in parallel."""
  H = args.hidden[task.name]
  model = readout_model(VARIANTS[variant](H), task.output_size)
  loss_fn = task.loss_fn(model)
  per_example = lambda params, example: loss_fn(params, unpack(example))
  opt = train.optimizer(args.lr[task.name], clip_norm=1.0)
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)
  params = jax.vmap(lambda k: model.init(k, task.input_size))(keys)
  state = jax.vmap(lambda p: train.init_state(p, opt))(params)
  train_step = train.make_train_step(per_example, opt)
  seeds_step = jax.jit(jax.vmap(train_step))

  def step(state, batch):   # one scalar loss (the mean over seeds) for fit
    state, metrics = seeds_step(state, batch)
    return state, {"loss": jnp.mean(metrics["loss"])}

  rng = np.random.default_rng(args.seed)   # same batches for every variant
  steps = args.steps[task.name]
  start = time.perf_counter()
  state, history = train.fit(step, state, task.batches(rng, steps, args.seeds,
                                                         args.batch),
                             steps=steps, desc=f"{task.name} {variant}",
                             quiet=args.quiet)
  train_seconds = time.perf_counter() - start
  eval_step = train.make_eval_step(per_example)
  metrics = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))(
      state.params, task.eval_batch)
  scores = []
  for s in range(args.seeds):
    score = task.score(jax.tree.map(lambda m: m[s], metrics))
    scores.append(score if math.isfinite(score) else float("nan"))
  losses = [float(m["loss"]) for m in history]
  one_seed = jax.tree.map(lambda p: p[0], params)
  return dict(task=task.name, variant=variant, hidden=H, chance=task.chance,
              params=param_count(one_seed.core), scores=scores,
              eval_loss=[float(x) for x in metrics["loss"]],
              train_seconds=round(train_seconds, 2),
              train_loss=losses[::max(1, len(losses) // 100)])


def welch_p(a, b) -> float:
  """Two-sided p-value of Welch's t-test (unequal variances)."""
  from scipy import stats
  a, b = np.asarray(a, float), np.asarray(b, float)
  if np.std(a) == 0 and np.std(b) == 0:
    return 1.0 if np.mean(a) == np.mean(b) else 0.0
  return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdicts(records: list[dict], tasks: dict) -> dict:
  """``task -> variant -> dict(p, verdict)`` against vanilla; NaN = chance."""
  out = {}
  for name, task in tasks.items():
    by = {r["variant"]: cleaned(r["scores"], task.chance)
          for r in records if r["task"] == name}
    if REFERENCE not in by:
      continue
    ref = by[REFERENCE]
    out[name] = {}
    for variant, scores in by.items():
      if variant == REFERENCE:
        continue
      p = welch_p(scores, ref)
      worse = np.mean(scores) > np.mean(ref)
      verdict = "same" if p >= 0.05 else ("worse" if worse else "better")
      out[name][variant] = dict(p=p, verdict=verdict)
  return out


def cleaned(scores, chance: float) -> list[float]:
  """A diverged run (NaN) scores what a model that learned nothing scores."""
  return [chance if not math.isfinite(s) else s for s in scores]


def table(records: list[dict], tasks: dict, checks: dict) -> str:
  """Mean ± std, median and the verdict vs vanilla, one block per task."""
  lines = []
  for name, task in tasks.items():
    rs = [r for r in records if r["task"] == name]
    if not rs:
      continue
    lines.append(f"{name}: {task.metric} over {len(rs[0]['scores'])} seeds "
                 f"(lower is better; chance {task.chance:.2f}; H="
                 f"{rs[0]['hidden']}; verdict: Welch p<0.05 vs {REFERENCE})")
    lines.append(f"  {'variant':<9}{'params':>8}{'mean ± std':>18}"
                 f"{'median':>9}{'diverged':>9}{'p':>8}  verdict")
    for r in rs:
      s = np.asarray(cleaned(r["scores"], task.chance))
      diverged = sum(not math.isfinite(x) for x in r["scores"])
      check = checks.get(name, {}).get(r["variant"])
      p = f"{check['p']:.3f}" if check else "-"
      verdict = check["verdict"] if check else "(reference)"
      lines.append(f"  {r['variant']:<9}{r['params']:>8}"
                   f"{f'{s.mean():.3f} ± {s.std(ddof=1) if len(s) > 1 else 0:.3f}':>18}"
                   f"{np.median(s):>9.3f}{diverged:>9}{p:>8}  {verdict}")
    lines.append("")
  return "\n".join(lines)


def greff_summary(checks: dict) -> list[dict]:
  """Each of Greff's findings: reproduced on which tasks, and which not."""
  rows = []
  for variant, expected, claim in GREFF_FINDINGS:
    got = {task: c[variant]["verdict"] for task, c in checks.items()
           if variant in c}
    if not got:
      continue
    rows.append(dict(variant=variant, claim=claim, expected=expected,
                     observed=got,
                     reproduced=[t for t, v in got.items() if v == expected],
                     not_reproduced=[t for t, v in got.items() if v != expected]))
  return rows


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="a few steps of tiny models (seconds; the tests)")
  parser.add_argument("--tasks", default="digits,char")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--seeds", type=at_least(2),
                      help="2 or more: the test compares the seeds' spread")
  parser.add_argument("--steps", type=positive, help="steps for every task")
  parser.add_argument("--hidden", type=positive, help="H for every task")
  parser.add_argument("--batch", type=positive, help="examples per seed per step")
  parser.add_argument("--window", type=positive, help="char task window length")
  parser.add_argument("--lr", type=float, help="Adam learning rate")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=str(ROOT / "results"))
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  args = parser.parse_args(argv)
  preset = PRESETS["quick" if args.quick else "default"]
  tasks = [t for t in args.tasks.split(",") if t]
  if not tasks:
    parser.error("--tasks: expected digits and/or char, got none")
  for t in tasks:
    if t not in ("digits", "char"):
      parser.error(f"--tasks: unknown task {t!r}; expected digits and/or char.")
  args.tasks = tasks
  args.variants = [v for v in args.variants.split(",") if v]
  for v in args.variants:
    if v not in VARIANTS:
      parser.error(f"--variants: unknown variant {v!r}; expected some of "
                   f"{','.join(VARIANTS)}.")
  args.seeds = args.seeds or preset["seeds"]
  per_task = lambda value, key: ({t: value for t in ("digits", "char")}
                                 if value is not None else preset[key])
  args.steps = per_task(args.steps, "steps")
  args.hidden = per_task(args.hidden, "hidden")
  args.lr = per_task(args.lr, "lr")
  args.batch = args.batch or preset["batch"]
  args.window = args.window or preset["window"]
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  makers = dict(digits=digits_task, char=lambda: char_task(args.window))
  tasks = {name: makers[name]() for name in args.tasks}
  start = time.perf_counter()
  records = []
  for task in tasks.values():
    for variant in args.variants:
      records.append(run_variant(task, variant, args))
      if not args.quiet:
        r = records[-1]
        print(f"  {task.name} {variant}: {np.round(r['scores'], 3).tolist()} "
              f"({r['train_seconds']} s)", flush=True)
  wall = time.perf_counter() - start
  checks = verdicts(records, tasks)
  summary = greff_summary(checks)
  print(table(records, tasks, checks))
  print("Greff et al. (2015) findings (vs vanilla = peephole LSTM):")
  for row in summary:
    print(f"  {row['claim']} ({row['variant']} {row['expected']}): observed "
          + ", ".join(f"{t}: {v}" for t, v in row["observed"].items())
          + f" -> reproduced on {row['reproduced'] or 'none'}")
  print(f"wall time {wall:.0f} s on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}); jax "
        f"{jax.__version__}")
  scores = {t: {r["variant"]: cleaned(r["scores"], tasks[t].chance)
                for r in records if r["task"] == t} for t in tasks}
  png = score_boxplot(scores, out / "variant_study.png",
                      metrics={t: f"{tasks[t].metric} (lower is better)"
                               for t in tasks}, reference=REFERENCE)
  report = dict(
      settings=dict(tasks=args.tasks, variants=args.variants,
                    seeds=args.seeds, steps=args.steps, hidden=args.hidden,
                    batch=args.batch, window=args.window, lr=args.lr,
                    seed=args.seed, quick=args.quick),
      records=records, verdicts=checks, greff=summary,
      wall_seconds=round(wall, 1), jax=jax.__version__,
      cpu_count=os.cpu_count(), figure=png.name)
  (out / "variant_study.json").write_text(json.dumps(report, indent=1))
  return report


if __name__ == "__main__":
  main()
