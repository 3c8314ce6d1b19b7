"""Inside an LSTM: its gates and cell state, on a character model of text.

Run ``python benchmarks/inside_lstm.py`` (trains a small character-level
LSTM(128) on the Python reference, then looks inside it: 4 minutes of wall
time measured on 2 CPU cores shared with other jobs, under 2 on idle ones)
or ``--quick`` (seconds; what the tests run). Options: ``--cell
lstm|peephole|gru``, ``--hidden``, ``--steps``, ``--window``, ``--batch``,
``--lr``, ``--params FILE`` (look inside a model saved by ``--save-params``
with `jaxrnn.io.save` instead of training one), ``--chars`` (the length of
the analysed passage), ``--out results/``, ``--quiet``.

Lives here: the experiment and `text_features` / `correlated_cells`, the
search for cells that track a feature of the text. Not here: tracing
(`jaxrnn.trace`), the figures (`benchmarks/plots.py`), the corpus
(`jaxrnn.tasks`), the training loop (`jaxrnn.train`).

Colah's "Understanding LSTM Networks" explains an LSTM by its cell state, a
conveyor belt that gates forget from, write to and read from. This script
shows the real signals of a trained model, as `jaxrnn.trace` records them
from the cell's own step:

1. ``inside_lstm_gates.png``: heat maps of i, f, g, o, c, h (units x time)
   while the model reads a passage of held-out text, one column per
   character.
2. A search for interpretable cells (Karpathy, Johnson & Fei-Fei 2015,
   "Visualizing and Understanding Recurrent Networks"): for simple features
   of the text (inside double quotes, inside brackets, position in the
   line, inside a line's indentation), the Pearson correlation of every
   cell's ``tanh(c_t)`` (for the GRU ``h_t``) with the feature over the
   passage; the best cells are printed beside the best cell of the same
   network untrained (a control: how much correlation chance gives with
   this many cells and characters).
3. ``inside_lstm_cell_<feature>.png``: the passage coloured by the best
   cell of each feature (red positive, blue negative), as in Karpathy et
   al.'s Figure 2.

Training: random windows of ``--window`` characters of the training text,
each read from a zero carry, next-character cross-entropy, Adam. The
analysed passage is longer than a window and is read in one pass from a
zero carry; its bits per character are printed beside the held-out score
on training-length windows, so a model that drifts on long text shows it.
``inside_lstm.json`` holds the settings, the scores and every correlation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

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
from jaxrnn.tasks import (ModelParams, Vocab, param_count,  # noqa: E402
                          readout_model, reference_text, split_tokens)
from benchmarks.cli import positive  # noqa: E402
from benchmarks.plots import colored_text, signal_heatmaps  # noqa: E402

CELLS = dict(lstm=jaxrnn.lstm, peephole=jaxrnn.peephole_lstm, gru=jaxrnn.gru)
PRESETS = {
    "default": dict(hidden=128, steps=2000, window=100, batch=32, lr=3e-3,
                    chars=4000),
    "quick": dict(hidden=16, steps=20, window=24, batch=8, lr=1e-2,
                  chars=400),
}
HEATMAP_CHARS = 90       # characters in the gate heat maps
COLORED_CHARS = 800      # characters in each coloured-text figure
TOP = 3                  # best cells printed per feature
OPENING, CLOSING = "([{", ")]}"


def text_features(text: str) -> dict[str, np.ndarray]:
  """Simple features of ``text``, one value per character: ``name -> float32[T]``.

  Each value describes the state after reading ``text[t]`` (what a cell
  that tracks the feature would hold at step t):

  - ``inside quotes``: 1 between a double quote and the next one (the
    opening quote included, the closing one not);
  - ``inside brackets``: 1 while more of ``([{`` than of ``)]}`` have been
    read (the closing bracket not included); depth counts from 0 and never
    goes below it;
  - ``position in line``: the column, 0 for a line's first character
    (a newline ends its line and has the last column);
  - ``indentation``: 1 on a line's leading spaces, 0 from its first other
    character on.

  >>> f = text_features('a "b" (c)\\n  d')
  >>> f["inside quotes"].astype(int).tolist()
  [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
  >>> f["inside brackets"].astype(int).tolist()
  [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
  >>> f["position in line"].astype(int).tolist()
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
  >>> f["indentation"].astype(int).tolist()
  [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]
  """
  T = len(text)
  quotes, brackets = np.zeros(T, np.float32), np.zeros(T, np.float32)
  column, indent = np.zeros(T, np.float32), np.zeros(T, np.float32)
  inside, depth, col, leading = False, 0, 0, True
  for t, ch in enumerate(text):
    if ch == '"':
      inside = not inside
    depth = depth + (ch in OPENING) - (ch in CLOSING and depth > 0)
    leading = leading and ch == " "
    quotes[t], brackets[t] = inside, depth > 0
    column[t], indent[t] = col, leading
    col += 1
    if ch == "\n":
      col, leading = 0, True
  return {"inside quotes": quotes, "inside brackets": brackets,
          "position in line": column, "indentation": indent}


def correlated_cells(activations: np.ndarray, features: dict[str, np.ndarray],
                     top: int = TOP) -> dict[str, list[tuple[int, float]]]:
  """The cells most correlated with each feature: ``name -> [(unit, r), ...]``.

  ``r`` is the Pearson correlation over time of unit ``activations[:, unit]``
  (``[T, H]``) with ``features[name]`` (``[T]``), sorted by ``|r|``, the
  ``top`` best; its sign says whether the cell rises or falls with the
  feature. A constant unit or feature has r = 0.

  >>> t = np.arange(50.0)
  >>> acts = np.stack([np.sin(t), -2 * t + 1, np.cos(t)], axis=1)
  >>> correlated_cells(acts, {"time": t}, top=1)
  {'time': [(1, -1.0)]}
  """
  a = np.asarray(activations, np.float64)
  a = a - a.mean(0)
  a_norm = np.sqrt((a * a).sum(0))
  result = {}
  for name, feature in features.items():
    f = np.asarray(feature, np.float64)
    if f.shape != a.shape[:1]:
      raise ValueError(f"correlated_cells: feature {name!r} has shape "
                       f"{f.shape}; expected one value per step, "
                       f"({a.shape[0]},), like activations' first axis.")
    f = f - f.mean()
    denom = a_norm * np.sqrt((f * f).sum())
    r = np.divide(f @ a, denom, out=np.zeros(a.shape[1]), where=denom > 0)
    best = np.argsort(-np.abs(r), kind="stable")[:top]
    result[name] = [(int(u), round(float(r[u]), 4)) for u in best]
  return result


def cell_signal(signals: dict) -> tuple[str, np.ndarray]:
  """The memory to search: ``tanh(c_t)`` for the LSTM family, else ``h_t``."""
  if "c" in signals:
    return "tanh(c)", np.tanh(np.asarray(signals["c"]))
  return "h", np.asarray(signals["h"])


def next_character_loss(model, vocab_size: int):
  """Summed next-character cross-entropy (nats) of one window of ids."""
  def loss_fn(params, window):
    inputs, targets = window[:-1], window[1:]
    _, logits = model.apply(params, jax.nn.one_hot(inputs, vocab_size))
    return (*train.cross_entropy(logits, targets), {})
  return loss_fn


def train_char_model(model, params, train_ids, V: int, args):
  """Adam on random windows of the training text; returns params, losses."""
  loss_fn = next_character_loss(model, V)
  opt = train.optimizer(args.lr, clip_norm=1.0)
  state = train.init_state(params, opt)
  train_step = train.make_train_step(loss_fn, opt)
  rng = np.random.default_rng(args.seed)
  offsets = np.arange(args.window + 1)

  def batches():
    for _ in range(args.steps):
      start = rng.integers(0, len(train_ids) - args.window - 1, args.batch)
      yield train_ids[start[:, None] + offsets]

  state, history = train.fit(train_step, state, batches(), steps=args.steps,
                             desc="char LSTM", quiet=args.quiet)
  return state.params, [float(m["loss"]) for m in history]


def heldout_bpc(model, params, ids: np.ndarray, V: int, window: int,
                n: int = 64) -> float:
  """Bits per character on ``n`` held-out windows of ``window`` characters."""
  starts = np.linspace(0, len(ids) - window - 2, n).astype(int)
  batch = np.stack([ids[s:s + window + 1] for s in starts])
  loss_fn = next_character_loss(model, V)
  total, count, _ = jax.jit(jax.vmap(loss_fn, (None, 0)))(params, batch)
  return float(total.sum() / count.sum()) / math.log(2)


def look_inside(cell, params: ModelParams, model, ids: np.ndarray, V: int):
  """Traces the cell over ``ids`` from a zero carry: signals and bits/char."""
  xs = jax.nn.one_hot(jnp.asarray(ids), V)
  _, hs, signals = jax.jit(lambda p, x: jaxrnn.trace(cell, p.core, x))(params, xs)
  logits = hs @ params.w_out + params.b_out
  logp = jax.nn.log_softmax(logits[:-1])
  nll = -jnp.take_along_axis(logp, jnp.asarray(ids[1:])[:, None], -1).mean()
  return {k: np.asarray(v) for k, v in signals.items()}, float(nll) / math.log(2)


def heatmap_start(text: str, width: int) -> int:
  """Where to start a ``width``-character view of ``text``: at a line start,
  preferring a quote and the most non-space characters (the reference has
  tables of blanks that show nothing).

  >>> heatmap_start('     \\n  \\nab "c" d\\n', 6)
  9
  """
  starts = [0] + [i + 1 for i, ch in enumerate(text[:-1]) if ch == "\n"]
  starts = [i for i in starts if i + width <= len(text)] or [0]
  score = lambda i: (sum(ch not in " \n" for ch in text[i:i + width])
                     + width * ('"' in text[i:i + width]))
  return max(starts, key=score)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="a tiny model, a few steps (seconds; the tests)")
  parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
  for name, kind in (("hidden", positive), ("steps", positive), ("window", positive),
                     ("batch", positive), ("lr", float), ("chars", positive)):
    parser.add_argument(f"--{name}", type=kind)
  source = parser.add_mutually_exclusive_group()   # a loaded model is not saved again
  source.add_argument("--params", help="a params file (jaxrnn.io) to look "
                      "inside instead of training; needs the same --cell and "
                      "--hidden")
  source.add_argument("--save-params", help="save the trained params here")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=str(ROOT / "results"))
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  if args.params and not Path(args.params).is_file():
    parser.error(f"--params {args.params}: no such file")
  for key, value in PRESETS["quick" if args.quick else "default"].items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  text = reference_text()
  vocab = Vocab.from_text(text)
  V = len(vocab)
  train_ids, _, test_ids = split_tokens(vocab.encode(text))
  cell = CELLS[args.cell](args.hidden)
  model = readout_model(cell, V)
  init_params = model.init(jax.random.key(args.seed), V)

  start = time.perf_counter()
  losses = []
  if args.params:
    params = jaxrnn.io.load(args.params, namedtuples=[ModelParams])
    source = f"loaded from {args.params}"
  else:
    params, losses = train_char_model(model, init_params, train_ids, V, args)
    source = (f"trained {args.steps} steps on windows of {args.window} "
              f"characters, batch {args.batch}, Adam lr {args.lr}")
    if args.save_params:
      jaxrnn.io.save(args.save_params, params)
  train_seconds = time.perf_counter() - start
  bpc = heldout_bpc(model, params, test_ids, V, args.window)

  # The passage: held-out text, read in one pass from a zero carry.
  passage_ids = test_ids[:args.chars]
  passage = vocab.decode(passage_ids)
  signals, passage_bpc = look_inside(cell, params, model, passage_ids, V)
  # The control: the same network untrained (init_params were donated to
  # the train step, so they are made again from the same key).
  control_params = model.init(jax.random.key(args.seed), V)
  control_signals, _ = look_inside(cell, control_params, model, passage_ids, V)
  what, memory = cell_signal(signals)
  features = text_features(passage)
  found = correlated_cells(memory, features)
  control = correlated_cells(cell_signal(control_signals)[1], features, top=1)

  print(f"inside_lstm: {args.cell}({args.hidden}) character model, "
        f"{param_count(params):,} params, {source} ({train_seconds:.0f} s)")
  print(f"  held-out bits/char {bpc:.3f} on windows of {args.window}; "
        f"{passage_bpc:.3f} on the {len(passage)}-character passage read in "
        f"one pass (uniform guess {math.log2(V):.2f})")
  print(f"  cells of {what} most correlated with each feature over the "
        f"passage (Pearson r; control = best |r| of the untrained network):")
  for name, cells in found.items():
    best = ", ".join(f"cell {u}: r={r:+.2f}" for u, r in cells)
    print(f"    {name:<18} {best}   (control {control[name][0][1]:+.2f})")

  first = heatmap_start(passage, HEATMAP_CHARS)
  shown = slice(first, first + HEATMAP_CHARS)
  heat = {k: v[shown] for k, v in signals.items()}
  figures = [signal_heatmaps(
      heat, out / "inside_lstm_gates.png", labels=passage[shown],
      title=f"{args.cell}({args.hidden}) reading held-out text "
            f"(first 32 units)")]
  for name, cells in found.items():
    unit, r = cells[0]
    slug = name.replace(" ", "_")
    n = min(COLORED_CHARS, len(passage))
    figures.append(colored_text(
        passage[:n], memory[:n, unit], out / f"inside_lstm_cell_{slug}.png",
        title=f"cell {unit}, {what} (red +, blue -): most correlated with "
              f"'{name}' (r = {r:+.2f})"))
  report = dict(
      settings=dict(cell=args.cell, hidden=args.hidden, steps=args.steps,
                    window=args.window, batch=args.batch, lr=args.lr,
                    chars=len(passage), seed=args.seed, quick=args.quick,
                    params=args.params),
      params=param_count(params), heldout_bpc=bpc, passage_bpc=passage_bpc,
      uniform_bpc=math.log2(V), signal=what, train_seconds=round(train_seconds, 1),
      losses=losses, correlations=found, control=control,
      figures=[f.name for f in figures])
  (out / "inside_lstm.json").write_text(json.dumps(report, indent=1))
  print(f"  wrote {', '.join(f.name for f in figures)} and inside_lstm.json "
        f"to {out}")
  return report


if __name__ == "__main__":
  main()
