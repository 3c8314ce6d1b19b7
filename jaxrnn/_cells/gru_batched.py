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
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, bias_or_zeros, carry_dtype, matmul, time_batch_matmul
from jaxrnn._cells.batch_loop import at, over_time, put


def _parts(gx: Array, u: Array, b_hn: Array, H: int):
  """``r, z`` and the candidate's pieces from ``gx = W x + b``, ``u = U h``."""
  r, z = jnp.split(jax.nn.sigmoid(gx[:, :2 * H] + u[:, :2 * H]), 2, axis=-1)
  u_n = u[:, 2 * H:] + b_hn                       # U_n h + b_hn, scaled by r
  return r, z, u_n


def _step(w_h, bias_hn, h, gx, keep, recurrent_mask, reset_after: bool):
  """One step from ``gx = x_t W + b``: ``h_t, y_t`` and what the backward
  reads, ``u_t = (m h_{t-1}) U`` with ``reset_after`` (``m`` the recurrent
  mask, or 1), else the activations ``[r, z, n]``.

  Without ``reset_after``, ``w_h`` is the pair ``(U_rz, U_n)`` and the
  candidate's product ``(r * m h_{t-1}) U_n`` waits for ``r``: two matmuls
  in turn.
  """
  H = h.shape[-1]
  h_in = h if recurrent_mask is None else h * recurrent_mask
  if reset_after:
    u = matmul(h_in, w_h)
    r, z, u_n = _parts(gx, u, bias_hn, H)
    n = jnp.tanh(gx[:, 2 * H:] + r * u_n)
    saved = u
  else:
    w_rz, w_n = w_h
    r, z = jnp.split(jax.nn.sigmoid(gx[:, :2 * H] + matmul(h_in, w_rz)), 2, axis=-1)
    n = jnp.tanh(gx[:, 2 * H:] + matmul(r * h_in, w_n))
    saved = jnp.concatenate([r, z, n], axis=-1)
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


def _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, reset_after,
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
  instructions (the forward took 2x as long at B = 16).
  """
  dtype = carry_dtype(w_h.dtype)
  bias = b.astype(dtype)
  bias_hn = b_hn.astype(dtype) if reset_after else None
  H = h0.shape[-1]
  w_step = w_h if reset_after else (w_h[:, :2 * H], w_h[:, 2 * H:])
  B, T = xs.shape[:2]
  ys = jnp.zeros((B, T) + h0.shape[1:], h0.dtype)
  G = w_h.shape[-1]
  bfloat16 = w_h.dtype != dtype                   # params narrower than the carry
  hoisted = B <= (HOIST_MAX_BATCH_BF16_TRAINING if save and bfloat16 else HOIST_MAX_BATCH)
  gxs = matmul(xs, w_x) + bias if hoisted else None       # [B, T, 3H]
  ahead = at(gxs, T - 1 if reverse else 0) if hoisted else None
  saved = ()
  if save:
    saved = (jnp.zeros((B, T, G), dtype), jnp.zeros(ys.shape, h0.dtype))
    if reset_after and not hoisted:
      saved += (jnp.zeros((B, T, G), dtype),)

  def body(t, state):
    h, ahead, ys, saved = state
    keep = None if valid is None else at(valid, t)
    if hoisted:
      gx, ahead = ahead, at(gxs, jnp.clip(t - 1 if reverse else t + 1, 0, T - 1))
    else:
      gx = matmul(at(xs, t), w_x) + bias
    h_new, y, for_backward = _step(w_step, bias_hn, h, gx, keep, recurrent_mask, reset_after)
    if save:
      saved = tuple(put(a, t, v) for a, v in zip(saved, (for_backward, h, gx)))
    return h_new, ahead, put(ys, t, y), saved

  final, _, ys, saved = over_time(body, T, reverse, unroll, (h0, ahead, ys, saved))
  if not save:
    return final, ys
  us, hs_prev, *gx_saved = saved
  if not reset_after:      # its backward reads the activations alone
    return final, (ys, None, us, hs_prev)
  return final, (ys, gxs if hoisted else gx_saved[0], us, hs_prev)


@partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10))
def _gru_loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, reset_after):
  """``h_T, ys`` for batch-major ``xs [B, T, I]``, ``valid`` bool[B, T] or
  None, ``recurrent_mask`` [B, H] or None (constant: no gradient);
  ``b_hn`` None unless ``reset_after``.

  Not differentiated, it saves nothing.
  """
  return _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll,
               reset_after, save=False)


def _forward(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask, reverse, unroll, reset_after):
  final, (ys, gxs, us, hs_prev) = _loop(w_x, w_h, b, b_hn, h0, xs, valid, recurrent_mask,
                                        reverse, unroll, reset_after, save=True)
  return (final, ys), (w_x, w_h, b, b_hn, xs, valid, recurrent_mask, gxs, us, hs_prev)


def _backward(reverse, unroll, reset_after, residuals, cotangents):
  if not reset_after:
    return _backward_reset_before(reverse, unroll, residuals, cotangents)
  w_x, w_h, b, b_hn, xs, valid, recurrent_mask, gxs, us, hs_prev = residuals
  dh_final, dys = cotangents
  H = hs_prev.shape[-1]
  bias_hn = b_hn.astype(us.dtype)
  w_h_t = jnp.transpose(w_h)   # du U^T as a plain product (see lstm_batched)

  def body(t, state):
    dh, (d_gxs, d_u_ns) = state                   # dh: gradient of the step's new h
    gx, u, h = at(gxs, t), at(us, t), at(hs_prev, t)
    r, z, u_n = _parts(gx, u, bias_hn, H)         # recomputed: cheaper than saving
    n = jnp.tanh(gx[:, 2 * H:] + r * u_n)
    dh_new = dh + at(dys, t)                      # h_t is both the carry and y_t
    d_pre_n = dh_new * (1 - z) * (1 - n * n)      # through n = tanh(pre_n)
    d_rz = jnp.concatenate([d_pre_n * u_n * r * (1 - r),      # d (gx_r + u_r)
                            dh_new * (h - n) * z * (1 - z)],  # d (gx_z + u_z)
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


def _backward_reset_before(reverse, unroll, residuals, cotangents):
  """The backward of ``reset_after=False`` from the saved ``[r, z, n]``.

  With ``q = r * m h_{t-1}``, the candidate's gradient reaches ``r``
  through ``q``'s product, so the step runs two matmuls in turn, as its
  forward does: ``dq = dp U_n^T``, then ``[dr, dz] U_rz^T``.
  """
  w_x, w_h, b, _, xs, valid, recurrent_mask, _, acts, hs_prev = residuals
  dh_final, dys = cotangents
  H = hs_prev.shape[-1]
  w_rz_t, w_n_t = jnp.transpose(w_h[:, :2 * H]), jnp.transpose(w_h[:, 2 * H:])

  def body(t, state):
    dh, d_gxs = state                             # dh: gradient of the step's new h
    r, z, n = jnp.split(at(acts, t), 3, axis=-1)
    h = at(hs_prev, t)
    h_in = h if recurrent_mask is None else h * recurrent_mask
    dh_new = dh + at(dys, t)                      # h_t is both the carry and y_t
    d_pre_n = dh_new * (1 - z) * (1 - n * n)      # through n = tanh(pre_n)
    dq = matmul(d_pre_n, w_n_t)                   # pre_n = g_n + q U_n
    d_rz = jnp.concatenate([dq * h_in * r * (1 - r),                # d (g_r + h_in U_r)
                            dh_new * (h - n) * z * (1 - z)], axis=-1)   # d (g_z + h_in U_z)
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

  dh0, d_gxs = over_time(body, acts.shape[1], not reverse, unroll,
                         (dh_final, jnp.zeros_like(acts)))
  # Weight gradients as single matmuls over time and batch: d pre = d gx.
  h_in = hs_prev if recurrent_mask is None else hs_prev * recurrent_mask[:, None]
  q = acts[..., :H] * h_in
  d_w_h = jnp.concatenate([time_batch_matmul(h_in, d_gxs[..., :2 * H], w_h),
                           time_batch_matmul(q, d_gxs[..., 2 * H:], w_h)], axis=-1)
  d_xs = matmul(d_gxs, w_x.T)
  return (time_batch_matmul(xs, d_gxs, w_x), d_w_h,
          d_gxs.sum(axis=(0, 1)).astype(b.dtype), None,
          dh0, d_xs.astype(xs.dtype), None, None)


_gru_loop.defvjp(_forward, _backward)


def gru_batch_kernel(params, carry: Array, xs: Array, mask: Optional[Array],
                     reverse: bool, unroll: int, recurrent_mask: Optional[Array] = None,
                     reset_after: bool = True):
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
  if not reset_after and params.b_hn is not None:
    raise ValueError(
        "jaxrnn.scan_batch: the cell is the GRU with reset_after=False but its "
        "params have b_hn, so they were made by jaxrnn.gru(H) (reset_after="
        "True, PyTorch's and Flax's GRU). Fix: build the cell with the same "
        "reset_after.")
  H = params.w_h.shape[0]
  b = bias_or_zeros(params.b, 3 * H, params.w_h)
  b_hn = bias_or_zeros(params.b_hn, H, params.w_h) if reset_after else None
  return _gru_loop(params.w_x, params.w_h, b, b_hn, carry, xs, mask, recurrent_mask,
                   reverse, unroll, reset_after)


gru_batch_kernel.takes_recurrent_mask = True   # see jaxrnn.scan_batch
