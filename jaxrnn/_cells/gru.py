"""The gated recurrent unit, in both of its published forms.

Lives here: `gru` and `GRUParams`. Not here: drivers (`_scan.py`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._cell import (Cell, carry_dtype, check_activation, check_bool, check_size,
                          exportable, matmul, project_input, split_gates, stacked_init,
                          with_compute_dtype)
from jaxrnn._cells.gru_batched import KERNEL_ACTIVATIONS, gru_batch_kernel
from jaxrnn._fused import fused_cell, read_ahead_sequence
from jaxrnn._trace import record

Initializer = Callable
Activation = Union[Callable[[jax.Array], jax.Array], str]
GATES = ("r", "z", "n")


@exportable
class GRUParams(NamedTuple):
  """GRU parameters; fused gate blocks in the order ``r, z, n`` (PyTorch's)."""
  w_x: jax.Array                    # [I, 3H]  input weights W_r, W_z, W_n
  w_h: jax.Array                    # [H, 3H]  recurrent weights U_r, U_z, U_n
  b: Optional[jax.Array]            # [3H]     input-side bias (r, z: b_i + b_h folded); None: use_bias=False
  b_hn: Optional[jax.Array] = None  # [H]      recurrent bias of n, inside r * (.); reset_after and use_bias only


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation: Activation = jnp.tanh,
    gate_activation: Activation = jax.nn.sigmoid,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    use_bias: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
) -> Cell:
  r"""The gated recurrent unit (Cho et al. 2014).

  With ``reset_after=True`` (default; cuDNN's, PyTorch's and Flax's form,
  and Keras' default since TensorFlow 2), with ``x = x_t``, ``h = h_{t-1}``:

  .. math::

    r_t &= \sigma(x W_r + h U_r + b_r)                       && \text{reset gate} \\
    z_t &= \sigma(x W_z + h U_z + b_z)                       && \text{update gate} \\
    n_t &= \tanh(x W_n + b_n + r_t \odot (h U_n + b_{hn}))   && \text{candidate} \\
    h_t &= (1 - z_t) \odot n_t + z_t \odot h

  With ``reset_after=False`` (Cho et al. 2014 exactly; the form in Colah's
  figure, Haiku's GRU and Keras' default before TensorFlow 2) the reset
  gate scales h before the matmul and there is no ``b_hn``:

  .. math::

    n_t = \tanh(x W_n + (r_t \odot h) U_n + b_n)

  Its second matmul reads r, so it is no `fused_cell`: `jaxrnn.scan` runs
  its step in the plain loop, reading each input a step early for
  inference on a CPU (`jaxrnn._fused.read_ahead_sequence`).

  ``activation`` replaces the candidate's tanh and ``gate_activation`` the
  sigmoid of r and z (functions or `jax.nn` names: Keras' ``activation``
  and ``recurrent_activation``, Flax's ``activation_fn`` and ``gate_fn``).
  The batched kernel of `jaxrnn.scan_batch` takes jax.nn's element-wise
  functions (any name, or ``jax.nn.relu`` itself, say); with another
  function it runs `jaxrnn.scan` under `jax.vmap`, as the kernel could
  not know that the function works element by element. ``"hard_sigmoid"``
  is `jax.nn.hard_sigmoid`, ``relu6(z + 3) / 6`` as in Keras 3; Keras 2's
  ``clip(0.2 z + 0.5, 0, 1)`` is that function of ``1.2 z``, so weights
  trained with it port exactly, and keep the kernel, with the r and z
  blocks of ``w_x``, ``w_h`` and ``b`` multiplied by 1.2.

  From Keras: its ``kernel`` [I, 3H] and ``recurrent_kernel`` [H, 3H] hold
  the blocks in the order z, r, h; reorder them to r, z, n. With
  ``reset_after=True`` its ``bias`` is [2, 3H], input and recurrent
  biases: ``b`` is their sum for z and r and the input bias alone for n,
  and ``b_hn`` the recurrent bias of n. With ``reset_after=False`` it is
  ``b`` [3H], reordered.

  Colah's figure writes ``h_t = (1 - z_t) h + z_t n_t``: his ``z`` is our
  ``1 - z``. We follow Cho et al. and every framework, where ``z`` keeps the
  old state. Vectors are rows times the weights as stored (``x @ w_x``;
  PyTorch stores the transposes): his ``W_z [h_{t-1}, x_t]`` is ``h
  w_h[:, H:2H] + x w_x[:, H:2H]`` (blocks r, z, n: 0 to 2), so his
  ``W_z`` is ``concat([w_h[:, H:2H], w_x[:, H:2H]]).T``. Weights of a GRU
  written as in his figure (``gru(H, reset_after=False)``'s form) port by
  negating the z blocks, as ``sigmoid(-a) = 1 - sigmoid(a)``:
  ``w.at[..., H:2*H].multiply(-1)`` for ``w_x``, ``w_h`` and ``b``.

  Layout: fused blocks ``r, z, n``; ``GRUParams(w_x [I, 3H], w_h [H, 3H],
  b [3H], b_hn [H] or None)``; carry ``h [H]`` in float32 or wider;
  ``project(params, xs [T, I]) -> [T, 3H]``.

  ``use_bias=False`` drops every bias (``b`` and ``b_hn`` are None;
  ``bias_init`` is unused), as PyTorch's ``bias=False`` and Keras'
  ``use_bias=False``; with ``reset_after=False`` it is refused, as its
  params could not be told from the ``reset_after=True`` GRU's. ``param_dtype``
  is the params' dtype; ``dtype`` that of the computation (Flax's: the
  params are cast to it on the way in, the carry stays float32 or wider;
  None computes in ``param_dtype``).

  Initialisation: ``w_x`` LeCun normal, ``w_h`` orthogonal per gate block,
  biases zero; all overridable. In either form the cell also brings a
  batched kernel (``Cell.batched``, `jaxrnn._cells.gru_batched`) that
  `jaxrnn.scan_batch` runs.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.gru(16)
  >>> params = cell.init(jax.random.key(0), 8)
  >>> params.w_h.shape, params.b_hn.shape
  ((16, 48), (16,))
  >>> h, ys = jaxrnn.scan(cell, params, jnp.ones((5, 8)))
  >>> ys.shape
  (5, 16)
  """
  H = hidden_size = check_size("jaxrnn.gru", "hidden_size", hidden_size)
  act = check_activation("jaxrnn.gru", "activation", activation)
  gate_fn = check_activation("jaxrnn.gru", "gate_activation", gate_activation)
  if not check_bool("jaxrnn.gru", "use_bias", use_bias) and not reset_after:
    # Its params (w_x, w_h alone) would be the reset_after=True GRU's, which
    # is what torch and Flax hold: exported, it would compute something else.
    raise ValueError(
        "jaxrnn.gru: reset_after=False with use_bias=False is not built: its "
        "params would be those of the bias-free reset_after=True GRU (w_x and "
        "w_h alone), so nothing could tell them apart, and to_torch or "
        "to_linen would export it as that GRU without an error. Fix: "
        "reset_after=True (PyTorch's and Flax's GRU), or keep the biases.")

  def init(key, input_size):
    kx, kh, kb, kbh = jax.random.split(key, 4)
    return GRUParams(
        w_x=kernel_init(kx, (input_size, 3 * H), param_dtype),
        w_h=stacked_init(recurrent_init, kh, (H, H), 3, param_dtype),
        b=bias_init(kb, (3 * H,), param_dtype) if use_bias else None,
        b_hn=bias_init(kbh, (H,), param_dtype) if reset_after and use_bias else None)

  def initial_carry(params):
    return jnp.zeros((H,), carry_dtype(params.w_h.dtype))

  def project(params, xs):
    return project_input("gru", xs, params.w_x, params.b)

  def checked(gx):
    """``gx``, refused unless it is the projected input ``[..., 3H]``: a raw
    ``x_t`` of another width would broadcast or split into wrong gates."""
    if jnp.shape(gx)[-1:] != (3 * H,):
      raise ValueError(
          f"jaxrnn.gru: the step's gx is {jnp.result_type(gx)}{list(jnp.shape(gx))}; "
          f"expected the projected input [{3 * H}] (3 gates of {H}). If you called "
          f"cell.step on a raw input x_t: it takes gx_t = cell.project(params, "
          f"x_t[None])[0]; jaxrnn.rnn(cell).step(params, carry, x_t) projects x_t "
          f"and checks it.")
    return gx

  def finish(params, h, gx, u):   # reset_after: u = h @ w_h, all three blocks
    gx = checked(gx)
    # r and z through one sigmoid: one wide op is faster on CPU (see lstm.py)
    r, z = jnp.split(gate_fn(gx[..., :2 * H] + u[..., :2 * H]), 2, axis=-1)
    u_n = u[..., 2 * H:] if params.b_hn is None else u[..., 2 * H:] + params.b_hn
    n = act(gx[..., 2 * H:] + r * u_n)
    h = (1.0 - z) * n + z * h
    return record_gru(r, z, n, h)

  def batched_kernel(reset_after):   # for jaxrnn.scan_batch, or None
    if act not in KERNEL_ACTIVATIONS or gate_fn not in KERNEL_ACTIVATIONS:
      return None
    if act is jnp.tanh and gate_fn is jax.nn.sigmoid and reset_after:
      return gru_batch_kernel
    kernel = partial(gru_batch_kernel, reset_after=reset_after, activation=act,
                     gate_activation=gate_fn)
    kernel.takes_recurrent_mask = True
    return kernel

  if reset_after:
    cell = fused_cell(init=init, initial_carry=initial_carry, project=project,
                      recurrent_input=lambda h: h, finish=finish, output_size=H,
                      read_ahead=True)     # forward 0.40-0.68x the time (fused_cell)
    cell = cell._replace(batched=batched_kernel(reset_after=True))
    return with_compute_dtype(cell, dtype, "jaxrnn.gru")

  def step(params, h, gx):   # Cho et al.: U_n multiplies r * h, a second matmul
    x = split_gates(checked(gx), GATES)
    u_rz = matmul(h, params.w_h[:, :2 * H])
    r = gate_fn(x["r"] + u_rz[:H])
    z = gate_fn(x["z"] + u_rz[H:])
    n = act(x["n"] + matmul(r * h, params.w_h[:, 2 * H:]))
    h = (1.0 - z) * n + z * h
    return record_gru(r, z, n, h)

  cell = Cell(init=init, initial_carry=initial_carry, step=step, output_size=H,
              project=project, sequence=read_ahead_sequence(step, initial_carry),
              batched=batched_kernel(reset_after=False))
  return with_compute_dtype(cell, dtype, "jaxrnn.gru")


def record_gru(r, z, n, h):
  """Records the GRU's signals for `jaxrnn.trace`; returns ``(h, h)``."""
  for name, value in dict(r=r, z=z, n=n, h=h).items():
    record(name, value)
  return h, h
