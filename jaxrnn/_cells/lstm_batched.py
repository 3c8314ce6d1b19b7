"""The standard LSTM as one batched kernel with a hand-written backward.

Lives here: `lstm_batch_kernel`, which `jaxrnn.lstm` attaches to its
standard form, and with ``peephole=True`` to the peephole LSTM
(``Cell.batched``), and `jaxrnn.scan_batch` runs. Not here: the
LSTM's definition and variants (`lstm.py`), the per-example fused kernel
(`_fused.py`), the loop over time (`batch_loop.py`).

Why: `jaxrnn.scan` sees one sequence and `jax.vmap` chooses the batched
program's layout. Its batching rules put the batch axis first, so the
per-example kernel's projected inputs ``[B, T, 4H]`` and their gradient are
transposed to and from the time-major layout its loop needs, and each
step's backward is JAX's transposition of the linearised step. Seeing the
whole batch, this kernel loops over the time axis of batch-major arrays
and transposes nothing. It hoists the input matmul out of the loop; for
training it saves ``z_t`` and ``c_{t-1}`` per step (``h_{t-1}`` is the
previous output, saved only under a mask), and computes
``dW_x``, ``dW_h``, ``db`` and ``dx`` as single matmuls after the backward
loop, as cuDNN does; not differentiated, it saves nothing. Measured on 2
CPU cores (``benchmarks/speed.py``, forward+backward, one device):
1.4-1.7x faster than the per-example kernel at B = 16 and 32, 1.3-2.0x
faster than the unfused form, and the least memory of the three.

Measured and kept (interleaved in one process, 2 CPU cores, B = 32,
T = 128, H = 256, forward+backward; "2 devices" is the batch split over 2
CPU devices): the backward loop multiplies by a transposed copy of ``W_h``
made once, not by ``W_h.T`` (the loop's ``[B, 4H] x [4H, H]`` product
runs 1.5x faster at B = 16 as a plain product; 0.94x the time on 2
devices); the weight-gradient matmuls contract one flattened axis
(`jaxrnn._cell.time_batch_matmul`; 0.95x); batch-major indexing (see
`batch_loop`; level here, it removes the transposes). Together: 0.90x the
time on 2 devices, 0.96x on one. Then, the gates in the order i, f, o, g
inside the kernel (`_swap_g_o`), so that one sigmoid covers three
contiguous blocks and the tanh one, with the sigmoid written as
``(1 + tanh(x/2)) / 2``, and ``h_{t-1}`` taken from the outputs instead of
saved: forward alone 0.78-0.81x the time on 2 devices (0.83-0.85x on one),
forward+backward 0.94-0.96x (0.93-0.98x on one), 0.88x at B = 16,
T = 256, H = 128, 0.95x at B = 4, level at B = 1 and at B = 128, H = 512.
Measured and dropped: the input matmul inside the loop (1.07x slower on 2
devices, 1.3-1.4x slower forward); saving the gate activations instead
of ``z_t`` (1.02-1.05x slower: the forward's concatenation costs more
than the backward's recomputed sigmoid); writing each step's activations,
then its ``dz``, over the slice of the buffer it has just read (2-3x
slower: XLA copies the whole buffer every step), and likewise ``z_t`` over
the hoisted ``x_t W`` it was computed from (1.9-3x slower, with an
``optimization_barrier`` on the slice read); a backward written on the
activations ``[i, f, o, tanh g]`` computed by one tanh over all 4H columns
(level); the batch in two independent half-batch loops on one device
(forward 0.84x the time of one loop, far behind 2 devices); the forward
loop unrolled by 2 when ``unroll=1`` (forward 0.94-0.95x, training level
at B = 32 and 0.97x at B = 1: not worth a hidden default and its compile
time); each step's ``x_t W`` read from a carry filled one step ahead,
as the GRU's hoisted path does (AMD EPYC, one device: 1.00-1.05x
training at B = 1, 16 and 32, forward 0.97-1.11x). Also measured and
dropped (same setting, ratios of interleaved medians): ``dW_x`` and
``dW_h`` as one matmul over the concatenated ``[x_t, h_{t-1}]``
(0.99-1.01x); the backward in chunks of 16-32 steps, each chunk's
weight gradients and ``dx`` computed while its ``dz`` is in cache
(1.00-1.07x); the input matmul computed per chunk of 16-32 steps inside
the loop (training 0.90-0.99x at B = 32 but 0.97-1.03x
at B = 16, T = 256; forward alone 0.84-0.95x on 2 devices at B = 32 and
level on one, but 1.08-1.19x slower on one device at B = 16, T = 256:
no chunk size wins everywhere); and the XLA CPU options that route dots
or element-wise work to other libraries (the ``xnn``, ``ynn`` and
``onednn`` variants of ``--xla_cpu_experimental_*_fusion_type`` with
``dot`` or ``eltwise``, ``--xla_cpu_use_onednn``,
``--xla_cpu_use_xnnpack``), ``--xla_cpu_ftz``, and single-threaded
dots on each of the 2 devices (YNNPACK's dots off and
``--xla_cpu_multi_thread_eigen=false``): level on 2 devices, or slower
(the YNNPACK dot fusion 1.13x slower training, single-threaded dots
1.1-1.2x slower on one). What is left: a skeleton of this kernel's
training program with the same matmuls, loops and saved buffers but one
tanh in place of each step's gate algebra trains in 0.92x the kernel's
time on 2 devices and the same on one (B = 32, T = 128, H = 256; 0.99x
at B = 128, T = 64, H = 512), so the matmuls and the memory traffic, not
the element-wise work, set the time.

Measured on the AMD EPYC host with jaxlib 0.10.2 (interleaved medians in
one process) and dropped. At B = 1 (T = 512, H = 128), where the steps'
products with ``R`` (about 2 us each, forward and backward) take about
half the training time: the forward's product written as a broadcast
multiply and sum (48x slower forward, 80x training), and, as at B = 32
above, saving the gate activations instead of ``z_t`` (1.04-1.06x
slower) and a backward on one tanh over all 4H columns (level);
single-threaded dots, in separate processes, were level too. Eigen in
place of YNNPACK, which this XLA CPU uses for the loop's matmuls by
default: on one core Eigen ran the forward's ``[16, 256] x [256, 1024]``
product in 0.81-0.90x YNNPACK's time and the backward's in 0.94-0.98x,
but on 2 threads at B = 32 the forward's in 1.2x; the whole program
compiled without YNNPACK on 2 devices ran the forward in 0.93x the time
and trained in 1.08x. XLA has no switch per matmul (written with a
transposed operand, the product still went to YNNPACK, and ran 1.2-1.8x
slower).

Measured on the same host later (interleaved medians in one process, the
XLA option below in alternating processes) and dropped. A profile on one
device at B = 32, H = 256 shows XLA running each step's
``[32, 256] x [256, 1024]`` product on one thread, with nothing on XLA's
other thread (at H = 384 and 512 it uses both). Three variants give each
step more independent products for that core; they win at that shape (the
input matmul in the loop also at B = 128 on one device) and tie or lose at
the others. The hidden units in 2 groups, each with its own slices of ``W``
and ``R`` and its own product and gate algebra per step, forward and
backward: on one device forward 0.60-0.68x the time, training 0.95-0.96x;
on 2 devices, the benchmark's faster placement, forward 0.85-0.94x and
training 0.94-1.02x; forward 0.78x at B = 16, H = 256 on one device;
elsewhere level or slower (H = 128, B = 1 to 32: forward 1.04-1.22x,
training 1.12-1.16x, as XLA ran the two groups one after the other; H = 192
0.93-1.04x; H = 384 1.05x; B = 128, H = 512 1.04-1.07x); 4 groups worse
than 2. The input matmul inside the loop, re-measured here: one device,
B = 32, forward 0.76x and training 0.96x, B = 128, H = 512 0.85x and 0.97x;
but 1.28-1.41x slower at B = 1, 1.02-1.11x at B = 16, and 1.02-1.14x on 2
devices. Forward alone once more (2026-12-04, one or two runs a shape):
one device 0.81-0.83x at B = 32, H = 256 and 0.92-0.95x at B = 128,
H = 512, but 0.98x at B = 64, H = 256, 1.02-1.05x at B = 32 and 64 with
H = 512 and 1.27-1.43x at B = 1 and 16 (H = 128); 2 devices 0.87-0.91x at
H = 256, 1.09x at B = 128: no batch threshold separates the wins from the
losses, so inference keeps the hoisted product. The step's two products
as one, ``[x_t, h_{t-1}] [W; R]``: 0.90-1.42x the hoisted form's forward
time, clearly ahead of the two products only at B = 16 (1.06x against
1.27x). The step's product split into 4, one per gate, as Flax linen's
cells compute it: forward 0.88-0.90x at B = 32 (one device and 2), but
1.04-1.11x slower at H = 128 and at B = 16, H = 256, level at B = 128. At
B = 1, time split into 2, 4 or 8 chunks, so that XLA could run one chunk's
input matmul or weight gradients beside another chunk's loop (training
0.97-1.00x, 1.13-1.16x and 1.03-1.10x: XLA ran them before or between the
loops, also with ``xla_cpu_enable_concurrency_optimized_scheduler``). XLA's
``xla_cpu_small_while_loop_byte_threshold`` (an
``--xla_backend_extra_options`` key, settable only process-wide through
``XLA_FLAGS``), which compiles a whole loop into one function, trained the
LSTM at B = 1 alone in 0.88-0.93x the time, but in the benchmark jaxrnn's
LSTM was level, its GRU gained about as much as the NNX and Equinox GRUs
(0.78-0.91x against 0.79-0.83x), and the LSTM peers and Flax linen's
``GRUCell`` (3x) gained more. Two options set per program
(``speed.py --xla-options``, side by side with the default, two runs):
``xla_cpu_prefer_vector_width=512`` trained in 0.92-0.99x the time at
B = 32, H = 256 (forward 0.92-0.99x), 1.04x at B = 1 and 0.97-1.00x at
B = 128, H = 512; ``xla_cpu_copy_insertion_use_region_analysis`` in
0.98-1.00x.

It is a `jax.custom_vjp`, so it has no forward mode; `jaxrnn.scan` under
`jax.vmap` keeps every transformation.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, bias_or_zeros, carry_dtype, matmul, time_batch_matmul
from jaxrnn._cells.batch_loop import at, over_time, put


def _swap_g_o(a: Array, H: int) -> Array:
  """Gate blocks ``i, f, g, o`` reordered to ``i, f, o, g`` along the last axis.

  Its own inverse. The kernel runs in this order, so one sigmoid covers
  the three sigmoid gates, contiguous; the parameters keep PyTorch's
  order, reordered on the way in (weights) and out (their gradients).
  """
  return jnp.concatenate([a[..., :2 * H], a[..., 3 * H:], a[..., 2 * H:3 * H]], axis=-1)


def _kernel_order(w_x: Array, w_h: Array, b: Array):
  """The params' ``w_x, w_h, b`` with their gate blocks in the kernel's order."""
  H = w_h.shape[0]
  return tuple(_swap_g_o(a, H) for a in (w_x, w_h, b))


def _sigmoid(x: Array) -> Array:
  """The logistic, as ``(1 + tanh(x / 2)) / 2``: the same function, and here
  0.93-0.96x the forward's time of ``jax.nn.sigmoid`` (exp and divide)."""
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _gates(z: Array, H: int):
  """``i, f, g, o`` from the pre-activations ``z [..., 4H]`` in the kernel's order i, f, o, g."""
  s = _sigmoid(z[..., :3 * H])
  return s[..., :H], s[..., H:2 * H], jnp.tanh(z[..., 3 * H:]), s[..., 2 * H:]


def _gates_and_cell(z: Array, c_prev: Array, peep):
  """``i, f, g, o`` and ``c_t = f c_{t-1} + i g`` from ``z [..., 4H]`` (kernel
  order) and ``c_{t-1}``. With peepholes ``peep = (p_i, p_f, p_o)`` (Gers &
  Schmidhuber 2000) ``i`` and ``f`` add ``p c_{t-1}`` to their
  pre-activations and ``o`` adds ``p_o c_t``."""
  H = c_prev.shape[-1]
  if peep is None:
    i, f, g, o = _gates(z, H)
    return i, f, g, o, f * c_prev + i * g
  p_i, p_f, p_o = peep
  i = _sigmoid(z[..., :H] + p_i * c_prev)
  f = _sigmoid(z[..., H:2 * H] + p_f * c_prev)
  g = jnp.tanh(z[..., 3 * H:])
  c = f * c_prev + i * g
  return i, f, g, _sigmoid(z[..., 2 * H:3 * H] + p_o * c), c


def _previous(ys: Array, h0: Array, reverse: bool) -> Array:
  """``h_{t-1}`` for every step t: the outputs shifted by one step, ``h0`` first.

  Without a mask the output is the hidden state, so the backward needs no
  saved copy of it.
  """
  h0 = h0[:, None]
  return (jnp.concatenate([ys[:, 1:], h0], axis=1) if reverse else
          jnp.concatenate([h0, ys[:, :-1]], axis=1))


def _step(w_h, bias, peep, h, c, xw, keep, recurrent_mask):
  """One step from ``xw = x_t W``: ``(h_t, c_t), y_t, z_t``, with
  ``z_t = xw + (m h_{t-1}) R + b`` (``m`` the recurrent mask, or 1)."""
  z = xw + matmul(h if recurrent_mask is None else h * recurrent_mask, w_h) + bias
  _, _, _, o, c_new = _gates_and_cell(z, c, peep)
  h_new = o * jnp.tanh(c_new)
  y = h_new
  if keep is not None:                          # masked step: carry frozen, y = 0
    keep = keep[:, None]
    y = jnp.where(keep, h_new, jnp.zeros_like(h_new))
    h_new = jnp.where(keep, h_new, h)
    c_new = jnp.where(keep, c_new, c)
  return (h_new, c_new), y, z


def _loop(w_x, w_h, b, peep, h0, c0, xs, valid, recurrent_mask, reverse, unroll,
          save: bool):
  """The forward loop; with ``save``, each step's ``z_t``, ``c_{t-1}`` and,
  with a mask, ``h_{t-1}``. ``w_x, w_h, b`` and ``z_t`` are in the kernel's
  gate order i, f, o, g (`_kernel_order`).

  The input matmul is hoisted out of the loop for all steps at once, and
  the bias is added in the step, where it costs no extra pass over
  ``[B, T, 4H]``.
  """
  bias = b.astype(carry_dtype(w_h.dtype))
  xw = matmul(xs, w_x)                          # [B, T, 4H]
  B, T = xs.shape[:2]
  ys = jnp.zeros((B, T) + h0.shape[1:], h0.dtype)
  saved = ()
  if save:
    saved = (jnp.zeros(xw.shape, xw.dtype), jnp.zeros(ys.shape, c0.dtype))
    if valid is not None:                       # a masked step's y_t is not h_t
      saved += (jnp.zeros(ys.shape, h0.dtype),)

  def body(t, state):
    (h, c), ys, saved = state
    keep = None if valid is None else at(valid, t)
    new_carry, y, z = _step(w_h, bias, peep, h, c, at(xw, t), keep, recurrent_mask)
    saved = tuple(put(a, t, v) for a, v in zip(saved, (z, c, h)))
    return new_carry, put(ys, t, y), saved

  final, ys, saved = over_time(body, T, reverse, unroll, ((h0, c0), ys, saved))
  return final, ((ys, *saved) if save else ys)


@partial(jax.custom_vjp, nondiff_argnums=(9, 10))
def _lstm_loop(w_x, w_h, b, peep, h0, c0, xs, valid, recurrent_mask, reverse, unroll):
  """``(h_T, c_T), ys`` for batch-major ``xs [B, T, I]``, ``peep`` the
  peepholes ``(p_i, p_f, p_o)`` or None, ``valid`` bool[B, T] or None,
  ``recurrent_mask`` [B, H] or None (constant: no gradient).

  Not differentiated (inference, evaluation), nothing is saved for a
  backward: 1.1-1.4x faster forward than the loop that saves (2 CPU cores,
  B = 32, T = 128, H = 256).
  """
  return _loop(*_kernel_order(w_x, w_h, b), peep, h0, c0, xs, valid, recurrent_mask,
               reverse, unroll, save=False)


def _forward(w_x, w_h, b, peep, h0, c0, xs, valid, recurrent_mask, reverse, unroll):
  w_x, w_h, b = _kernel_order(w_x, w_h, b)     # once, for both loops
  final, (ys, zs, cs_prev, *hs_prev) = _loop(w_x, w_h, b, peep, h0, c0, xs, valid,
                                             recurrent_mask, reverse, unroll, save=True)
  hs_prev = hs_prev[0] if hs_prev else _previous(ys, h0, reverse)
  return (final, ys), (w_x, w_h, b, peep, xs, valid, recurrent_mask, zs, hs_prev, cs_prev)


def _backward(reverse, unroll, residuals, cotangents):
  w_x, w_h, b, peep, xs, valid, recurrent_mask, zs, hs_prev, cs_prev = residuals
  (dh_final, dc_final), dys = cotangents
  H = hs_prev.shape[-1]
  w_h_t = jnp.transpose(w_h)   # dz R^T as a plain product (see the module's notes)

  def body(t, state):
    (dh, dc), dzs = state                       # gradients of the step's new (h, c)
    z, c_prev = at(zs, t), at(cs_prev, t)
    i, f, g, o, c_new = _gates_and_cell(z, c_prev, peep)   # recomputed: cheaper than saving
    tanh_c = jnp.tanh(c_new)
    dh_new = dh + at(dys, t)                    # h_t is both the carry and y_t
    dz_o = dh_new * tanh_c * o * (1 - o)
    dc_new = dc + dh_new * o * (1 - tanh_c * tanh_c)
    if peep is not None:                        # o read c_t through p_o
      dc_new = dc_new + dz_o * peep[2]
    dz_i, dz_f = dc_new * g * i * (1 - i), dc_new * c_prev * f * (1 - f)
    dz = jnp.concatenate([dz_i, dz_f, dz_o, dc_new * i * (1 - g * g)], axis=-1)
    dc_prev = dc_new * f
    if peep is not None:                        # i and f read c_{t-1}
      dc_prev = dc_prev + dz_i * peep[0] + dz_f * peep[1]
    dh_prev = matmul(dz, w_h_t)                 # z = ... + (m h) R
    if recurrent_mask is not None:
      dh_prev = dh_prev * recurrent_mask
    if valid is not None:                       # a masked step passed (h, c) on
      keep = at(valid, t)[:, None]
      dz = jnp.where(keep, dz, jnp.zeros_like(dz))
      dh_prev = jnp.where(keep, dh_prev, dh)
      dc_prev = jnp.where(keep, dc_prev, dc)
    return (dh_prev, dc_prev), put(dzs, t, dz)

  (dh0, dc0), dzs = over_time(body, zs.shape[1], not reverse, unroll,
                               ((dh_final, dc_final), jnp.zeros_like(zs)))
  # The weight gradients contract over batch and time at once, then go
  # back to the parameters' block order.
  d_xs = matmul(dzs, w_x.T)
  h_in_z = hs_prev if recurrent_mask is None else hs_prev * recurrent_mask[:, None]
  d_w_x, d_w_h, d_b = (_swap_g_o(d, H) for d in (
      time_batch_matmul(xs, dzs, w_x), time_batch_matmul(h_in_z, dzs, w_h),
      dzs.sum(axis=(0, 1))))
  d_peep = None
  if peep is not None:       # over batch and time at once, after the loop (see _fused_batch)
    c_new = _gates_and_cell(zs, cs_prev, peep)[4]
    d_peep = tuple((d * c).sum(axis=(0, 1)).astype(p.dtype) for d, c, p in zip(
        (dzs[..., :H], dzs[..., H:2 * H], dzs[..., 2 * H:3 * H]), (cs_prev, cs_prev, c_new),
        peep))
  return (d_w_x, d_w_h, d_b.astype(b.dtype), d_peep, dh0, dc0, d_xs.astype(xs.dtype),
          None, None)


_lstm_loop.defvjp(_forward, _backward)


def lstm_batch_kernel(params, carry, xs: Array, mask: Optional[Array], reverse: bool,
                      unroll: int, recurrent_mask: Optional[Array] = None, *,
                      peephole: bool = False):
  r"""The standard LSTM over a batch: ``(carry, ys [B, T, H])``.

  For steps t with :math:`z_t = W x_t + R h_{t-1} + b` split into
  blocks ``i, f, g, o``:

  .. math::

    c_t = \sigma(z_f) \odot c_{t-1} + \sigma(z_i) \odot \tanh(z_g), \qquad
    h_t = \sigma(z_o) \odot \tanh(c_t)

  and the hand-written backward, with :math:`\delta h_t` the gradient
  reaching :math:`h_t` (from :math:`y_t` and from step t+1):

  .. math::

    \delta c_t &= \delta c_{t+1}^{\to} + \delta h_t \odot o \odot (1 - \tanh^2 c_t) \\
    \delta z &= [\delta c_t g\, i(1-i),\; \delta c_t c_{t-1} f(1-f),\;
                 \delta c_t i (1-g^2),\; \delta h_t \tanh c_t\, o(1-o)] \\
    \delta h_{t-1}^{\to} &= \delta z R^\top, \qquad \delta c_{t-1}^{\to} = \delta c_t \odot f

  then :math:`dW = \sum_t x_t^\top \delta z_t`, :math:`dR = \sum_t h_{t-1}^\top
  \delta z_t`, :math:`db = \sum_t \delta z_t`, :math:`dx_t = \delta z_t W^\top`.

  With ``peephole=True`` (Gers & Schmidhuber 2000; params ``p_i, p_f, p_o``
  [H]) the gates read the cell state, :math:`i = \sigma(z_i + p_i \odot
  c_{t-1})`, :math:`f = \sigma(z_f + p_f \odot c_{t-1})`, :math:`o =
  \sigma(z_o + p_o \odot c_t)`, and the backward adds those paths:
  :math:`\delta c_t \mathrel{+}= \delta z_o \odot p_o` before it flows on,
  :math:`\delta c_{t-1}^{\to} \mathrel{+}= \delta z_i \odot p_i + \delta z_f
  \odot p_f`, and :math:`dp_i = \sum_t \delta z_i \odot c_{t-1}`,
  :math:`dp_f = \sum_t \delta z_f \odot c_{t-1}`, :math:`dp_o = \sum_t
  \delta z_o \odot c_t` after the loop. Training at B = 32, T = 128,
  H = 256 on 2 CPU cores: 0.70-0.84x the generic kernel's time on one
  device, 0.76-0.87x on 2 (three runs, ``python benchmarks/batched_kernels.py
  --cells lstm,peephole [--cpu-devices 2]``; B = 1: 0.81x; B = 128, H = 512
  on 2 devices: 0.83x), and 1.00-1.18x the standard LSTM's.

  Shapes: params `LSTMParams` (w_x [I, 4H], w_h [H, 4H], b [4H], or None
  for ``use_bias=False``, which runs with zeros; p_i, p_f, p_o [H] with
  ``peephole``, else None); carry
  ``LSTMCarry(h [B, H], c [B, H])``; xs [B, T, I]; mask bool[B, T] or None.
  Same numbers as `jaxrnn.scan` under `jax.vmap`, to float rounding.
  """
  check_standard_params(params, peephole)
  b = bias_or_zeros(params.b, params.w_h.shape[-1], params.w_h)
  peep = (params.p_i, params.p_f, params.p_o) if peephole else None
  (h, c), ys = _lstm_loop(params.w_x, params.w_h, b, peep, carry.h, carry.c,
                          xs, mask, recurrent_mask, reverse, unroll)
  return carry._replace(h=h, c=c), ys


lstm_batch_kernel.takes_recurrent_mask = True   # see jaxrnn.scan_batch


def check_standard_params(params, peephole: bool = False) -> None:
  """Raises at trace time unless ``params`` are the standard LSTM's (with
  all three peepholes for ``peephole``).

  `jaxrnn.scan_batch` checks params against the cell's init first; this
  backstop covers an init it could not trace abstractly (a custom
  initializer that needs concrete values), where the kernel would
  otherwise ignore peepholes or a projection.
  """
  peepholes = ("p_i", "p_f", "p_o")
  missing = [name for name in peepholes if peephole and getattr(params, name) is None]
  if missing:
    raise ValueError(
        f"jaxrnn.scan_batch: the cell is the peephole LSTM but its params "
        f"lack {', '.join(missing)}, so they were made by another variant. "
        f"Fix: build the cell with the switches that made the params.")
  extra = [name for name in peepholes * (not peephole) + ("w_gates", "w_proj")
           if getattr(params, name) is not None]
  if extra:
    raise ValueError(
        f"jaxrnn.scan_batch: the cell is the {'peephole' if peephole else 'standard'} "
        f"LSTM but its params have "
        f"{', '.join(extra)} (peepholes, full_gate_recurrence or proj_size), so "
        f"they were made by another variant. Fix: build the cell with the "
        f"switches that made the params, e.g. jaxrnn.lstm(H, proj_size=P).")
