"""The Elman (simple, "vanilla") RNN cell.

Lives here: `simple_rnn` and its `RNNParams`. Not here: drivers (`_scan.py`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import (Cell, carry_dtype, check_activation, check_size, exportable,
                          in_dtype, check_bool, project_input, with_compute_dtype)
from jaxrnn._fused import fused_cell
from jaxrnn._trace import record

Initializer = Callable


@exportable
class RNNParams(NamedTuple):
  w_x: jax.Array  # [I, H]  input weights
  w_h: jax.Array  # [H, H]  recurrent weights
  b: Optional[jax.Array]  # [H] bias (PyTorch's b_ih + b_hh); None with use_bias=False


def simple_rnn(
    hidden_size: int,
    activation: Callable[[jax.Array], jax.Array] | str = jnp.tanh,
    *,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    use_bias: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
) -> Cell:
  r"""Elman's simple recurrent network (Elman 1990, "Finding structure in time").

  .. math::

    h_t = \phi(x_t W_x + h_{t-1} W_h + b), \qquad y_t = h_t

  with :math:`\phi` = ``activation`` (tanh by default; ``jax.nn.relu`` gives
  PyTorch's ``nonlinearity="relu"``). This is the "repeating module with a
  single tanh layer" of Colah's post: it carries information forward, but
  gradients through :math:`W_h` vanish or explode over long spans.

  Vectors are rows, multiplied on the left of the weights as stored
  (``x_t @ w_x``; PyTorch stores the transposes and writes ``W x``).

  Shapes: params ``RNNParams(w_x [I, H], w_h [H, H], b [H] or None)``; carry ``h [H]``
  (float32 at least); ``project(params, xs[T, I]) -> [T, H]``.

  Args:
    hidden_size: H.
    activation: :math:`\phi`, an elementwise function or the name of one in
      `jax.nn` (``"tanh"``, ``"relu"``, ...), as Keras and torch take it.
    kernel_init, recurrent_init, bias_init: `jax.nn.initializers`; defaults
      LeCun normal, orthogonal, zeros.
    use_bias: False drops :math:`b` (params ``b=None``; ``bias_init`` is
      unused), as PyTorch's ``bias=False`` and Keras' ``use_bias=False``.
    param_dtype: dtype of the params made by ``init``.
    dtype: dtype of the computation (Flax's ``dtype``): the params are cast
      to it on the way in, the carry stays float32 or wider; None computes
      in ``param_dtype``.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.simple_rnn(8)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> h, ys = jaxrnn.scan(cell, params, jnp.ones((10, 3)))
  >>> h.shape, ys.shape
  ((8,), (10, 8))
  """
  hidden_size = check_size("jaxrnn.simple_rnn", "hidden_size", hidden_size)
  check_bool("jaxrnn.simple_rnn", "use_bias", use_bias)
  activation = check_activation("jaxrnn.simple_rnn", "activation", activation)

  def init(key, input_size):
    kx, kh, kb = jax.random.split(key, 3)
    return RNNParams(
        w_x=kernel_init(kx, (input_size, hidden_size), param_dtype),
        w_h=in_dtype(recurrent_init, kh, (hidden_size, hidden_size), param_dtype),
        b=bias_init(kb, (hidden_size,), param_dtype) if use_bias else None)

  def initial_carry(params):
    return jnp.zeros((hidden_size,), carry_dtype(params.w_h.dtype))

  def project(params, xs):
    return project_input("simple_rnn", xs, params.w_x, params.b)

  def finish(params, h, gx, u):   # u = h @ w_h
    h = record("h", activation(gx + u))
    return h, h

  cell = fused_cell(init=init, initial_carry=initial_carry, project=project,
                    recurrent_input=lambda h: h, finish=finish,
                    output_size=hidden_size, additive=True,   # act(gx + u)
                    verify_additive=False)        # tested against its equations
  return with_compute_dtype(cell, dtype, "jaxrnn.simple_rnn")
