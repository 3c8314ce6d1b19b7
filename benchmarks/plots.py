"""Figures for looking inside recurrent cells and for comparing them.

Lives here: `signal_heatmaps` (gates and cell state over time for one
sequence), `colored_text` (text whose characters are shaded by one cell's
activation, after Karpathy, Johnson & Fei-Fei 2015), and `score_boxplot`
(final scores per variant, after Greff et al. 2015). Every function writes
one PNG and returns its path. Not here: tracing (`jaxrnn.trace`), training,
the experiments (`benchmarks/inside_lstm.py`, `benchmarks/variant_study.py`).

Matplotlib runs with the non-interactive Agg backend, so the figures are
made on machines without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

# Each signal's range, so that colours mean the same thing in every figure:
# gates are sigmoids in [0, 1], the candidate and h are tanh-like in [-1, 1],
# the cell state is unbounded (its colour scale is set from the data).
SIGNAL_TITLES = {
    "i": "input gate i_t", "f": "forget gate f_t", "g": r"candidate g_t (Colah's $\tilde{C}_t$)",
    "o": "output gate o_t", "c": "cell state c_t", "h": "output h_t",
    "r": "reset gate r_t", "z": "update gate z_t (Colah's 1 - z_t)",
    "n": r"candidate n_t (Colah's $\tilde{h}_t$)",
}
GATE_SIGNALS = ("i", "f", "o", "r", "z")


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def signal_heatmaps(signals: Mapping[str, np.ndarray], out: Path, *,
                    labels: Optional[Sequence[str]] = None,
                    title: str = "", max_units: int = 32) -> Path:
  """One heat map per signal: units (rows) by time steps (columns).

  Args:
    signals: ``name -> [T, H]`` as `jaxrnn.trace` returns them (i, f, g, o,
      c, h for the LSTM family; r, z, n, h for the GRU), for one sequence.
    out: the PNG to write.
    labels: one label per time step (the characters of a text), or None.
    title: the figure's title.
    max_units: show at most this many units (the first ones).

  Gates are drawn on a fixed [0, 1] scale (white = closed, dark = open),
  the candidate and h on [-1, 1], the cell state on a symmetric scale set by
  its largest absolute value, so a drifting "conveyor belt" stands out.
  """
  plt = pyplot()
  order = [k for k in ("i", "f", "g", "o", "c", "h", "r", "z", "n")
           if k in signals] + [k for k in signals if k not in SIGNAL_TITLES]
  T = np.asarray(signals[order[0]]).shape[0]
  fig, axes = plt.subplots(len(order), 1, squeeze=False,
                           figsize=(min(3 + 0.16 * T, 22), 1.9 * len(order)))
  for ax, name in zip(axes[:, 0], order):
    values = np.asarray(signals[name], np.float32).reshape(T, -1)[:, :max_units]
    if name in GATE_SIGNALS:
      cmap, lo, hi = "Greys", 0.0, 1.0
    else:
      bound = 1.0 if name != "c" else max(float(np.abs(values).max()), 1e-6)
      cmap, lo, hi = "RdBu_r", -bound, bound
    image = ax.imshow(values.T, aspect="auto", cmap=cmap, vmin=lo, vmax=hi,
                      interpolation="nearest")
    ax.set_ylabel("unit", fontsize=8)
    ax.set_title(SIGNAL_TITLES.get(name, name), fontsize=9, loc="left")
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02)
    if labels is not None:
      ax.set_xticks(range(T), [visible(ch) for ch in labels], fontsize=6,
                    family="monospace")
    else:
      ax.tick_params(axis="x", labelsize=7)
  axes[-1, 0].set_xlabel("time step")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return Path(out)


def visible(ch: str) -> str:
  """A printable stand-in for whitespace characters on an axis or a grid."""
  return {"\n": "\u21b5", " ": "\u00b7", "\t": "\u2192"}.get(ch, ch)


def colored_text(text: str, values: np.ndarray, out: Path, *,
                 title: str = "", columns: int = 80,
                 vmin: float = -1.0, vmax: float = 1.0) -> Path:
  """``text`` drawn on a grid, each character's box shaded by ``values``.

  Karpathy, Johnson & Fei-Fei (2015), Fig. 2: red for a positive
  activation, blue for a negative one (``values[t]`` belongs to the cell's
  state after reading ``text[t]``). Lines wrap at newlines and at
  ``columns`` characters.
  """
  plt = pyplot()
  from matplotlib import cm, colors
  values = np.asarray(values, np.float32)
  if len(values) != len(text):
    raise ValueError(f"colored_text: values has {len(values)} entries for a "
                     f"text of {len(text)} characters; expected one per "
                     f"character.")
  rows, row, col = [], 0, 0
  for ch in text:
    rows.append((row, col))
    col += 1
    if ch == "\n" or col >= columns:
      row, col = row + 1, 0
  n_rows = row + 1
  fig, ax = plt.subplots(figsize=(columns * 0.12 + 0.5, n_rows * 0.22 + 0.8))
  cmap = cm.get_cmap("bwr") if hasattr(cm, "get_cmap") else plt.get_cmap("bwr")
  norm = colors.Normalize(vmin, vmax)
  for ch, (r, c), v in zip(text, rows, values):
    ax.add_patch(plt.Rectangle((c, -r - 1), 1, 1, color=cmap(norm(v)), lw=0))
    if ch not in "\n ":
      ax.text(c + 0.5, -r - 0.5, ch, ha="center", va="center", fontsize=7,
              family="monospace")
  ax.set_xlim(0, columns)
  ax.set_ylim(-n_rows, 0)
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=9, loc="left")
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return Path(out)


def score_boxplot(scores: Mapping[str, Mapping[str, Sequence[float]]],
                  out: Path, *, metrics: Mapping[str, str],
                  reference: Optional[str] = None) -> Path:
  """One panel per task: a box of the per-seed final scores of every variant.

  Args:
    scores: ``task -> variant -> [score per seed]``.
    out: the PNG to write.
    metrics: ``task -> axis label`` (say which way is better).
    reference: a variant whose median is drawn as a dashed line in every
      panel (Greff's "vanilla"), or None.
  """
  plt = pyplot()
  tasks = list(scores)
  fig, axes = plt.subplots(len(tasks), 1, squeeze=False,
                           figsize=(10, 3.2 * len(tasks)))
  for ax, task in zip(axes[:, 0], tasks):
    variants = list(scores[task])
    data = [np.asarray(scores[task][v], np.float64) for v in variants]
    ax.boxplot(data, showmeans=False, whis=(0, 100))
    for k, d in enumerate(data, start=1):   # the seeds themselves, jittered
      ax.plot(k + np.linspace(-0.12, 0.12, len(d)), d, ".", color="tab:blue",
              alpha=0.6, ms=4)
    if reference in scores[task]:
      ax.axhline(float(np.median(scores[task][reference])), color="gray",
                 ls="--", lw=0.8, label=f"median of {reference}")
      ax.legend(fontsize=8, loc="best")
    ax.set_xticks(range(1, len(variants) + 1), variants, fontsize=8)
    ax.set_ylabel(metrics.get(task, "score"), fontsize=8)
    ax.set_title(task, loc="left", fontsize=10)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return Path(out)


if __name__ == "__main__":
  # Run on its own by mistake: say what it is and what to run instead.
  raise SystemExit(f"{__doc__.splitlines()[0]}\nA module imported by "
                   "benchmarks/attention_task.py, inside_lstm.py and variant_study.py, "
                   "not a script: run one of those (each takes --help).")
