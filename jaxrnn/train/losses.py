"""Sequence losses and metrics for ONE example, as ``(sum, count)`` pairs.

Lives here: `mse`, `cross_entropy`, `last_step_cross_entropy`, `accuracy`,
`last_valid`. Each returns the sum over valid elements and their count, so
`jaxrnn.train.batch_loss` divides once over the whole batch and padded
steps weigh nothing. A per-example loss function returns
``(*loss(...), metric_sums)``. Not here: the train step (`step.py`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def _step_mask(mask: Optional[Array], length: int) -> Array:
  return jnp.ones((length,), bool) if mask is None else jnp.asarray(mask, bool)


def mse(pred: Array, target: Array, mask: Optional[Array] = None) -> tuple[Array, Array]:
  """Squared error summed over valid elements, and their count.

  ``mask`` (bool over the leading axis of ``pred``) drops padded steps.

  >>> import jax.numpy as jnp
  >>> total, count = mse(jnp.array([1.0, 2.0, 9.0]), jnp.zeros(3), jnp.array([True, True, False]))
  >>> float(total), float(count)
  (5.0, 2.0)
  """
  err = (jnp.asarray(pred) - target) ** 2
  if mask is None:
    return jnp.sum(err), jnp.asarray(err.size, jnp.float32)
  m = jnp.asarray(mask, bool).reshape(jnp.shape(mask) + (1,) * (err.ndim - jnp.ndim(mask)))
  m = jnp.broadcast_to(m, err.shape)
  return jnp.sum(jnp.where(m, err, 0.0)), jnp.sum(m).astype(jnp.float32)


def cross_entropy(logits: Array, labels: Array, mask: Optional[Array] = None
                  ) -> tuple[Array, Array]:
  """Per-step softmax cross-entropy summed over valid steps, and their count.

  Shapes: logits [T, C], labels int[T], mask bool[T].

  >>> import jax.numpy as jnp
  >>> total, count = cross_entropy(jnp.array([[0.0, 0.0], [5.0, -5.0]]), jnp.array([1, 0]))
  >>> round(float(total), 3), float(count)
  (0.693, 2.0)
  """
  mask = _step_mask(mask, logits.shape[0])
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
  return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask).astype(jnp.float32)


def accuracy(logits: Array, labels: Array, mask: Optional[Array] = None
             ) -> tuple[Array, Array]:
  """Correct argmax predictions over valid steps, and their count.

  >>> import jax.numpy as jnp
  >>> [float(v) for v in accuracy(jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1]))]
  [1.0, 2.0]
  """
  mask = _step_mask(mask, logits.shape[0])
  correct = (jnp.argmax(logits, axis=-1) == labels) & mask
  return jnp.sum(correct).astype(jnp.float32), jnp.sum(mask).astype(jnp.float32)


def last_valid(ys: Array, mask: Optional[Array] = None) -> Array:
  """``ys`` at the last step where ``mask`` is True (the last step when it is None).

  Padding may sit on either side (Keras' ``pad_sequences`` pads on the left)
  or in gaps; a row with no valid step gives ``ys[0]``.

  >>> import jax.numpy as jnp
  >>> float(last_valid(jnp.arange(4.0), jnp.array([True, True, False, False])))
  1.0
  >>> float(last_valid(jnp.arange(4.0), jnp.array([False, True, True, False])))
  2.0
  """
  if mask is None:
    return ys[-1]
  mask = jnp.asarray(mask, bool)
  last = mask.shape[0] - 1 - jnp.argmax(mask[::-1])   # argmax: the first True
  return ys[jnp.where(jnp.any(mask), last, 0)]


def last_step_cross_entropy(logits: Array, label: Array, mask: Optional[Array] = None
                            ) -> tuple[Array, Array]:
  """Cross-entropy of the prediction at the last valid step (`last_valid`);
  count 1, or 0 for a row with no valid step (which then adds nothing).

  Shapes: logits [T, C], label an int, mask bool[T]. For sequence
  classification.

  >>> import jax.numpy as jnp
  >>> total, count = last_step_cross_entropy(jnp.array([[9.0, 0.0], [0.0, 9.0]]), 1)
  >>> round(float(total), 4), float(count)
  (0.0001, 1.0)
  """
  nll = -jax.nn.log_softmax(last_valid(logits, mask))[label]
  if mask is None:
    return nll, jnp.float32(1.0)
  valid = jnp.any(jnp.asarray(mask, bool))
  return jnp.where(valid, nll, 0.0), valid.astype(jnp.float32)
