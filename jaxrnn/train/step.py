"""The train step and the eval step, built from a per-example loss and optax.

Lives here: `TrainState`, `optimizer` (the default chain), `init_state`,
`batch_loss`, `make_train_step`, `make_eval_step`. Not here: losses
(`losses.py`), loops (`loop.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn._dropout import check_key

Params = Any
# loss_fn(params, example) -> (loss_sum, count, metric_sums) for ONE example
# (or, with batched=True, for the whole batch: sums or per-example sums).
LossFn = Callable[[Params, Any], tuple[jax.Array, jax.Array, dict]]


class TrainState(NamedTuple):
  params: Params
  opt_state: optax.OptState
  step: jax.Array  # int32 scalar: updates applied so far


def optimizer(learning_rate: float | optax.Schedule = 1e-3, *, clip_norm: float | None = 1.0,
              base: Callable[..., optax.GradientTransformation] = optax.adam
              ) -> optax.GradientTransformation:
  """``base(learning_rate)`` after clipping gradients by global norm.

  ``learning_rate`` is a number or an optax schedule
  (``optax.warmup_cosine_decay_schedule(...)``), as ``base`` takes it. To
  cut it when a validation metric stops improving (Keras'
  ``ReduceLROnPlateau``), end a chain with `reduce_lr_on_plateau` and give
  `fit` ``reduce_lr_on=``; to read or set the rate by hand, pass
  ``base=optax.inject_hyperparams(optax.adam)`` and set
  ``state.opt_state[1].hyperparams["learning_rate"]``.

  Clipping is in the default chain because exploding gradients are the
  other face of the recurrent problem this library is about (Pascanu et
  al. 2013). ``clip_norm=None`` leaves it out; it must be above 0 (0
  would zero every update, a negative norm flip them).

  >>> import optax
  >>> isinstance(optimizer(1e-3), optax.GradientTransformation)
  True
  """
  if clip_norm is None:
    return base(learning_rate)
  if isinstance(clip_norm, bool) or not (isinstance(clip_norm, (int, float, np.number))
                                         and clip_norm > 0):
    raise ValueError(
        f"jaxrnn.train.optimizer: clip_norm={clip_norm!r}; expected a number above 0, "
        f"the largest global norm of the gradients (0 would zero every update, a "
        f"negative one flip them). Fix: clip_norm=None for no clipping.")
  return optax.chain(optax.clip_by_global_norm(clip_norm), base(learning_rate))


def init_state(params: Params, opt: optax.GradientTransformation) -> TrainState:
  """A fresh `TrainState`: a copy of ``params``, ``opt.init(params)`` and step 0.

  The copy is what the train step donates (`make_train_step`), so the
  arrays passed in stay alive, to compare or start again from, where
  donating them would delete them ("Array has been deleted").
  """
  params = jax.tree.map(jnp.copy, params)
  return TrainState(params=params, opt_state=opt.init(params),
                    step=jnp.zeros((), jnp.int32))


def batch_loss(loss_fn: LossFn, params: Params, batch: Any, *, batched: bool = False,
               key: Optional[jax.Array] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The batch's loss and metrics: per-example sums vmapped, then one division.

  ``loss = sum_b loss_sum_b / sum_b count_b`` and each metric likewise, so
  padding (a smaller count) weighs nothing and long sequences weigh by
  their valid steps, as in PyTorch's ``reduction="mean"`` over tokens.
  With ``batched=True``, ``loss_fn(params, batch)`` sees the whole batch
  (to run `jaxrnn.scan_batch`) and returns the same sums, per example or
  already summed. With a ``key`` (for dropout), the loss takes it last:
  ``loss_fn(params, batch, key)`` batched, and per example
  ``loss_fn(params, example, k_b)`` with ``k_b = jax.random.split(key,
  B)[b]``, the keys `jaxrnn.apply_batch` gives its sequences, so the two
  forms drop the same units.

  >>> import jax.numpy as jnp
  >>> fn = lambda p, x: (jnp.sum(x * p), jnp.float32(x.size), {})
  >>> loss, metrics = batch_loss(fn, 2.0, jnp.ones((3, 4)))
  >>> float(loss), metrics["loss"] == loss
  (2.0, Array(True, dtype=bool))
  """
  keys = loss_keys(key, batch, batched)
  check_takes(loss_fn, len(keys))

  def checked_loss(*args):
    return check_returns(loss_fn(*args))

  if batched:
    loss_sums, counts, metric_sums = checked_loss(params, batch, *keys)
  else:
    loss_sums, counts, metric_sums = jax.vmap(
        checked_loss, in_axes=(None, 0) + (0,) * len(keys))(params, batch, *keys)
  return means(loss_sums, counts, metric_sums)


def check_returns(out, carry: bool = False):
  """``out`` if it is ``(loss_sum, count, metric_sums)`` (and ``new_carry``
  last, with ``carry``: a TBPTT loss); a TypeError naming the format
  otherwise (a mean loss alone, PyTorch's habit, would fail while being
  unpacked, with a message that names neither)."""
  n = 4 if carry else 3
  if isinstance(out, (tuple, list)) and len(out) == n and isinstance(out[2], Mapping):
    return out
  got = (f"a {type(out).__name__} of {n} whose third is a {type(out[2]).__name__}, not a dict"
         if isinstance(out, (tuple, list)) and len(out) == n
         else f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list))
         else f"{jnp.result_type(out).name}{list(jnp.shape(out))}" if hasattr(out, "shape")
         else type(out).__name__)
  expected, fix = (("(loss_sum, count, metric_sums, new_carry)", "(*train.cross_entropy("
                    "logits, targets), {}, carry), the carry apply returned")
                   if carry else
                   ("(loss_sum, count, metric_sums)", "(*train.mse(pred, target), {}) "
                    "or another loss helper's pair and a dict"))
  raise TypeError(
      f"jaxrnn.train: loss_fn returned {got}; expected {expected}: the loss "
      f"summed over the valid elements, their count and a dict of metric sums "
      f"({{}} for none){', then the carry for the next window' if carry else ''}, "
      f"so that padding weighs nothing and the step divides once. Fix: return "
      f"{fix}; a mean loss m over n elements is (m * n, n, ...).")


def check_takes(loss_fn: Callable, n_keys: int, carry: bool = False) -> None:
  """Raises a TypeError naming the fix when ``loss_fn`` cannot be called as
  ``loss_fn(params, batch)`` (``n_keys`` 0) or ``loss_fn(params, batch,
  key)`` (1), with ``carry`` after ``params`` for a TBPTT loss, where
  Python's own error would name neither."""
  try:
    signature = inspect.signature(loss_fn, follow_wrapped=False)
  except (TypeError, ValueError):   # a builtin or C callable: let the call decide
    return
  args = "params, carry, batch" if carry else "params, batch"
  names = [p.name for p in signature.parameters.values()]
  carry_at = [i for i, name in enumerate(names[:3]) if name in CARRY_NAMES]
  if not carry and carry_at == [1]:
    raise TypeError(
        f"jaxrnn.train: loss_fn{signature} takes a carry second, as a TBPTT loss "
        f"does, and this step calls loss_fn({args}). Fix: "
        f"make_tbptt_step(loss_fn, opt) for a loss that takes the carry and "
        f"returns the window's last one (fourth result); make_train_step for "
        f"one without a carry.")
  if carry and carry_at == [2]:
    raise TypeError(
        f"jaxrnn.train: loss_fn{signature} takes the carry third; a TBPTT step "
        f"calls loss_fn(params, carry, batch). Fix: take the carry second.")
  binds = lambda n: _binds(signature, n)
  if binds(2 + carry + n_keys):
    return
  if n_keys:
    raise TypeError(
        f"jaxrnn.train: loss_fn{signature} takes no {'fourth' if carry else 'third'} "
        f"argument, and the step was built with key= (for dropout), so it calls "
        f"loss_fn({args}, key). Fix: add a last argument key=None (positional, "
        f"not keyword-only) and pass it on to apply (or jaxrnn.apply_batch), or "
        f"build the step without key=.")
  if carry and binds(2):
    raise TypeError(
        f"jaxrnn.train: loss_fn{signature} takes no carry; a TBPTT step calls "
        f"loss_fn(params, carry, batch) and takes the window's last carry back "
        f"as its fourth result. Fix: take the carry second and pass it to apply "
        f"(carry=carry), or use make_train_step for losses without a carry.")
  raise TypeError(
      f"jaxrnn.train: loss_fn{signature} needs a key, and this step calls "
      f"loss_fn({args}) (an eval step, or a step built without key=). Fix: "
      f"give the key a default, key=None (no dropout), or pass key= when "
      f"building the step.")


CARRY_NAMES = ("carry", "carries", "hidden", "h0", "state0", "initial_carry")


def _binds(signature: inspect.Signature, n: int) -> bool:
  """Can a function of ``signature`` be called with ``n`` positional arguments?"""
  try:
    signature.bind(*(None,) * n)
    return True
  except TypeError:
    return False


def loss_keys(key: Optional[jax.Array], batch: Any, batched: bool) -> tuple:
  """The key arguments a loss gets: none, the batch's ``key``, or one per
  example, ``jax.random.split(key, B)`` (as `jaxrnn.apply_batch` splits it)."""
  if key is None:
    return ()
  if batched:
    return (key,)
  return (jax.random.split(key, jax.tree.leaves(batch)[0].shape[0]),)


def step_key(key: jax.Array, step: jax.Array) -> jax.Array:
  """The key of the update numbered ``step``: ``jax.random.fold_in(key, step)``.

  A function of the step count alone, so a run resumed from a checkpoint
  draws the masks an unbroken run would have drawn.
  """
  return jax.random.fold_in(key, step)


def means(loss_sums: jax.Array, counts: jax.Array, metric_sums: dict[str, jax.Array]
          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``sum(loss_sums) / sum(counts)`` and each metric likewise.

  A batch with nothing valid (a count of 0, so every sum is 0 too) gives 0
  and a zero gradient, not 0/0 = NaN, which would reach the params and
  stay there; Keras' masked losses do the same (``divide_no_nan``).

  >>> import jax.numpy as jnp
  >>> loss, metrics = means(jnp.zeros(2), jnp.zeros(2), {})
  >>> float(loss)
  0.0
  """
  count = jnp.sum(counts)
  count = jnp.where(count == 0, 1.0, count)
  loss = jnp.sum(loss_sums) / count
  metrics = {name: jnp.sum(v) / count for name, v in metric_sums.items()}
  return loss, {"loss": loss, **metrics}


def make_train_step(loss_fn: LossFn, opt: optax.GradientTransformation,
                    *, donate: bool = True, batched: bool = False,
                    key: Optional[jax.Array] = None):
  """``train_step(state, batch) -> (state, metrics)``, jitted, state donated.

  ``loss_fn(params, example)`` is written for one example (a slice of
  ``batch`` along its leading axis) and returns ``(loss_sum, count,
  metric_sums)``; see `batch_loss`. With ``batched=True`` it takes the
  whole batch, which lets it run `jaxrnn.scan_batch`, the faster path on
  CPU for training the LSTM, its variants, the GRU and the simple RNN.
  With a PRNG ``key`` (dropout: pass it on to ``apply`` or
  `jaxrnn.apply_batch`), ``loss_fn`` takes a key last, and update ``n``
  draws from ``jax.random.fold_in(key, n)`` (``n = state.step``), split
  per example as in `batch_loss`: a fresh draw every step, and a run
  resumed from a checkpoint draws what an unbroken run would. The eval
  step takes no key and calls ``loss_fn(params, batch)``: give the key
  a default of None (nothing dropped) to use one loss for both.
  Build the step once and call it in a loop: it compiles once per batch
  shape, so pad batches to a few lengths (`jaxrnn.train.pad_batch`'s
  ``multiple=``), not each to its own longest sequence. With a
  batch sharded across devices and the state replicated
  (`jaxrnn.train.shard_batch`, `replicate`), the same step runs
  data-parallel: XLA partitions it and all-reduces the gradients.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from jaxrnn import train
  >>> cell = jaxrnn.gru(8)
  >>> def loss_fn(params, example):            # one sequence, MSE at the last step
  ...   xs, y = example
  ...   _, ys = jaxrnn.scan(cell, params, xs)
  ...   return (*train.mse(ys[-1, 0], y), {})     # (loss_sum, count, metric_sums)
  >>> opt = train.optimizer(1e-2)
  >>> state = train.init_state(cell.init(jax.random.key(0), 2), opt)
  >>> step = train.make_train_step(loss_fn, opt)
  >>> batch = (jnp.ones((4, 5, 2)), jnp.full((4,), 0.5))
  >>> state, metrics = step(state, batch)
  >>> int(state.step), sorted(metrics)
  (1, ['loss'])
  >>> def batch_loss_fn(params, batch):         # the whole batch at once
  ...   xs, y = batch
  ...   _, ys = jaxrnn.scan_batch(cell, params, xs)
  ...   return (*train.mse(ys[:, -1, 0], y), {})
  >>> step = train.make_train_step(batch_loss_fn, opt, batched=True)
  >>> state, metrics = step(state, batch)       # the state is donated: use the new one
  >>> int(state.step)
  2
  >>> net = jaxrnn.rnn(cell, dropout=0.2, recurrent_dropout=0.2)
  >>> def dropout_loss_fn(params, batch, key=None):   # None: no dropout (eval)
  ...   xs, y = batch
  ...   _, ys = jaxrnn.apply_batch(net, params, xs, key=key)
  ...   return (*train.mse(ys[:, -1, 0], y), {})
  >>> step = train.make_train_step(dropout_loss_fn, opt, batched=True,
  ...                              key=jax.random.key(1))
  >>> int(step(state, batch)[0].step)
  3
  """
  key = check_key("jaxrnn.train.make_train_step", key)

  def train_step(state: TrainState, batch):
    k = None if key is None else step_key(key, state.step)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: batch_loss(loss_fn, p, batch, batched=batched, key=k), has_aux=True
    )(state.params)
    return apply_gradients(opt, state, grads, loss), metrics

  return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def apply_gradients(opt: optax.GradientTransformation, state: TrainState, grads,
                    loss: jax.Array) -> TrainState:
  """``state`` one update on: ``opt.update`` with the loss as optax's
  ``value=`` (`optax.contrib.reduce_on_plateau`, a line search; other
  transformations ignore it), then the step count."""
  updates, opt_state = optax.with_extra_args_support(opt).update(
      grads, state.opt_state, state.params, value=loss)
  return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1)


def make_eval_step(loss_fn: LossFn, *, batched: bool = False):
  """``eval_step(params, batch) -> metrics``, jitted; same convention as training.

  >>> import jax.numpy as jnp
  >>> fn = lambda p, x: (jnp.sum((x - p) ** 2), jnp.float32(x.size), {})
  >>> float(make_eval_step(fn)(1.0, jnp.zeros((2, 3)))["loss"])
  1.0
  """
  return jax.jit(lambda params, batch: batch_loss(loss_fn, params, batch,
                                                 batched=batched)[1])
