"""Truncated backpropagation through time (Williams & Peng 1990).

Lives here: `windows`, which cuts a long token stream into ``B`` parallel
streams of windows, and `make_tbptt_step`, a train step that carries the
recurrent state from one window to the next without backpropagating into
the previous window. Not here: the plain train step (`step.py`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import jax
import numpy as np
import optax

from jaxrnn._dropout import check_key
from jaxrnn.train.step import (TrainState, apply_gradients, check_returns, check_takes,
                               loss_keys, means, step_key)


def windows(stream: np.ndarray, batch_size: int, window: int, *, keep_tail: bool = False):
  """Inputs and next-token targets ``[num_windows, B, window, ...]`` from a stream.

  ``stream`` is ``[N, ...]``: token ids ``[N]``, or a series of feature
  vectors ``[N, F]`` (the trailing axes are carried along). For targets
  other than the next step (a forecast horizon of k steps), window the
  positions, ``xi, yi = windows(np.arange(N), B, W)``, and read what you
  need at them (``series[xi]``, ``series[xi + k]`` with N cut by k).

  The stream is split into ``B`` contiguous parts read in parallel (so
  example ``b`` of window ``k + 1`` continues example ``b`` of window
  ``k``, and a carry passed across windows is the right history); targets
  are the inputs shifted by one token. By default each stream keeps whole
  windows only: the targets past them, fewer than ``B * (window + 1)``,
  are left out, fine for training. To score every token of a held-out
  text (perplexity), pass ``keep_tail=True``: the ``N = len(stream) - 1``
  targets are cut into ``B`` streams of ``ceil(N / B)`` (the last one
  shorter), the last window of each padded, and a third array, ``mask
  bool[num_windows, B, window]``, marks the real targets (every one of the
  ``N`` exactly once; padding reads token 0): ``(xs, ys, mask)``, for a
  masked loss. PyTorch's word-language-model example instead drops the
  ``N mod B`` last tokens and gives the last window fewer steps.

  >>> import numpy as np
  >>> xs, ys = windows(np.arange(20), batch_size=2, window=4)
  >>> xs.shape, xs[0, 1].tolist(), ys[0, 1].tolist(), xs[1, 1].tolist()
  ((2, 2, 4), [9, 10, 11, 12], [10, 11, 12, 13], [13, 14, 15, 16])
  >>> xs, ys, mask = windows(np.arange(20), batch_size=2, window=4, keep_tail=True)
  >>> xs.shape, int(mask.sum()), ys[2, 1].tolist(), mask[2, 1].tolist()
  ((3, 2, 4), 19, [19, 0, 0, 0], [True, False, False, False])
  """
  stream = np.asarray(stream)
  if stream.ndim < 1:
    raise ValueError("jaxrnn.train.windows: stream is a scalar; expected [N] token ids "
                     "or an [N, ...] series.")
  if batch_size < 1 or window < 1:
    raise ValueError(
        f"jaxrnn.train.windows: batch_size={batch_size} and window={window}; "
        f"both must be 1 or more.")
  if stream.ndim == 2 and np.issubdtype(stream.dtype, np.integer):
    warnings.warn(
        f"jaxrnn.train.windows: stream is {stream.dtype}{list(stream.shape)}, read as "
        f"{stream.shape[0]} steps of {stream.shape[1]} integer features each. If it "
        f"is token ids already split into columns (PyTorch's batchify, [N / B, B]), "
        f"pass the stream itself: windows(data.T.reshape(-1), B, window).",
        stacklevel=2)
  targets = len(stream) - 1
  if keep_tail:
    if targets < 1:
      raise ValueError(
          f"jaxrnn.train.windows: a stream of {len(stream)} tokens has no "
          f"next token to predict. Fix: a stream of 2 tokens or more.")
    per_stream = -(-targets // batch_size)                  # ceil
    num_windows = -(-per_stream // window)
  else:
    per_stream = targets // batch_size
    num_windows = per_stream // window
    if num_windows < 1:
      raise ValueError(
          f"jaxrnn.train.windows: a stream of {len(stream)} tokens gives each "
          f"of {batch_size} parallel streams {per_stream} steps, fewer than one "
          f"window of {window}. Fix: a longer stream, a smaller batch or window, "
          f"or keep_tail=True (padded, with a mask).")
  steps = np.arange(num_windows * window)[None, :]
  idx = np.arange(batch_size)[:, None] * per_stream + steps            # [B, used]
  mask = (steps < per_stream) & (idx < targets)
  rest = stream.shape[1:]                         # a series' feature axes
  cut = lambda a: np.swapaxes(a.reshape((batch_size, num_windows, window) + a.shape[2:]), 0, 1)
  flags = mask.reshape(mask.shape + (1,) * len(rest))
  read = lambda i: np.where(flags, stream[np.where(mask, i, 0)], 0).astype(stream.dtype)
  xs, ys = cut(read(idx)), cut(read(idx + 1))
  return (xs, ys, cut(mask)) if keep_tail else (xs, ys)


def carry_in_state(tbptt_step: Callable) -> Callable:
  """``step((train_state, carry), batch) -> ((train_state, carry), metrics)``:
  a `make_tbptt_step` step in the form `jaxrnn.train.fit` runs, the carry
  held beside the train state (a checkpoint then holds both). ``fit``
  passes the carry on from window to window; to start a pass over the
  streams afresh, give it a new carry in its state.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from jaxrnn import train
  >>> cell = jaxrnn.gru(4)
  >>> def loss(params, carry, batch):          # one stream's window
  ...   carry, ys = jaxrnn.scan(cell, params, batch, carry=carry)
  ...   return (*train.mse(ys, 0.5), {}, carry)
  >>> opt = train.optimizer(1e-2)
  >>> step = train.carry_in_state(train.make_tbptt_step(loss, opt))
  >>> state = (train.init_state(cell.init(jax.random.key(0), 2), opt), jnp.zeros((3, 4)))
  >>> (trained, carry), history = train.fit(step, state, [jnp.ones((3, 5, 2))] * 4, 4,
  ...                                       quiet=True)
  >>> int(trained.step), carry.shape
  (4, (3, 4))
  """
  def step(state_and_carry, batch):
    state, carry = state_and_carry
    state, carry, metrics = tbptt_step(state, carry, batch)
    return (state, carry), metrics
  return step


def make_tbptt_step(loss_fn: Callable, opt: optax.GradientTransformation, *,
                    batched: bool = False, key: Optional[jax.Array] = None,
                    donate: bool = True):
  """``step(state, carry, batch) -> (state, carry, metrics)`` for one window.

  ``loss_fn(params, carry, example) -> (loss_sum, count, metric_sums,
  new_carry)`` is written for one example and its carry; the step vmaps it
  over the batch. With ``batched=True``, ``loss_fn(params, carry, batch)``
  sees the whole batch and its batched carry (to run `jaxrnn.scan_batch`,
  the faster path for training) and returns the same sums, per example or
  already summed, and the new batched carry. The incoming carry is wrapped
  in `jax.lax.stop_gradient`: gradients flow within the window only
  (truncation), while the state itself flows on across windows. Jitted,
  the state donated unless ``donate=False``. With a PRNG ``key`` (dropout),
  ``loss_fn`` takes a key last, drawn for each window as
  `jaxrnn.train.make_train_step` draws it for each update (``fold_in(key,
  state.step)``, split per example). `jaxrnn.train.fit` runs steps of
  ``(state, batch)``: `carry_in_state` makes one that holds the carry in
  its state, ``(train_state, carry)``, so that a checkpoint holds both.

  The loss is the mean over tokens (``loss_sum / count``). Zaremba et al.
  (2014) and TensorFlow's PTB tutorial sum over the window's steps and
  average over the batch, a gradient ``window`` times larger before
  clipping: return ``count`` = 1 per example to train with their learning
  rates.
  """
  key = check_key("jaxrnn.train.make_tbptt_step", key)
  n_keys = 0 if key is None else 1

  def batch_loss(params, carry, batch, k):
    carry = jax.lax.stop_gradient(carry)
    keys = loss_keys(k, batch, batched)
    check_takes(loss_fn, n_keys, carry=True)
    checked = lambda *args: check_returns(loss_fn(*args), carry=True)
    per_batch = (checked if batched else
                 jax.vmap(checked, in_axes=(None, 0, 0) + (0,) * len(keys)))
    sums, counts, metric_sums, new_carry = per_batch(params, carry, batch, *keys)
    loss, metrics = means(sums, counts, metric_sums)
    return loss, (metrics, new_carry)

  def step(state: TrainState, carry, batch):
    k = None if key is None else step_key(key, state.step)
    (loss, (metrics, carry)), grads = jax.value_and_grad(
        batch_loss, has_aux=True)(state.params, carry, batch, k)
    return apply_gradients(opt, state, grads, loss), carry, metrics

  return jax.jit(step, donate_argnums=(0,) if donate else ())
