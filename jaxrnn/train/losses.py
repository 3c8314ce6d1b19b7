"""Sequence losses and metrics, as ``(sum, count)`` pairs.

Lives here: `mse`, `cross_entropy`, `last_step_cross_entropy`, `accuracy`,
`last_valid`. Each returns the sum over valid elements and their count, so
`jaxrnn.train.batch_loss` divides once over the whole batch and padded
steps weigh nothing. Each takes one example (``[T, ...]``, for a loss
written per example) or a batch with leading axes (``[B, T, ...]``, for
``make_train_step(..., batched=True)``): the labels' and the mask's shape
says which, and a shape that fits neither raises. A loss function returns
``(*loss(...), metric_sums)``. Not here: the train step (`step.py`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import first_outside

Array = jax.Array


def _shape(a) -> str:
  a = jnp.asarray(a)                                  # lists and Python numbers too
  return f"{a.dtype}{list(a.shape)}"


def _check(where: str, ok: bool, got: str, expected: str, fix: str) -> None:
  if not ok:
    raise ValueError(f"jaxrnn.train.{where}: got {got}; expected {expected}. Fix: {fix}.")


def _step_mask(where: str, mask: Optional[Array], steps: tuple) -> Array:
  """``mask`` as bool of shape ``steps`` (``[..., T]``), all True when None."""
  if mask is None:
    return jnp.ones(steps, bool)
  mask = jnp.asarray(mask)
  _check(where, mask.shape == steps, f"mask {_shape(mask)}",
         f"a mask [{', '.join(map(str, steps))}], one flag per label",
         "pass the mask of the sequences these outputs came from ([T] for one "
         "example, [B, T] for a batch)")
  return _flags(where, mask)


def _flags(where: str, mask: Array) -> Array:
  """``mask`` as bool; refused where its values are known and not 0 or 1: a
  mask keeps or drops a step, and weights read as True would be lost."""
  if mask.dtype != bool and not isinstance(mask, jax.core.Tracer):
    values = np.asarray(mask)
    odd = values[(values != 0) & (values != 1)]
    if odd.size:
      raise ValueError(
          f"jaxrnn.train.{where}: mask holds {odd.flat[0].item()!r}; expected bool (or 0/1), "
          f"True at the steps that count. A mask keeps or drops a step, it does not "
          f"weight it. Fix: mask=weights > 0, and for per-step or class weights "
          f"multiply the per-step losses by them in your loss.")
  return jnp.asarray(mask, bool)


def mse(pred: Array, target: Array, mask: Optional[Array] = None) -> tuple[Array, Array]:
  """Squared error summed over valid elements, and their count.

  ``target`` has ``pred``'s shape, or is a scalar (the same target
  everywhere); a trailing axis of 1 on either side (Keras' ``y [N, 1]``
  against ``pred [N]``) is dropped, as Keras does, and other shapes are
  refused: broadcast, ``[N] - [N, 1]`` would be ``[N, N]``, a wrong loss
  without an error (PyTorch's ``MSELoss`` only warns). ``mask`` (bool over
  the leading axes of ``pred``: ``[T]`` or ``[B, T]``) drops padded steps.

  >>> import jax.numpy as jnp
  >>> total, count = mse(jnp.array([1.0, 2.0, 9.0]), jnp.zeros(3), jnp.array([True, True, False]))
  >>> float(total), float(count)
  (5.0, 2.0)
  """
  pred, target = jnp.asarray(pred), jnp.asarray(target)
  if target.shape == pred.shape + (1,):
    target = target[..., 0]
  elif pred.shape == target.shape + (1,):
    pred = pred[..., 0]
  _check("mse", target.shape in ((), pred.shape),
         f"pred {_shape(pred)} and target {_shape(target)}",
         "a target of pred's shape, or a scalar",
         "give the target pred's shape, one value per prediction; broadcast, "
         "other shapes would compare predictions with the wrong targets")
  err = (pred - target) ** 2
  if mask is None:
    return jnp.sum(err), jnp.asarray(err.size, jnp.float32)
  mask = jnp.asarray(mask)
  _check("mse", mask.ndim <= err.ndim
         and all(m in (1, e) for m, e in zip(mask.shape, err.shape)),
         f"pred {_shape(pred)} and mask {_shape(mask)}",
         "a mask over the leading axes of pred ([T] for pred [T, ...], [B, T] "
         "for pred [B, T, ...])", "pass the mask of the sequences pred came from")
  m = _flags("mse", mask).reshape(jnp.shape(mask) + (1,) * (err.ndim - jnp.ndim(mask)))
  m = jnp.broadcast_to(m, err.shape)
  return jnp.sum(jnp.where(m, err, 0.0)), jnp.sum(m).astype(jnp.float32)


def cross_entropy(logits: Array, labels: Array, mask: Optional[Array] = None
                  ) -> tuple[Array, Array]:
  """Per-step softmax cross-entropy summed over valid steps, and their count.

  Shapes: logits [..., T, C], labels int[..., T], mask bool[..., T] (the
  leading axes, if any, are a batch's). Labels must lie in ``[0, C)`` where
  the mask keeps them (padding may hold -100, say): one outside is refused
  where the values are known; traced (under jit) it gives a nan loss, not
  the score of a class it would wrap to.

  >>> import jax.numpy as jnp
  >>> total, count = cross_entropy(jnp.array([[0.0, 0.0], [5.0, -5.0]]), jnp.array([1, 0]))
  >>> round(float(total), 3), float(count)
  (0.693, 2.0)
  """
  labels = _labels("cross_entropy", logits, labels)
  mask = _step_mask("cross_entropy", mask, labels.shape)
  _check_classes("cross_entropy", labels, mask, jnp.shape(logits)[-1])
  nll = -_take_class(jax.nn.log_softmax(logits), labels)
  return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask).astype(jnp.float32)


def accuracy(logits: Array, labels: Array, mask: Optional[Array] = None
             ) -> tuple[Array, Array]:
  """Correct argmax predictions over valid steps, and their count.

  Shapes as in `cross_entropy`.

  >>> import jax.numpy as jnp
  >>> [float(v) for v in accuracy(jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1]))]
  [1.0, 2.0]
  """
  labels = _labels("accuracy", logits, labels)
  mask = _step_mask("accuracy", mask, labels.shape)
  correct = (jnp.argmax(logits, axis=-1) == labels) & mask
  return jnp.sum(correct).astype(jnp.float32), jnp.sum(mask).astype(jnp.float32)


def _labels(where: str, logits: Array, labels: Array) -> Array:
  """``labels`` as an int array with ``logits``' shape but its last axis (a
  trailing axis of 1, Keras' ``y [N, 1]``, dropped)."""
  labels = _class_indices(labels, jnp.shape(logits)[:-1])
  _check(where, jnp.ndim(logits) >= 1 and labels.shape == jnp.shape(logits)[:-1]
         and jnp.issubdtype(labels.dtype, jnp.integer),
         f"logits {_shape(logits)} and labels {_shape(labels)}",
         "logits [..., C] and integer labels [...] with the same leading shape "
         "([T, C] and [T] for one example, [B, T, C] and [B, T] for a batch)",
         "pass class indices (jnp.argmax of one-hot labels), one per step")
  return labels


def _take_class(logp: Array, labels: Array) -> Array:
  """``logp[..., labels]``, nan for a label outside ``[0, C)``: the gather
  would wrap a negative one (-1 to C - 1) into a plausible score."""
  C = logp.shape[-1]
  outside = (labels < 0) | (labels >= C)
  index = jnp.where(outside, C, labels)[..., None]       # C: out of bounds, filled nan
  return jnp.take_along_axis(logp, index, axis=-1, mode="fill", fill_value=jnp.nan)[..., 0]


def _check_classes(where: str, labels: Array, mask: Array, classes: int) -> None:
  """Refuses labels outside ``[0, classes)`` at kept steps, where known (not
  traced): take_along_axis would read them as nan."""
  bad = first_outside(labels, mask, classes)
  if bad is not None:
    raise ValueError(
        f"jaxrnn.train.{where}: labels hold {bad} at a step the mask keeps; "
        f"expected class indices in [0, {classes}), the logits' last axis. Fix: map "
        f"out-of-vocabulary tokens to one of their own (<unk>), or mask the step out.")


def _class_indices(labels, shape: tuple) -> Array:
  """``labels`` as an array, bool as int, and ``[..., 1]`` squeezed to ``shape``."""
  labels = jnp.asarray(labels)
  if labels.dtype == bool:
    labels = labels.astype(jnp.int32)
  if labels.shape == tuple(shape) + (1,):
    labels = labels[..., 0]
  return labels


def last_valid(ys: Array, mask: Optional[Array] = None) -> Array:
  """``ys`` at the last step where ``mask`` is True (the last step when it is None).

  Shapes: ys [T, ...] and mask bool[T] for one example, ys [B, T, ...] and
  mask bool[B, T] for a batch (each row's own last valid step). Without a
  mask it is ``ys[-1]``, one example's last step: a batch's rows cannot be
  told from an example's trailing axes, so for a batch without a mask
  write ``ys[:, -1]`` (``last_valid(ys)`` would give the last example).
  Padding may sit on
  either side (Keras' ``pad_sequences`` pads on the left) or in gaps; a row
  with no valid step gives its step 0. For a bidirectional layer it is
  not Keras' ``return_sequences=False``: the backward half of ``ys`` at
  the last valid step has read one token; Keras returns each direction's
  final state, the layer's final carry (``carry[0].h`` and
  ``carry[1].h``).

  >>> import jax.numpy as jnp
  >>> float(last_valid(jnp.arange(4.0), jnp.array([True, True, False, False])))
  1.0
  >>> last_valid(jnp.arange(8.0).reshape(2, 4), jnp.array([[0, 1, 1, 0], [1, 0, 0, 0]], bool))
  Array([2., 4.], dtype=float32)
  """
  if mask is None:
    return ys[-1]
  mask = jnp.asarray(mask)
  _check("last_valid", mask.ndim >= 1 and jnp.shape(ys)[:mask.ndim] == mask.shape,
         f"ys {_shape(ys)} and mask {_shape(mask)}",
         "ys [T, ...] with mask [T], or ys [B, T, ...] with mask [B, T]",
         "pass the mask of the sequences ys came from")
  mask = _flags("last_valid", mask)
  time = mask.ndim - 1
  last = mask.shape[-1] - 1 - jnp.argmax(mask[..., ::-1], axis=-1)   # argmax: the first True
  last = jnp.where(jnp.any(mask, axis=-1), last, 0)
  index = last.reshape(last.shape + (1,) * (jnp.ndim(ys) - time))
  return jnp.take_along_axis(ys, index, axis=time).squeeze(time)


def last_step_cross_entropy(logits: Array, label: Array, mask: Optional[Array] = None
                            ) -> tuple[Array, Array]:
  """Cross-entropy of the prediction at the last valid step (`last_valid`);
  count 1 a sequence, or 0 for a row with no valid step (which then adds
  nothing).

  Shapes: logits [T, C], label an int, mask bool[T] for one example;
  logits [B, T, C], labels int[B], mask bool[B, T] for a batch. For
  sequence classification.

  >>> import jax.numpy as jnp
  >>> total, count = last_step_cross_entropy(jnp.array([[9.0, 0.0], [0.0, 9.0]]), 1)
  >>> round(float(total), 4), float(count)
  (0.0001, 1.0)
  """
  label = _class_indices(label, jnp.shape(logits)[:-2])
  _check("last_step_cross_entropy",
         jnp.ndim(logits) == label.ndim + 2 and jnp.shape(logits)[:label.ndim] == label.shape
         and jnp.issubdtype(label.dtype, jnp.integer),
         f"logits {_shape(logits)} and label {_shape(label)}",
         "logits [T, C] with an integer label, or logits [B, T, C] with labels int[B]",
         "pass one class index per sequence")
  if mask is not None:
    mask = jnp.asarray(mask)
    _check("last_step_cross_entropy", mask.shape == jnp.shape(logits)[:-1],
           f"logits {_shape(logits)} and mask {_shape(mask)}",
           "a mask [T] for logits [T, C], or [B, T] for logits [B, T, C]",
           "pass the mask of the sequences these logits came from")
  last = logits[..., -1, :] if mask is None else last_valid(logits, mask)
  valid = None if mask is None else jnp.any(_flags("last_step_cross_entropy", mask), axis=-1)
  _check_classes("last_step_cross_entropy", label,
                 jnp.ones(label.shape, bool) if valid is None else valid, jnp.shape(logits)[-1])
  nll = -_take_class(jax.nn.log_softmax(last), label)
  if mask is None:
    return jnp.sum(nll), jnp.float32(label.size)
  return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid).astype(jnp.float32)
