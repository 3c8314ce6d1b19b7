"""A character-level language model trained with truncated BPTT.

Run ``python benchmarks/char_lm.py`` (82-122 s of training measured
on 2 shared CPU cores; test bits per character 1.775-1.79), ``--quick`` (under a
minute) or ``--smoke`` (seconds; the tests). Options:
``--cell lstm|gru|rnn|peephole``, ``--hidden``, ``--batch`` (parallel
streams), ``--window`` (TBPTT length), ``--steps``, ``--lr``, ``--seed``,
``--temperature``, ``--sample-length``, ``--prompt``, ``--out results/``,
``--quiet``.

Lives here: the experiment (train, measure, sample, plot). Not here: the
corpus and its encoding (`jaxrnn.tasks.corpus`), the TBPTT layout and
step and the training loop (`jaxrnn.train`).

Colah's post shows char-RNNs writing text one character at a time; this is
the small version. The corpus is the Python language reference shipped
with CPython (`jaxrnn.tasks.reference_text`, about 465,000 characters; no
download), split 90/5/5 into contiguous train, validation and test text.

Training (Zaremba et al. 2014): the training text is cut into ``--batch``
parallel streams; each step reads the next ``--window`` characters of every
stream, and the carry at the end of a window is the initial carry of the
next one, with its gradient stopped (`jax.lax.stop_gradient`): the model
sees the whole past, gradients flow back ``--window`` steps. When a stream
ends the carry restarts from zero and reading starts again (a new epoch).

Measure: bits per character, ``-(1/N) sum_t log2 p(x_{t+1} | x_{<=t})``,
on the held-out test text read the same way (32 streams, each from a zero
carry passed on window by window; every character is scored once, the
last window of each stream padded and masked: `jaxrnn.train.windows(...,
keep_tail=True)`),
beside the uniform guess ``log2(V)``. Sampling: from a prompt, one
character at a time with ``softmax(logits / temperature)``, feeding each
sample back in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(ROOT))

import jaxrnn  # noqa: E402
from jaxrnn import train  # noqa: E402
from benchmarks.cli import positive  # noqa: E402
from jaxrnn.tasks import (Vocab, generate, param_count, readout_model,  # noqa: E402
                          reference_text, split_tokens)

CELLS = dict(lstm=jaxrnn.lstm, gru=jaxrnn.gru, rnn=jaxrnn.simple_rnn,
             peephole=jaxrnn.peephole_lstm)
PRESETS = {
    "default": dict(hidden=256, batch=32, window=64, steps=1500, lr=3e-3),
    "quick": dict(hidden=128, batch=32, window=64, steps=300, lr=3e-3),
    "smoke": dict(hidden=32, batch=8, window=32, steps=30, lr=1e-2),
}
SMOKE_EVAL_CHARS = 4000   # --smoke scores the first 4000 test characters only


def char_model(args, vocab_size: int):
  """A recurrent cell over one-hot characters with a readout to logits."""
  return readout_model(CELLS[args.cell](args.hidden), vocab_size)


def window_nll(model, vocab_size: int):
  """``(params, carry, inputs [W], targets [W], mask bool[W]) -> (carry,
  nll_sum)`` for one stream.

  The negative log-likelihood in nats, summed over the window's real
  targets (``mask``); the carry comes in from the previous window and goes
  out to the next one.
  """
  def nll(params, carry, inputs, targets, mask):
    carry, logits = model.apply(params, jax.nn.one_hot(inputs, vocab_size),
                                carry=carry)
    logp = jax.nn.log_softmax(logits)
    return carry, -jnp.where(mask, jnp.take_along_axis(logp, targets[:, None], -1)[:, 0],
                             0.0).sum()
  return nll


def bits_per_character(model, vocab_size: int):
  """``bpc(params, tokens, batch_size, window) -> float``, compiled once.

  The text is cut into ``batch_size`` streams read window by window as in
  training (carry passed on); the mean is over every predicted character:
  ``-(1/N) sum_t log2 p(x_{t+1} | x_{<=t})``.
  """
  nll = window_nll(model, vocab_size)

  @jax.jit
  def total_nll(params, inputs, targets, mask):   # [K, B, W] each
    carry = jax.vmap(lambda _: model.initial_carry(params))(inputs[0])

    def body(carry, xym):
      carry, total = jax.vmap(nll, (None, 0, 0, 0, 0))(params, carry, *xym)
      return carry, total.sum()
    _, totals = jax.lax.scan(body, carry, (inputs, targets, mask))
    return totals.sum()

  def bpc(params, tokens, batch_size, window):
    inputs, targets, mask = train.windows(tokens, batch_size, window, keep_tail=True)
    return float(total_nll(params, inputs, targets, mask)) / int(mask.sum()) / math.log(2)
  return bpc


def sample(model, params, vocab: Vocab, prompt: str, length: int,
           temperature: float, key) -> str:
  """``length`` characters after ``prompt``, one at a time
  (`jaxrnn.tasks.generate`: temperature 0 takes the most likely one)."""
  run = jax.jit(lambda params, ids, key: generate(model, params, ids, length, key,
                                                 temperature=temperature))
  return vocab.decode(run(params, jnp.asarray(vocab.encode(prompt)), key))


def train_tbptt(model, params, train_ids, vocab_size, args, valid_ids,
                eval_batch):
  """TBPTT over the training streams; returns (params, losses, valid curve).

  Window k of every stream starts from the carry that window k-1 ended
  with, its gradient stopped (`jaxrnn.train.make_tbptt_step`). The carry
  restarts from zero when the streams are exhausted and reading starts
  over.
  """
  V = vocab_size
  inputs, targets = train.windows(train_ids, args.batch, args.window)
  opt = train.optimizer(args.lr, clip_norm=1.0)

  def loss_fn(params, carry, batch):   # every stream's window and carry
    x, y = batch
    carry, logits = model.apply_batch(params, jax.nn.one_hot(x, V), carry=carry)
    total, count = jax.vmap(train.cross_entropy)(logits, y)
    return total, count, {}, carry

  # The whole batch at once, for the batched kernels (jaxrnn.apply_batch).
  tbptt_step = train.make_tbptt_step(loss_fn, opt, batched=True)
  zeros = jax.vmap(lambda _: model.initial_carry(params))(jnp.arange(args.batch))

  def step(state_and_carry, batch):
    (state, carry), (k, x, y) = state_and_carry, batch
    if k == 0:   # a new pass over the streams: no history yet
      carry = zeros
    state, carry, metrics = tbptt_step(state, carry, (x, y))
    return (state, carry), metrics

  batches = ((k % len(inputs), inputs[k % len(inputs)], targets[k % len(inputs)])
             for k in range(args.steps))
  bpc = bits_per_character(model, V)
  every = max(args.steps // 5, 1)
  (state, _), history = train.fit(
      step, (train.init_state(params, opt), zeros), batches, args.steps,
      desc=f"char_lm {args.cell}", quiet=args.quiet,
      evaluate=lambda sc: {"bpc": bpc(sc[0].params, valid_ids, eval_batch,
                                      args.window)},
      eval_every=every)
  losses = [h["loss"] for h in history]
  valid_curve = [(k + 1, round(h["eval"]["bpc"], 4))
                 for k, h in enumerate(history) if "eval" in h]
  return state.params, losses, valid_curve


def plot(losses, valid_curve, uniform_bpc, path: Path) -> None:
  """Training loss and validation bits per character against steps."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.5))
  bpc = np.asarray(losses) / math.log(2)
  window = min(25, len(bpc))
  smooth = np.convolve(bpc, np.ones(window) / window, mode="valid")
  ax.plot(np.arange(len(smooth)) + window, smooth, lw=1,
          label="training (running mean)")
  if valid_curve:
    steps, values = zip(*valid_curve)
    ax.plot(steps, values, "o-", label="validation")
  ax.axhline(uniform_bpc, color="gray", ls=":", label="uniform guess")
  ax.set_xlabel("step")
  ax.set_ylabel("bits per character")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  size = p.add_mutually_exclusive_group()
  size.add_argument("--quick", action="store_true", help="under a minute")
  size.add_argument("--smoke", action="store_true", help="seconds, for tests")
  p.add_argument("--cell", choices=tuple(CELLS), default="lstm")
  p.add_argument("--hidden", type=positive)
  p.add_argument("--batch", type=positive, help="parallel streams")
  p.add_argument("--window", type=positive, help="TBPTT window (steps)")
  p.add_argument("--steps", type=positive)
  p.add_argument("--lr", type=float)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--temperature", type=float, default=0.7)
  p.add_argument("--sample-length", type=positive,
                 help="characters to sample (default 400; 100 with --smoke)")
  p.add_argument("--prompt", default="The ")
  p.add_argument("--out", default=str(ROOT / "results"))
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  preset = PRESETS["quick" if args.quick else "smoke" if args.smoke
                   else "default"]
  for name, value in preset.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.sample_length is None:
    args.sample_length = 100 if args.smoke else 400
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  text = reference_text()
  vocab = Vocab.from_text(text)
  V = len(vocab)
  train_ids, valid_ids, test_ids = split_tokens(vocab.encode(text), 0.05, 0.05)
  try:                          # before training, not after it
    if not vocab.encode(args.prompt).size:
      raise ValueError("it is empty; sampling starts from at least one character")
  except ValueError as e:       # as argparse reports a bad option: exit status 2
    print(f"char_lm.py: error: --prompt {args.prompt!r}: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  if args.smoke:
    valid_ids, test_ids = valid_ids[:SMOKE_EVAL_CHARS], test_ids[:SMOKE_EVAL_CHARS]
  eval_batch = 8 if args.smoke else 32
  uniform_bpc = math.log2(V)
  print(f"char_lm: corpus {len(text):,} characters (Python language "
        f"reference, pydoc_data.topics), vocabulary {V}; train/valid/test "
        f"{len(train_ids):,}/{len(valid_ids):,}/{len(test_ids):,}", flush=True)

  model = char_model(args, V)
  params = model.init(jax.random.key(args.seed), V)
  print(f"model: {args.cell}({args.hidden}) + readout, {param_count(params):,} "
        f"params; batch {args.batch} streams x window {args.window}, "
        f"{args.steps} steps, Adam lr {args.lr}, clip 1.0", flush=True)

  start = time.perf_counter()
  params, losses, valid_curve = train_tbptt(model, params, train_ids, V, args,
                                            valid_ids, eval_batch)
  train_seconds = time.perf_counter() - start
  test_bpc = bits_per_character(model, V)(params, test_ids, eval_batch,
                                           args.window)
  text_out = sample(model, params, vocab, args.prompt, args.sample_length,
                    args.temperature, jax.random.key(args.seed + 1))
  print(f"\ntest bits per character: {test_bpc:.3f} (uniform guess "
        f"{uniform_bpc:.2f}); validation curve {valid_curve}; trained in "
        f"{train_seconds:.0f} s")
  print(f"\nsample (temperature {args.temperature}), after {args.prompt!r}:\n"
        f"{args.prompt}{text_out}\n")
  report = dict(
      settings=dict(cell=args.cell, hidden=args.hidden, batch=args.batch,
                    window=args.window, steps=args.steps, lr=args.lr,
                    seed=args.seed, temperature=args.temperature,
                    sample_length=args.sample_length, prompt=args.prompt),
      corpus=dict(characters=len(text), vocabulary=V,
                  split=[len(train_ids), len(valid_ids), len(test_ids)]),
      params=param_count(params), test_bpc=test_bpc, uniform_bpc=uniform_bpc,
      valid_curve=valid_curve, train_seconds=round(train_seconds, 1),
      losses=losses, sample=text_out)
  (out / "char_lm.json").write_text(json.dumps(report, indent=1))
  plot(losses, valid_curve, uniform_bpc, out / "char_lm.png")
  print(f"wrote {out / 'char_lm.json'}, {out / 'char_lm.png'}")
  return report


if __name__ == "__main__":
  main()
