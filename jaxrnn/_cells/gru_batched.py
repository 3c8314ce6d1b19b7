"""The GRU as one batched kernel with a hand-written backward.

Lives here: `gru_batch_kernel`, which `jaxrnn.gru` attaches as
``Cell.batched`` and `jaxrnn.scan_batch` runs, in both forms:
``reset_after`` (the default; cuDNN's and PyTorch's) and
``reset_after=False`` (Cho et al.'s and Colah's, where the reset gate
scales ``h`` before its product). Not here: the GRU's definition
(`gru.py`); why a batched kernel pays is in `lstm_batched.py`, whose
structure this follows.

Measured and dropped (interleaved in one process, 2 CPU cores): the two
changes that sped up the LSTM's kernel, the sigmoid as ``(1 + tanh(x/2)) /
2`` and ``h_{t-1}`` taken from the outputs instead of saved, were level
here (0.95-1.03x at B = 1, 16 and 32); the GRU's sigmoid gates r, z are
already contiguous. So was a backward that writes one ``[d_pre_n, d_rz,
d_u_n]`` buffer per step, with one concatenation instead of three and
the recurrent product on a contiguous slice of it (0.99-1.03x at B = 1,
16 and 32, AMD EPYC).

``reset_after=False`` (since 2026-12-05) ran before as `jaxrnn.scan` of
its plain step under `jax.vmap`. Against that path (`python
benchmarks/batched_kernels.py --cells gru,gru_reset_before`, Zen 5 AMD
EPYC, 2 cores, interleaved medians) this kernel trains in 1/1.65 of the
time at B = 32, T = 128, H = 256 on one CPU device, 1/2.39 on 2, 1/5.6 at
B = 1, T = 512, H = 128 and 1/1.46 at B = 128, H = 512; forward alone
1/1.57 at B = 32. Its forward saves the activations ``[r, z, n]`` instead
of ``u`` and ``gx_t``: its backward needs neither, as ``r`` enters the
candidate's product before ``U_n`` (not measured against recomputing).

Other activations (since 2026-12-05): any of jax.nn's element-wise
functions (`KERNEL_ACTIVATIONS`) replaces tanh or the sigmoid, its
derivative taken by JAX's JVP with a tangent of ones at the pre-activation
(recomputed, or saved in place of the activations for
``reset_after=False``). Before, such a GRU ran `jaxrnn.scan` under
`jax.vmap`. With ``activation="relu"`` and ``gate_activation=
"hard_sigmoid"`` (``--cells gru_relu_hard,gru_reset_before_relu_hard``,
Zen 5, one run each) that path took 2.17x and 1.82x this kernel's
training time at B = 32, H = 256 on one device (1.18x and 2.56x on 2),
1.30x and 5.5x at B = 1, 1.47x and 1.32x at B = 128, H = 512; the kernel
runs as fast as with tanh and the sigmoid (0.97-1.01x).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import (ACTIVATIONS, Array, bias_or_zeros, carry_dtype, matmul,
                          time_batch_matmul)
from jaxrnn._cells.batch_loop import at, over_time, put

# The activations the kernel takes: jax.nn's element-wise functions, whose
# derivative at each element is the JVP with a tangent of ones. Any other
# function could mix elements, so its cell runs `jaxrnn.scan` under vmap.
KERNEL_ACTIVATIONS = frozenset(getattr(jax.nn, name) for name in ACTIVATIONS)


class Form(NamedTuple):
  """The GRU `_gru_loop` computes (static): its form and its activations."""
  reset_after: bool = True
  activation: Callable = jnp.tanh                 # of the candidate n
  gate_activation: Callable = jax.nn.sigmoid      # of r and z

  @property
  def from_outputs(self) -> bool:
    """Whether both derivatives follow from the outputs (tanh' = 1 - tanh²,
    σ' = σ(1 - σ)), so that the backward needs no pre-activations."""
    return self.activation is jnp.tanh and self.gate_activation is jax.nn.sigmoid


def _times_slope(fn: Callable, d: Array, y: Array, pre: Optional[Array]) -> Array:
  """``d * fn'(pre)``, given ``y = fn(pre)``: from ``y`` for tanh and the
  sigmoid (``pre`` may be None there), otherwise from JAX's JVP of ``fn``."""
  if fn is jnp.tanh:
    return d * (1 - y * y)
  if fn is jax.nn.sigmoid:
    return d * y * (1 - y)
  return d * jax.jvp(fn, (pre,), (jnp.ones_like(pre),))[1]


def _parts(gx: Array, u: Array, b_hn: Array, H: int, gate: Callable):
  """The gates' pre-activations and values ``[r, z]``, and ``u_n + b_hn``,
  from ``gx = W x + b`` and ``u = U h``."""
  pre_rz = gx[:, :2 * H] + u[:, :2 * H]
  u_n = u[:, 2 * H:] + b_hn                       # U_n h + b_hn, scaled by r
  return pre_rz, gate(pre_rz), u_n


def _step(w_h, bias_hn, h, gx, keep, recurrent_mask, form: Form):
  """One step from ``gx = x_t W + b``: ``h_t, y_t`` and what the backward
  reads: ``u_t = (m h_{t-1}) U`` with ``reset_after`` (``m`` the recurrent
  mask, or 1), else the activations ``[r, z, n]`` (their pre-activations
  unless `Form.from_outputs`).

  Without ``reset_after``, ``w_h`` is the pair ``(U_rz, U_n)`` and the
  candidate's product ``(r * m h_{t-1}) U_n`` waits for ``r``: two matmuls
  in turn.
  """
  H = h.shape[-1]
  h_in = h if recurrent_mask is None else h * recurrent_mask
  if form.reset_after:
    u = matmul(h_in, w_h)
    _, rz, u_n = _parts(gx, u, bias_hn, H, form.gate_activation)
    r, z = jnp.split(rz, 2, axis=-1)
    n = form.activation(gx[:, 2 * H:] + r * u_n)
    saved = u
  else:
    w_rz, w_n = w_h
    pre_rz = gx[:, :2 * H] + matmul(h_in, w_rz)
    r, z = jnp.split(form.gate_activation(pre_rz), 2, axis=-1)
    pre_n = gx[:, 2 * H:] + matmul(r * h_in, w_n)
    n = form.activation(pre_n)
    saved = jnp.concatenate([r, z, n] if form.from_outputs else [pre_rz, pre_n], axis=-1)
  h_new = n + z * (h - n)                         # (1 - z) n + z h
  y = h_new
  if keep is not None:                            # masked step: h frozen, y = 0
    keep = keep[:, None]
    y = jnp.where(keep, h_new, jnp.zeros_like(h_new))
    h_new = jnp.where(keep, h_new, h)
  return h_new, y, saved


# A batch this small hoists the input matmul out of the loop; a larger one
# keeps it inside (see `_loop`). With bfloat16 params, the loop that saves
# for the backward hoists it up to the second bound.
HOIST_MAX_BATCH = 2
HOIST_MAX_BATCH_BF16_TRAINING = 32


def _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, form,
          save: bool):
  """The forward loop; with ``save``, also every ``h_{t-1}`` and what `_step`
  returns for the backward, and with ``reset_after`` every ``gx_t = x_t W + b``.

  Unlike the LSTM's, it keeps the input matmul in the loop from B = 3 on:
  hoisted, it was 1.1-1.4x slower, forward and forward+backward, at
  B = 4-32 (2 CPU cores, T = 128-512, H = 128-256; one CPU device and 2),
  and also when the backward re-read the hoisted product instead of a
  saved ``gx_t``; hoisted per chunk of 16-32 steps, the forward alone was
  1.11-1.24x slower at B = 32 (one device and 2) and 1.17-1.19x at B = 1.
  Up to `HOIST_MAX_BATCH` it is hoisted: there each step's input product
  is a matrix-vector product, and one matmul for all steps beats T of
  them. Forward 0.58-0.75x the time at B = 1 and 0.83-0.89x at B = 2,
  forward+backward 0.78-0.99x and 0.91-0.95x (AMD EPYC, 2 cores, one CPU
  device, T = 128-512, H = 128-256, interleaved medians; at B = 4 the
  forward took 0.89x but training 1.04x, at B = 32 1.09x and 1.37x).
  With bfloat16 params, the loop that saves for the backward hoists it up
  to `HOIST_MAX_BATCH_BF16_TRAINING`: one bfloat16 matmul for all steps,
  and no ``gx_t`` written per step. Training took 0.87-0.97x the time at
  B = 4-32 on one CPU device (T = 64-256, H = 128-512) and 0.80-0.98x on
  2, and 0.99-1.04x at B = 64 and 128; forward alone hoisting lost
  (1.02-1.12x at B = 16-32 on 2 devices; on one 1.02x at B = 32 and 1.40x
  at B = 128, 0.94x at B = 16), so there it stays in the loop. The step
  reads the hoisted ``gx_t`` from a carry filled one step ahead, not from
  the ``[B, T, 3H]`` array: with that slice fused into the step's
  element-wise work, XLA CPU compiled the work without vector
  instructions (the forward took 2x as long at B = 16). These bounds were
  measured on the ``reset_after`` form; for ``reset_after=False``, which
  saves no ``gx_t`` either way, bfloat16 training hoisted took 0.80-0.84x
  the time of the loop's product at B = 8, 16 and 32 (Zen 5, one device,
  T = 128, H = 256, one run).
  """
  dtype = carry_dtype(w_h.dtype)
  bias = b.astype(dtype)
  bias_hn = b_hn.astype(dtype) if form.reset_after else None
  H = h0.shape[-1]
  w_step = w_h if form.reset_after else (w_h[:, :2 * H], w_h[:, 2 * H:])
  B, T = xs.shape[:2]
  ys = jnp.zeros((B, T) + h0.shape[1:], h0.dtype)
  G = w_h.shape[-1]
  bfloat16 = w_h.dtype != dtype                   # params narrower than the carry
  # A symbolic batch (jax.export) has no size to compare: the loop for large ones.
  hoisted = isinstance(B, int) and B <= (
      HOIST_MAX_BATCH_BF16_TRAINING if save and bfloat16 else HOIST_MAX_BATCH)
  gxs = matmul(xs, w_x) + bias if hoisted else None       # [B, T, 3H]
  ahead = at(gxs, T - 1 if reverse else 0) if hoisted else None
  saved = ()
  if save:
    saved = (jnp.zeros((B, T, G), dtype), jnp.zeros(ys.shape, h0.dtype))
    if form.reset_after and not hoisted:
      saved += (jnp.zeros((B, T, G), dtype),)

  def body(t, state):
    h, ahead, ys, saved = state
    keep = None if valid is None else at(valid, t)
    if hoisted:
      gx, ahead = ahead, at(gxs, jnp.clip(t - 1 if reverse else t + 1, 0, T - 1))
    else:
      gx = matmul(at(xs, t), w_x) + bias
    h_new, y, for_backward = _step(w_step, bias_hn, h, gx, keep, recurrent_mask, form)
    if save:
      saved = tuple(put(a, t, v) for a, v in zip(saved, (for_backward, h, gx)))
    return h_new, ahead, put(ys, t, y), saved

  final, _, ys, saved = over_time(body, T, reverse, unroll, (h0, ahead, ys, saved))
  if not save:
    return final, ys
  us, hs_prev, *gx_saved = saved
  if not form.reset_after:      # its backward reads no gx_t
    return final, (ys, None, us, hs_prev)
  return final, (ys, gxs if hoisted else gx_saved[0], us, hs_prev)


@partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10))
def _gru_loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, form):
  """``h_T, ys`` for batch-major ``xs [B, T, I]``, ``valid`` bool[B, T] or
  None, ``recurrent_mask`` [B, H] or None (constant: no gradient);
  ``b_hn`` None unless ``form.reset_after``.

  Not differentiated, it saves nothing.
  """
  return _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll,
               form, save=False)


def _forward(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, form):
  final, (ys, gxs, us, hs_prev) = _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask,
                                        reverse, unroll, form, save=True)
  return (final, ys), (w_x, w_h, b, b_hn, xs, valid, recurrent_mask, gxs, us, hs_prev)


def _backward(reverse, unroll, form, residuals, cotangents):
  if not form.reset_after:
    return _backward_reset_before(reverse, unroll, form, residuals, cotangents)
  w_x, w_h, b, b_hn, xs, valid, recurrent_mask, gxs, us, hs_prev = residuals
  dh_final, dys = cotangents
  H = hs_prev.shape[-1]
  bias_hn = b_hn.astype(us.dtype)
  w_h_t = jnp.transpose(w_h)   # du U^T as a plain product (see lstm_batched)
  act, gate = form.activation, form.gate_activation

  def body(t, state):
    dh, (d_gxs, d_u_ns) = state                   # dh: gradient of the step's new h
    gx, u, h = at(gxs, t), at(us, t), at(hs_prev, t)
    pre_rz, rz, u_n = _parts(gx, u, bias_hn, H, gate)   # recomputed: cheaper than saving
    r, z = jnp.split(rz, 2, axis=-1)
    pre_n = gx[:, 2 * H:] + r * u_n
    n = act(pre_n)
    dh_new = dh + at(dys, t)                      # h_t is both the carry and y_t
    pre_r, pre_z = jnp.split(pre_rz, 2, axis=-1)
    d_pre_n = _times_slope(act, dh_new * (1 - z), n, pre_n)   # through n = act(pre_n)
    d_rz = jnp.concatenate([_times_slope(gate, d_pre_n * u_n, r, pre_r),      # d (gx_r + u_r)
                            _times_slope(gate, dh_new * (h - n), z, pre_z)],  # d (gx_z + u_z)
                           axis=-1)
    d_gx = jnp.concatenate([d_rz, d_pre_n], axis=-1)
    d_u_n = d_pre_n * r
    d_h_in_u = matmul(jnp.concatenate([d_rz, d_u_n], axis=-1), w_h_t)  # u = (m h) U
    if recurrent_mask is not None:
      d_h_in_u = d_h_in_u * recurrent_mask
    dh_prev = dh_new * z + d_h_in_u
    if valid is not None:                         # a masked step passed h on
      keep = at(valid, t)[:, None]
      d_gx = jnp.where(keep, d_gx, jnp.zeros_like(d_gx))
      d_u_n = jnp.where(keep, d_u_n, jnp.zeros_like(d_u_n))
      dh_prev = jnp.where(keep, dh_prev, dh)
    return dh_prev, (put(d_gxs, t, d_gx), put(d_u_ns, t, d_u_n))

  dh0, (d_gxs, d_u_ns) = over_time(
      body, gxs.shape[1], not reverse, unroll,
      (dh_final, (jnp.zeros_like(gxs), jnp.zeros_like(hs_prev, dtype=us.dtype))))
  # Weight gradients as single matmuls over time and batch. d u = [d_rz, d_u_n].
  h_in_u = hs_prev if recurrent_mask is None else hs_prev * recurrent_mask[:, None]
  d_w_h = jnp.concatenate([time_batch_matmul(h_in_u, d_gxs[..., :2 * H], w_h),
                           time_batch_matmul(h_in_u, d_u_ns, w_h)], axis=-1)
  d_xs = matmul(d_gxs, w_x.T)
  return (time_batch_matmul(xs, d_gxs, w_x), d_w_h,
          d_gxs.sum(axis=(0, 1)).astype(b.dtype), d_u_ns.sum(axis=(0, 1)).astype(b_hn.dtype),
          dh0, d_xs.astype(xs.dtype), None, None)


def _backward_reset_before(reverse, unroll, form, residuals, cotangents):
  """The backward of ``reset_after=False`` from the saved ``[r, z, n]``
  (or, unless `Form.from_outputs`, their pre-activations).

  With ``q = r * m h_{t-1}``, the candidate's gradient reaches ``r``
  through ``q``'s product, so the step runs two matmuls in turn, as its
  forward does: ``dq = dp U_n^T``, then ``[dr, dz] U_rz^T``.
  """
  w_x, w_h, b, _, xs, valid, recurrent_mask, _, saved, hs_prev = residuals
  dh_final, dys = cotangents
  H = hs_prev.shape[-1]
  w_rz_t, w_n_t = jnp.transpose(w_h[:, :2 * H]), jnp.transpose(w_h[:, 2 * H:])
  act, gate = form.activation, form.gate_activation

  def activations(pre):                           # [r, z, n] from [pre_rz, pre_n]
    return jnp.concatenate([gate(pre[..., :2 * H]), act(pre[..., 2 * H:])], axis=-1)

  def body(t, state):
    dh, d_gxs = state                             # dh: gradient of the step's new h
    pre = None if form.from_outputs else at(saved, t)
    rzn = at(saved, t) if form.from_outputs else activations(pre)
    r, z, n = jnp.split(rzn, 3, axis=-1)
    pre_r, pre_z, pre_n = (None,) * 3 if pre is None else jnp.split(pre, 3, axis=-1)
    h = at(hs_prev, t)
    h_in = h if recurrent_mask is None else h * recurrent_mask
    dh_new = dh + at(dys, t)                      # h_t is both the carry and y_t
    d_pre_n = _times_slope(act, dh_new * (1 - z), n, pre_n)   # through n = act(pre_n)
    dq = matmul(d_pre_n, w_n_t)                   # pre_n = g_n + q U_n
    d_rz = jnp.concatenate([_times_slope(gate, dq * h_in, r, pre_r),          # d (g_r + h_in U_r)
                            _times_slope(gate, dh_new * (h - n), z, pre_z)],  # d (g_z + h_in U_z)
                           axis=-1)
    d_h_in = matmul(d_rz, w_rz_t) + dq * r
    if recurrent_mask is not None:
      d_h_in = d_h_in * recurrent_mask
    dh_prev = dh_new * z + d_h_in
    d_gx = jnp.concatenate([d_rz, d_pre_n], axis=-1)
    if valid is not None:                         # a masked step passed h on
      keep = at(valid, t)[:, None]
      d_gx = jnp.where(keep, d_gx, jnp.zeros_like(d_gx))
      dh_prev = jnp.where(keep, dh_prev, dh)
    return dh_prev, put(d_gxs, t, d_gx)

  dh0, d_gxs = over_time(body, saved.shape[1], not reverse, unroll,
                         (dh_final, jnp.zeros_like(saved)))
  # Weight gradients as single matmuls over time and batch: d pre = d gx.
  h_in = hs_prev if recurrent_mask is None else hs_prev * recurrent_mask[:, None]
  r = saved[..., :H] if form.from_outputs else gate(saved[..., :H])
  q = r * h_in
  d_w_h = jnp.concatenate([time_batch_matmul(h_in, d_gxs[..., :2 * H], w_h),
                           time_batch_matmul(q, d_gxs[..., 2 * H:], w_h)], axis=-1)
  d_xs = matmul(d_gxs, w_x.T)
  return (time_batch_matmul(xs, d_gxs, w_x), d_w_h,
          d_gxs.sum(axis=(0, 1)).astype(b.dtype), None,
          dh0, d_xs.astype(xs.dtype), None, None)


_gru_loop.defvjp(_forward, _backward)


def gru_batch_kernel(params, carry: Array, xs: Array, mask: Optional[Array],
                     reverse: bool, unroll: int, recurrent_mask: Optional[Array] = None,
                     reset_after: bool = True, activation: Callable = jnp.tanh,
                     gate_activation: Callable = jax.nn.sigmoid):
  r"""The GRU over a batch: ``(h [B, H], ys [B, T, H])``.

  With :math:`g = W x_t + b` and :math:`u = U h_{t-1}` in blocks r, z, n
  (``reset_after``):

  .. math::

    r, z = \sigma(g_{rz} + u_{rz}), \quad
    n = \tanh(g_n + r \odot (u_n + b_{hn})), \quad
    h_t = n + z \odot (h_{t-1} - n)

  and the hand-written backward, :math:`\delta h` the gradient reaching
  :math:`h_t`, :math:`\delta p = \delta h (1 - z)(1 - n^2)`:

  .. math::

    \delta g &= [\delta p\, (u_n + b_{hn})\, r(1-r),\; \delta h (h_{t-1} - n) z(1-z),\; \delta p] \\
    \delta u &= [\delta g_{rz},\; \delta p\, r], \qquad
    \delta h_{t-1} = \delta h\, z + \delta u\, U^\top

  then :math:`dW = \sum_t x_t^\top \delta g_t`, :math:`dU = \sum_t h_{t-1}^\top
  \delta u_t`, :math:`db = \sum_t \delta g_t`, :math:`db_{hn} = \sum_t \delta
  u_{n,t}`, :math:`dx_t = \delta g_t W^\top`.

  With ``reset_after=False`` (no :math:`b_{hn}`) the candidate is
  :math:`n = \tanh(g_n + q\, U_n)` with :math:`q = r \odot h_{t-1}`, and

  .. math::

    \delta q &= \delta p\, U_n^\top, \qquad
    \delta g = [\delta q\, h_{t-1}\, r(1-r),\; \delta h (h_{t-1} - n) z(1-z),\; \delta p] \\
    \delta h_{t-1} &= \delta h\, z + \delta g_{rz} U_{rz}^\top + \delta q\, r, \qquad
    dU = [\textstyle\sum_t h_{t-1}^\top \delta g_{rz,t},\; \sum_t q_t^\top \delta p_t]

  ``activation`` replaces tanh and ``gate_activation`` the sigmoid σ, each
  one of `KERNEL_ACTIVATIONS` (jax.nn's element-wise functions); the
  backward then multiplies by their derivatives at the saved or recomputed
  pre-activations in place of :math:`1 - n^2` and :math:`r(1-r)`, :math:`z(1-z)`.

  A recurrent mask ``m`` [B, H] replaces :math:`h_{t-1}` by :math:`m \odot
  h_{t-1}` wherever it meets ``U`` (and in :math:`q`), and scales the
  gradient that comes back through those products by ``m``.

  Shapes: params `GRUParams` (w_x [I, 3H], w_h [H, 3H], b [3H], b_hn [H];
  both None for ``use_bias=False``, which runs with zeros; b_hn None
  without ``reset_after``); carry h [B, H]; xs [B, T, I]; mask bool[B, T]
  or None. Same numbers as `jaxrnn.scan` under `jax.vmap`, to float
  rounding.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.gru(4, reset_after=False)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
  >>> h, ys = gru_batch_kernel(params, jnp.zeros((2, 4)), xs, None, False, 1,
  ...                          reset_after=False)
  >>> bool(jnp.allclose(ys, jax.vmap(lambda x: jaxrnn.scan(cell, params, x)[1])(xs),
  ...                   atol=1e-6))
  True
  """
  if reset_after and params.b_hn is None and params.b is not None:
    # A backstop, as in lstm_batched.check_standard_params.
    raise ValueError(
        "jaxrnn.scan_batch: the cell is the GRU with reset_after=True but its "
        "params have no b_hn, so they were made by jaxrnn.gru(H, "
        "reset_after=False). Fix: build the cell with the same reset_after.")
  if not reset_after and (params.b_hn is not None or params.b is None):
    # b is None too for jaxrnn.gru(H, use_bias=False), a reset_after GRU.
    raise ValueError(
        "jaxrnn.scan_batch: the cell is the GRU with reset_after=False but its "
        f"params {'have b_hn' if params.b_hn is not None else 'have no biases'}, "
        "so they were made by jaxrnn.gru(H) (reset_after=True, PyTorch's and "
        "Flax's GRU). Fix: build the cell with the same reset_after.")
  for name, fn in (("activation", activation), ("gate_activation", gate_activation)):
    if fn not in KERNEL_ACTIVATIONS:     # jaxrnn.gru sends other functions to vmap(scan)
      raise ValueError(
          f"gru_batch_kernel: {name}={fn!r} is not one of jax.nn's element-wise "
          f"functions, whose derivatives the kernel takes element by element. Fix: "
          f"run the cell through jaxrnn.scan under jax.vmap.")
  H = params.w_h.shape[0]
  b = bias_or_zeros(params.b, 3 * H, params.w_h)
  b_hn = bias_or_zeros(params.b_hn, H, params.w_h) if reset_after else None
  return _gru_loop(params.w_x, params.w_h, b, b_hn, carry, xs, mask, recurrent_mask,
                   reverse, unroll, Form(reset_after, activation, gate_activation))


gru_batch_kernel.takes_recurrent_mask = True   # see jaxrnn.scan_batch
