"""Looking inside a cell: `trace` returns its internal signals per step.

Lives here: `record`, which a cell's step calls on the values worth seeing
(gates, candidate, cell state), and `trace`, which runs a cell over a
sequence and collects them. Not here: plotting (benchmarks/), the cells.

A cell is not written twice: the traced run is the cell's own step, and
``record`` is the identity (it only acts while `trace` is tracing the step),
so it costs nothing in a normal run.
"""

from __future__ import annotations

import contextvars
from typing import Optional

import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, Params
from jaxrnn._scan import scan

_signals: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar(
    "jaxrnn_signals", default=None)


def record(name: str, value: Array) -> Array:
  """Marks ``value`` as the signal ``name`` of this step; returns it unchanged.

  >>> import jax.numpy as jnp
  >>> record("f", jnp.ones(2)).tolist()
  [1.0, 1.0]
  """
  signals = _signals.get()
  if signals is not None:
    signals[name] = value
  return value


def trace(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Optional[Carry] = None,
    mask: Optional[Array] = None,
    resets: Optional[Array] = None,
    reverse: bool = False,
) -> tuple[Carry, Array, dict[str, Array]]:
  """`jaxrnn.scan` that also returns every signal the cell's step records.

  Returns ``(carry, ys, signals)`` where ``carry`` and ``ys`` equal
  ``jaxrnn.scan``'s and ``signals[name]`` stacks the recorded value over time
  (``[T, ...]``; zero at masked steps). Built-in cells record:

  - LSTM family: ``i``, ``f``, ``g`` (the candidate, Colah's C̃_t), ``o``
    (the gates it has), ``c`` (the cell state) and ``h``;
  - GRU: ``r``, ``z``, ``n`` (the candidate, Colah's h̃_t), ``h``, with
    Cho et al.'s ``z``, the share of the old state kept: Colah's ``z_t`` is
    ``1 - z``; simple RNN: ``h``.

  A custom cell records its own with `jaxrnn.record`.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(4)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> carry, ys, signals = jaxrnn.trace(cell, params, jnp.ones((10, 3)))
  >>> sorted(signals), signals["f"].shape
  (['c', 'f', 'g', 'h', 'i', 'o'], (10, 4))
  """

  if not isinstance(cell, Cell):
    raise TypeError(
        f"jaxrnn.trace: cell is a {type(cell).__name__}; expected a jaxrnn.Cell, "
        f"whose step it records. Fix: trace the cell a layer is built from, "
        f"with the layer's params: jaxrnn.trace(cell, params, xs) for "
        f"jaxrnn.rnn(cell) (reverse=True for a reversed one; a bidirectional "
        f"layer's two cells with params[0] and params[1], the second reversed). "
        f"Layer k > 0 of a stack reads the outputs of the layers below it: "
        f"ys = jaxrnn.stack(*layers[:k]).apply(params[:k], xs)[1], then "
        f"jaxrnn.trace(cell_k, params[k], ys); layer 0 reads xs.")
  shape = jnp.shape(xs)
  if len(shape) != 2:
    fix = ("for a batch [B, T, I], jax.vmap(lambda x: jaxrnn.trace(cell, params, "
           "x))(xs) (a mask [B, T] as a second vmapped argument), which stacks "
           "every signal to [B, T, ...]." if len(shape) == 3 else
           "for T steps of one feature, xs[:, None]." if len(shape) == 1 else
           "pass one sequence [T, I].")
    raise ValueError(f"jaxrnn.trace: xs has shape {shape}; expected one sequence "
                     f"[T, I]. Fix: {fix}")

  def recording_step(params, carry, gx):
    token = _signals.set({})
    try:
      carry, y = cell.step(params, carry, gx)
      signals = _signals.get()
    finally:
      _signals.reset(token)
    return carry, (y, signals)

  recording = cell._replace(step=recording_step, sequence=None, batched=None)
  carry, (ys, signals) = scan(recording, params, xs, carry=carry, mask=mask,
                              resets=resets, reverse=reverse)
  return carry, ys, signals
