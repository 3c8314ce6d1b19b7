"""`scan`: the one driver that runs a cell over a sequence.

Lives here: `scan`, the trace-time checks of its arguments and
`default_unroll` (the loop unroll when none is given). Not here: sequence
layers built on it (`_layers.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
from functools import lru_cache, partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import (Array, Carry, Cell, Params, as_int, not_a_cell, project_one,
                          token_ids_fix)
from jaxrnn._dropout import check_recurrent_mask, scale_recurrent_rows


def scan(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Optional[Carry] = None,
    mask: Optional[Array] = None,
    resets: Optional[Array] = None,
    reverse: bool = False,
    unroll: int | bool | None = None,
    recurrent_mask: Optional[Array] = None,
    checkpoint_every: Optional[int] = None,
) -> tuple[Carry, Array]:
  """Runs ``cell`` over one sequence ``xs [T, I]``: ``(carry, ys [T, O])``.

  Type: ``Cell -> params -> [T, I] -> (carry, [T, O])``. The semantics are
  exactly this Python loop (with the input projection hoisted into one
  ``[T, I] @ [I, G]`` matmul before it)::

    gxs = cell.project(params, xs) if cell.project else xs
    init = cell.initial_carry(params)
    carry = init if carry is None else carry
    ys = zeros([T, O])
    for t in (reversed(range(T)) if reverse else range(T)):
      if mask is not None and not mask[t]:
        continue                            # masked: carry frozen, y_t = 0
      if resets is not None and resets[t]:
        carry = init                        # a new episode starts at t
      carry, ys[t] = cell.step(params, carry, gxs[t])
    return carry, ys

  So the final carry is the last valid one, and a right-padded sequence
  with ``reverse=True`` runs backward over its valid part without a flip.
  Padding may hold anything, NaN included: masked inputs are zeroed before
  the projection, so nothing of them reaches a gradient.
  A cell that brings a fused kernel (``cell.sequence``, see
  `jaxrnn.fused_cell`) runs that instead of the loop, with the same result.

  Args:
    cell: a `Cell`.
    params: the cell's params.
    xs: ``[T, I]``, one sequence. Batch with ``jax.vmap``.
    carry: the initial carry; ``cell.initial_carry(params)`` when None.
    mask: ``bool[T]``, True at valid steps (``jnp.arange(T) < length``).
    resets: ``bool[T]``, True where the carry restarts from
      ``cell.initial_carry(params)`` before the step (episode bounds).
    reverse: run from ``t = T-1`` down to 0; ``ys`` stays in input order.
    unroll: steps per loop iteration, passed to `jax.lax.scan`; None (the
      default) is `default_unroll()`: 8 where JAX's default backend is a
      GPU, 1 elsewhere.
    recurrent_mask: ``[P]``, a multiplier of ``h_{t-1}`` where it enters the
      recurrent product, the same at every step (variational dropout's
      mask; `jaxrnn.rnn`'s ``recurrent_dropout`` draws it), a constant (no
      gradient flows to it); the carry is not multiplied. Needs the recurrent weights as ``params.w_h [P, G]``,
      whose rows it scales (``R (m h) = (diag(m) R) h``).
    checkpoint_every: K, to differentiate a long sequence in less memory
      (rematerialisation, `jax.checkpoint`): the loop runs as chunks of K
      steps, and the backward pass keeps only the carry at each chunk's
      start, recomputing a chunk's forward when it reaches it. Memory for
      the saved activations goes from T steps' to T / K carries plus K
      steps', for one more forward pass; ``K`` near ``sqrt(T)`` keeps the
      least. The same numbers as without it (`chunked`). Over a symbolic
      T (`jax.export`) it is not applied.

  Raises:
    ValueError: at trace time, for a batched ``xs``, params unlike those
      ``cell.init(key, I)`` makes (another cell, variant or size), a mask or
      resets of the wrong shape or dtype, or a carry unlike
      ``cell.initial_carry(params)``.
    TypeError: when ``cell.step`` returns a carry unlike the one it got.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(4)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> xs = jnp.ones((6, 3))
  >>> carry, ys = jaxrnn.scan(cell, params, xs, mask=jnp.arange(6) < 4)
  >>> ys[4:].tolist() == [[0.0] * 4] * 2           # padded outputs are zero
  True
  >>> batched = jax.vmap(lambda x: jaxrnn.scan(cell, params, x))
  >>> batched(jnp.ones((32, 6, 3)))[1].shape
  (32, 6, 4)
  """
  check_cell("scan", cell)
  xs = jnp.asarray(xs)
  check_xs(xs)
  check_not_varying("scan", xs, carry)
  check_params("scan", cell, params, xs.shape, xs_dtype=xs.dtype)
  if recurrent_mask is not None:
    params = scale_recurrent_rows(
        params, check_recurrent_mask("jaxrnn.scan", params, recurrent_mask, None))
  T = xs.shape[0]
  reverse, unroll = check_loop_options("scan", reverse, unroll, T)
  mask = check_flags("mask", mask, T)
  resets = check_flags("resets", resets, T)
  every = check_checkpoint_every("scan", checkpoint_every)
  init = cell.initial_carry(params)
  if carry is None:
    if getattr(cell, "decoder_carry", None) is not None:
      raise ValueError(
          "jaxrnn.scan: the cell is an attention decoder, whose carry holds "
          "the memory it attends over; from cell.initial_carry(params) it "
          "would attend over nothing. Fix: pass "
          "carry=cell.decoder_carry(params, memory, mask).")
    carry = init
  else:
    carry = torch_free(carry)
    check_carry(carry, init)
  if every is not None and isinstance(T, int) and T > every:
    def chunk(carry, x, m, r):
      return scan(cell, params, x, carry=carry, mask=m, resets=r, reverse=reverse,
                  unroll=unroll)
    return chunked(chunk, carry, xs, mask, resets, reverse, every, time_axis=0)
  if resets is not None and mask is not None:
    # A masked step is a no-op, the reset included.
    resets = resets & mask
  if mask is not None:
    xs = zero_padding(xs, mask)
  gxs = cell.project(params, xs) if cell.project is not None else xs
  if T == 0:
    # lax.scan traces its body even for no steps, and there is no gxs[0] to
    # read; the loop above returns the carry and no outputs.
    gx = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), gxs)
    _, y = jax.eval_shape(cell.step, params, carry, gx)
    return carry, jax.tree.map(lambda s: jnp.zeros((0,) + s.shape, s.dtype), y)
  if cell.sequence is not None:
    # The carry a reset restores is this cell's initial_carry, which may not
    # be the one the sequence was built with (a cell whose initial_carry was
    # replaced by a learned one): a sequence that takes init= is told it.
    run = partial(cell.sequence, params, carry, gxs, mask=mask, resets=resets,
                  reverse=reverse, unroll=unroll)
    takes = takes_init(cell.sequence) if resets is not None else "no"
    if takes == "no":
      return run()
    try:
      return run(init=init)
    except TypeError as e:
      # **kwargs passed on to a sequence of one's own that takes no init
      if takes == "named" or "unexpected keyword argument 'init'" not in str(e):
        raise
      return run()

  # Scanned over, not read by index: under jax.vmap that costs a time-major
  # copy of gxs, but only then does unroll pay on CPU (see _fused._forward).
  return jax.lax.scan(partial(masked_step, cell.step, params, init), carry,
                      (gxs, mask, resets), reverse=reverse, unroll=unroll)


def check_checkpoint_every(where: str, every) -> Optional[int]:
  if every is None:
    return None
  k = as_int(every)
  if k is None or k < 1:
    raise ValueError(f"jaxrnn.{where}: checkpoint_every={every!r}; expected None or an "
                     f"int >= 1, the steps of each rematerialised chunk (static).")
  return k


def chunked(run, carry, xs, mask, resets, reverse: bool, every: int, *, time_axis: int):
  """``run(carry, xs_k, mask_k, resets_k) -> (carry, ys_k)`` over chunks of
  ``every`` steps along ``time_axis``, each under `jax.checkpoint`.

  The last chunk is filled out with masked steps, which are no-ops with
  zero outputs (`scan`'s semantics), so the result is the unchunked run's;
  their outputs are cut off. Chunks run last first where ``reverse``.
  """
  T = xs.shape[time_axis]
  n = -(-T // every)
  pad = n * every - T
  flags_shape = xs.shape[:time_axis + 1]                 # [T] or [B, T]
  mask = jnp.ones(flags_shape, bool) if mask is None else mask

  def cut(a):          # [..., T, ...] -> [n, ..., every, ...], padded at the end
    a = jnp.pad(a, [(0, pad) if i == time_axis else (0, 0) for i in range(a.ndim)])
    a = a.reshape(a.shape[:time_axis] + (n, every) + a.shape[time_axis + 1:])
    return jnp.moveaxis(a, time_axis, 0)

  def body(carry, chunk):
    x, m, r = chunk
    return run(carry, x, m, r)

  carry, ys = jax.lax.scan(jax.checkpoint(body), carry,
                           (cut(xs), cut(mask), None if resets is None else cut(resets)),
                           reverse=reverse)

  def join(y):         # [n, ..., every, ...] -> [..., T, ...]
    y = jnp.moveaxis(y, 0, time_axis)
    y = y.reshape(y.shape[:time_axis] + (n * every,) + y.shape[time_axis + 2:])
    return jax.lax.slice_in_dim(y, 0, T, axis=time_axis)
  return carry, jax.tree.map(join, ys)


def takes_init(sequence) -> str:
  """Does ``sequence`` take ``init=``, the carry a reset restores: "named",
  "maybe" (``**kwargs``, as a wrapper passing them to a built-in sequence
  has) or "no"?"""
  try:
    parameters = list(inspect.signature(sequence).parameters.values())
  except (TypeError, ValueError):
    return "no"
  if any(p.name == "init" for p in parameters):
    return "named"
  return "maybe" if any(p.kind is p.VAR_KEYWORD for p in parameters) else "no"


def masked_step(step, params: Params, init: Carry, carry: Carry, inputs):
  """One step of `scan`'s loop: ``inputs = (gx_t, valid_t, reset_t)`` (the
  flags None where not given); a reset restores ``init`` first, and a step
  that is not valid keeps the carry and outputs zeros."""
  gx, valid, reset = inputs
  if reset is not None:
    carry = where(reset, init, carry)
  new_carry, y = step_output(step(params, carry, gx), carry)
  if valid is not None:
    new_carry = where(valid, new_carry, carry)
    y = jax.tree.map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), y)
  return new_carry, y


# On a GPU each iteration of XLA's loop costs a fixed few microseconds of
# kernel launches, however little it computes: unrolled 8 times, training
# took 0.35-0.57x the time of unroll=1 at B = 1 and 32 and 0.72-0.76x at
# B = 128 (H200, f32, LSTM and GRU, one run side by side;
# `benchmarks/SPEED.md`, "On a GPU"), and 16 gained little more. On CPU the
# iteration costs little, unroll=4 did not help training, and it doubles
# compile time: 1 stays. Read from the default backend, so a program jitted
# for the CPU of a GPU host gets 8 too, which there costs compile time.
GPU_UNROLL = 8


def default_unroll() -> int:
  """The unroll `scan` and `scan_batch` use when given none: 8 where JAX's
  default backend is a GPU, 1 elsewhere. Read when the call is traced.

  >>> import jax
  >>> default_unroll() == (8 if jax.default_backend() == "gpu" else 1)
  True
  """
  return GPU_UNROLL if jax.default_backend() == "gpu" else 1


def zero_padding(xs: Array, mask: Array) -> Array:
  """``xs`` with zeros at masked steps (``mask`` bool[..., T] over xs [..., T, I]).

  The loop discards what a masked step computes, but not its gradient's
  products: a NaN or inf in padding would reach the weight gradients as
  ``0 * nan``. Zeroed, padding can hold anything. It costs nothing
  measurable: `jaxrnn.scan_batch`'s masked LSTM and GRU training steps took
  0.99-1.01x the time without it (B = 16 and 32, 2 CPU cores).
  """
  return jnp.where(mask[..., None], xs, jnp.zeros((), xs.dtype))


def where(flag: Array, on_true: Carry, on_false: Carry) -> Carry:
  """``jnp.where`` over two carries of the same structure."""
  return jax.tree.map(lambda a, b: jnp.where(flag, a, b), on_true, on_false)


def check_cell(name: str, cell) -> None:
  """Refuses anything but a `Cell` (a layer above all, whose ``apply`` is
  what its caller wanted), where Python would fail on a missing field."""
  if all(hasattr(cell, field) for field in ("init", "step", "initial_carry", "project")):
    return
  if hasattr(cell, "apply") and hasattr(cell, "init"):
    raise TypeError(
        f"jaxrnn.{name}: got a layer ({type(cell).__name__}, as jaxrnn.rnn, "
        f"stack and bidirectional make), where it runs a Cell (jaxrnn.lstm(H), "
        f"jaxrnn.gru(H), ...). Fix: layer.apply(params, xs) runs one sequence, "
        f"jaxrnn.apply_batch(layer, params, xs) a batch.")
  what, fix = not_a_cell(cell)
  raise TypeError(
      f"jaxrnn.{name}: got {what} for the cell; expected a jaxrnn.Cell "
      f"(jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.fused_cell(...), or a Cell of "
      f"one's own). Fix: {fix}.")


def check_loop_options(where: str, reverse, unroll, length=None) -> tuple[bool, int | bool]:
  """``reverse`` and ``unroll`` (None: `default_unroll`) as the Python values
  the loop is built from; raises for anything else, a tracer above all.
  Over a symbolic ``length`` (`jax.export`'s shape polymorphism), which no
  loop can unroll by a factor or fully, ``unroll`` becomes 1 (so the GPU's
  default 8 exports)."""
  def refuse(name, value, expected):
    traced = isinstance(value, jax.core.Tracer)
    got = "a traced value (an argument of a jitted function)" if traced else repr(value)
    raise TypeError(
        f"jaxrnn.{where}: {name} is {got}; expected {expected}, which shapes "
        f"the compiled loop. Fix: " + (
            f"mark it static (jax.jit(f, static_argnames=('{name}',))) or close "
            f"over it." if traced else f"pass {expected}."))
  if not isinstance(reverse, (bool, np.bool_)):
    refuse("reverse", reverse, "True or False")
  if unroll is None:
    unroll = default_unroll()
  if not (isinstance(unroll, (bool, np.bool_))
          or isinstance(unroll, (int, np.integer)) and unroll >= 0):
    refuse("unroll", unroll, "an int >= 0 or a bool")
  if length is not None and not isinstance(length, (int, np.integer)):
    return bool(reverse), 1           # a symbolic length
  return bool(reverse), bool(unroll) if isinstance(unroll, (bool, np.bool_)) else int(unroll)


def varying_axes(x) -> frozenset:
  """The `jax.shard_map` axes ``x`` varies over where the shard_map checks
  varying types (``check_vma=True``, its default); empty elsewhere."""
  aval = jax.typeof(x) if hasattr(jax, "typeof") else None
  varying = getattr(aval, "vma", None)
  if varying is None:         # jax 0.10's name
    varying = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
  return frozenset(varying or ())


def check_not_varying(where: str, xs, carry=None) -> None:
  """Refuses ``xs`` that varies over the axes of a `jax.shard_map` that
  checks varying types, unless every leaf of the given ``carry`` varies as
  ``xs`` does (None: the loop makes it, from params that do not vary).

  The loops would start from such an invariant carry and update it with
  varying values, which that check refuses (JAX's "carry input and carry
  output must have equal types"); the batched kernels' output buffers
  always do (they pass no carry here).
  """
  varying = varying_axes(xs)
  if varying and (carry is None or any(not varying <= varying_axes(leaf)
                                       for leaf in jax.tree.leaves(carry))):
    raise ValueError(
        f"{named(where)}: xs varies over the shard_map axes {tuple(sorted(varying))} "
        f"and this shard_map checks varying types (check_vma=True): jaxrnn's "
        f"loops start their carries and outputs from values that do not vary, "
        f"which that check refuses. Fix: jax.shard_map(..., check_vma=False) "
        f"(outputs and gradients are exact; psum the gradients yourself), or "
        f"leave partitioning to XLA: jit with the batch sharded "
        f"(jaxrnn.train.shard_batch), as jaxrnn.train does.")


def check_xs(xs) -> None:
  shape = jnp.shape(xs)
  if len(shape) == 3:
    raise ValueError(
        f"jaxrnn.scan: xs has shape {shape}; a cell takes one sequence "
        f"[T, I]. Batch with jax.vmap: jax.vmap(lambda x: jaxrnn.scan(cell, "
        f"params, x))(xs) runs all {shape[0]} sequences; jaxrnn.scan_batch("
        f"cell, params, xs) runs them on the batched kernels, faster to train.")
  if len(shape) != 2:
    ids = len(shape) == 1 and jnp.issubdtype(jnp.result_type(xs), jnp.integer)
    raise ValueError(
        f"jaxrnn.scan: xs has shape {shape}; expected one sequence [T, I] "
        f"(rank 2). Fix: " + (
            "token ids go in as vectors: jax.nn.one_hot(ids, V), or an "
            "embedding's rows, params['embed'][ids]; " if ids else "") +
        "for one feature per step use xs[:, None]; for a batch of sequences "
        "use jax.vmap.")


def check_flags(name: str, flags, T: int):
  """Checks a per-step ``bool[T]`` mask or resets; returns it as an array."""
  if flags is None:
    return None
  flags = jnp.asarray(flags)
  # How to build the flags right, for the message's fix.
  build = (f"mask=jnp.arange({T}) < length" if name == "mask" else
           f"resets=jnp.arange({T}) == start for an episode starting at step start")
  if flags.shape != (T,):
    batched = (f" A batch of {name} goes through jax.vmap with xs."
               if flags.ndim == 2 else "")
    raise ValueError(
        f"jaxrnn.scan: {name} has shape {flags.shape}; expected ({T},), one "
        f"flag per step of xs (T={T}).{batched} Fix: build it as {build}.")
  if flags.dtype != jnp.bool_:
    raise ValueError(
        f"jaxrnn.scan: {name} has dtype {flags.dtype}; expected bool. Fix: "
        f"pass {name}.astype(bool), or build it as {build}.")
  return flags


def _once_per_cell_and_size(trace):
  """``trace(cell, input_size)``, cached; a Cell with an unhashable field
  is traced at every call."""
  cached = lru_cache(maxsize=256)(trace)

  def get(cell: Cell, input_size: int):
    try:
      return cached(cell, input_size)
    except TypeError:   # unhashable: not cached
      return trace(cell, input_size)
  return get


@_once_per_cell_and_size
def _init_shapes(cell: Cell, input_size: int):
  """The shapes ``cell.init(key, input_size)`` makes, traced abstractly; None
  where init cannot be traced so (then nothing is checked)."""
  try:
    return jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
  except Exception:   # noqa: BLE001 - an init that needs concrete values goes unchecked
    return None


@_once_per_cell_and_size
def _output_shape(cell: Cell, input_size: int):
  """The shape of the ``y_t`` that ``cell.step`` returns from its initial
  carry, traced abstractly; None where it is not one array or cannot be
  traced so."""
  def y_of_one_step():
    params = cell.init(jax.random.key(0), input_size)
    gx = project_one(cell, params, jnp.zeros((input_size,)))
    return cell.step(params, cell.initial_carry(params), gx)[1]
  try:
    y = jax.eval_shape(y_of_one_step)
  except Exception:   # noqa: BLE001 - the run itself will say what is wrong
    return None
  return y.shape if isinstance(y, jax.ShapeDtypeStruct) else None


def _shapes_by_path(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(k): tuple(jnp.shape(a))
          for k, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


# The parts of a composite layer that the running cell sits in (a stack's
# layer, a bidirectional layer's direction), outermost first, for messages.
_within = contextvars.ContextVar("jaxrnn_within", default=())


@contextlib.contextmanager
def within(part: str):
  """Within it, the messages of `check_params` and the carry checks say
  that the cell runs in ``part`` (``"layer 1 of the stack"``)."""
  token = _within.set(_within.get() + (part,))
  try:
    yield
  finally:
    _within.reset(token)


def named(name: str) -> str:
  """``jaxrnn.{name}``, and where in a composite layer the cell runs, if it does."""
  parts = _within.get()
  return f"jaxrnn.{name}" + (f" (in {', '.join(parts)})" if parts else "")


def check_params(name: str, cell: Cell, params: Params, xs_shape: tuple,
                 time_major: bool = False, size_known: bool = True,
                 xs_dtype=None) -> None:
  """Checks ``params`` against what ``cell.init(key, I)`` makes for xs ``[..., I]``
  (the caller's shape; ``time_major`` says a batch is ``[T, B, I]``).

  Params of another variant would otherwise be read in part (a standard
  LSTM ignores a peephole LSTM's ``p_i``) or fail deep inside XLA. The
  leaves' paths and shapes are compared, not their containers (a list for
  a tuple) or dtypes (bfloat16 copies of float32 params are fine).
  ``size_known=False`` says the input size is a guess (the fix names none).
  """
  input_size = xs_shape[-1]
  expected = _init_shapes(cell, input_size)
  if expected is None:
    return
  fix = (f"Fix: build the cell with the constructor, sizes and switches that "
         f"made the params, or make params for this cell with "
         f"cell.init(key, {input_size if size_known else 'input_size'}).")
  got, want = _shapes_by_path(params), _shapes_by_path(expected)
  if got.keys() != want.keys():
    extra, missing = sorted(got.keys() - want.keys()), sorted(want.keys() - got.keys())
    detail = "".join([f"; they have {', '.join(extra)}, which this cell's init "
                      f"does not make" if extra else "",
                      f"; they lack {', '.join(missing)}, which it makes"
                      if missing else ""])
    if extra == [""]:             # the path of a bare array: the params are one leaf
      detail = f"; they are one array, where it makes {', '.join(missing)}"
    if sorted(map(_as_fields, extra)) == sorted(map(_as_fields, missing)):
      # the same names and shapes, only in dicts ("['w_h']") where the cell
      # makes NamedTuples (".w_h"): a checkpoint restored without a template
      raise ValueError(
          f"{named(name)}: params are {_describe(params)}, the arrays this "
          f"cell's init makes but in dicts, where it makes {type(expected).__name__}"
          f" ({', '.join(missing)}). Fix: {RESTORED_WITHOUT_TEMPLATE}")
    if any(path.endswith(".b") for path in extra + missing) and all(
        path.endswith((".b", ".b_hn")) for path in extra + missing):
      detail += " (only biases differ: one side was built with use_bias=False)"
    raise ValueError(
        f"{named(name)}: params are {_describe(params)}, but this cell's init "
        f"makes {_describe(expected)}{detail}: they were made by another cell "
        f"or variant. {fix}")
  wrong = [(path, got[path], want[path]) for path in want if got[path] != want[path]]
  if not wrong:
    _check_output_size(name, cell, input_size)
    return
  # The common case: the right cell, inputs of another size.
  for size in {g for _, shape, made in wrong for g, w in zip(shape, made) if g != w}:
    other = _init_shapes(cell, size)
    if other is not None and _shapes_by_path(other) == got:
      layout = ("[" if len(xs_shape) == 1 else "[T, " if len(xs_shape) == 2
                else "[T, B, " if time_major else "[B, T, ")
      noun = "x" if len(xs_shape) == 1 else "xs"     # one step's input, or a sequence's
      raise ValueError(
          f"{named(name)}: {noun} has shape {tuple(xs_shape)}; these params were "
          f"initialised for input size {size}, so {noun} must be {layout}{size}]. "
          f"Fix: pass inputs with {size} features, or re-run "
          f"init(key, input_size={input_size}){token_ids_fix(xs_dtype)}.")
  listed = "; ".join(f"{path} is {list(shape)} where it makes {list(made)}"
                     for path, shape, made in wrong)
  raise ValueError(
      f"{named(name)}: params do not fit this cell for inputs of size "
      f"{input_size}: {listed}. They were made by a cell of another size or "
      f"variant. {fix}")


def check_params_of_any_input(name: str, cell: Cell, params: Params) -> None:
  """`check_params` where no input says the input size (``initial_carry``):
  the leaves' paths must be those ``cell.init`` makes, the leaves whose
  shapes do not depend on the input size (the same for input sizes 1 and
  2: recurrent weights, biases) must have those shapes, and the others
  their rank."""
  one, two = _init_shapes(cell, 1), _init_shapes(cell, 2)
  if one is None or two is None:
    return
  got, want, other = _shapes_by_path(params), _shapes_by_path(one), _shapes_by_path(two)
  fits = got.keys() == want.keys() and all(
      got[path] == want[path] if want[path] == other[path] else len(got[path]) == len(want[path])
      for path in want)
  if not fits:    # check_params says what differs, for a size the params suggest
    sizes = {g for path in want.keys() & got.keys()
             for g, w, o in zip(got[path], want[path], other[path]) if w != o}
    check_params(name, cell, params, (min(sizes or {1}),), size_known=False)
def _check_output_size(name: str, cell: Cell, input_size: int) -> None:
  """Refuses a cell whose ``y_t`` is not ``[output_size]``: a stack sizes
  the next layer, and a readout its weights, from ``output_size``."""
  shape = _output_shape(cell, input_size)
  if shape is not None and len(shape) == 1 and shape[0] != cell.output_size:
    raise ValueError(
        f"{named(name)}: the cell's step returns y_t of shape {shape}, but the "
        f"cell declares output_size={cell.output_size}; the layer after it "
        f"(a stack's next layer, a readout) is sized from output_size. Fix: "
        f"build the Cell with output_size={shape[0]}, or make the step return "
        f"[{cell.output_size}].")


# Said wherever params come in dicts or lists where jaxrnn makes NamedTuples
# and tuples: what a checkpoint restored without a template gives.
RESTORED_WITHOUT_TEMPLATE = (
    "Params restored without a template (flax.serialization.msgpack_restore, "
    "orbax's restore without a target) come as dicts and lists: restore them "
    "into one, the params init returns (flax.serialization.from_bytes("
    "template, data), orbax's restore with a target, "
    "jaxrnn.train.Checkpoints.restore(template)).")


def _as_fields(path: str) -> str:
  """A key path with dict keys written as fields: ``"['w_h']"`` -> ``".w_h"``."""
  return re.sub(r"\['([^']*)'\]", r".\1", path)


def _describe(tree) -> str:
  return str(jax.tree.map(
      lambda a: f"{jnp.result_type(a).name}{list(jnp.shape(a))}", tree))


# Flax's LSTM cells carry (c, h), a plain pair; jaxrnn's LSTMCarry is (h, c).
FLAX_LSTM_CARRY = ("; Flax's LSTM carry (c, h) goes in as jaxrnn.LSTMCarry(h=h, c=c), "
                   "the other way round")


def flax_lstm_carry(carry: Carry, one: Carry) -> bool:
  """Is ``carry`` a plain pair where the cell carries an ``LSTMCarry``?"""
  return (type(one).__name__ == "LSTMCarry" and type(carry) in (tuple, list)
          and len(carry) == 2)


def check_carry(carry: Carry, expected: Carry, where: str = "scan") -> None:
  """Checks a user's carry against ``cell.initial_carry(params)``; the
  message names ``jaxrnn.{where}``."""
  if jax.tree.structure(carry) != jax.tree.structure(expected):
    raise ValueError(
        f"{named(where)}: carry is {_describe(carry)}; expected a carry of the "
        f"structure {_describe(expected)}, as made by "
        f"cell.initial_carry(params). Fix: start from "
        f"cell.initial_carry(params) or the carry a previous call returned"
        f"{FLAX_LSTM_CARRY if flax_lstm_carry(carry, expected) else ''}.")
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected)):
    if jnp.shape(got) != jnp.shape(want) or jnp.result_type(got) != want.dtype:
      raise ValueError(
          f"{named(where)}: carry is {_describe(carry)}; expected "
          f"{_describe(expected)} as made by cell.initial_carry(params). "
          f"A batched carry goes through jax.vmap with xs; the carry stays "
          f"in float32 (or wider) even for bfloat16 params. Fix: pass a "
          f"carry of those shapes and dtypes.")


def torch_free(tree):
  """``tree`` with its PyTorch tensors read as NumPy arrays (detached: a
  learned initial state requires grad), which jax reads; other leaves as
  they are. So ``carry=`` takes tensors, as ``xs`` does."""
  if not any(hasattr(a, "detach") for a in jax.tree.leaves(tree)):
    return tree
  from jaxrnn.interop import as_numpy
  return jax.tree.map(lambda a: as_numpy(a, "carry", "jaxrnn") if hasattr(a, "detach") else a,
                      tree)


def same_layout(a, b, dtypes: bool = True) -> bool:
  """Do the pytrees ``a`` and ``b`` (arrays or ``jax.ShapeDtypeStruct``) have
  the same structure and leaf shapes (and, with ``dtypes``, leaf dtypes)?"""
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      jnp.shape(x) == jnp.shape(y)
      and (not dtypes or jnp.result_type(x) == jnp.result_type(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def step_output(out, old: Carry, where: str = "scan", what: str = "cell.step"):
  """``(new_carry, y_t)``, what a step returned, checked: a pair, its carry
  like the one the step was given. ``what`` names the step in messages."""
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    raise TypeError(
        f"{named(where)}: {what} returned {_describe(out)}; a step returns the "
        f"pair (new_carry, y_t), the carry {_describe(old)} as it was given. "
        f"Fix: end the step with `return new_carry, y` (`return h, h` where "
        f"the output is the state).")
  new, y = out
  if not same_layout(new, old):
    raise TypeError(
        f"{named(where)}: {what} returned a carry {_describe(new)} but was "
        f"given {_describe(old)}; a step returns (new_carry, y_t), in that "
        f"order, its carry of the same structure, shapes and dtypes. Fix the "
        f"cell's step (common causes: float32 params with a float64 or "
        f"bfloat16 carry, or float64 inputs under jax_enable_x64 promoting it "
        f"(jaxrnn.matmul(x, w) computes in w's dtype); a missing field in a "
        f"NamedTuple carry; (y, carry) returned the other way round).")
  return new, y
