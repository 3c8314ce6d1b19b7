r"""Attention over a memory, and the attentional decoder cell built on it.

Lives here: `attention` (four score functions: additive, dot, scaled dot,
general), its `Attention`, `AttentionParams` and `Prepared`, and
`attention_decoder` with its `decoder_carry`. Not here: the encoder and the
training loop of a whole sequence-to-sequence model (`jaxrnn.seq2seq`).

Attention is the step beyond the fixed-size carry: instead of squeezing a
whole source sequence into one vector, every decoder step looks at all the
encoder states ``m_1 .. m_S`` and reads a weighted average of them:

.. math::

  e_s = \mathrm{score}(q, m_s), \qquad
  a = \mathrm{softmax}(e) \text{ over valid } s, \qquad
  c = \sum_s a_s m_s

Dimension legend: S memory length, D memory (value) size, Q query size,
A additive attention size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import Carry, Cell, Params, carry_dtype, exportable, matmul, project_one

Initializer = Callable
SCORES = ("additive", "dot", "scaled_dot", "general")


@exportable
class AttentionParams(NamedTuple):
  """Attention parameters; fields a score function does not use are None."""
  w_k: Optional[jax.Array] = None  # [D, A] additive key weights; [D, Q] general W^T
  w_q: Optional[jax.Array] = None  # [Q, A] additive query weights
  v: Optional[jax.Array] = None    # [A]    additive score vector


@exportable
class Prepared(NamedTuple):
  """A memory made ready for attention: done once per sequence, not per step."""
  keys: jax.Array    # [S, K]  what the query is scored against
  values: jax.Array  # [S, D]  what the context averages
  mask: jax.Array    # bool[S] True at valid memory positions


class Attention(NamedTuple):
  """Attention as pure functions.

  Fields:
    init: ``(key, query_size, memory_size) -> AttentionParams``.
    prepare: ``(params, memory [S, D], mask bool[S] or None) -> Prepared``,
      the key projection, computed once per memory.
    attend: ``(params, prepared, query [Q]) -> (context [D], weights [S])``.
    score: the score function's name.
  """
  init: Callable[[jax.Array, int, int], AttentionParams]
  prepare: Callable[[AttentionParams, jax.Array, Optional[jax.Array]], Prepared]
  attend: Callable[[AttentionParams, Prepared, jax.Array], tuple[jax.Array, jax.Array]]
  score: str


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """``softmax(scores)`` over the positions where ``mask`` is True; exact 0 elsewhere.

  Masked scores are replaced by the dtype's most negative finite number (not
  -inf: an all-masked row would then give ``-inf - -inf = NaN``); the final
  ``where`` makes their weights exactly zero, and an all-masked row all zero.

  >>> import jax.numpy as jnp
  >>> masked_softmax(jnp.array([1.0, 1.0, 5.0]), jnp.array([True, True, False])).tolist()
  [0.5, 0.5, 0.0]
  >>> masked_softmax(jnp.ones(2), jnp.zeros(2, bool)).tolist()
  [0.0, 0.0]
  """
  low = jnp.finfo(scores.dtype).min
  weights = jax.nn.softmax(jnp.where(mask, scores, low))
  return jnp.where(mask, weights, 0.0)


def attention(
    score: str = "additive",
    attention_size: Optional[int] = None,
    *,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    param_dtype=jnp.float32,
) -> Attention:
  r"""Attention over a memory ``m [S, D]`` with a query ``q [Q]``.

  Score functions, for one memory row ``m_s``:

  .. math::

    \text{additive (Bahdanau et al. 2014):}\quad
      & e_s = v^\top \tanh(W_k m_s + W_q q) \\
    \text{dot (Luong et al. 2015):}\quad & e_s = q \cdot m_s  \quad (Q = D) \\
    \text{scaled\_dot (Vaswani et al. 2017):}\quad
      & e_s = q \cdot m_s / \sqrt{D}  \quad (Q = D) \\
    \text{general (Luong et al. 2015):}\quad & e_s = q^\top W m_s

  then ``a = softmax(e)`` over the valid positions (masked ones get weight
  exactly 0) and the context is ``c = a @ m``. The part of each score that
  depends on the memory only (``W_k m`` for additive, ``W m`` for general) is
  computed once by ``prepare``, not at every decoder step. An all-masked
  memory gives all-zero weights and a zero context.

  Shapes: params ``AttentionParams(w_k [D, A] or [D, Q], w_q [Q, A], v [A])``
  (None where unused); ``prepare -> Prepared(keys [S, A|D|Q], values [S, D],
  mask bool[S])``; ``attend -> (context [D], weights [S])``. One example;
  batch with `jax.vmap`.

  Args:
    score: "additive", "dot", "scaled_dot" or "general".
    attention_size: A, for "additive" (default: the memory size D).
    kernel_init: initialiser of the weight matrices (and v).
    param_dtype: dtype of the params.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> att = jaxrnn.attention("additive", 8)
  >>> params = att.init(jax.random.key(0), 4, 6)      # query size 4, memory size 6
  >>> memory, mask = jnp.ones((5, 6)), jnp.arange(5) < 3
  >>> prepared = att.prepare(params, memory, mask)   # once per memory
  >>> context, weights = att.attend(params, prepared, jnp.ones(4))
  >>> context.shape, [round(w, 3) for w in weights.tolist()]
  ((6,), [0.333, 0.333, 0.333, 0.0, 0.0])
  """
  if score not in SCORES:
    raise ValueError(
        f"jaxrnn.attention: score is {score!r}; expected one of {SCORES}. "
        f"Fix: pass score='additive' (Bahdanau) or 'general' (Luong).")
  if attention_size is not None and score != "additive":
    raise ValueError(
        f"jaxrnn.attention: attention_size={attention_size} is given with "
        f"score={score!r}; only score='additive' has an attention size. Fix: "
        f"drop attention_size, or use score='additive'.")

  def init(key, query_size, memory_size):
    kk, kq, kv = jax.random.split(key, 3)
    if score == "additive":
      A = attention_size or memory_size
      return AttentionParams(
          w_k=kernel_init(kk, (memory_size, A), param_dtype),
          w_q=kernel_init(kq, (query_size, A), param_dtype),
          v=kernel_init(kv, (A, 1), param_dtype)[:, 0])
    if score == "general":
      return AttentionParams(w_k=kernel_init(kk, (memory_size, query_size), param_dtype))
    if query_size != memory_size:
      raise ValueError(
          f"jaxrnn.attention: score={score!r} needs query size == memory size; "
          f"got query size {query_size} and memory size {memory_size}. Fix: "
          f"use score='general' or 'additive', which project between the two.")
    return AttentionParams()

  def prepare(params, memory, mask=None):
    memory = jnp.asarray(memory)
    if memory.ndim != 2:
      raise ValueError(
          f"jaxrnn.attention: memory has shape {memory.shape}; expected one "
          f"memory [S, D]. Batch with jax.vmap.")
    S = memory.shape[0]
    mask = jnp.ones((S,), bool) if mask is None else jnp.asarray(mask)
    if mask.shape != (S,) or mask.dtype != jnp.bool_:
      raise ValueError(
          f"jaxrnn.attention: mask is {mask.dtype}{list(mask.shape)}; expected "
          f"bool[{S}], one flag per memory row. Fix: mask=jnp.arange({S}) < length.")
    # Padding rows are zeroed: weight 0 times a non-finite value would
    # still be NaN in the context and its gradient.
    memory = jnp.where(mask[:, None], memory, jnp.zeros((), memory.dtype))
    if score in ("additive", "general"):
      keys = matmul(memory, params.w_k)
    elif score == "scaled_dot":
      keys = memory / jnp.sqrt(jnp.asarray(memory.shape[-1], memory.dtype))
    else:
      keys = memory
    return Prepared(keys=keys, values=memory, mask=mask)

  def attend(params, prepared, query):
    if score == "additive":
      hidden = jnp.tanh(prepared.keys + matmul(query, params.w_q))
      scores = matmul(hidden, params.v)
    else:
      scores = prepared.keys @ query.astype(prepared.keys.dtype)
    weights = masked_softmax(scores, prepared.mask)
    return weights @ prepared.values, weights

  return Attention(init=init, prepare=prepare, attend=attend, score=score)


@exportable
class DecoderParams(NamedTuple):
  """Attentional decoder parameters."""
  cell: Params                   # the inner cell's params, input size I + D
  attention: AttentionParams     # query size H, memory size D
  w_c: jax.Array                 # [H + D, H] output layer on [h; context]
  b_c: jax.Array                 # [H]


@exportable
class DecoderCarry(NamedTuple):
  """Attentional decoder carry: the memory rides along, prepared once."""
  cell: Carry                    # the inner cell's carry
  context: jax.Array             # [D] the previous step's context (input feeding)
  memory: Prepared               # keys [S, K], values [S, D], mask bool[S]


def attention_decoder(cell: Cell, att: Attention, memory_length: int,
                      memory_size: int) -> Cell:
  r"""A `Cell` that attends over a memory at every step (Luong et al. 2015).

  With ``c_{t-1}`` the previous context (zeros at the start):

  .. math::

    h_t, s_t &= \mathrm{cell}(s_{t-1}, [x_t; c_{t-1}])     && \text{input feeding} \\
    c_t, a_t &= \mathrm{attend}(\mathrm{memory}, q = h_t)  \\
    \tilde h_t &= \tanh(W_c [h_t; c_t] + b_c)              && \text{attentional state} \\
    y_t &= (\tilde h_t, a_t)

  A variant of Luong et al.: they feed :math:`\tilde h_{t-1}`, a mix of
  :math:`h_{t-1}` and :math:`c_{t-1}` through :math:`W_c`; we feed the
  context :math:`c_{t-1}` itself, so the cell sees what was read last step
  directly. The query is the current state :math:`h_t` (Luong), not the
  previous one (Bahdanau).

  The memory is put in the carry by ``decoder_carry(params, memory, mask)``,
  which runs the key projection once, outside the time loop; pass it as
  ``jaxrnn.scan(dec, params, xs, carry=...)`` (without it, scan raises).
  ``initial_carry(params)`` is an all-masked zero memory (context stays
  zero), for shapes only; for the same reason ``resets`` in `jaxrnn.scan`
  would restart with an empty memory: a new memory is a new
  ``decoder_carry`` and a new scan. The step sees the raw input ``x_t`` (no
  hoisted ``project``: the cell's input depends on the previous context).

  Shapes: params ``DecoderParams(cell, attention, w_c [H+D, H], b_c [H])``;
  carry ``DecoderCarry(cell carry, context [D], Prepared)``; memory
  ``[memory_length, memory_size]``; ``y_t = (h~ [H], weights [S])``;
  ``output_size = H``.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> dec = jaxrnn.attention_decoder(jaxrnn.gru(8), jaxrnn.attention("general"), 5, 6)
  >>> params = dec.init(jax.random.key(0), 3)
  >>> carry = dec.decoder_carry(params, jnp.ones((5, 6)), jnp.arange(5) < 4)
  >>> carry, (ys, weights) = jaxrnn.scan(dec, params, jnp.ones((7, 3)), carry=carry)
  >>> ys.shape, weights.shape, bool(weights[:, 4].max() == 0)
  ((7, 8), (7, 5), True)
  """
  H, S, D = cell.output_size, memory_length, memory_size

  def init(key, input_size):
    kc, ka, kw = jax.random.split(key, 3)
    cell_params = cell.init(kc, input_size + D)
    att_params = att.init(ka, H, D)
    dtype = jax.tree.leaves(cell_params)[0].dtype
    w_c = jax.nn.initializers.lecun_normal()(kw, (H + D, H), dtype)
    return DecoderParams(cell=cell_params, attention=att_params, w_c=w_c,
                         b_c=jnp.zeros((H,), dtype))

  def decoder_carry(params, memory, mask=None, cell_carry=None):
    """The carry that starts decoding over ``memory [S, D]`` (mask bool[S])."""
    memory = jnp.asarray(memory)
    if memory.shape != (S, D):
      raise ValueError(memory_error(memory.shape, S, D))
    dtype = carry_dtype(params.w_c.dtype)
    inner = cell.initial_carry(params.cell) if cell_carry is None else cell_carry
    return DecoderCarry(cell=inner, context=jnp.zeros((D,), dtype),
                        memory=att.prepare(params.attention, memory.astype(dtype), mask))

  def initial_carry(params):
    dtype = carry_dtype(params.w_c.dtype)
    return decoder_carry(params, jnp.zeros((S, D), dtype), jnp.zeros((S,), bool))

  def step(params, carry, x):
    x_in = jnp.concatenate([x.astype(carry.context.dtype), carry.context])
    inner, h = cell.step(params.cell, carry.cell, project_one(cell, params.cell, x_in))
    context, weights = att.attend(params.attention, carry.memory, h)
    out = jnp.tanh(matmul(jnp.concatenate([h, context]), params.w_c)
                   + params.b_c.astype(context.dtype))
    return DecoderCarry(cell=inner, context=context, memory=carry.memory), (out, weights)

  dec = AttentionDecoder(init=init, initial_carry=initial_carry, step=step,
                         output_size=H)
  dec.decoder_carry = decoder_carry
  return dec


def memory_error(shape: tuple, S: int, D: int) -> str:
  """What is wrong with a memory of ``shape`` for a decoder built for ``[S, D]``, and the fix."""
  what = (f"jaxrnn.attention_decoder: memory has shape {shape}; this decoder "
          f"was built for memory [{S}, {D}] (memory_length, memory_size).")
  if len(shape) == 3 and shape[1:] == (S, D):
    fix = (f"decoder_carry takes one sequence's memory; for a batch of "
           f"{shape[0]}: jax.vmap(lambda m, k: dec.decoder_carry(params, m, k))"
           f"(memory, mask).")
  elif len(shape) != 2:
    fix = f"pass one sequence's memory, [{S}, {D}]."
  elif shape[1] != D:
    fix = (f"build the decoder with memory_size={shape[1]}, the encoder's "
           f"output size.")
  elif shape[0] < S:
    fix = (f"pad the memory to {S} rows and pass a mask, True at the "
           f"{shape[0]} real rows, or build the decoder with memory_length="
           f"{shape[0]}.")
  else:
    fix = f"build the decoder with memory_length={shape[0]} or more."
  return f"{what} Fix: {fix}"


class AttentionDecoder(Cell):
  """A `Cell` with one more attribute, ``decoder_carry(params, memory, mask)``.

  It is a `Cell` (``isinstance`` holds, so `jaxrnn.rnn` and `jaxrnn.scan`
  take it as one); ``decoder_carry`` is set on the instance by
  `attention_decoder`.
  """
