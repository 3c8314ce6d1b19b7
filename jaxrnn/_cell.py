"""The `Cell` contract and the helpers every built-in cell shares.

A cell is one time step of a recurrence, written as pure functions over a
parameter pytree (the optax pattern: a constructor closes over settings and
returns a NamedTuple of functions). Sequence drivers live in `_scan.py` and
`_layers.py`; the cells themselves in `_cells/`.

Dimension legend used in every docstring:

  T: time steps   I: input size   H: hidden size   G: fused gate width
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any   # a pytree of arrays, usually a NamedTuple such as LSTMParams
Carry = Any    # a pytree of arrays, usually a NamedTuple such as LSTMCarry


def exportable(cls: type) -> type:
  """Registers the params or carry NamedTuple ``cls`` for `jax.export`'s
  serialization (as ``jaxrnn.<name>``), so that an exported function taking
  or returning it serializes; a class decorator."""
  register = getattr(getattr(jax, "export", None), "register_namedtuple_serialization", None)
  try:
    return cls if register is None else register(cls, serialized_name=f"jaxrnn.{cls.__name__}")
  except ValueError:    # registered already: the module was reloaded (autoreload)
    return cls


class Cell(NamedTuple):
  """One recurrent time step as pure functions: ``c -> x -> (c, y)``.

  Fields:
    init: ``(key, input_size) -> params``. `jaxrnn.scan` and
      `jaxrnn.scan_batch` trace it abstractly (`jax.eval_shape`, once per
      cell and input size) and check the params they get against it: the
      same leaves (by path) with the same shapes.
    initial_carry: ``(params) -> carry``; sizes and dtype come from params.
    step: ``(params, carry, gx_t) -> (carry, y_t)``, in `jax.lax.scan` order.
      ``gx_t`` is the projected input (``project(params, xs)[t]``), or the raw
      input ``x_t`` when ``project`` is None. To step a raw ``x_t`` (as a
      PyTorch ``LSTMCell`` is called), use ``jaxrnn.rnn(cell).step(params,
      carry, x_t)``, which projects and checks it: ``cell.step`` given a raw
      ``x_t`` is wrong, silently where the input size equals ``gx``'s.
    output_size: the size of ``y_t``.
    project: ``(params, xs[T, I]) -> gxs[T, G]`` (or a pytree of ``[T, ...]``
      arrays), the input matmul for all steps at once, hoisted out of the
      time loop. Optional. Row by row:
      ``gxs[t]`` depends on ``xs[t]`` alone, so any number of rows may be
      passed (`jaxrnn.unfused` and decoding pass one, `jaxrnn.scan_batch`'s
      kernels all ``B * T``); put anything that mixes steps before the cell.
    sequence: ``(params, carry, gxs, *, mask, resets, reverse, unroll) ->
      (carry, ys)``, a fused kernel for the whole loop that `jaxrnn.scan`
      uses in place of stepping ``step``; it must compute the same numbers.
      One that also takes ``init=None`` is given, with resets, the carry a
      reset restores (the cell's ``initial_carry(params)``, which a cell
      built on another's sequence may have replaced).
      Optional; built-in cells get theirs from `jaxrnn.fused_cell`.
    batched: ``(params, carry, xs [B, T, I], mask, reverse, unroll) ->
      (carry, ys [B, T, O])``, a kernel for a whole batch (carry and mask
      ``bool[B, T]`` or None batched along their first axis) that
      `jaxrnn.scan_batch` uses; it must compute what `jaxrnn.scan` computes
      under `jax.vmap`. Optional; the standard `jaxrnn.lstm` and
      `jaxrnn.gru` (either form) have hand-written ones, and every
      `jaxrnn.fused_cell` declared ``additive`` with a ``project`` (the
      LSTM variants, the simple RNN, your own) gets the generic one of
      `jaxrnn._fused_batch`.

  A cell works on one example; batch with `jax.vmap`. A Cell holds
  functions, so it is not a `jax.jit` argument: build it once and close over
  it.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> def leaky(hidden_size, alpha=0.5):          # h' = (1-a) h + a tanh(W x + b)
  ...   def init(key, input_size):
  ...     w = jax.random.normal(key, (input_size, hidden_size)) / input_size**0.5
  ...     return dict(w=w, b=jnp.zeros(hidden_size))
  ...   def step(p, h, gx):
  ...     h = (1 - alpha) * h + alpha * jnp.tanh(gx)
  ...     return h, h
  ...   return jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros_like(p["b"]),
  ...                      step=step, output_size=hidden_size,
  ...                      project=lambda p, xs: xs @ p["w"] + p["b"])
  >>> cell = leaky(4)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> h, ys = jaxrnn.scan(cell, params, jnp.ones((5, 3)))
  >>> ys.shape
  (5, 4)
  """

  init: Callable[[Array, int], Params]
  initial_carry: Callable[[Params], Carry]
  step: Callable[[Params, Carry, Array], tuple[Carry, Array]]
  output_size: int
  project: Optional[Callable[[Params, Array], Array]] = None
  sequence: Optional[Callable[..., tuple[Carry, Array]]] = None
  batched: Optional[Callable[..., tuple[Carry, Array]]] = None


def unfused(cell: Cell) -> Cell:
  """The same cell as the textbook loop: input matmul inside the step, no fused kernel.

  ``step(params, carry, x_t)`` computes ``project(params, x_t)`` itself and
  `jaxrnn.scan` runs it under plain `jax.lax.scan`, differentiated by JAX
  (the form Flax and Equinox use). Same numbers as ``cell``, to float
  rounding. Which is faster depends on the shape; measured on 2 CPU cores
  (f32, forward+backward, ``benchmarks/speed.py``), B, T, I, H:

  * LSTM (1, 512, 128, 128): fused 6.9 ms, unfused 18.8 (fused 2.7x);
    (16, 64, 128, 128): 9.8 vs 15.8 (fused 1.6x).
  * LSTM (32, 128, 256, 256): 146 vs 125 (unfused 1.17x);
    (128, 64, 512, 512): 730 vs 572 (unfused 1.28x); GRU there 549 vs 444.
  * simple RNN (32, 128, 256, 256): 25.1 vs 41.7 (fused 1.66x).

  At large batches the hoisted ``[T, B, G]`` projection, its time-major
  copies and its gradient cost more memory traffic than they save. For
  training on a batch, `jaxrnn.scan_batch` beats both forms for the LSTM
  and GRU at every batch size measured, 1 to 128 (``benchmarks/speed.py``).

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(8)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> xs = jnp.ones((5, 3))
  >>> bool(jnp.allclose(jaxrnn.scan(jaxrnn.unfused(cell), params, xs)[1],
  ...                   jaxrnn.scan(cell, params, xs)[1], atol=1e-6))
  True
  """
  if cell.project is None:
    if cell.sequence is None and cell.batched is None:
      return cell        # already the textbook loop (and keeps any attributes)
    return cell._replace(sequence=None, batched=None)

  def step(params, carry, x):
    return cell.step(params, carry, project_one(cell, params, x))

  return cell._replace(step=step, project=None, sequence=None, batched=None)


def project_one(cell: Cell, params: Params, x: Array):
  """``gx`` of one step's input ``x [I]``: ``cell.project`` of one row (row 0
  of each leaf, for a projection that returns a pytree), or ``x`` itself for
  a cell without one."""
  if cell.project is None:
    return x
  return jax.tree.map(lambda a: a[0], cell.project(params, x[None]))


def with_compute_dtype(cell: Cell, dtype, where: str = "jaxrnn.with_compute_dtype") -> Cell:
  """``cell`` computing with its floating params cast to ``dtype`` (Flax's
  ``dtype``, apart from ``param_dtype``); None leaves it as it is. The
  built-in cells' ``dtype=`` is this; it gives a cell of your own the same
  mixed precision.

  The params stay as ``init`` makes them (float32 master weights, say), and
  ``initial_carry``, ``step``, ``project``, ``sequence`` and ``batched``
  cast them on the way in: the matmuls run in ``dtype`` (`matmul` computes
  in the weights' dtype, the inputs cast to it), and the gradients come back
  in the params' dtype through the cast (computed in ``dtype``, so rounded
  to it, as with Flax's ``dtype``). The carry keeps the dtype that
  ``initial_carry`` gives it from the cast params: the built-in cells keep
  it at least float32 (`carry_dtype`), and so does a cell whose
  ``initial_carry`` builds it in ``carry_dtype`` of a param's dtype.
  ``where`` names the constructor in errors.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> def indrnn(hidden_size):          # h' = relu(W x + b + u * h)
  ...   return jaxrnn.Cell(
  ...       init=lambda key, i: dict(w=jax.random.normal(key, (i, hidden_size)),
  ...                                u=jnp.ones(hidden_size), b=jnp.zeros(hidden_size)),
  ...       initial_carry=lambda p: jnp.zeros(hidden_size, jaxrnn.carry_dtype(p["b"].dtype)),
  ...       step=lambda p, h, gx: (jax.nn.relu(gx + p["u"] * h),) * 2,
  ...       output_size=hidden_size,
  ...       project=lambda p, xs: jaxrnn.matmul(xs, p["w"]) + p["b"])
  >>> cell = jaxrnn.with_compute_dtype(indrnn(4), jnp.bfloat16)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> h, ys = jaxrnn.scan(cell, params, jnp.ones((5, 3)))
  >>> params["w"].dtype, ys.dtype                 # float32 weights, float32 carry
  (dtype('float32'), dtype('float32'))
  """
  if not isinstance(cell, Cell):
    raise TypeError(
        f"{where}: cell is a {type(cell).__name__}; expected a jaxrnn.Cell. Fix: "
        f"cast the cell before building the layer, e.g. jaxrnn.rnn("
        f"jaxrnn.with_compute_dtype(cell, dtype)), or pass dtype= to a built-in cell.")
  dtype = check_compute_dtype(where, dtype)
  if dtype is None:
    return cell

  def cast(params):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)

  def casting(fn):
    if fn is None:
      return None

    @functools.wraps(fn)        # keeps a kernel's markers (takes_recurrent_mask)
    def cast_first(params, *args, **kwargs):
      return fn(cast(params), *args, **kwargs)
    return cast_first

  # initial_carry too, so that the carry has the dtype the cast params give it.
  # A sequence that can (`jaxrnn._fused.read_ahead_sequence`) casts inside its step.
  rebuild = getattr(cell.sequence, "rebuild", None)
  return cell._replace(initial_carry=casting(cell.initial_carry), step=casting(cell.step),
                       project=casting(cell.project),
                       sequence=casting(cell.sequence) if rebuild is None else rebuild(casting),
                       batched=casting(cell.batched))


def check_compute_dtype(where: str, dtype) -> Optional[jnp.dtype]:
  """``dtype`` as a floating `jnp.dtype` (None stays None); raises otherwise."""
  if dtype is None:
    return None
  try:
    checked = jnp.dtype(dtype)
  except TypeError:
    checked = None
  if checked is None or not jnp.issubdtype(checked, jnp.floating):
    raise ValueError(f"{where}: dtype={dtype!r}; expected a floating dtype for "
                     f"the computation (jnp.bfloat16, jnp.float16, jnp.float32, "
                     f"or their names \"bfloat16\", ...) or None for the params' own.")
  return checked


def check_bool(where: str, name: str, value) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"{where}: {name}={value!r}; expected True or False.")
  return value


def carry_dtype(param_dtype) -> jnp.dtype:
  """The carry's dtype for params of ``param_dtype``: at least float32.

  bfloat16 and float16 params compute matmuls in their own dtype but keep the
  carry (and so the long-range sum in an LSTM's cell state) in float32.
  """
  return jnp.promote_types(param_dtype, jnp.float32)


def matmul(x: Array, w: Array) -> Array:
  """``x @ w`` computed in ``w``'s dtype, accumulated in the carry dtype."""
  return jnp.matmul(x.astype(w.dtype), w,
                    preferred_element_type=carry_dtype(w.dtype))


def time_batch_matmul(a: Array, dz: Array, w: Array) -> Array:
  """``sum_t a_t^T dz_t`` over time and batch: a weight's gradient in one matmul.

  Shapes: a [B, T, P], dz [B, T, G] (or both [T, B, ...]) -> [P, G] in
  ``w``'s dtype, computed in it and accumulated in the carry dtype, as
  `matmul` does going forward.
  """
  # One contracting axis, not two: contracting (B, T), XLA CPU copied the
  # larger dz to another layout first (LSTM, B = 32: 1.04-1.05x slower).
  a = a.reshape(-1, a.shape[-1]).astype(w.dtype)
  dz = dz.reshape(-1, dz.shape[-1]).astype(w.dtype)
  a_t = a.T if w.dtype == carry_dtype(w.dtype) else _row_major_transpose(a)
  return jnp.matmul(a_t, dz, preferred_element_type=carry_dtype(w.dtype)).astype(w.dtype)


def _row_major_transpose(a: Array) -> Array:
  """``a.T`` [N, M] for a [M, N], copied into its own row-major array.

  Why: XLA folds a plain transpose into the matmul, and XLA CPU runs a
  bfloat16 matmul with a transposed operand in float32 (it converts the
  operands), 4.3x slower than the plain bfloat16 matmul it runs on AMX
  units ([512, 8192] x [8192, 2048]: 107 against 25 ms); the bfloat16 LSTM
  at B = 128, H = 512 trains in 0.76x the time. The flat reshape behind an
  optimization barrier is what keeps the copy. For float32 the transposed
  operand costs nothing and the copy does (1.17x slower at B = 32).
  """
  flat = jax.lax.optimization_barrier(a.T.reshape(-1))
  return flat.reshape(a.shape[::-1])


def project_input(name: str, xs: Array, w_x: Array, b: Optional[Array]) -> Array:
  """The hoisted input projection ``xs @ w_x + b``, checked at trace time.

  Shapes: xs [T, I], w_x [I, G], b [G] or None (a cell built with
  ``use_bias=False``) -> [T, G] in the carry dtype.
  Integer and bool xs (a one-hot as ``ids[:, None] == jnp.arange(V)``) are
  cast by the product; complex xs are refused.
  """
  check_input_size(name, xs, w_x.shape[0])
  if jnp.issubdtype(jnp.result_type(xs), jnp.complexfloating):
    raise TypeError(
        f"jaxrnn.{name}: xs has dtype {jnp.result_type(xs)}; the cell's weights "
        f"are real, and the product would drop the imaginary part. Fix: pass "
        f"real inputs, e.g. jnp.concatenate([xs.real, xs.imag], -1) with twice "
        f"the input size.")
  gxs = matmul(xs, w_x)
  return gxs if b is None else gxs + b.astype(carry_dtype(w_x.dtype))


def bias_or_zeros(b: Optional[Array], size: int, like: Array) -> Array:
  """``b``, or zeros ``[size]`` of ``like``'s dtype where a cell built with
  ``use_bias=False`` has None: for the batched kernels, whose gradient for
  the zeros is dropped (XLA removes its sum)."""
  return jnp.zeros((size,), like.dtype) if b is None else b


def is_flax(x) -> bool:
  """Is ``x`` a Flax module (linen or NNX; a cell, or a module of one's own)?"""
  return any((getattr(c, "__module__", "") or "").startswith("flax.")
             for c in type(x).__mro__)


def not_a_cell(x) -> tuple[str, str]:
  """(what ``x`` is, the fix) for an error that expected a Cell or a Seq:
  a jaxrnn constructor not called, a Flax cell, anything else."""
  module = getattr(x, "__module__", "") or ""
  if inspect.isfunction(x) and (module == "jaxrnn" or module.startswith("jaxrnn.")):
    import jaxrnn
    name = getattr(x, "__name__", "?")
    # jaxrnn.lstm by its public name; jaxrnn.interop.torch.layer by its module's
    public = (f"jaxrnn.{name}" if getattr(jaxrnn, name, None) is x else
              f"{module}.{getattr(x, '__qualname__', name)}")
    return (f"the function {public} itself",
            f"call it to build the cell or layer, e.g. {public}(H)")
  if is_flax(x) and type(x).__name__ in ("Recurrent", "LinenRecurrent"):
    return (f"a Flax {type(x).__name__} (jaxrnn's wrapper)",
            "pass the jaxrnn layer it wraps, the one given to it, and use the "
            "wrapper in Flax models")
  if is_flax(x):
    return (f"a Flax {type(x).__name__}",
            "build the jaxrnn cell of the same kind (jaxrnn.lstm(H), jaxrnn.gru(H), "
            "jaxrnn.simple_rnn(H)); to carry over a Flax cell's weights, convert "
            "them with jaxrnn.interop.flax.from_linen or from_nnx")
  return (f"a {type(x).__name__}",
          "pass a cell such as jaxrnn.lstm(H)")


def as_int(value) -> Optional[int]:
  """``value`` as a Python int where it is an integer (NumPy's and JAX's
  concrete ones too), None otherwise; a bool is not one.

  >>> as_int(3), as_int(True), as_int(2.0)
  (3, None, None)
  """
  if isinstance(value, (bool, np.bool_)):
    return None
  try:
    return operator.index(value)
  except TypeError:
    return None


def first_outside(ids, mask, n: int) -> Optional[int]:
  """The first of ``ids`` outside ``[0, n)`` where ``mask`` (None: all;
  broadcast to ``ids``) keeps it, or None: none, or values not known here
  (traced). Indexing would clamp or wrap such an id into a plausible wrong
  answer; padding may hold anything (-100, say).

  >>> first_outside(np.array([3, -100, 9]), np.array([True, False, True]), 5)
  9
  """
  if any(isinstance(a, jax.core.Tracer) for a in (ids, mask)):
    return None
  ids = np.asarray(ids)
  if mask is not None:
    ids = ids[np.broadcast_to(np.asarray(mask, bool), ids.shape)]
  bad = ids[(ids < 0) | (ids >= n)]
  return int(bad[0]) if bad.size else None


def check_size(where: str, name: str, value, *, optional: bool = False) -> int:
  """``value`` as an int; raises at construction unless it is a positive int
  (or None, when ``optional``: then the caller passes None on).

  >>> check_size("jaxrnn.lstm", "hidden_size", 8.0)
  Traceback (most recent call last):
  ...
  TypeError: jaxrnn.lstm: hidden_size must be a positive int; got 8.0 (float). Fix: pass hidden_size=8.
  """
  size = as_int(value)
  if size is not None and size >= 1:
    return size
  try:                      # 8.0 or "8": say the int meant
    number = None if isinstance(value, bool) else float(value)
  except (TypeError, ValueError):
    number = None
  what = "a positive int or None" if optional else "a positive int"
  fix = (f"pass {name}={int(number)}" if number is not None and number.is_integer()
         and number >= 1 else f"pass {what}")
  message = (f"{where}: {name} must be {what}; got {value!r} "
             f"({type(value).__name__}). Fix: {fix}.")
  raise TypeError(message) if size is None else ValueError(message)


# Activations a cell takes by name, as Keras' ``activation="relu"`` and
# torch's ``nonlinearity="relu"`` do: the elementwise functions of `jax.nn`.
ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu", "elu", "selu", "silu", "swish",
               "softplus", "soft_sign", "relu6", "leaky_relu", "celu", "hard_tanh",
               "hard_sigmoid", "log_sigmoid", "hard_silu", "hard_swish", "identity")
ALIASES = {"linear": "identity"}   # Keras' name for no activation


def check_activation(where: str, name: str, value, *, optional: bool = False):
  """``value`` as an elementwise function: a callable as it is, a name from
  ``ACTIVATIONS`` as that `jax.nn` function (Keras' ``"linear"`` as
  ``"identity"``), None when ``optional`` (the caller reads None as the
  identity); raises at construction otherwise.

  >>> check_activation("jaxrnn.simple_rnn", "activation", "relu") is jax.nn.relu
  True
  """
  if callable(value) or (value is None and optional):
    return value
  if isinstance(value, str) and ALIASES.get(value, value) in ACTIVATIONS:
    return getattr(jax.nn, ALIASES.get(value, value))
  expected = (f"a function, {'None, ' if optional else ''}or one of {', '.join(ACTIVATIONS)} "
              f"(Keras' 'linear' is 'identity')")
  none = "" if optional else f", or {name}='identity' (Keras' 'linear') for none"
  raise (ValueError if isinstance(value, str) else TypeError)(
      f"{where}: {name}={value!r}; expected {expected}. Fix: pass "
      f"{name}=jax.nn.relu or {name}='relu', for example{none}.")


def token_ids_fix(dtype) -> str:
  """The end of an input-size error's fix where xs holds integers, else ""."""
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
    return ""
  return ("; xs holds integers: token ids (a batch of them [B, T] reads as one "
          "sequence) go in as vectors, jax.nn.one_hot(ids, V) or an embedding's "
          "rows, params['embed'][ids]")


def check_input_size(name: str, xs: Array, input_size: int) -> None:
  """Raises at trace time when xs is not ``[T, input_size]``."""
  xs_shape = jnp.shape(xs)
  if len(xs_shape) != 2 or xs_shape[-1] != input_size:
    ids = token_ids_fix(jnp.result_type(xs))
    raise ValueError(
        f"jaxrnn.{name}: xs has shape {tuple(xs_shape)}; these params were "
        f"initialised for input size {input_size}, so xs must be "
        f"[T, {input_size}]. Fix: pass inputs with {input_size} features, or "
        f"re-run init(key, input_size={xs_shape[-1] if xs_shape else '?'}){ids}.")


def split_gates(z: Array, names: tuple[str, ...]) -> dict[str, Array]:
  """Splits fused pre-activations ``[len(names) * H]`` into named ``[H]`` parts."""
  return dict(zip(names, jnp.split(z, len(names), axis=-1)))


def stacked_init(init, key: Array, shape: tuple[int, int], n: int, dtype):
  """``n`` independent ``shape`` blocks from ``init``, concatenated on the last axis.

  Used for fused gate weights so that each gate's block is, for example,
  orthogonal on its own (as in Flax and cuDNN-compatible layouts).
  """
  keys = jax.random.split(key, n)
  return jnp.concatenate([in_dtype(init, k, shape, dtype) for k in keys], axis=-1)


def in_dtype(init, key: Array, shape: tuple[int, ...], dtype):
  """``init(key, shape, dtype)``, drawn in float32 (or wider), then cast.

  Some initialisers cannot run in bfloat16: the orthogonal one needs a QR
  decomposition, which has no bfloat16 kernel. Drawing in float32 and
  rounding once also makes bfloat16 params the rounded float32 ones.
  """
  return init(key, shape, carry_dtype(dtype)).astype(dtype)

