"""Keras' recurrent-layer dropout: one mask per sequence, kept for all its steps.

Lives here: the masks of ``rnn(cell, dropout=, recurrent_dropout=)`` and how
they enter a cell. Not here: the layers (`_layers.py`), a stack's dropout
between layers (drawn afresh at every step, as PyTorch's).

Gal & Ghahramani (2016), "A theoretically grounded application of dropout
in recurrent neural networks", as tf.keras' ``LSTM`` and ``GRU``
(``implementation=2``) and Keras' ``SimpleRNN`` implement it: each sequence
draws a mask ``m_x`` over the input features and one ``m_h`` over the
recurrent state, shared by the gates (Keras 3.8 and later draw one per gate
when ``recurrent_dropout`` is set), entries 0 or ``1 / (1 - rate)``, and
every step uses the same two:

.. math::

  z_t = W (m_x \\odot x_t) + R (m_h \\odot h_{t-1}) + b

The carry itself is not masked (the GRU's ``z_t h_{t-1}`` and the cell
state see the true ``h_{t-1}``). The batched kernels (the GRU's with
`jax.nn` activations, every LSTM's and the simple RNN's) multiply
``h_{t-1}`` by ``m_h`` in their loops (`jaxrnn.scan_batch`'s
``recurrent_mask``); everywhere else, as ``R (m_h \\odot h) =
(\\mathrm{diag}(m_h) R) h``, the mask scales the rows of ``R``
(``params.w_h``, ``[P, G]``) once per sequence (`scale_recurrent_rows`),
and the cell runs unchanged.
"""

from __future__ import annotations

from numbers import Real
from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Params


def check_rate(where: str, name: str, rate) -> float:
  """``rate`` as a float in [0, 1); raises otherwise (a bool or string too)."""
  number = isinstance(rate, Real) or (hasattr(rate, "dtype") and jnp.ndim(rate) == 0)
  if isinstance(rate, bool) or not number or not 0 <= float(rate) < 1:
    raise ValueError(f"{where}: {name}={rate!r} ({type(rate).__name__}); expected a "
                     f"rate in [0, 1), the fraction of units dropped (0 switches it off).")
  return float(rate)


def check_key(where: str, key) -> Optional[jax.Array]:
  """``key`` if it is None or one JAX PRNG key (typed, or raw: ``uint32[2]``,
  or ``uint32[4]`` under the rbg implementation); raises otherwise, where
  JAX's own error would name neither the function called nor the fix."""
  if key is None:
    return None
  typed = hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  # A raw key is uint32[2] (threefry, JAX's default) or uint32[4] (rbg).
  raw = hasattr(key, "dtype") and key.dtype == jnp.uint32 and key.shape in ((2,), (4,))
  if not ((typed and key.shape == ()) or raw):
    got = (f"{key.dtype}{list(key.shape)}" if hasattr(key, "dtype")
           else type(key).__name__)
    raise ValueError(
        f"{where}: key is {got}; expected one PRNG key, from which the "
        f"dropout masks are drawn (None: no dropout). Fix: "
        f"key=jax.random.key(seed), or jax.random.split of one.")
  return key


def variational_masks(key: Array, input_size: int, recurrent_size: int, dropout: float,
                      recurrent_dropout: float) -> tuple[Optional[Array], Optional[Array]]:
  """One sequence's masks ``(m_x [input_size], m_h [recurrent_size])``.

  Entries are 0 (dropped, with probability ``rate``) or ``1 / (1 - rate)``;
  a mask whose rate is 0 is None.

  >>> import jax
  >>> m_x, m_h = variational_masks(jax.random.key(0), 4, 3, 0.5, 0.0)
  >>> sorted(set(m_x.tolist())) in ([0.0, 2.0], [0.0], [2.0]), m_h
  (True, None)
  """
  k_x, k_h = jax.random.split(key)

  def mask(k, rate, size):
    if not rate:
      return None
    return jax.random.bernoulli(k, 1.0 - rate, (size,)) / (1.0 - rate)

  return mask(k_x, dropout, input_size), mask(k_h, recurrent_dropout, recurrent_size)


def recurrent_size(where: str, params: Params) -> int:
  """P, the size of the state the recurrent weights ``params.w_h [P, G]`` read."""
  w_h = params.get("w_h") if isinstance(params, Mapping) else getattr(params, "w_h", None)
  if w_h is None or jnp.ndim(w_h) != 2:
    raise ValueError(
        f"{where}: recurrent_dropout masks h_(t-1) through the rows of the "
        f"recurrent weights, params.w_h (or params['w_h']) [P, G], as jaxrnn's "
        f"simple_rnn, lstm and gru have them; these params ({type(params).__name__}) have "
        f"{'none' if w_h is None else f'w_h of shape {jnp.shape(w_h)}'}. Fix: "
        f"use dropout (inputs) alone, or mask h in your own cell's step.")
  return w_h.shape[0]


def mask_inputs(xs: Array, m_x: Optional[Array]) -> Array:
  """``xs [..., T, I]`` with each sequence's ``m_x [..., I]`` on its features."""
  if m_x is None:
    return xs
  return xs * jnp.expand_dims(m_x, -2).astype(jnp.result_type(xs, jnp.float32))


def scale_recurrent_rows(params: Params, m_h: Array) -> Params:
  """``params`` with ``w_h`` replaced by ``diag(m_h) w_h``: one sequence's
  recurrent mask, as ``R (m_h h) = (diag(m_h) R) h``.

  Scaled in float32 (``1 / 0.7`` is not a bfloat16), rounded once.
  """
  dict_params = isinstance(params, Mapping)
  w_h = params["w_h"] if dict_params else params.w_h
  w_h = (w_h * m_h[:, None]).astype(w_h.dtype)
  return {**params, "w_h": w_h} if dict_params else params._replace(w_h=w_h)


def check_recurrent_mask(where: str, params: Params, recurrent_mask, batch: Optional[int]):
  """``recurrent_mask`` as a float array ``[P]`` (``[B, P]`` for a batch); raises otherwise."""
  P = recurrent_size(where, params)
  m = jnp.asarray(recurrent_mask)
  shape = (P,) if batch is None else (batch, P)
  if m.shape != shape or not (jnp.issubdtype(m.dtype, jnp.floating) or m.dtype == jnp.bool_):
    per = "one entry per unit of h" if batch is None else f"one row per sequence of the {batch}"
    raise ValueError(
        f"{where}: recurrent_mask is {m.dtype}{list(m.shape)}; expected a float "
        f"mask {list(shape)}, {per} (P = {P}, the rows of params.w_h). Fix: "
        f"draw it as jax.random.bernoulli(key, 1 - rate, {shape}) / (1 - rate), "
        f"or use jaxrnn.rnn(cell, recurrent_dropout=rate).")
  # A constant: no gradient flows to it on any path (the kernels' backward
  # computes none), float32 at least, float64 under x64 as given.
  return jax.lax.stop_gradient(m.astype(jnp.promote_types(m.dtype, jnp.float32)))
