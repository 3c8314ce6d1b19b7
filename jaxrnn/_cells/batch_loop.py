"""A loop over the time axis of batch-major ``[B, T, ...]`` arrays, for the batched kernels.

Lives here: `over_time`, `at`, `put`. Not here: the kernels that use them
(`lstm_batched.py`, `gru_batched.py`).

Why batch-major: `jax.lax.scan` slices its inputs and stacks its outputs
along the leading axis, so a kernel on ``[B, T, ...]`` arrays transposed
its inputs, its outputs and their gradients to time-major and back, and
XLA CPU transposed the ``[T, B, 4H]`` gate gradients once more for the
weight-gradient matmuls. Indexing axis 1 in the loop moves no whole array.
Measured (interleaved in one process, 2 CPU cores, forward+backward)
together with the two changes in `jaxrnn._cells.lstm_batched`'s notes,
against the time-major kernel: LSTM 0.90x the time at B = 32, T = 128,
H = 256 on 2 CPU devices (0.96x on one), 0.90x at B = 16, T = 256, 0.79x at
B = 4, T = 512; GRU 0.89x and 0.98x at B = 32, 0.79x at B = 4, 1.03x at
B = 16, T = 256. At B = 32 the batch-major indexing alone measured level
with the transposes.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax

from jaxrnn._cell import Array

State = TypeVar("State")


def at(a: Array, t) -> Array:
  """``a[:, t]``: step t of a batch-major ``[B, T, ...]`` array."""
  return jax.lax.dynamic_index_in_dim(a, t, axis=1, keepdims=False)


def put(a: Array, t, value: Array) -> Array:
  """``a.at[:, t].set(value)``, written in place inside the loop."""
  return jax.lax.dynamic_update_index_in_dim(a, value, t, axis=1)


def over_time(body: Callable[[Array, State], State], T: int, reverse: bool,
              unroll: int | bool, state: State) -> State:
  """``state = body(t, state)`` for t = 0, ..., T-1 (T-1, ..., 0 with ``reverse``).

  >>> import jax.numpy as jnp
  >>> xs = jnp.arange(6.0).reshape(2, 3)          # [B, T]
  >>> over_time(lambda t, ys: put(ys, t, 2 * at(xs, t)), 3, False, 1,
  ...           jnp.zeros_like(xs))
  Array([[ 0.,  2.,  4.],
         [ 6.,  8., 10.]], dtype=float32)
  """
  step = (lambda i, state: body(T - 1 - i, state)) if reverse else body
  return jax.lax.fori_loop(0, T, step, state, unroll=unroll)
