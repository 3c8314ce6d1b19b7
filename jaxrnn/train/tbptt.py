"""Truncated backpropagation through time (Williams & Peng 1990).

Lives here: `windows`, which cuts a long token stream into ``B`` parallel
streams of windows, and `make_tbptt_step`, a train step that carries the
recurrent state from one window to the next without backpropagating into
the previous window. Not here: the plain train step (`step.py`).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np
import optax

from jaxrnn._dropout import check_key
from jaxrnn.train.step import TrainState, loss_keys, means, step_key


def windows(stream: np.ndarray, batch_size: int, window: int
            ) -> tuple[np.ndarray, np.ndarray]:
  """Inputs and next-token targets ``[num_windows, B, window]`` from a stream.

  The stream is split into ``B`` contiguous parts read in parallel (so
  example ``b`` of window ``k + 1`` continues example ``b`` of window
  ``k``, and a carry passed across windows is the right history); targets
  are the inputs shifted by one token.

  >>> import numpy as np
  >>> xs, ys = windows(np.arange(20), batch_size=2, window=4)
  >>> xs.shape, xs[0, 1].tolist(), ys[0, 1].tolist(), xs[1, 1].tolist()
  ((2, 2, 4), [9, 10, 11, 12], [10, 11, 12, 13], [13, 14, 15, 16])
  """
  stream = np.asarray(stream)
  if batch_size < 1 or window < 1:
    raise ValueError(
        f"jaxrnn.train.windows: batch_size={batch_size} and window={window}; "
        f"both must be 1 or more.")
  per_stream = (len(stream) - 1) // batch_size
  num_windows = per_stream // window
  if num_windows < 1:
    raise ValueError(
        f"jaxrnn.train.windows: a stream of {len(stream)} tokens gives each "
        f"of {batch_size} parallel streams {per_stream} steps, fewer than one "
        f"window of {window}. Fix: a longer stream, a smaller batch or window.")
  used = num_windows * window
  starts = np.arange(batch_size) * per_stream
  idx = starts[:, None] + np.arange(used)[None, :]                   # [B, used]
  xs = stream[idx].reshape(batch_size, num_windows, window).transpose(1, 0, 2)
  ys = stream[idx + 1].reshape(batch_size, num_windows, window).transpose(1, 0, 2)
  return xs, ys


def make_tbptt_step(loss_fn: Callable, opt: optax.GradientTransformation, *,
                    batched: bool = False, key: Optional[jax.Array] = None):
  """``step(state, carry, batch) -> (state, carry, metrics)`` for one window.

  ``loss_fn(params, carry, example) -> (loss_sum, count, metric_sums,
  new_carry)`` is written for one example and its carry; the step vmaps it
  over the batch. With ``batched=True``, ``loss_fn(params, carry, batch)``
  sees the whole batch and its batched carry (to run `jaxrnn.scan_batch`,
  the faster path for training) and returns the same sums, per example or
  already summed, and the new batched carry. The incoming carry is wrapped
  in `jax.lax.stop_gradient`: gradients flow within the window only
  (truncation), while the state itself flows on across windows. Jitted,
  the state donated. With a PRNG ``key`` (dropout), ``loss_fn`` takes a
  key last, drawn for each window as `jaxrnn.train.make_train_step` draws
  it for each update (``fold_in(key, state.step)``, split per example).
  """
  key = check_key("jaxrnn.train.make_tbptt_step", key)

  def batch_loss(params, carry, batch, k):
    carry = jax.lax.stop_gradient(carry)
    keys = loss_keys(k, batch, batched)
    per_batch = (loss_fn if batched else
                 jax.vmap(loss_fn, in_axes=(None, 0, 0) + (0,) * len(keys)))
    sums, counts, metric_sums, new_carry = per_batch(params, carry, batch, *keys)
    loss, metrics = means(sums, counts, metric_sums)
    return loss, (metrics, new_carry)

  def step(state: TrainState, carry, batch):
    k = None if key is None else step_key(key, state.step)
    (_, (metrics, carry)), grads = jax.value_and_grad(
        batch_loss, has_aux=True)(state.params, carry, batch, k)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), carry, metrics

  return jax.jit(step, donate_argnums=(0,))
