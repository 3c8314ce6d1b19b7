"""An independent NumPy reference for every built-in cell and for `jaxrnn.scan`.

Lives here: one oracle per cell family (`simple_rnn`, `lstm`, `gru`), written
gate by gate from the papers' equations as the cells' docstrings give them,
and `scan`, the driver's reference Python loop. Not here: the tests that hold
the library to it (`test_cells.py`, `test_grads.py`).

Nothing here imports jaxrnn's step code: params are read only through their
documented layout (fused gate blocks in the order ``i, f, g, o`` for the
LSTM with removed gates having no block, ``r, z, n`` for the GRU), every gate
is sliced out into its own matrix and written out on its own line, and all
arithmetic is float64 NumPy.

An oracle is an `Oracle` of two functions over NumPy arrays:
``initial_carry(params) -> carry`` and ``step(params, carry, x_t) ->
(carry, y_t)``, with the raw input ``x_t`` (no hoisted projection) and the
carry a dict of arrays (``h``; the LSTM adds ``c`` and, with FGR, ``gates``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np


class Oracle(NamedTuple):
  initial_carry: Callable
  step: Callable


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def relu(z):
  return np.maximum(z, 0.0)


def hard_sigmoid(z):   # jax.nn.hard_sigmoid: relu6(z + 3) / 6
  return np.clip((z + 3.0) / 6.0, 0.0, 1.0)


ACTIVATIONS = {"tanh": np.tanh, "relu": relu, "sigmoid": sigmoid,
               "hard_sigmoid": hard_sigmoid, None: lambda z: z}


def as_numpy(params) -> dict:
  """A params NamedTuple (or dict) as a dict of float64 arrays; None stays None."""
  fields = params._asdict() if hasattr(params, "_asdict") else dict(params)
  return {k: None if v is None else np.asarray(v, np.float64)
          for k, v in fields.items()}


def block(w, k: int, width: int):
  """The k-th ``width``-wide block of the last axis of a fused matrix."""
  return w[..., k * width:(k + 1) * width]


# ----------------------------------------------------------------------------
# Elman RNN:  h_t = phi(x W_x + h W_h + b)


def bias(p: dict, use_bias: bool, name: str = "b"):
  """The bias ``p[name]``, or 0 for a cell built with ``use_bias=False`` (whose
  params must have None there)."""
  assert (p[name] is None) != use_bias, f"params.{name} vs use_bias={use_bias}"
  return p[name] if use_bias else 0.0


def simple_rnn(activation: Optional[str] = "tanh", use_bias=True) -> Oracle:
  phi = ACTIVATIONS[activation]

  def initial_carry(params):
    p = as_numpy(params)
    return dict(h=np.zeros(p["w_h"].shape[0]))

  def step(params, carry, x):
    p = as_numpy(params)
    h = phi(x @ p["w_x"] + carry["h"] @ p["w_h"] + bias(p, use_bias))
    return dict(h=h), h

  return Oracle(initial_carry, step)


# ----------------------------------------------------------------------------
# LSTM (Gers et al. 2000) with Greff et al.'s switches and Sak et al.'s LSTMP.


def lstm(*, peephole=False, input_gate=True, forget_gate=True, output_gate=True,
         input_activation: Optional[str] = "tanh",
         output_activation: Optional[str] = "tanh",
         coupled_input_forget=False, full_gate_recurrence=False,
         proj_size=None, use_bias=True, gate_activation="sigmoid") -> Oracle:
  """The LSTM step, gate by gate.

  i = sigmoid(x W_i + h R_i + p_i * c_prev + b_i)   (NIG: 1, CIFG: 1 - f)
  f = sigmoid(x W_f + h R_f + p_f * c_prev + b_f)   (NFG: 1)
  g = act_in(x W_g + h R_g + b_g)
  c = f * c_prev + i * g
  o = sigmoid(x W_o + h R_o + p_o * c + b_o)        (NOG: 1)
  h = o * act_out(c), then h @ W_proj for LSTMP
  FGR: each sigmoid gate's pre-activation gains gates_prev @ R_gates[:, its block].
  """
  act_in = ACTIVATIONS[input_activation]
  act_out = ACTIVATIONS[output_activation]
  sigma = ACTIVATIONS[gate_activation]     # the gates' squashing, sigmoid by default
  has_i = input_gate and not coupled_input_forget
  # The documented fused layout: present gates in the order i, f, g, o.
  order = [name for name, present in [("i", has_i), ("f", forget_gate),
                                      ("g", True), ("o", output_gate)] if present]
  # The gates with their own sigmoid weights, whose activations FGR feeds back.
  fed_back = [name for name in order if name != "g"]

  def sizes(p):
    H = p["w_x"].shape[1] // len(order)
    P = p["w_h"].shape[0]
    return H, P

  def initial_carry(params):
    p = as_numpy(params)
    H, P = sizes(p)
    carry = dict(h=np.zeros(P), c=np.zeros(H))
    if full_gate_recurrence:
      carry["gates"] = np.zeros(len(fed_back) * H)
    return carry

  def step(params, carry, x):
    p = as_numpy(params)
    H, P = sizes(p)
    assert (p["w_proj"] is not None) == (proj_size is not None)
    W = {name: block(p["w_x"], k, H) for k, name in enumerate(order)}
    R = {name: block(p["w_h"], k, H) for k, name in enumerate(order)}
    b_all = bias(p, use_bias)
    b = {name: block(b_all, k, H) if use_bias else 0.0 for k, name in enumerate(order)}
    h_prev, c_prev = carry["h"], carry["c"]

    def fgr(name):   # the gate-to-gate recurrence term, 0 without FGR
      if not full_gate_recurrence:
        return 0.0
      R_gates = block(p["w_gates"], fed_back.index(name), H)   # [S, H]
      return carry["gates"] @ R_gates

    def peep(name, c):   # the peephole term, 0 without peepholes
      return p["p_" + name] * c if peephole else 0.0

    if forget_gate:
      f = sigma(x @ W["f"] + h_prev @ R["f"] + peep("f", c_prev) + fgr("f") + b["f"])
    else:
      f = np.ones(H)
    if has_i:
      i = sigma(x @ W["i"] + h_prev @ R["i"] + peep("i", c_prev) + fgr("i") + b["i"])
    elif coupled_input_forget:
      i = 1.0 - f
    else:
      i = np.ones(H)
    g = act_in(x @ W["g"] + h_prev @ R["g"] + b["g"])
    c = f * c_prev + i * g
    if output_gate:
      o = sigma(x @ W["o"] + h_prev @ R["o"] + peep("o", c) + fgr("o") + b["o"])
    else:
      o = np.ones(H)
    h = o * act_out(c)
    if proj_size is not None:
      h = h @ p["w_proj"]
    new = dict(h=h, c=c)
    if full_gate_recurrence:
      new["gates"] = np.concatenate([dict(i=i, f=f, o=o)[name] for name in fed_back])
    return new, h

  return Oracle(initial_carry, step)


# ----------------------------------------------------------------------------
# GRU (Cho et al. 2014), fused blocks r, z, n.


def gru(*, reset_after=True, use_bias=True, activation="tanh",
        gate_activation="sigmoid") -> Oracle:
  """The GRU step, gate by gate.

  r = sigmoid(x W_r + h U_r + b_r)
  z = sigmoid(x W_z + h U_z + b_z)
  n = tanh(x W_n + b_n + r * (h U_n + b_hn))      reset_after=True
  n = tanh(x W_n + (r * h) U_n + b_n)             reset_after=False
  h = (1 - z) * n + z * h
  """

  def initial_carry(params):
    p = as_numpy(params)
    return dict(h=np.zeros(p["w_h"].shape[0]))

  def step(params, carry, x):
    p = as_numpy(params)
    H = p["w_h"].shape[0]
    W_r, W_z, W_n = (block(p["w_x"], k, H) for k in range(3))
    U_r, U_z, U_n = (block(p["w_h"], k, H) for k in range(3))
    b_all = bias(p, use_bias)
    b_r, b_z, b_n = (block(b_all, k, H) if use_bias else 0.0 for k in range(3))
    h = carry["h"]
    sigma, phi = ACTIVATIONS[gate_activation], ACTIVATIONS[activation]
    r = sigma(x @ W_r + h @ U_r + b_r)
    z = sigma(x @ W_z + h @ U_z + b_z)
    if reset_after:
      n = phi(x @ W_n + b_n + r * (h @ U_n + bias(p, use_bias, "b_hn")))
    else:
      assert p["b_hn"] is None
      n = phi(x @ W_n + (r * h) @ U_n + b_n)
    h = (1.0 - z) * n + z * h
    return dict(h=h), h

  return Oracle(initial_carry, step)


# ----------------------------------------------------------------------------
# The driver: jaxrnn.scan's reference loop.


def scan(oracle: Oracle, params, xs, *, carry=None, mask=None, resets=None,
         reverse=False):
  """`jaxrnn.scan`'s semantics as a plain loop: ``(carry, ys [T, O])``.

  A masked step is a no-op (its reset included) with ``y_t = 0``; a reset
  restores the initial carry before its step; ``reverse`` runs t = T-1 .. 0
  and keeps ``ys`` in input order.
  """
  xs = np.asarray(xs, np.float64)
  init = oracle.initial_carry(params)
  carry = init if carry is None else {k: np.asarray(v, np.float64)
                                      for k, v in carry.items()}
  T = xs.shape[0]
  ys = [None] * T
  for t in (reversed(range(T)) if reverse else range(T)):
    if mask is not None and not mask[t]:
      continue
    if resets is not None and resets[t]:
      carry = init
    carry, ys[t] = oracle.step(params, carry, xs[t])
  size = init["h"].shape[0]   # every built-in cell outputs its h
  ys = np.stack([np.zeros(size) if y is None else y for y in ys])
  return carry, ys


# ----------------------------------------------------------------------------
# The variants the tests cover: name -> (family, settings). Settings are the
# keyword arguments of both the oracle and the jaxrnn constructor, with
# activations named by strings ("tanh", "relu", None).

ORACLES = {"simple_rnn": simple_rnn, "lstm": lstm, "gru": gru}

VARIANTS = {
    "rnn_tanh": ("simple_rnn", dict(activation="tanh")),
    "rnn_relu": ("simple_rnn", dict(activation="relu")),
    "lstm": ("lstm", dict()),
    "peephole": ("lstm", dict(peephole=True)),
    "nig": ("lstm", dict(input_gate=False)),
    "nfg": ("lstm", dict(forget_gate=False)),
    "nog": ("lstm", dict(output_gate=False)),
    "niaf": ("lstm", dict(input_activation=None)),
    "noaf": ("lstm", dict(output_activation=None)),
    "cifg": ("lstm", dict(coupled_input_forget=True)),
    "fgr": ("lstm", dict(full_gate_recurrence=True)),
    "lstmp": ("lstm", dict(proj_size=2)),
    "peephole_cifg_fgr": ("lstm", dict(peephole=True, coupled_input_forget=True,
                                       full_gate_recurrence=True)),
    "peephole_proj": ("lstm", dict(peephole=True, proj_size=2)),
    "peephole_nfg_nog": ("lstm", dict(peephole=True, forget_gate=False,
                                      output_gate=False)),
    "nig_fgr_proj_noaf": ("lstm", dict(input_gate=False, full_gate_recurrence=True,
                                       proj_size=2, output_activation=None)),
    "gru": ("gru", dict(reset_after=True)),
    "gru_reset_before": ("gru", dict(reset_after=False)),
    # use_bias=False: PyTorch's bias=False, Keras' use_bias=False.
    "rnn_nobias": ("simple_rnn", dict(activation="tanh", use_bias=False)),
    "lstm_nobias": ("lstm", dict(use_bias=False)),
    "peephole_cifg_nobias": ("lstm", dict(peephole=True, coupled_input_forget=True,
                                          use_bias=False)),
    "gru_nobias": ("gru", dict(use_bias=False)),
    # Other squashing functions: Keras' recurrent_activation, Flax's gate_fn.
    "lstm_hard_gates": ("lstm", dict(gate_activation="hard_sigmoid")),
    "peephole_hard_gates": ("lstm", dict(peephole=True, gate_activation="hard_sigmoid")),
    "gru_relu_hard_gates": ("gru", dict(activation="relu", gate_activation="hard_sigmoid")),
    "gru_reset_before_relu": ("gru", dict(reset_after=False, activation="relu")),
}


def oracle(name: str) -> Oracle:
  family, settings = VARIANTS[name]
  return ORACLES[family](**settings)


def library_cell(name: str, hidden_size: int, **kwargs):
  """The jaxrnn cell of variant ``name`` (the only place jax is touched here)."""
  import jax
  import jax.numpy as jnp
  import jaxrnn
  functions = {"tanh": jnp.tanh, "relu": jax.nn.relu, None: None}
  family, settings = VARIANTS[name]
  settings = dict(settings)
  if family == "simple_rnn":
    activation = functions[settings.pop("activation")]
    return jaxrnn.simple_rnn(hidden_size, activation, **settings, **kwargs)
  if family == "lstm":
    for key in ("input_activation", "output_activation"):
      if key in settings:
        settings[key] = functions[settings[key]]
    return jaxrnn.lstm(hidden_size, **settings, **kwargs)
  return jaxrnn.gru(hidden_size, **settings, **kwargs)
