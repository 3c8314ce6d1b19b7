"""The fused sequence kernel: a whole recurrence with a custom JVP.

Lives here: `recurrence`, the loop behind every built-in cell's
`Cell.sequence`, and `fused_cell`, which builds a Cell (step and fused
kernels together) from a cell written as ``finish(params, carry, gx, u)``
with ``u = recurrent_input(carry) @ W``. Not here: the plain driver
(`_scan.py`), the batched kernel an additive cell also gets
(`_fused_batch.py`).

Why: differentiating `jax.lax.scan` makes XLA accumulate the recurrent
weight's gradient ``dW += a_t^T du_t`` inside the reverse loop, one small
matmul and one full read-modify-write of ``dW`` per step. Here the reverse
loop carries the state gradients only and ``dW = A^T dU`` is one large
matmul after the loop, as in cuDNN. The gradients of the other params
the step reads are also summed after the loop, so that a data-parallel
step all-reduces every gradient once.

Why a custom JVP and not a custom VJP: a cell works on one example and
batches come from `jax.vmap`. A custom VJP under vmap computes a weight
gradient per example (``[B, P, G]``) and sums it afterwards, which costs more
than it saves. A JVP rule whose weight tangent enters through one hoisted
matmul is transposed by JAX itself, which contracts over time and batch in
a single matmul, and it composes with `jax.grad`, `jax.vmap`,
``vmap(grad(...))`` (per-example gradients) and forward mode alike.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, Carry, Cell, Params, check_bool, check_size, matmul
from jaxrnn._fused_batch import closure_converted, fused_batch_kernel
from jaxrnn._scan import _describe, masked_step, step_output, where


def _step_parts(finish, rest, init, carry, gx, u, valid, reset):
  """One masked, resettable step given the recurrent matmul's output ``u``."""
  carry_in = carry if reset is None else where(reset, init, carry)
  new, y = step_output(finish(rest, carry_in, gx, u), carry_in, what="finish")
  if valid is not None:
    new = where(valid, new, carry)
    y = jax.tree.map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), y)
  return new, y


def _read_input(read, init, carry, reset):
  """The recurrent input ``a_t`` of the step, after any reset."""
  return read(carry if reset is None else where(reset, init, carry))


def _forward(finish, read, reverse, unroll, ahead, rest, w, carry, gxs, mask, resets, init):
  """The primal loop, with nothing saved for differentiation.

  The loops scan over ``gxs`` rather than read ``gxs[t]`` by index: under
  `jax.vmap` that costs a time-major copy of ``gxs``, but only then does
  ``unroll`` pay on CPU (LSTM (32,128,256,256) forward: 1.2x at unroll=4,
  where the indexed loop gained nothing).
  """
  def body(carry, inputs):
    gx, valid, reset = inputs
    a = _read_input(read, init, carry, reset)
    u = matmul(a, w)
    new, y = _step_parts(finish, rest, init, carry, gx, u, valid, reset)
    return new, y

  return forward_loop(ahead)(body, carry, (gxs, mask, resets), reverse=reverse,
                             unroll=unroll)


def forward_loop(ahead: bool):
  """The forward loop: `scan_ahead` for a cell that reads ahead, on a CPU
  (unmeasured elsewhere), `jax.lax.scan` otherwise."""
  return scan_ahead if ahead and jax.default_backend() == "cpu" else jax.lax.scan


def scan_ahead(body, carry, xs, *, reverse: bool, unroll):
  """``jax.lax.scan(body, carry, xs)`` with step t's ``xs[t]`` read one step
  early, into the loop's carry.

  XLA CPU fuses a scanned input's per-step slice into the elementwise
  work that reads it, and for some steps that fusion runs far slower than
  the same arithmetic on a plain buffer: the GRU's gates took 2.5x the
  time so (a loop of the GRU's step, B = 16, T = 128, H = 128: 4.2 ms
  against 1.7 ms read ahead). Carried, the slice is a copy of its own.
  For other steps the extra copy costs more than it saves: see
  `fused_cell`'s ``read_ahead``.
  """
  T = jax.tree.leaves(xs)[0].shape[0]
  if not isinstance(T, int) or T < 2:      # symbolic (jax.export), or nothing ahead
    return jax.lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)
  # Read by index, not scanned over a shifted copy: no second [T, ...] buffer.
  read = lambda t: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), xs)

  def step(state, t):
    carry, x = state
    carry, y = body(carry, x)
    return (carry, read(jnp.clip(t - 1 if reverse else t + 1, 0, T - 1))), y

  (carry, _), ys = jax.lax.scan(step, (carry, read(T - 1 if reverse else 0)), jnp.arange(T),
                                reverse=reverse, unroll=unroll)
  return carry, ys


def read_ahead_sequence(step: Callable, initial_carry: Callable) -> Callable:
  """A ``Cell.sequence`` for a cell with a plain ``step``: `jaxrnn.scan`'s
  own loop, its forward reading ahead (`scan_ahead`, on a CPU) and its
  derivatives those of the plain loop, which reading ahead would slow.

  For a cell that is no `fused_cell` (one recurrent matmul) but gains from
  reading ahead: Cho et al.'s GRU (``gru(H, reset_after=False)``), whose
  second matmul reads the reset gate.
  """
  def sequence(params, carry, gxs, *, mask, resets, reverse, unroll, init=None):
    # Values the step closes over (traced where they are differentiated, an
    # activation's scale say) become arguments: a custom JVP's functions
    # may not close over tracers.
    gx = jax.tree.map(lambda a: a[0], gxs)
    converted, consts = jax.closure_convert(step, params, carry, gx)
    plain = lambda both, carry, gx: converted(both[0], carry, gx, *both[1])
    return _plain_ahead(plain, reverse, unroll, (params, consts), carry, gxs, mask, resets,
                        initial_carry(params) if init is None else init)

  # with_compute_dtype rebuilds it around the casting step and initial
  # carry, so that derivatives see the params in their own dtype (the
  # backward loop then sums the weight's gradient in it, not in bfloat16).
  sequence.rebuild = lambda wrap: read_ahead_sequence(wrap(step), wrap(initial_carry))
  return sequence


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _plain_ahead(step, reverse, unroll, params, carry, gxs, mask, resets, init):
  body = partial(masked_step, step, params, init)
  return forward_loop(True)(body, carry, (gxs, mask, resets), reverse=reverse, unroll=unroll)


@_plain_ahead.defjvp
def _plain_ahead_jvp(step, reverse, unroll, primals, tangents):
  params, carry, gxs, mask, resets, init = primals
  d_params, d_carry, d_gxs, _, _, d_init = tangents

  def plain(params, carry, gxs, init):
    return jax.lax.scan(partial(masked_step, step, params, init), carry, (gxs, mask, resets),
                        reverse=reverse, unroll=unroll)
  return jax.jvp(plain, (params, carry, gxs, init), (d_params, d_carry, d_gxs, d_init))


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
def recurrence(finish, read, reverse, unroll, additive, ahead, rest, w, carry, gxs, mask,
               resets, init):
  """``scan`` of ``finish(rest, carry, gx_t, read(carry) @ w)``, differentiated fast.

  Semantics are exactly `jaxrnn.scan`'s loop for the step
  ``step(params, carry, gx) = finish(rest, carry, gx, matmul(read(carry), w))``.
  ``mask``, ``resets`` (bool[T] or None) and ``init`` (the carry a reset
  restores) follow `jaxrnn.scan`.

  The JVP rule runs the primal loop once, saving ``a_t = read(carry_t)`` and
  the step linearised at ``t`` (its gate activations), then computes the
  weight's tangent contribution ``E = A dW`` for all steps at once, outside
  the loop; the tangent loop is then linear in the carry's tangent alone. Transposed by `jax.grad`, that hoisted matmul
  becomes ``dW = A^T dE``: one large matmul after the reverse loop, which
  under `jax.vmap` contracts over the batch too.
  """
  return _forward(finish, read, reverse, unroll, ahead, rest, w, carry, gxs, mask,
                  resets, init)


@recurrence.defjvp
def _recurrence_jvp(finish, read, reverse, unroll, additive, ahead, primals, tangents):
  rest, w, carry, gxs, mask, resets, init = primals
  d_rest, d_w, d_carry, d_gxs, _, _, d_init = tangents

  def forward(carry, inputs):
    gx, valid, reset = inputs
    # read linearised too: a cell may read its carry through a nonlinear
    # function (tanh of a pre-activation carry) or an affine one ([h, 1]).
    a, read_jvp = jax.linearize(lambda c, i: _read_input(read, i, c, reset), carry, init)
    step = lambda c, r, g, u, i: _step_parts(finish, r, i, c, g, u, valid, reset)
    # The step linearised at this point: its residuals (gate activations)
    # are saved here, so the tangent loop recomputes nothing.
    (new, y), step_jvp = jax.linearize(step, carry, rest, gx, matmul(a, w), init)
    return new, (y, a, step_jvp, read_jvp)

  # Read ahead (see scan_ahead) these loops measured level (the forward)
  # and 1.2-1.5x slower (the tangent loop) to train, GRU and LSTMs alike.
  final, (ys, a_all, step_jvps, read_jvps) = jax.lax.scan(
      forward, carry, (gxs, mask, resets), reverse=reverse, unroll=unroll)
  # The weight's share of every step's tangent, hoisted: E_t = a_t dW.
  # Transposed by jax.grad this is dW = A^T dE, a matmul with a transposed
  # operand, which XLA CPU runs in float32 for bfloat16 params. Handing it
  # a row-major copy of A^T (`_cell._row_major_transpose`) measured 0.93x
  # the training time for the LSTM and level for the GRU (B = 128, T = 64,
  # H = 512): not kept, `scan_batch` is the faster path there.
  e_all = matmul(a_all, d_w)
  if additive:
    # finish sees gx and u only through gx + u: one hoisted tangent for
    # both, so the backward loop emits one per-step gradient, not two.
    e_all, d_gxs = e_all + d_gxs.astype(e_all.dtype), None

  # The other params' share (what finish reads: peepholes, the GRU's b_hn,
  # a projection; and the initial carry a reset restores), hoisted too:
  # every step's response to d_rest and d_init alone, for all steps at
  # once. Transposed, their gradients are summed after the loop rather
  # than step by step, so data-parallel they are all-reduced once, not at
  # every step: GRU and peephole LSTM training 1.1-4x faster on 2 CPU
  # devices, for 5-11% more time on one (2 CPU cores; no change for the
  # LSTM and simple RNN, whose finish reads no params).
  zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)   # float0 stays float0
  # gx may be a pytree (a project returning (gx, dt), say): one step's zeros
  zero_gx = jax.tree.map(lambda a: jnp.zeros_like(a[0]), gxs)
  zero_u = jnp.zeros_like(e_all[0])
  rest_all = jax.vmap(lambda jvp: jvp(zero(d_carry), d_rest, zero_gx, zero_u, d_init))(
      step_jvps)
  d_rest_zero, d_init_zero = zero(d_rest), zero(d_init)

  def add(a, b):   # tangents of integer leaves are float0 zeros: nothing to add
    return jax.tree.map(lambda x, y: x if x.dtype == jax.dtypes.float0 else x + y, a, b)

  def tangent(d_carry, inputs):
    d_gx, step_jvp, read_jvp, e, (rest_carry, rest_y) = inputs
    if additive:
      d_gx = jnp.zeros(gxs.shape[1:], gxs.dtype)
    d_a = read_jvp(d_carry, d_init)
    d_new, d_y = step_jvp(d_carry, d_rest_zero, d_gx, e + matmul(d_a, w), d_init_zero)
    return add(d_new, rest_carry), add(d_y, rest_y)

  d_final, d_ys = jax.lax.scan(
      tangent, d_carry, (d_gxs, step_jvps, read_jvps, e_all, rest_all),
      reverse=reverse, unroll=unroll)
  return (final, ys), (d_final, d_ys)


def _check_additive(finish, params, carry, gx) -> None:
  """Raises where ``finish(p, c, gx, u)`` differs from ``finish(p, c, gx + u,
  0)`` on random stand-ins of the shapes given: a cell declared additive
  that is not would give wrong outputs in `jaxrnn.scan_batch`'s kernel and
  wrong gradients in the fused one, silently. Run once per cell, at its
  first trace; a finish the stand-ins do not suit (one closing over a
  traced value, say) is let be."""
  rng = np.random.default_rng(0)

  def stand_in(a):
    if not all(isinstance(d, int) for d in a.shape):      # symbolic (jax.export)
      raise TypeError("a symbolic shape")
    if jnp.issubdtype(a.dtype, jnp.floating):
      return jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype)
    return jnp.zeros(a.shape, a.dtype)

  try:
    with jax.ensure_compile_time_eval():
      p, c, g = jax.tree.map(stand_in, (params, carry, gx))
      u = stand_in(g)
      split = jax.tree.leaves(finish(p, c, g, u))
      summed = jax.tree.leaves(finish(p, c, g + u, jnp.zeros_like(u)))
      low = any(jnp.finfo(a.dtype).bits <= 16 for a in split
                if jnp.issubdtype(a.dtype, jnp.floating))
      same = len(split) == len(summed) and all(
          np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                      rtol=3e-2 if low else 1e-4, atol=1e-4, equal_nan=True)
          for a, b in zip(split, summed))
  except Exception:          # the check is a convenience, never an obstacle
    return
  if not same:
    raise ValueError(
        "jaxrnn.fused_cell: additive=True says finish reads gx and u only through "
        "gx + u, but on random values finish(params, carry, gx, u) differs from "
        "finish(params, carry, gx + u, 0). The batched kernel would compute the "
        "second and the fused kernel's gradients assume it. Fix: additive=False "
        "(a GRU-like cell that scales part of u), or make finish read gx + u only.")


def _get(params: Params, name: str):
  return params[name] if isinstance(params, dict) else getattr(params, name)


def _check_parts(params, a, gx, weight: str, additive: bool) -> Array:
  """``params[weight]``, the recurrent weight ``W [R, G]``; raises at trace
  time unless ``a = recurrent_input(carry)`` (an array or its
  ``ShapeDtypeStruct``) is one array ``[..., R]`` and, for an additive
  cell, ``u = a W`` has ``gx``'s shape."""
  where = "jaxrnn.fused_cell"
  try:
    w = _get(params, weight)
  except (KeyError, AttributeError, TypeError):
    names = list(params) if isinstance(params, dict) else list(getattr(params, "_fields", ()))
    raise ValueError(
        f"{where}: params have no {weight!r}, the recurrent weight W that "
        f"u = recurrent_input(carry) @ W reads (weight={weight!r}); they have "
        f"{names}. Fix: pass weight='<the name of your recurrent matrix>' to "
        f"fused_cell, or name it {weight!r} in init.") from None
  if (not (hasattr(a, "shape") and hasattr(a, "dtype")) or len(a.shape) == 0
      or jnp.ndim(w) != 2 or a.shape[-1] != w.shape[0]):
    raise ValueError(
        f"{where}: recurrent_input(carry) returned {_describe(a)} for params "
        f"{weight!r} of shape {list(jnp.shape(w))}; expected one array a_t [R] "
        f"with W [R, G], so that u = a_t @ W. Fix: make recurrent_input return "
        f"the part of the carry the recurrent matrix multiplies (lambda c: c.h), "
        f"and W of shape [R, G].")
  u_shape = a.shape[:-1] + w.shape[1:]
  if additive and (not hasattr(gx, "shape") or tuple(gx.shape) != u_shape):
    raise ValueError(
        f"{where}: additive=True says finish reads gx and u only through gx + u, "
        f"but gx is {_describe(gx)} and u = recurrent_input(carry) @ "
        f"{weight} is {list(u_shape)}. Fix: project the input to u's size "
        f"(project=lambda p, xs: xs @ p['w_x'] + p['b']), or pass "
        f"additive=False. If you called cell.step on a raw input x_t: it takes "
        f"the projected gx_t; jaxrnn.rnn(cell).step(params, carry, x_t) "
        f"projects x_t and checks it.")
  return w


def fused_cell(
    *,
    init: Callable[[Array, int], Params],
    initial_carry: Callable[[Params], Carry],
    project: Optional[Callable[[Params, Array], Array]],
    recurrent_input: Callable[[Carry], Array],
    finish: Callable[[Params, Carry, Array, Array], tuple[Carry, Array]],
    output_size: int,
    weight: str = "w_h",
    additive: bool = False,
    read_ahead: bool = False,
    verify_additive: bool = True,
) -> Cell:
  """A `Cell` written as ``finish(params, carry, gx, u)``, with a fused kernel.

  The step is ``finish(params, carry, gx_t, recurrent_input(carry) @ W)`` with
  ``W = params[weight]`` (an attribute of a NamedTuple or a dict key). From
  that one description come both ``Cell.step`` (the plain path) and
  ``Cell.sequence`` (the fused kernel `recurrence`, used by `jaxrnn.scan`),
  so the two cannot disagree. ``recurrent_input`` may be any differentiable
  function of the carry (``c.h``, ``tanh(c)``, ``[h, 1]`` with a bias row in
  ``W``) returning one array ``[R]`` for ``W [R, G]``; ``finish`` may read
  any params, ``W`` too, though only ``u``'s share of ``W``'s gradient is
  computed after the loop. ``finish`` may close over traced values (a
  time step being differentiated, the scale of an activation under
  `jax.vmap`): the kernels take them as arguments (`jax.closure_convert`)
  and differentiate them as params; ``recurrent_input`` may not.

  ``additive=True`` declares that ``finish`` reads ``gx`` and ``u`` only
  through their sum ``gx + u`` (true of the LSTM and the Elman RNN, not of
  the GRU, whose candidate scales part of ``u`` by the reset gate). The
  backward pass then carries one per-step gradient instead of two
  (forward+backward at B = 1 and 32 on 2 CPU cores: simple RNN 1.1-1.35x,
  LSTM 1.05-1.09x). Declared for a cell where it is false, it would give
  wrong gradients here and wrong outputs in `jaxrnn.scan_batch`, whose
  kernel calls ``finish(params, carry, gx + u, 0)``: the first trace
  compares the two on random values and refuses the cell where they differ
  (``verify_additive=False`` skips that, for the built-in cells, whose
  tests hold them to their equations: it costs a trace-time evaluation of
  ``finish`` on stand-ins of all the params). An additive cell with a
  ``project`` also gets ``Cell.batched``,
  the batched kernel of `jaxrnn._fused_batch` that `jaxrnn.scan_batch` (and
  so ``apply_batch`` of the layers) runs: one loop for the whole batch,
  1.1-1.6x faster to train than this kernel under `jax.vmap` on one CPU
  device (2 cores) at B = 4 to 128 (see there for the rest). A cell that
  is not additive runs this kernel under `jax.vmap` in `jaxrnn.scan_batch`.

  ``read_ahead=True`` makes the forward-only loop (inference: `jaxrnn.scan`
  outside a derivative) read each step's ``gx`` one step early, into the
  loop's carry (`scan_ahead`), on a CPU. Whether that pays depends on how
  XLA CPU fuses ``finish``; measured in one process (``python
  benchmarks/read_ahead.py``, 2 CPU cores, three runs, B = 1 to 32,
  T = 128-512, H = 64-256): the GRU's forward took 0.40-0.68x its time and
  the peephole LSTM's 0.55-0.99x, both built with it, while the LSTM's
  (CIFG too) and the simple RNN's took 0.95-1.43x, built without it. At
  H = 16 (calls under 0.1 ms) the peephole LSTM's took 1.22x. Training is
  unchanged: its loops read ahead measured level or 1.2-1.5x slower, so
  they never do.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> def elman(hidden_size):                   # h' = tanh(W x + b + U h)
  ...   return jaxrnn.fused_cell(
  ...       init=lambda key, n: dict(w_x=jnp.ones((n, hidden_size)) / n,
  ...                                w_h=jnp.eye(hidden_size) / 2, b=jnp.zeros(hidden_size)),
  ...       initial_carry=lambda p: jnp.zeros(hidden_size),
  ...       project=lambda p, xs: xs @ p["w_x"] + p["b"],
  ...       recurrent_input=lambda h: h,
  ...       finish=lambda p, h, gx, u: (jnp.tanh(gx + u),) * 2,
  ...       output_size=hidden_size, weight="w_h", additive=True)
  >>> cell = elman(4)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> grads = jax.grad(lambda p: jaxrnn.scan(cell, p, jnp.ones((5, 3)))[1].sum())(params)
  >>> grads["w_h"].shape
  (4, 4)
  """

  output_size = check_size("jaxrnn.fused_cell", "output_size", output_size)
  additive = check_bool("jaxrnn.fused_cell", "additive", additive)
  read_ahead = check_bool("jaxrnn.fused_cell", "read_ahead", read_ahead)
  verify_additive = check_bool("jaxrnn.fused_cell", "verify_additive", verify_additive)

  one = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)   # without the leading axis

  verified = []        # the additive declaration, tried once on stand-in values

  def recurrent_weight(params, carry, gx) -> Array:
    """``W``, checked (at trace time, abstractly) against what
    ``recurrent_input`` and, for an additive cell, ``gx`` need."""
    w = _check_parts(params, jax.eval_shape(recurrent_input, carry), gx, weight, additive)
    if additive and verify_additive and not verified:
      _check_additive(finish, params, carry, gx)      # raises until it holds
      verified.append(True)
    return w

  def step(params, carry, gx):
    a = recurrent_input(carry)
    w = _check_parts(params, a, gx, weight, additive)
    return finish(params, carry, gx, matmul(a, w))

  def sequence(params, carry, gxs, *, mask, resets, reverse, unroll, init=None):
    w = recurrent_weight(params, carry, jax.tree.map(one, gxs))
    init_carry = initial_carry(params) if init is None else init
    gx = jax.tree.map(lambda a: a[0], gxs)
    u_shape = jax.eval_shape(lambda c: matmul(recurrent_input(c), w), carry)
    u = jnp.zeros(u_shape.shape, u_shape.dtype)             # an example of u's shape
    fin, rest = closure_converted(finish, params, carry, gx, u)
    return recurrence(fin, recurrent_input, reverse, unroll, additive, read_ahead, rest,
                      w, carry, gxs, mask, resets, init_carry)

  def checked_first(kernel):
    """The batched ``kernel``, its parts checked on one example first."""
    def batched(params, carry, xs, *args, **kwargs):
      row = jax.ShapeDtypeStruct((1, xs.shape[-1]), xs.dtype)
      gx = jax.tree.map(one, jax.eval_shape(lambda x: project(params, x), row))
      recurrent_weight(params, jax.tree.map(one, carry), gx)   # one example's carry
      return kernel(params, carry, xs, *args, **kwargs)
    return batched

  batched = None
  # The batched kernel is written for gx = project(params, xs); a cell
  # without project (gx is the raw input, in no built-in cell) keeps the
  # per-example kernel under vmap.
  if additive and project is not None:
    batched = checked_first(fused_batch_kernel(finish, recurrent_input, project,
                                               lambda params: _get(params, weight)))
    # A recurrent mask scales the rows of params.w_h (jaxrnn._dropout); the
    # kernel multiplies read(c) by it, which is the same product when W is w_h.
    batched.takes_recurrent_mask = weight == "w_h"
  return Cell(init=init, initial_carry=initial_carry, step=step,
              output_size=output_size, project=project, sequence=sequence,
              batched=batched)
