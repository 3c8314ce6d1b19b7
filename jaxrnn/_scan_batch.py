"""`scan_batch`: a cell over a batch of sequences, on the batched fast path.

Lives here: `scan_batch` and its input checks. Not here: the per-example
driver it falls back to (`_scan.py`), the batched kernels (`Cell.batched`,
for example `_cells/lstm_batched.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, Carry, Cell, Params
from jaxrnn._dropout import check_recurrent_mask
from jaxrnn._fused_batch import FORWARD_MODE_ERROR, forward_mode
from jaxrnn._scan import (FLAX_LSTM_CARRY, _describe, check_cell, check_checkpoint_every,
                          check_loop_options, check_not_varying, check_params, chunked,
                          flax_lstm_carry, named, same_layout, scan, torch_free,
                          zero_padding)

# `jaxrnn.apply_batch` makes a time-major batch batch-major before its
# layers run scan_batch; it names itself and its caller's layout here, so
# that scan_batch's messages show the shape the caller passed.
_caller = contextvars.ContextVar("jaxrnn_batch_caller", default=None)


@contextlib.contextmanager
def reported_as(where: str, time_major: bool):
  """Within it, `scan_batch`'s messages on a batch-major ``xs`` name ``where``
  and show ``xs`` in its caller's layout (``[T, B, I]`` for ``time_major``).

  The outermost call wins: a hand-written Seq's ``apply_batch`` may call
  `jaxrnn.apply_batch` again, batch-major, inside the user's call.
  """
  token = _caller.set(_caller.get() or (where, time_major))
  try:
    yield
  finally:
    _caller.reset(token)


def scan_batch(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Optional[Carry] = None,
    mask: Optional[Array] = None,
    resets: Optional[Array] = None,
    reverse: bool = False,
    unroll: int | bool | None = None,
    seq_lengths: Optional[Array] = None,
    time_major: bool = False,
    recurrent_mask: Optional[Array] = None,
    checkpoint_every: Optional[int] = None,
) -> tuple[Carry, Array]:
  """Runs ``cell`` over a batch ``xs [B, T, I]``: ``(carry, ys [B, T, O])``.

  The result is that of `jaxrnn.scan` under `jax.vmap`::

    jax.vmap(lambda x, c, m, r: jaxrnn.scan(cell, params, x, carry=c, mask=m,
                                            resets=r, reverse=reverse,
                                            unroll=unroll))(xs, carry, mask, resets)

  with ``carry``, ``mask`` (bool[B, T]) and ``resets`` (bool[B, T]) batched
  along their first axis, or None, and ``unroll`` as there (None: 8 where
  JAX's default backend is a GPU, 1 elsewhere; `jaxrnn.default_unroll`).
  ``seq_lengths`` (int[B], each sequence's valid steps, padded at its end,
  as Flax's ``nn.RNN`` takes them) is the mask ``jnp.arange(T) <
  seq_lengths[:, None]``: give one or the other (lengths known at trace
  time must lie in ``[0, T]``). ``time_major=True`` takes
  ``xs [T, B, I]`` and flags ``[T, B]`` (PyTorch's ``batch_first=False``)
  and returns ``ys [T, B, O]``; the carry keeps its leading B. Outputs at
  masked steps are zero and a sequence with nothing valid keeps its initial
  carry; ``reverse=True`` returns its outputs in input order (Flax's
  ``nn.RNN(..., keep_order=True)``; its default ``keep_order=False`` would
  return them reversed). ``recurrent_mask`` ``[B, P]`` is each sequence's
  multiplier of ``h_{t-1}`` in the recurrent product, as in `jaxrnn.scan`
  (variational dropout); the batched kernels apply it in their loops (a
  `jaxrnn.fused_cell` kernel when its recurrent weight is ``w_h``), every
  other cell runs the vmapped `jaxrnn.scan` with its own scaled copy of
  ``w_h`` per sequence. A
  cell with a batched kernel (``cell.batched``) runs it whenever there are
  no resets: one loop for the whole batch whose backward computes the weight
  gradients as single matmuls. The standard `jaxrnn.lstm` and `jaxrnn.gru`
  have hand-written ones (forward+backward 1.4-1.7x faster than the
  per-example path at B = 16 and 32 on 2 CPU cores, 1.5-1.7x at B = 2 and 4,
  as fast or 1.15x faster at B = 1; see `jaxrnn._cells.lstm_batched`; the
  peephole LSTM runs the LSTM's, and the GRU with ``reset_after=False``,
  whose per-example path is its plain step, the GRU's: 1.5-2.4x faster at
  B = 32 and 128, 5.6x at B = 1); every other `jaxrnn.fused_cell` declared
  ``additive`` with a ``project`` (the other LSTM variants, the simple RNN,
  your own) has a generic one (1.1-1.6x
  faster than the per-example path at B = 4 to 128 on one CPU device; see
  `jaxrnn._fused_batch`).
  Either kernel is a `jax.custom_vjp`, for `jax.grad`, `jax.vjp`,
  `jax.jit` and forward over reverse (`jax.hessian`, which differentiates
  the kernel's backward, plain JAX); forward mode (`jax.jvp`,
  `jax.jacfwd`), which a custom_vjp does not pass, runs the vmapped
  `jaxrnn.scan` instead, to the same numbers, jitted or not. That switch
  is made where forward mode traces this call (its arguments are JVP
  tracers; reverse over forward, ``jax.grad`` of a ``jax.jvp``, too),
  which two cases do not reach: a transformation that stages its function
  out inside the ``jvp`` (``jax.jacfwd(jax.jit(f))``, or a
  ``jax.checkpoint`` or ``lax.scan`` around this call: jit outside instead,
  ``jax.jit(jax.jacfwd(f))``) and `jax.linearize`, which JAX traces as it
  does ``jax.grad``. Those fail with JAX's "can't apply forward-mode
  autodiff (jvp) to a custom_vjp function"; for them run ``jax.vmap`` of
  `jaxrnn.scan`, whose kernels have forward mode. Every other case runs
  exactly the vmapped `jaxrnn.scan`.
  Data-parallel (the batch split over devices by
  `jaxrnn.train.shard_batch`), the kernel's weight gradients are
  all-reduced once, after the loop; on 2 CPU cores split into 2 devices it
  trains 1.3-1.6x faster than on one at B = 16-32, T = 128-256 (see
  `jaxrnn.train.parallel`).

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(16)
  >>> params = cell.init(jax.random.key(0), 8)
  >>> xs = jnp.ones((32, 20, 8))
  >>> lengths = jnp.arange(32) % 20 + 1
  >>> mask = jnp.arange(20) < lengths[:, None]          # [B, T]
  >>> carry, ys = jaxrnn.scan_batch(cell, params, xs, mask=mask)
  >>> ys.shape, carry.h.shape
  ((32, 20, 16), (32, 16))
  >>> same = jax.vmap(lambda x, m: jaxrnn.scan(cell, params, x, mask=m))(xs, mask)
  >>> bool(jnp.allclose(ys, same[1], atol=1e-5))
  True
  """
  check_cell("scan_batch", cell)
  xs = batch_array("jaxrnn.scan_batch", xs)
  where, shown_time_major = "scan_batch", time_major
  if _caller.get() is not None and not time_major:     # apply_batch's layers
    where, shown_time_major = _caller.get()
  xs, mask, resets = batch_major(f"jaxrnn.{where}", xs, mask, resets,
                                 seq_lengths, time_major, "jaxrnn.scan", rank=3)
  B, T = xs.shape[:2]
  shown = (T, B) + xs.shape[2:] if shown_time_major else xs.shape   # for messages
  check_params(where, cell, params, shown, shown_time_major, xs_dtype=xs.dtype)
  if cell.project is not None:    # its own input checks (size, dtype), on one sequence
    jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
  reverse, unroll = check_loop_options(where, reverse, unroll, T)
  if carry is not None:
    carry = torch_free(carry)
    _check_batch_carry(where, carry, cell.initial_carry(params), B)
  if recurrent_mask is not None:
    recurrent_mask = check_recurrent_mask("jaxrnn.scan_batch", params, recurrent_mask, B)
  every = check_checkpoint_every(where, checkpoint_every)

  def per_example(carry, every=None):
    def one(x, c, m, r, rm):
      return scan(cell, params, x, carry=c, mask=m, resets=r, reverse=reverse,
                  unroll=unroll, recurrent_mask=rm, checkpoint_every=every)
    axis = lambda a: None if a is None else 0
    run = jax.vmap(one, in_axes=(0, axis(carry), axis(mask), axis(resets),
                                 axis(recurrent_mask)))
    return on_explicit_mesh(run, xs)(xs, carry, mask, resets, recurrent_mask)

  if every is not None and isinstance(T, int) and T > every:
    if carry is None and getattr(cell, "decoder_carry", None) is not None:
      raise ValueError(
          f"jaxrnn.{where}: the cell is an attention decoder, whose carry holds the "
          f"memory it attends over; from cell.initial_carry(params) it would attend "
          f"over nothing. Fix: pass carry=jax.vmap(lambda m, k: "
          f"cell.decoder_carry(params, m, k))(memory, memory_mask).")
    if forward_mode(params, carry, xs):   # inside the chunks' loop it would not show
      carry, ys = per_example(carry, every)
      return carry, jnp.swapaxes(ys, 0, 1) if time_major else ys

    def chunk(carry, x, m, r):
      return scan_batch(cell, params, x, carry=carry, mask=m, resets=r, reverse=reverse,
                        unroll=unroll, recurrent_mask=recurrent_mask)
    given_carry = carry
    if carry is None:
      carry = jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape),
                           cell.initial_carry(params))
    run = on_explicit_mesh(lambda c, x, m, r: chunked(chunk, c, x, m, r, reverse, every,
                                                      time_axis=1), xs)
    try:
      carry, ys = run(carry, xs, mask, resets)
    except TypeError as e:   # forward mode that forward_mode could not see (under vmap)
      if FORWARD_MODE_ERROR not in str(e):
        raise
      carry, ys = per_example(given_carry, every)
    return carry, jnp.swapaxes(ys, 0, 1) if time_major else ys

  kernel_takes_mask = getattr(cell.batched, "takes_recurrent_mask", False)
  if (cell.batched is not None and resets is None and T > 0
      and (recurrent_mask is None or kernel_takes_mask)
      and not forward_mode(params, carry, xs)):
    given_carry = carry
    if carry is None:
      carry = jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape),
                           cell.initial_carry(params))
    extra = {} if recurrent_mask is None else {"recurrent_mask": recurrent_mask}
    check_not_varying(where, xs)      # the kernels' buffers never vary
    kernel = on_explicit_mesh(
        lambda params, carry, xs, mask, extra:
        cell.batched(params, carry, xs, mask, reverse, unroll, **extra), xs)
    try:
      carry, ys = kernel(params, carry, zero_padding(xs, mask) if mask is not None else xs,
                         mask, extra)
    except TypeError as e:   # forward mode the arguments do not show (closed over)
      if FORWARD_MODE_ERROR not in str(e):
        raise
      carry, ys = per_example(given_carry)
  else:
    carry, ys = per_example(carry)
  return carry, jnp.swapaxes(ys, 0, 1) if time_major else ys


def on_explicit_mesh(kernel, xs):
  """``kernel``, run with the mesh axes as Auto where ``xs`` is sharded over
  Explicit ones (`jax.make_mesh`'s default), its outputs sharded as ``xs``'s
  batch axis.

  The kernels fill ``[B, T, ...]`` buffers a step at a time and sum weight
  gradients over the batch; under Explicit axes each such op would need its
  sharding spelled out. Under Auto axes XLA propagates ``xs``'s.
  """
  typeof = getattr(jax, "typeof", None)
  sharding = getattr(typeof(xs), "sharding", None) if typeof else None
  mesh = getattr(sharding, "mesh", None)
  explicit = getattr(jax.sharding, "AxisType", None)
  if mesh is None or explicit is None or explicit.Explicit not in mesh.axis_types:
    return kernel
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.spec[0]))
  return jax.sharding.auto_axes(kernel, out_sharding=batch)


def batch_array(where: str, xs) -> Array:
  """``xs`` as an array; a PyTorch ``PackedSequence``, which NumPy reads as
  its four fields, is told the padded batch and lengths it stands for."""
  if type(xs).__name__ == "PackedSequence":
    raise TypeError(
        f"{where}: xs is a torch PackedSequence; expected the padded batch "
        f"[B, T, I] with its lengths. Fix: xs, lengths = torch.nn.utils.rnn."
        f"pad_packed_sequence(packed, batch_first=True), then pass xs.numpy() "
        f"and seq_lengths=lengths.numpy().")
  return jnp.asarray(xs)


def batch_major(where: str, xs: Array, mask, resets, seq_lengths, time_major: bool,
                for_one: str, rank: Optional[int] = None):
  """The caller's batch as ``xs [B, T, ...]`` and ``bool[B, T]`` flags, checked.

  ``xs`` must have ``rank`` axes (any from 2 when None; ``for_one`` names
  what runs one sequence). ``time_major`` input (``xs [T, B, ...]``, flags
  ``[T, B]``) is transposed; ``seq_lengths`` (``int[B]``) becomes the mask
  ``jnp.arange(T) < seq_lengths[:, None]``. Lengths known at trace time
  must lie in ``[0, T]`` (as PyTorch's ``pack_padded_sequence`` refuses a
  length over T); traced ones are not checked, and there a negative length
  masks every step and one over T none. Returns ``(xs, mask, resets)``,
  mask and resets None where not given.
  """
  xs = batch_array(where, xs)
  if xs.ndim < 2 or rank not in (None, xs.ndim):
    rest = "I" if rank == 3 else "..."
    layout = f"[T, B, {rest}] (with time_major=True)" if time_major else f"[B, T, {rest}]"
    fix = (f"for one sequence use {for_one}, or add a batch axis of one"
           if xs.ndim != 2 or not jnp.issubdtype(xs.dtype, jnp.integer) else
           "token ids [B, T] go in as vectors, jax.nn.one_hot(ids, V) or an "
           "embedding's rows, params['embed'][ids] (jaxrnn.tasks.language_model "
           "embeds them for you)")
    raise ValueError(
        f"{where}: xs has shape {xs.shape}; expected a batch of sequences "
        f"{layout}{f', rank {rank}' if rank else ''}. Fix: {fix}.")
  if time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  B, T = xs.shape[:2]
  mask = _check_batch_flags(where, "mask", mask, B, T, time_major)
  resets = _check_batch_flags(where, "resets", resets, B, T, time_major)
  if seq_lengths is None:
    return xs, mask, resets
  if mask is not None:
    raise ValueError(
        f"{where}: got both mask and seq_lengths; expected one of them. Fix: "
        f"seq_lengths for sequences padded at their end, mask for any other "
        f"padding (or fold the lengths into it: mask & (jnp.arange({T}) < "
        f"seq_lengths[:, None])).")
  seq_lengths = jnp.asarray(seq_lengths)
  if seq_lengths.shape != (B,) or not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
    raise ValueError(
        f"{where}: seq_lengths is {seq_lengths.dtype}{list(seq_lengths.shape)}; "
        f"expected int[{B}], the number of valid steps of each of the {B} "
        f"sequences (padding at their end). Fix: jnp.asarray(lengths, "
        f"jnp.int32) with one entry per sequence; for any other padding, "
        f"pass mask.")
  _check_length_range(where, seq_lengths, T, time_major)
  return xs, jnp.arange(T) < seq_lengths[:, None], resets


def _check_length_range(where: str, seq_lengths: Array, T: int, time_major: bool) -> None:
  """Lengths outside ``[0, T]`` are refused where their values are known
  (NumPy, or a jax array outside jit): such a length most often comes
  from another batch, or from the batch axis read as the time axis."""
  if isinstance(seq_lengths, jax.core.Tracer):
    return
  lengths = np.asarray(seq_lengths)
  bad = np.flatnonzero((lengths < 0) | (lengths > T))
  if bad.size:
    axis = "xs.shape[0] (time_major=True)" if time_major else "xs.shape[1]"
    raise ValueError(
        f"{where}: seq_lengths[{bad[0]}] is {lengths[bad[0]]}; expected a "
        f"length from 0 to T = {T}, the number of steps ({axis}). "
        f"Fix: pass the number of valid steps of each sequence of this "
        f"batch; if xs is laid out [T, B, ...], pass time_major=True.")


def _check_batch_flags(where: str, name: str, flags, B: int, T: int, time_major: bool):
  """Checks a batched mask or resets (``bool[B, T]``, or ``[T, B]`` when
  ``time_major``); returns it as a ``bool[B, T]`` array."""
  if flags is None:
    return None
  flags = jnp.asarray(flags)
  shape = (T, B) if time_major else (B, T)
  # The step index along the time axis, compared with one number per sequence.
  steps, per = ((f"jnp.arange({T})[:, None]", "{}") if time_major else
                (f"jnp.arange({T})", "{}[:, None]"))
  build = (f"mask={steps} < {per.format('lengths')} with lengths an int[{B}], "
           f"or pass seq_lengths=lengths" if name == "mask" else
           f"resets={steps} == {per.format('starts')} with starts an int[{B}]")
  shared = (f" For flags shared by every sequence, jnp.broadcast_to({name}"
            f"{'[:, None]' if time_major else ''}, {shape}).") if flags.shape == (T,) else ""
  if flags.shape != shape or flags.dtype != jnp.bool_:
    layout = "[T, B] (time_major=True)" if time_major else "[B, T]"
    raise ValueError(
        f"{where}: {name} is {flags.dtype}{list(flags.shape)}; expected "
        f"bool{list(shape)}, one flag per sequence and step, laid out "
        f"{layout} as xs. Fix: build it as {build}.{shared}")
  return jnp.swapaxes(flags, 0, 1) if time_major else flags


def _check_batch_carry(where: str, carry: Carry, one: Carry, B: int) -> None:
  """Checks a batched carry against ``cell.initial_carry(params)`` with a leading B;
  the message names ``jaxrnn.{where}``."""
  expected = jax.tree.map(lambda a: jax.ShapeDtypeStruct((B,) + a.shape, a.dtype), one)
  if not same_layout(carry, expected):
    raise ValueError(
        f"{named(where)}: carry is {_describe(carry)}; expected "
        f"{_describe(expected)}: cell.initial_carry(params) with a leading "
        f"batch axis of {B}. Fix: pass the carry a previous {where} "
        f"returned, or broadcast the initial carry: jax.tree.map(lambda a: "
        f"jnp.broadcast_to(a, ({B},) + a.shape), cell.initial_carry(params)). "
        f"PyTorch's h0 (and c0), [num_layers * directions, B, H], convert with "
        f"jaxrnn.interop.torch.carry_from_torch"
        f"{FLAX_LSTM_CARRY if flax_lstm_carry(carry, one) else ''}.")
