"""The LSTM family: one constructor whose switches give every variant.

Lives here: `lstm` (Gers et al. 2000 with the variants of Greff et al. 2015
and the projection of Sak et al. 2014), the named constructors
`peephole_lstm` (Greff's "vanilla"), `cifg_lstm`, and `LSTMParams`, `LSTMCarry`.
Not here: drivers (`_scan.py`), the GRU (`gru.py`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._cell import (Cell, carry_dtype, check_activation, check_size, in_dtype,
                          matmul, project_input, split_gates, stacked_init,
                          check_bool, check_compute_dtype, exportable, with_compute_dtype)
from jaxrnn._cells.lstm_batched import lstm_batch_kernel
from jaxrnn._cells.lstm_cudnn import lstm_cudnn_kernel
from jaxrnn._fused import fused_cell
from jaxrnn._trace import record

Initializer = Callable
Activation = Optional[Callable[[jax.Array], jax.Array]]


@exportable
class LSTMParams(NamedTuple):
  """LSTM parameters; G = number of gates present times H.

  Gate blocks in the fused weights follow the order ``i, f, g, o``; a gate a
  variant removes has no block (NIG and CIFG have no ``i``, NFG no ``f``,
  NOG no ``o``). Optional fields are None when their switch is off.
  """
  w_x: jax.Array                       # [I, G]    input weights W
  w_h: jax.Array                       # [P, G]    recurrent weights R (P = proj_size or H)
  b: Optional[jax.Array]               # [G]       bias (PyTorch's b_ih + b_hh); None: use_bias=False
  p_i: Optional[jax.Array] = None      # [H]       peephole c_{t-1} -> i
  p_f: Optional[jax.Array] = None      # [H]       peephole c_{t-1} -> f
  p_o: Optional[jax.Array] = None      # [H]       peephole c_t -> o
  w_gates: Optional[jax.Array] = None  # [S, S]    FGR: previous gates -> gates (S = sigmoid gates x H)
  w_proj: Optional[jax.Array] = None   # [H, P]    LSTMP projection of h


@exportable
class LSTMCarry(NamedTuple):
  h: jax.Array                         # [P]  hidden state (the output y_{t-1})
  c: jax.Array                         # [H]  cell state, the "conveyor belt"
  gates: Optional[jax.Array] = None    # [S]  FGR only: previous i, f, o activations


def lstm(
    hidden_size: int,
    *,
    peephole: bool = False,
    input_gate: bool = True,
    forget_gate: bool = True,
    output_gate: bool = True,
    input_activation: Activation = jnp.tanh,
    output_activation: Activation = jnp.tanh,
    gate_activation: Activation = jax.nn.sigmoid,
    coupled_input_forget: bool = False,
    full_gate_recurrence: bool = False,
    proj_size: Optional[int] = None,
    forget_bias: Optional[float] = None,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    peephole_init: Initializer = jax.nn.initializers.zeros,
    use_bias: bool = True,
    param_dtype=jnp.float32,
    dtype=None,
    use_cudnn: Union[bool, Literal["auto"]] = False,
) -> Cell:
  r"""Long short-term memory with a forget gate, and all of its variants.

  The default is the LSTM of Gers, Schmidhuber & Cummins (2000), the one in
  Colah's post and in PyTorch, Flax and Keras. With ``x = x_t``,
  ``h = h_{t-1}``, ``c = c_{t-1}``:

  .. math::

    i_t &= \sigma(x W_i + h R_i + p_i \odot c + b_i)      && \text{input gate} \\
    f_t &= \sigma(x W_f + h R_f + p_f \odot c + b_f)      && \text{forget gate} \\
    g_t &= \mathrm{act_{in}}(x W_g + h R_g + b_g)         && \text{candidate } \tilde C_t \\
    c_t &= f_t \odot c + i_t \odot g_t                    && \text{the conveyor belt} \\
    o_t &= \sigma(x W_o + h R_o + p_o \odot c_t + b_o)    && \text{output gate} \\
    h_t &= o_t \odot \mathrm{act_{out}}(c_t)              \quad (\text{LSTMP: } h_t \leftarrow h_t W_{proj})

  The peephole terms ``p`` are zero unless ``peephole=True`` (Gers &
  Schmidhuber 2000: i and f look at c_{t-1}, o looks at c_t). Vectors are
  rows times the weights as stored (``x @ w_x``; PyTorch stores the
  transposes). Colah's ``W_f [h_{t-1}, x_t] + b_f`` is ``h R_f + x W_f +
  b_f`` with the f blocks ``R_f = w_h[:, H:2H]``, ``W_f = w_x[:, H:2H]``,
  ``b_f = b[H:2H]`` (i, f, g, o: blocks 0 to 3), so his ``W_f`` is
  ``concat([w_h[:, H:2H], w_x[:, H:2H]]).T``. His peephole figure gives each
  gate a full matrix over ``[C, h, x]``; Gers & Schmidhuber's peepholes,
  and these, are diagonal: ``p ⊙ c``, one weight per cell.

  The switches name the variants of Greff et al. (2015), "LSTM: A Search
  Space Odyssey", whose "vanilla" LSTM is ``peephole=True``:

  ============  ===========================================  ==========================
  Greff         switch                                       effect
  ============  ===========================================  ==========================
  NIG           ``input_gate=False``                         i_t = 1
  NFG           ``forget_gate=False``                        f_t = 1 (Hochreiter 1997)
  NOG           ``output_gate=False``                        o_t = 1
  NIAF          ``input_activation=None``                    g_t = x W_g + h R_g + b_g
  NOAF          ``output_activation=None``                   h_t = o_t * c_t
  NP            ``peephole=False``                           no p terms
  CIFG          ``coupled_input_forget=True``                i_t = 1 - f_t
  FGR           ``full_gate_recurrence=True``                gates also see i, f, o at t-1
  ============  ===========================================  ==========================

  With FGR the pre-activation of every sigmoid gate gains
  ``R_gates [i_{t-1}, f_{t-1}, o_{t-1}]`` (Greff's eq. with the nine
  gate-to-gate matrices fused into ``w_gates``), and the carry holds the
  previous gate activations. ``proj_size=P`` is the LSTMP of Sak et al.
  (2014), PyTorch's ``proj_size``: h and the output shrink to P while c
  stays H.

  Layout: fused weights hold the present gates in the order ``i, f, g, o``
  (each block H wide); carry ``LSTMCarry(h [P], c [H])`` in float32 or wider
  whatever the param dtype. ``project(params, xs [T, I]) -> [T, G]``.

  The standard form (no switch changed, no ``proj_size``) also brings a
  batched kernel (``Cell.batched``) that `jaxrnn.scan_batch` runs: jaxrnn's
  hand-written XLA kernel (also run with ``peephole=True`` alone, the
  peephole terms added: 0.70-0.87x the generic kernel's training time at
  B = 1, 32 and 128), or with ``use_cudnn`` cuDNN's LSTM on a CUDA GPU (through
  `jax.experimental.rnn`; float32, no mask, first-order gradients).
  ``use_cudnn="auto"`` runs cuDNN where it can and the XLA kernel
  elsewhere (on a CPU, for example); ``True`` raises at trace time where
  cuDNN cannot run. The default is
  False: on an H200 JAX's cuDNN binding trained 1.5-2.6x slower than the
  XLA kernel (see `jaxrnn._cells.lstm_cudnn`).

  Initialisation: ``w_x`` LeCun normal, ``w_h`` orthogonal per gate block,
  biases zero except the forget gate's, which gets ``+forget_bias`` (1.0,
  Jozefowicz et al. 2015), peepholes zero; all overridable.

  Args:
    hidden_size: H, the size of the cell state.
    peephole, input_gate, forget_gate, output_gate, input_activation,
      output_activation, coupled_input_forget, full_gate_recurrence: the
      variant switches above.
    gate_activation: :math:`\sigma` of the gates i, f, o, a function or a
      `jax.nn` name (Keras' ``recurrent_activation``, Flax's ``gate_fn``).
      ``"hard_sigmoid"`` is `jax.nn.hard_sigmoid`, ``relu6(z + 3) / 6`` as
      in Keras 3; Keras 2's default was ``clip(0.2 z + 0.5, 0, 1)``: pass
      that as a function. Any other than the sigmoid runs on the generic
      batched kernel, not the standard LSTM's.
    proj_size: P for LSTMP, or None.
    forget_bias: added to the forget gate's initial bias; None means 1.0.
      Without a forget gate there is none to add to: giving it raises.
    kernel_init, recurrent_init, bias_init, peephole_init: initialisers.
    use_bias: False drops the biases :math:`b` (params ``b=None``), as
      PyTorch's ``bias=False`` and Keras' ``use_bias=False``; then there is
      no forget bias either (giving ``forget_bias`` raises), and
      ``bias_init`` is unused.
    param_dtype: dtype of the params made by ``init``.
    dtype: dtype of the computation (Flax's ``dtype``): the params are cast
      to it on the way in, the carry stays float32 or wider; None computes
      in ``param_dtype``. cuDNN computes in float32 only: with another
      dtype, ``use_cudnn=True`` raises and ``"auto"`` runs jaxrnn's kernel.
    use_cudnn: False, "auto" or True: whether `jaxrnn.scan_batch` runs the
      standard LSTM through cuDNN (above).

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(16)
  >>> params = cell.init(jax.random.key(0), 8)
  >>> params.w_x.shape, params.w_h.shape     # gates i, f, g, o fused
  ((8, 64), (16, 64))
  >>> carry, ys = jaxrnn.scan(cell, params, jnp.ones((20, 8)))
  >>> carry.c.shape, ys.shape
  ((16,), (20, 16))
  """
  if coupled_input_forget and not (forget_gate and input_gate):
    raise ValueError(
        "jaxrnn.lstm: coupled_input_forget=True derives the input gate from "
        "the forget gate (i = 1 - f), so it needs input_gate=True and "
        f"forget_gate=True; got input_gate={input_gate}, forget_gate="
        f"{forget_gate}. Fix: drop one of the switches.")
  if not (isinstance(use_cudnn, bool) or (isinstance(use_cudnn, str) and use_cudnn == "auto")):
    raise ValueError(f"jaxrnn.lstm: use_cudnn must be False, True or 'auto'; "
                     f"got {use_cudnn!r}.")
  if forget_bias is not None and not forget_gate:
    raise ValueError(
        f"jaxrnn.lstm: forget_bias={forget_bias} is added to the forget "
        f"gate's bias, but forget_gate=False leaves no forget gate (f = 1). "
        f"Fix: drop forget_bias, or keep the forget gate.")
  if dtype is not None and use_cudnn is True and check_compute_dtype(
      "jaxrnn.lstm", dtype) != jnp.float32:
    raise ValueError(
        f"jaxrnn.lstm: use_cudnn=True runs JAX's cuDNN LSTM, which computes in "
        f"float32 only, and dtype={dtype!r} asks for another. Fix: drop dtype "
        f"(or use_cudnn=\"auto\", which runs jaxrnn's kernel in that dtype).")
  if not check_bool("jaxrnn.lstm", "use_bias", use_bias) and forget_bias is not None:
    raise ValueError(
        f"jaxrnn.lstm: forget_bias={forget_bias} is added to the forget "
        f"gate's bias, but use_bias=False leaves the cell without biases. "
        f"Fix: drop forget_bias, or keep the biases.")
  forget_bias = 1.0 if forget_bias is None else forget_bias
  input_activation = check_activation("jaxrnn.lstm", "input_activation",
                                      input_activation, optional=True)
  output_activation = check_activation("jaxrnn.lstm", "output_activation",
                                       output_activation, optional=True)
  gate_fn = check_activation("jaxrnn.lstm", "gate_activation", gate_activation)
  hidden_size = check_size("jaxrnn.lstm", "hidden_size", hidden_size)
  if proj_size is not None:
    proj_size = check_size("jaxrnn.lstm", "proj_size", proj_size, optional=True)

  # Gates with their own weights, in the fused order i, f, g, o.
  has_i = input_gate and not coupled_input_forget
  gates = tuple(name for name, present in
                (("i", has_i), ("f", forget_gate), ("g", True), ("o", output_gate))
                if present)
  sigmoid_gates = tuple(g for g in gates if g != "g")
  out_size = proj_size or hidden_size
  identity = lambda z: z
  act_in = input_activation or identity
  act_out = output_activation or identity
  H = hidden_size

  def init(key, input_size):
    kx, kh, kb, kp, kg, kproj = jax.random.split(key, 6)
    n = len(gates)
    b = bias_init(kb, (n * H,), param_dtype) if use_bias else None
    if forget_gate and use_bias:
      f = gates.index("f")
      b = b.at[f * H:(f + 1) * H].add(jnp.asarray(forget_bias, param_dtype))
    peep_keys = jax.random.split(kp, 3)
    peep = lambda k, on: peephole_init(k, (H,), param_dtype) if (peephole and on) else None
    S = len(sigmoid_gates) * H
    return LSTMParams(
        w_x=kernel_init(kx, (input_size, n * H), param_dtype),
        w_h=stacked_init(recurrent_init, kh, (out_size, H), n, param_dtype),
        b=b,
        p_i=peep(peep_keys[0], has_i),
        p_f=peep(peep_keys[1], forget_gate),
        p_o=peep(peep_keys[2], output_gate),
        w_gates=(in_dtype(recurrent_init, kg, (S, S), param_dtype)
                 if full_gate_recurrence and S else None),
        w_proj=(kernel_init(kproj, (H, proj_size), param_dtype)
                if proj_size is not None else None))

  def initial_carry(params):
    dtype = carry_dtype(params.w_h.dtype)
    prev_gates = (jnp.zeros((len(sigmoid_gates) * H,), dtype)
                  if params.w_gates is not None else None)
    return LSTMCarry(h=jnp.zeros((out_size,), dtype),
                     c=jnp.zeros((H,), dtype), gates=prev_gates)

  def project(params, xs):
    return project_input("lstm", xs, params.w_x, params.b)

  def finish(params, carry, gx, u):   # u = carry.h @ w_h
    z = gx + u
    if params.w_gates is not None:
      recur = split_gates(matmul(carry.gates, params.w_gates), sigmoid_gates)
      z = jnp.concatenate([v + recur.get(k, 0.0)
                           for k, v in split_gates(z, gates).items()], axis=-1)
    pre = split_gates(z, gates)
    # Without peepholes, one sigmoid over all the gate blocks (the g block's
    # is wasted): XLA on CPU runs one wide op far faster than three narrow
    # ones (LSTM forward 1.2x at batch 1 and 32, 2 cores). Its VJP pads
    # the blocks' cotangents to 4H twice; the g block's tanh folded into the
    # same sigmoid (tanh z = 2 sigmoid(2z) - 1, one op, no padding) measured
    # 0.96-1.14x the training time (CIFG and projected LSTMs, B = 32, both
    # kernels, two runs): dropped.
    wide = None if peephole else split_gates(gate_fn(z), gates)

    def gate(name, p, c):
      return wide[name] if wide is not None else gate_fn(peep(pre[name], p, c))

    c_prev = carry.c
    f = gate("f", params.p_f, c_prev) if forget_gate else 1.0
    if has_i:
      i = gate("i", params.p_i, c_prev)
    else:
      i = 1.0 - f if coupled_input_forget else 1.0
    g = act_in(pre["g"])
    c = f * c_prev + i * g
    o = gate("o", params.p_o, c) if output_gate else 1.0
    h = o * act_out(c)
    if params.w_proj is not None:
      h = matmul(h, params.w_proj)
    for name, value in dict(i=i, f=f, g=g, o=o, c=c, h=h).items():
      if not isinstance(value, float):   # a removed gate is the constant 1
        record(name, value)
    new_gates = None
    if params.w_gates is not None:
      new_gates = jnp.concatenate(
          [dict(i=i, f=f, o=o)[k] for k in sigmoid_gates], axis=-1)
    return LSTMCarry(h=h, c=c, gates=new_gates), h

  # Read ahead, the peephole LSTM's forward took 0.55-0.99x its time, the
  # others' 0.95-1.43x (see fused_cell).
  cell = fused_cell(init=init, initial_carry=initial_carry, project=project,
                    recurrent_input=lambda carry: carry.h, finish=finish,
                    output_size=out_size, additive=True,   # z = gx + u
                    verify_additive=False,        # tested against its equations
                    read_ahead=peephole)
  # The hand-written kernel runs the standard LSTM, with or without peepholes.
  hand_written = (input_gate and forget_gate and output_gate
                  and input_activation is jnp.tanh and output_activation is jnp.tanh
                  and gate_fn is jax.nn.sigmoid and not coupled_input_forget
                  and not full_gate_recurrence and proj_size is None)
  standard = hand_written and not peephole
  if use_cudnn is True and not standard:
    raise ValueError(
        "jaxrnn.lstm: use_cudnn runs cuDNN's LSTM, which is the standard one "
        "(no peepholes, all three gates, tanh activations, sigmoid gates, no "
        "coupling, no full_gate_recurrence, no proj_size); this cell changes a "
        "switch. "
        "Fix: drop use_cudnn; the variant runs on jaxrnn's own kernels.")
  # The standard form also runs as one batched kernel (jaxrnn.scan_batch).
  if standard and use_cudnn:   # "auto" on a variant: jaxrnn's kernels, as elsewhere
    cell = cell._replace(batched=partial(lstm_cudnn_kernel, required=use_cudnn is True))
    cell.batched.takes_recurrent_mask = True
  elif standard:
    cell = cell._replace(batched=lstm_batch_kernel)
  elif hand_written:     # peepholes: see the docstring
    cell = cell._replace(batched=partial(lstm_batch_kernel, peephole=True))
    cell.batched.takes_recurrent_mask = True
  return with_compute_dtype(cell, dtype, "jaxrnn.lstm")


def peep(pre: jax.Array, p: Optional[jax.Array], c: jax.Array) -> jax.Array:
  """A gate's pre-activation plus its peephole term ``p * c`` when present."""
  return pre if p is None else pre + p * c


def peephole_lstm(hidden_size: int, **kwargs) -> Cell:
  """The LSTM with peephole connections (Gers & Schmidhuber 2000).

  Colah's first variant: "we let the gate layers look at the cell state",
  and the "vanilla" LSTM of Greff et al. (2015). Same as ``lstm(hidden_size, peephole=True, **kwargs)``.

  >>> import jax, jaxrnn
  >>> params = jaxrnn.peephole_lstm(4).init(jax.random.key(0), 2)
  >>> params.p_i.shape, params.p_f.shape, params.p_o.shape
  ((4,), (4,), (4,))
  """
  return lstm(hidden_size, peephole=True, **kwargs)


def cifg_lstm(hidden_size: int, **kwargs) -> Cell:
  """The coupled input and forget gate LSTM (CIFG): ``i_t = 1 - f_t``.

  Colah's second variant: "we only forget when we're going to input
  something in its place". Three gate blocks (f, g, o) instead of four.
  Same as ``lstm(hidden_size, coupled_input_forget=True, **kwargs)``.

  >>> import jax, jaxrnn
  >>> jaxrnn.cifg_lstm(4).init(jax.random.key(0), 2).w_x.shape
  (2, 12)
  """
  return lstm(hidden_size, coupled_input_forget=True, **kwargs)
