"""The batched kernel of an additive `fused_cell`: one loop for the whole batch.

Lives here: `fused_batch_kernel`, which `jaxrnn.fused_cell` attaches as
``Cell.batched`` to cells declared ``additive`` (the LSTM variants, the
simple RNN, your own), and `jaxrnn.scan_batch` runs. Not here: the
per-example kernel (`_fused.py`); the hand-written batched kernels of the
standard LSTM and GRU (`_cells/lstm_batched.py`, `_cells/gru_batched.py`),
whose structure this follows with JAX's VJP of ``finish`` in place of a
hand-written one.

Why: `jaxrnn.scan` under `jax.vmap` runs the per-example kernel, whose
``[B, T, G]`` projected inputs and their gradient are transposed around its
time-major loop (see `lstm_batched`). On one CPU device at B = 32 and 128
that made it slower than the plain step (`jaxrnn.unfused`). Seeing the
whole batch, this kernel loops over the time axis of batch-major arrays,
saves each step's carry and pre-activation ``s_t = gx_t + u_t`` (and
nothing when not differentiated), recomputes the step in the backward loop
(as the hand-written kernels recompute their gates), and computes the
weight gradients after the loop: the recurrent weight's as one matmul, the
other params' that ``finish`` reads (peepholes, a projection) as one sum
over batch and time, so data-parallel every gradient is all-reduced once.

Measured on 2 cores of an AMD EPYC (Zen 4), f32, interleaved medians of 7
to 31 rounds in one process (``python benchmarks/batched_kernels.py``:
the LSTM, peephole, CIFG and projected (P = H/2) LSTMs and the simple RNN,
I = H), the per-example kernel's training time over this
kernel's: on one CPU device 1.06-2.14x at B = 1, T = 512, H = 128 (the
simple RNN 0.95x), 1.28-1.64x at B = 4, T = 256, 1.12-1.36x at B = 16,
T = 64, 1.09-1.36x at B = 32, T = 128, H = 256 and at B = 128, T = 64,
H = 512; on 2 CPU devices 1.04-1.60x at B = 32, and at B = 16 (8 per
device, T = 64) 1.09-1.10x for the LSTM and peephole LSTM at H = 256 but
0.76-0.95x at H = 128 (the simple RNN 0.93x and 0.76x): where a step's
work is smallest, this kernel's loops cost more per step, about 1 ms in
all there. The plain step (`jaxrnn.unfused`) took 0.93-1.39x this
kernel's time at B = 32 (the LSTMs level with it in one of the runs),
1.03-1.11x at B = 128, 1.32-3.10x at B = 1 to 16, and on 2 devices
2.4-5.7x. Compiling the training step (B = 32, medians of 3) took
0.24-0.67 s, against 0.32-0.71 s for the per-example kernel and 0.39-0.79
s for the plain step. Forward alone it is level with the per-example kernel
(0.97-1.07x at B = 32 on one device, 0.93-1.23x on 2, 0.82-1.00x at B = 1),
and the plain step's forward was faster for the LSTM, peephole and
projected LSTMs at B = 32 (0.69-0.94x the time). On the standard LSTM's
equations the hand-written kernel took 0.86-0.95x this kernel's time on
one device and 0.78-0.90x on 2.

A recurrent mask ``m`` (``[B, K]``, `jaxrnn.scan_batch`'s ``recurrent_mask``,
variational dropout) multiplies ``a_t`` where it enters the product, in the
loop, in the backward's ``read^T`` and in ``dW``'s matmul, a constant with
no gradient. Before, such a batch ran the per-example kernel under
`jax.vmap` with each sequence's own ``diag(m) W``: a training step with
``recurrent_dropout=0.2`` (B = 32, T = 128, H = 256, one CPU device of
the Zen 5 host) took 1.46-2.43x the time without dropout for the peephole
and projected LSTMs and the simple RNN; in this kernel 0.87-1.11x (on 2
devices 0.99-1.14x; the CIFG LSTM 0.98-1.03x), with no ``B`` copies of
``W`` (``python benchmarks/batched_kernels.py --dropout [--cpu-devices 2]``).

Measured and dropped: the other params' gradients summed over the batch
inside the loop, step by step (data-parallel, an all-reduce at every step:
the peephole LSTM on 2 devices at B = 16 trained in 2.2x the per-example
kernel's time); the same kernel for cells that are not additive, saving
``u_t`` and returning ``gx_t``'s gradient apart (on the GRU's form the
per-example kernel took 0.74-1.06x its time at B = 1, 16 and 32, one
device and 2), so those keep the per-example kernel.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, Carry, Params, carry_dtype, matmul, time_batch_matmul
from jaxrnn._cells.batch_loop import at, over_time, put
from jaxrnn._scan import step_output


def _step(finish, params, carry, s, keep):
  """One example's step from its pre-activation ``s = gx + u``.

  A masked step (``keep`` False) passes the carry on and outputs zeros,
  as `jaxrnn.scan` does.
  """
  # finish reads gx + u only
  new, y = step_output(finish(params, carry, s, jnp.zeros_like(s)), carry,
                       "scan_batch", "finish")
  if keep is not None:
    new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, carry)
    y = jax.tree.map(lambda a: jnp.where(keep, a, jnp.zeros_like(a)), y)
  return new, y


def _batch_step(finish, params, carry, s, keep):
  """`_step` for a batch: carry leaves ``[B, ...]``, ``s [B, G]``, ``keep`` bool[B] or None."""
  keep_axis = None if keep is None else 0
  return jax.vmap(_step, in_axes=(None, None, 0, 0, keep_axis))(
      finish, params, carry, s, keep)


def _time_buffers(tree, T: int):
  """Zeros ``[B, T, ...]`` for every ``[B, ...]`` leaf of ``tree``."""
  return jax.tree.map(lambda a: jnp.zeros(a.shape[:1] + (T,) + a.shape[1:], a.dtype), tree)


def _put_all(buffers, t, values):
  return jax.tree.map(lambda buf, v: put(buf, t, v), buffers, values)


def _at_all(buffers, t):
  return jax.tree.map(lambda buf: at(buf, t), buffers)


def _masked(a: Array, recurrent_mask) -> Array:
  """``a`` times the recurrent mask (``[B, K]``, or ``[B, 1, K]`` over time), or ``a``."""
  return a if recurrent_mask is None else (a * recurrent_mask).astype(a.dtype)


def _loop(finish, read, reverse, unroll, params, w, carry, gxs, mask, recurrent_mask,
          save: bool):
  """The forward loop: ``final, ys`` and, with ``save``, every step's input carry and ``s_t``."""
  read_batch = jax.vmap(read)
  T = gxs.shape[1]

  def pre_activation(carry, t):
    return at(gxs, t) + matmul(_masked(read_batch(carry), recurrent_mask), w)

  y_shape = jax.eval_shape(
      lambda c: _batch_step(finish, params, c, pre_activation(c, 0), None)[1], carry)
  ys = _time_buffers(y_shape, T)
  # gxs is already in s_t's dtype (see fused_batch_kernel)
  saved = ((_time_buffers(carry, T), jnp.zeros(gxs.shape, gxs.dtype)) if save else ())

  def body(t, state):
    carry, ys, saved = state
    s = pre_activation(carry, t)
    new, y = _batch_step(finish, params, carry, s, None if mask is None else at(mask, t))
    if save:
      carries, ss = saved
      saved = (_put_all(carries, t, carry), put(ss, t, s))
    return new, _put_all(ys, t, y), saved

  return over_time(body, T, reverse, unroll, (carry, ys, saved))


def forward_mode(*trees) -> bool:
  """Is this call traced by forward mode (`jax.jvp`, `jax.jacfwd`)? Its
  arguments are then JVP tracers; a batched kernel, a custom_vjp, cannot
  pass it (JAX raises, eagerly or where a jit lowers), so the per-example
  path runs, which has forward mode. Reverse mode (`jax.grad`, and inside
  `jax.hessian`) traces with other tracers and keeps the kernel."""
  tracer = getattr(jax.interpreters.ad, "JVPTracer", None)
  # Where jax.grad linearizes through JVP tracers too (JAX without direct
  # linearize), they say nothing: the kernel runs, and an eager jvp's error
  # is caught at the call instead.
  if tracer is None or not getattr(jax.config, "jax_use_direct_linearize", False):
    return False

  def jvp_inside(leaf):   # under jax.vmap inside the jvp, batching tracers wrap it
    while isinstance(leaf, jax.core.Tracer):
      if isinstance(leaf, tracer):
        return True
      leaf = getattr(leaf, "val", None)
    return False
  return any(jvp_inside(leaf) for leaf in jax.tree.leaves(trees))


# What JAX says of a custom_vjp under jvp, and the kernel when it sees one
# coming in what its step closes over: scan_batch then runs the per-example path.
FORWARD_MODE_ERROR = "forward-mode autodiff (jvp) to a custom_vjp"


def closure_converted(finish: Callable, params: Params, carry, gx, u) -> tuple[Callable, Any]:
  """``(finish', rest)``: ``finish'(rest, c, gx, u) = finish(params, c, gx, u)``
  with the traced values ``finish`` closes over (a time step being
  differentiated, say) moved into ``rest``, beside the params: a custom JVP
  or VJP may not close over tracers, and as arguments they get their
  gradients. ``finish`` and ``params`` as they are where it closes over
  none. ``carry``, ``gx`` and ``u`` are one step's, examples of their shapes."""
  converted, consts = jax.closure_convert(finish, params, carry, gx, u)
  if not consts:
    return finish, params
  return (lambda rest, c, g, v: converted(rest[0], c, g, v, *rest[1])), (params, tuple(consts))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _recurrence(finish, read, reverse, unroll, params, w, carry, gxs, mask, recurrent_mask):
  """``final, ys`` of ``finish(params, c, gx_t, (m * read(c)) @ w)`` over batch-major
  ``gxs [B, T, G]``, ``m`` the recurrent mask ``[B, K]`` (constant: no
  gradient) or 1.

  Not differentiated, nothing is saved for a backward.
  """
  final, ys, _ = _loop(finish, read, reverse, unroll, params, w, carry, gxs, mask,
                       recurrent_mask, save=False)
  return final, ys


def _forward(finish, read, reverse, unroll, params, w, carry, gxs, mask, recurrent_mask):
  final, ys, saved = _loop(finish, read, reverse, unroll, params, w, carry, gxs, mask,
                           recurrent_mask, save=True)
  return (final, ys), (params, w, mask, recurrent_mask, saved)


def _leaves_read(fn: Callable[[Params], object], params: Params) -> list[bool]:
  """For each leaf of ``params``: does ``fn(params)`` read it? Traced once, not run."""
  leaves, tree = jax.tree.flatten(params)
  jaxpr = jax.make_jaxpr(lambda *ls: fn(jax.tree.unflatten(tree, ls)))(*leaves).jaxpr
  read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
  return [id(v) in read for v in jaxpr.invars]


def _float0_zeros(shape) -> np.ndarray:
  """Float0 zeros of ``shape``: the cotangent JAX expects for an integer array."""
  return np.zeros(shape, jax.dtypes.float0)


def _backward(finish, read, reverse, unroll, residuals, cotangents):
  params, w, mask, recurrent_mask, (carries, ss) = residuals
  d_final, d_ys = cotangents
  read_batch = jax.vmap(read)
  w_t = jnp.transpose(w)     # ds W^T as a plain product (see lstm_batched)
  T = ss.shape[1]

  # The loop carries the gradients of the carry's float leaves only; an
  # integer leaf (a step counter) has float0 zeros, which no op accepts.
  final_leaves, carry_tree = jax.tree.flatten(d_final)
  carried = [l.dtype != jax.dtypes.float0 for l in final_leaves]

  def floats(tree):
    return [l for l, c in zip(jax.tree.leaves(tree), carried) if c]

  def whole(float_leaves, time_axis: bool):   # float0 zeros back in, [B, (T,) ...]
    it = iter(float_leaves)
    return jax.tree.unflatten(carry_tree, [
        next(it) if c else _float0_zeros(l.shape[:1] + (T,) * time_axis + l.shape[1:])
        for l, c in zip(final_leaves, carried)])

  leaves, tree = jax.tree.flatten(params)
  reads = [r and jnp.issubdtype(l.dtype, jnp.inexact) for l, r in zip(leaves, _leaves_read(
      lambda p: _batch_step(finish, p, _at_all(carries, 0), at(ss, 0), None), params))]
  # finish's params (other than W, which it reaches only through u) get
  # their gradient after the loop, from each step's incoming gradient.
  keep_d_new = any(reads)

  def body(t, state):
    d_carry, d_news, d_ss = state       # d_carry: the gradient reaching step t's new carry
    carry = _at_all(carries, t)
    keep = None if mask is None else at(mask, t)
    if keep_d_new:
      d_news = [put(buf, t, d) for buf, d in zip(d_news, d_carry)]
    _, step_vjp = jax.vjp(lambda c, s: _batch_step(finish, params, c, s, keep),
                          carry, at(ss, t))
    d_prev, d_s = step_vjp((whole(d_carry, False), _at_all(d_ys, t)))
    _, read_vjp = jax.vjp(read_batch, carry)          # read at this step's carry
    (d_read,) = read_vjp(_masked(matmul(d_s, w_t), recurrent_mask))
    d_carry = [a + b for a, b in zip(floats(d_prev), floats(d_read))]
    return d_carry, d_news, put(d_ss, t, d_s)

  d_carry = floats(d_final)
  d_news = [jnp.zeros(d.shape[:1] + (T,) + d.shape[1:], d.dtype)
            for d in d_carry] if keep_d_new else ()
  d_carry, d_news, d_ss = over_time(body, T, not reverse, unroll,
                                    (d_carry, d_news, jnp.zeros_like(ss)))
  a_all = jax.vmap(read_batch, in_axes=1, out_axes=1)(carries)       # [B, T, K]
  a_all = _masked(a_all, None if recurrent_mask is None else recurrent_mask[:, None])
  d_w = time_batch_matmul(a_all, d_ss, w)
  d_leaves = [None] * len(leaves)     # None: a zero gradient (unread or integer leaves)
  if keep_d_new:
    used = [l for l, r in zip(leaves, reads) if r]

    def all_steps(used):              # every (b, t) step at once, params as given
      it = iter(used)
      p = jax.tree.unflatten(tree, [next(it) if r else l for l, r in zip(leaves, reads)])
      keep_axis = None if mask is None else 0
      one = jax.vmap(_step, in_axes=(None, None, 0, 0, keep_axis))      # over T
      return jax.vmap(one, in_axes=(None, None, 0, 0, keep_axis))(     # over B
          finish, p, carries, ss, mask)

    _, all_vjp = jax.vjp(all_steps, used)
    it = iter(all_vjp((whole(d_news, True), d_ys))[0])
    d_leaves = [next(it) if r else None for r in reads]
  it = iter(d_carry)
  d_carry0 = jax.tree.unflatten(carry_tree, [next(it) if c else None for c in carried])
  return (jax.tree.unflatten(tree, d_leaves), d_w, d_carry0, d_ss, None, None)


_recurrence.defvjp(_forward, _backward)


def fused_batch_kernel(
    finish: Callable[[Params, Carry, Array, Array], tuple[Carry, Array]],
    recurrent_input: Callable[[Carry], Array],
    project: Callable[[Params, Array], Array],
    weight: Callable[[Params], Array],
) -> Callable[..., tuple[Carry, Array]]:
  r"""A ``Cell.batched`` kernel for the additive cell ``finish(params, c, gx, u)``.

  With ``gx = project(params, xs)`` and ``W = weight(params)``, for each
  sequence of the batch and steps t:

  .. math::

    s_t = gx_t + a_t W, \quad a_t = \mathrm{read}(c_{t-1}), \qquad
    (c_t, y_t) = \mathrm{finish}(\theta, c_{t-1}, s_t, 0)

  and the backward, with :math:`\delta c_t` the gradient reaching
  :math:`c_t` (from step t+1 and the final carry) and :math:`\delta y_t`
  the output's: :math:`(\delta c_{t-1}', \delta s_t)` from the VJP of
  finish at step t (recomputed from the saved :math:`c_{t-1}, s_t`), then

  .. math::

    \delta c_{t-1} = \delta c_{t-1}' + \mathrm{read}^\top(\delta s_t W^\top),
    \qquad dW = \sum_{b, t} a_t^\top \delta s_t, \qquad
    d\theta = \sum_{b, t} \partial_\theta \mathrm{finish}^\top
              (\delta c_t, \delta y_t)

  ``dW`` is one matmul and ``dθ`` (what finish reads of the params) one
  pass over all steps, both after the loop; ``δs`` is ``gx``'s gradient,
  which `project`'s VJP turns into the input weight's gradient and the
  inputs' over all rows at once. ``project`` runs once on all ``B * T``
  rows, which the `Cell` contract allows (each row on its own); integer
  leaves of the params and the carry get no gradient.

  The kernel's signature is ``Cell.batched``'s: ``(params, carry, xs [B,
  T, I], mask bool[B, T] or None, reverse, unroll, recurrent_mask=None) ->
  (carry, ys [B, T, O])``, carry leaves with a leading B; a
  ``recurrent_mask`` ``[B, K]`` multiplies ``a_t`` (no gradient reaches
  it). Same numbers as `jaxrnn.scan` under `jax.vmap`, to float rounding.
  A `jax.custom_vjp`: reverse mode only.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.cifg_lstm(8)                   # an additive fused_cell
  >>> params = cell.init(jax.random.key(0), 3)
  >>> xs = jnp.ones((4, 5, 3))                      # [B, T, I]
  >>> carry, ys = jaxrnn.scan_batch(cell, params, xs)   # runs this kernel
  >>> same = jax.vmap(lambda x: jaxrnn.scan(cell, params, x))(xs)[1]
  >>> bool(jnp.allclose(ys, same, atol=1e-6))
  True
  """

  def batched(params, carry, xs, mask, reverse, unroll, recurrent_mask=None):
    B, T, I = xs.shape
    # project maps each row on its own (the Cell contract), so one call
    # over all B * T rows is one matmul. Under jax.vmap instead, its weight
    # gradient contracts two axes, which XLA CPU ran with a layout copy:
    # the peephole LSTM trained 1.15x slower (B = 32, T = 128, H = 256).
    gxs = project(params, xs.reshape(B * T, I))
    gxs = gxs.reshape((B, T) + gxs.shape[1:])
    w = weight(params)
    # In the dtype of s = gx + u (float32 for bfloat16 params), so the
    # saved s_t and gx's gradient are not rounded; the cast's own VJP
    # returns that gradient in gx's dtype.
    gxs = gxs.astype(jnp.promote_types(gxs.dtype, carry_dtype(w.dtype)))
    # One example's carry and gx, as zeros: indexing would fail at B = 0.
    one = lambda tree, axes: jax.tree.map(lambda a: jnp.zeros(a.shape[axes:], a.dtype), tree)
    one_gx = one(gxs, 2)
    fin, rest = closure_converted(finish, params, one(carry, 1), one_gx, jnp.zeros_like(one_gx))
    if rest is not params and forward_mode(rest[1]):
      raise TypeError(f"jaxrnn: can't apply {FORWARD_MODE_ERROR} function: the batched "
                      f"kernel's step closes over a value forward mode differentiates.")
    return _recurrence(fin, recurrent_input, reverse, unroll, rest, w,
                       carry, gxs, mask, recurrent_mask)

  return batched
