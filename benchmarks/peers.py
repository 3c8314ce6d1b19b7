"""The implementations that `benchmarks/speed.py` times, each holding jaxrnn's weights.

Lives here: the benchmark's cell kinds (`KINDS`: which jaxrnn cell each row
group runs), one builder per peer that turns jaxrnn params into that peer's
own model and params, and `PEERS`, the list the benchmark walks. Not here:
timing, checking and reporting (`speed.py`); the jaxrnn <-> torch and
jaxrnn <-> Flax converters, which live in `jaxrnn.interop`, and the cuDNN
weight vector, in `jaxrnn._cells.lstm_cudnn`, are called here (the Equinox
and Haiku mappings are local: no other code needs them).

Every builder takes ``(kind, params, dtype, shape)`` with jaxrnn params in
float32 NumPy, and returns one of

* `JaxProgram(apply, params)`: ``apply(params, xs [B, T, I]) -> ys [B, T, O]``,
  a pure function the benchmark jits, differentiates and lowers itself;
* `TorchProgram(kind, weights, shape, dtype, device)`: a ``batch_first``
  torch RNN described for `benchmarks.torch_worker`, which builds and runs
  it in torch's own process;

or raises `Absent` with the reason (not installed, no GPU, no such cell).

Weight layouts, with jaxrnn's fused ``w_x [I, G H]``, ``w_h [H, G H]``,
``b [G H]`` (LSTM blocks i, f, g, o; GRU r, z, n):

=====================  ===========================================================
peer                   mapping
=====================  ===========================================================
flax linen             one Dense per gate: ``ii.kernel = w_x[:, i]``,
                       ``hi.kernel = w_h[:, i]``, ``hi.bias = b[i]`` (LSTM);
                       GRU ``ir.bias = b[r]``, ``hn.bias = b_hn``
flax nnx               ``dense_i.kernel = w_x``, ``dense_h.kernel = w_h``;
                       LSTM ``dense_h.bias = b``, GRU/RNN ``dense_i.bias = b``
                       (nnx's GRU has no ``b_hn``: it must be zero)
equinox                ``weight_ih = w_x.T``, ``weight_hh = w_h.T``, ``bias = b``,
                       GRU ``bias_n = b_hn``
haiku LSTM             ``w = [w_x; w_h]``, blocks reordered to i, g, f, o; haiku
                       adds a hard-coded +1 to f, so ``b_f`` goes in minus 1
haiku GRU              Cho's form (``reset_after=False``), blocks z, r, n with
                       haiku's ``z`` = 1 - jaxrnn's: z rows negated
haiku VanillaRNN       ReLU: ``linear.w = w_x``, ``linear_1.w = w_h``
torch                  ``weight_ih_l0 = w_x.T``, ``bias_ih_l0 = b``,
                       ``bias_hh_l0 = 0`` except the GRU's n part = ``b_hn``
jax.experimental.rnn   cuDNN's flat vector ``[W_ih, W_hh, b_ih, b_hh]`` (torch
                       layout; `lstm_cudnn.cudnn_weights`), GPU only
=====================  ===========================================================
"""

from __future__ import annotations

import importlib.util
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn._cells import lstm_cudnn


class Kind(NamedTuple):
  """A row group: the jaxrnn cell every implementation in it must match."""
  name: str          # "lstm", "gru", ...
  gates: int         # G, the number of H-wide blocks in the fused weights
  make: Callable     # (hidden_size, param_dtype) -> jaxrnn Cell


KINDS = {
    "lstm": Kind("lstm", 4, lambda H, dt: jaxrnn.lstm(H, param_dtype=dt)),
    "gru": Kind("gru", 3, lambda H, dt: jaxrnn.gru(H, param_dtype=dt)),
    "rnn": Kind("rnn", 1, lambda H, dt: jaxrnn.simple_rnn(H, param_dtype=dt)),
    # Haiku's GRU is Cho's reset-before form and its VanillaRNN is ReLU, so
    # they get row groups of their own against the matching jaxrnn cell.
    "gru_reset_before": Kind("gru_reset_before", 3, lambda H, dt: jaxrnn.gru(
        H, reset_after=False, param_dtype=dt)),
    "rnn_relu": Kind("rnn_relu", 1, lambda H, dt: jaxrnn.simple_rnn(
        H, jax.nn.relu, param_dtype=dt)),
}


class JaxProgram(NamedTuple):
  apply: Callable    # (params, xs [B, T, I]) -> ys [B, T, O]
  params: Any        # a pytree of jax Arrays holding jaxrnn's weights


class TorchProgram(NamedTuple):
  kind: str          # "lstm", "gru" or "rnn": torch.nn.LSTM / GRU / RNN, batch_first=True
  weights: dict      # the torch state dict, NumPy arrays
  shape: tuple       # B, T, I, H
  dtype: str         # "f32" or "bf16"
  device: str        # "cpu" or "cuda"


class Absent(Exception):
  """Raised by a builder when its peer cannot run here; the message says why."""


class Peer(NamedTuple):
  name: str                  # the row's label
  kinds: tuple[str, ...]     # the row groups it appears in
  build: Callable            # (kind, params, dtype, shape) -> JaxProgram | TorchProgram
  package: Optional[str]     # the pip name; None for jaxrnn itself


def require(module: str, package: str) -> None:
  if importlib.util.find_spec(module) is None:
    raise Absent(f"not installed (pip install {package})")


def blocks(w: np.ndarray, n: int) -> list[np.ndarray]:
  """Splits fused gate blocks on the last axis."""
  return np.split(w, n, axis=-1)


def cast(tree, dtype):
  return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


# ---------------------------------------------------------------- jaxrnn

def build_jaxrnn(kind, params, dtype, shape, unroll=None, fused=True):
  cell = KINDS[kind].make(shape[3], dtype)
  cell = cell if fused else jaxrnn.unfused(cell)

  def apply(p, xs):
    return jax.vmap(lambda x: jaxrnn.scan(cell, p, x, unroll=unroll)[1])(xs)
  return JaxProgram(apply, cast(params, dtype))


def build_jaxrnn_batch(kind, params, dtype, shape, use_cudnn=False, unroll=None):
  cell = KINDS[kind].make(shape[3], dtype)
  if use_cudnn:
    reason = lstm_cudnn.platform_reason()
    if reason or dtype != jnp.float32:
      raise Absent(reason or "JAX's cuDNN LSTM takes float32 only")
    cell = jaxrnn.lstm(shape[3], use_cudnn=True)     # raises where cuDNN cannot run

  def apply(p, xs):
    return jaxrnn.scan_batch(cell, p, xs, unroll=unroll)[1]
  return JaxProgram(apply, cast(params, dtype))


# ---------------------------------------------------------------- flax linen

def linen_builder(cell_name: str):
  def build(kind, params, dtype, shape):
    require("flax", "flax")
    import flax.linen as nn
    cell = getattr(nn, cell_name)(shape[3], dtype=dtype, param_dtype=dtype)
    model = nn.RNN(cell)
    from jaxrnn.interop.flax import to_linen
    variables = {"params": {"cell": to_linen(params, cell_name)["params"]}}
    return JaxProgram(model.apply, cast(variables, dtype))
  return build


# ---------------------------------------------------------------- flax nnx

NNX_CELLS = {"lstm": "OptimizedLSTMCell", "gru": "GRUCell", "rnn": "SimpleCell"}


def build_nnx(kind, params, dtype, shape):
  require("flax", "flax")
  from flax import nnx
  if kind == "gru" and np.any(params.b_hn != 0):
    raise Absent("nnx.GRUCell has no recurrent bias b_hn")
  I, H = shape[2], shape[3]
  # Built with float32 params and cast after: nnx's bfloat16 init calls an
  # orthogonal initialiser that LAPACK cannot run in bfloat16.
  cell = getattr(nnx, NNX_CELLS[kind])(I, H, rngs=nnx.Rngs(0), dtype=dtype)
  model = nnx.RNN(cell)
  from jaxrnn.interop.flax import to_nnx
  to_nnx(params, cell)
  # The functional form (split once, merge inside jit) is NNX's documented
  # fast path; nnx.jit would add its graph traversal to every call.
  graphdef, weights, rest = nnx.split(model, nnx.Param, ...)

  # An explicit zero carry keeps nnx's carry initialiser, which mutates an
  # RNG counter, out of the traced function.
  zero = jnp.zeros((shape[0], H), dtype)
  carry = (zero, zero) if kind == "lstm" else zero

  def apply(w, xs):
    return nnx.merge(graphdef, w, rest)(xs, initial_carry=carry)
  return JaxProgram(apply, cast(weights, dtype))


# ---------------------------------------------------------------- equinox

def build_equinox(kind, params, dtype, shape):
  require("equinox", "equinox")
  import equinox as eqx
  if kind == "rnn":
    raise Absent("equinox has no simple RNN cell")
  I, H = shape[2], shape[3]
  p = cast(params, dtype)
  if kind == "lstm":
    cell = eqx.nn.LSTMCell(I, H, key=jax.random.key(0), dtype=dtype)
    cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell,
                       (p.w_x.T, p.w_h.T, p.b))
    zero = (jnp.zeros(H, dtype), jnp.zeros(H, dtype))
    out = lambda carry: carry[0]
  else:
    cell = eqx.nn.GRUCell(I, H, key=jax.random.key(0), dtype=dtype)
    cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n),
                       cell, (p.w_x.T, p.w_h.T, p.b, p.b_hn))
    zero = jnp.zeros(H, dtype)
    out = lambda carry: carry

  def apply(cell, xs):
    def one(x):
      def body(carry, x_t):
        carry = cell(x_t, carry)
        return carry, out(carry)
      return jax.lax.scan(body, zero, x)[1]
    return jax.vmap(one)(xs)
  return JaxProgram(apply, cell)


# ---------------------------------------------------------------- haiku

HAIKU_CORES = {"lstm": "LSTM", "gru_reset_before": "GRU", "rnn_relu": "VanillaRNN"}


def haiku_params(kind, p) -> dict:
  if kind == "lstm":
    i, f, g, o = blocks(np.concatenate([p.w_x, p.w_h], axis=0), 4)
    bi, bf, bg, bo = blocks(p.b, 4)
    return {"lstm/linear": {"w": np.concatenate([i, g, f, o], axis=-1),
                            "b": np.concatenate([bi, bg, bf - 1.0, bo])}}
  if kind == "gru_reset_before":
    flip = lambda a: np.concatenate([-a[1], a[0], a[2]], axis=-1)
    return {"gru": {"w_i": flip(blocks(p.w_x, 3)), "w_h": flip(blocks(p.w_h, 3)),
                    "b": flip(blocks(p.b, 3))}}
  return {"vanilla_rnn/linear": {"w": p.w_x, "b": p.b},
          "vanilla_rnn/linear_1": {"w": p.w_h, "b": np.zeros_like(p.b)}}


def build_haiku(kind, params, dtype, shape):
  require("haiku", "dm-haiku")
  import haiku as hk
  B, H = shape[0], shape[3]

  def forward(xs):
    core = getattr(hk, HAIKU_CORES[kind])(H)
    state = jax.tree.map(lambda a: a.astype(dtype), core.initial_state(B))
    return hk.dynamic_unroll(core, xs, state, time_major=False)[0]
  model = hk.without_apply_rng(hk.transform(forward))
  return JaxProgram(model.apply, cast(haiku_params(kind, params), dtype))


# ---------------------------------------------------------------- torch

def torch_builder(device: str):
  def build(kind, params, dtype, shape):
    require("torch", "torch==2.13.0")
    from jaxrnn.interop.torch import to_torch   # NumPy only: torch stays unloaded
    weights = {k: np.asarray(v, np.float32) for k, v in to_torch(params).items()}
    name = {jnp.float32: "f32", jnp.bfloat16: "bf16"}[dtype]
    return TorchProgram(kind, weights, tuple(shape), name, device)
  return build


# ---------------------------------------------------------------- cuDNN from JAX

def build_jax_cudnn(kind, params, dtype, shape):
  if jax.default_backend() != "gpu":
    raise Absent("needs a CUDA GPU (cuDNN)")
  from jax.experimental import rnn
  B, T, I, H = shape

  def apply(w, xs):
    h0 = jnp.zeros((1, B, H), xs.dtype)
    lengths = jnp.full((B,), T, jnp.int32)
    return rnn.lstm(xs, h0, h0, w, lengths, I, H, 1, 0.0, False)[0]
  return JaxProgram(apply, jnp.asarray(lstm_cudnn.cudnn_weights(params), dtype))


BATCHED = ("lstm", "gru", "rnn", "gru_reset_before", "rnn_relu")   # kinds with a batched kernel
PEERS = [
    Peer("jaxrnn", tuple(KINDS), build_jaxrnn, None),
    Peer("jaxrnn unroll=4", ("lstm", "gru"), partial(build_jaxrnn, unroll=4), None),
    # A plain lax.scan of the step, as one writes it by hand: unroll=1 everywhere.
    Peer("jaxrnn.unfused", ("lstm", "gru", "rnn"), partial(build_jaxrnn, unroll=1, fused=False),
         None),
    # Batched kernels: the LSTM's and GRU's hand-written ones (Cho's GRU
    # included), the simple RNN's generic one.
    Peer("jaxrnn.scan_batch", BATCHED, build_jaxrnn_batch, None),
    Peer("jaxrnn.scan_batch cuDNN", ("lstm",), partial(build_jaxrnn_batch, use_cudnn=True),
         None),
    Peer("flax.linen OptimizedLSTMCell", ("lstm",), linen_builder("OptimizedLSTMCell"), "flax"),
    Peer("flax.linen LSTMCell", ("lstm",), linen_builder("LSTMCell"), "flax"),
    Peer("flax.linen GRUCell", ("gru",), linen_builder("GRUCell"), "flax"),
    Peer("flax.linen SimpleCell", ("rnn",), linen_builder("SimpleCell"), "flax"),
    Peer("flax.nnx", ("lstm", "gru", "rnn"), build_nnx, "flax"),
    Peer("equinox", ("lstm", "gru", "rnn"), build_equinox, "equinox"),
    Peer("haiku", ("lstm", "gru_reset_before", "rnn_relu"), build_haiku, "dm-haiku"),
    Peer("torch (cpu)", ("lstm", "gru", "rnn"), torch_builder("cpu"), "torch"),
    Peer("torch (cuda, cuDNN)", ("lstm", "gru", "rnn"), torch_builder("cuda"), "torch"),
    Peer("jax.experimental.rnn (cuDNN)", ("lstm",), build_jax_cudnn, None),
]


def unrolled(unrolls) -> list[Peer]:
  """jaxrnn's ``scan``, ``scan_batch`` and ``unfused`` rows at each of
  ``unrolls`` (speed.py's ``--unroll``): on a GPU each loop iteration costs a
  few microseconds of launches whatever its size, and unrolling amortises
  it. The unfused rows are a custom cell without `jaxrnn.fused_cell`, which
  gets the unroll from `jaxrnn.scan` but no fused kernel."""
  rows = [Peer(f"jaxrnn unroll={n}", tuple(KINDS), partial(build_jaxrnn, unroll=n), None)
          for n in unrolls]
  rows += [Peer(f"jaxrnn.unfused unroll={n}", ("lstm", "gru", "rnn"),
                partial(build_jaxrnn, unroll=n, fused=False), None) for n in unrolls]
  rows += [Peer(f"jaxrnn.scan_batch unroll={n}", BATCHED,
                partial(build_jaxrnn_batch, unroll=n), None) for n in unrolls]
  return [peer for peer in rows if peer.name not in {p.name for p in PEERS}]


def main() -> None:
  """Lists every row `benchmarks/speed.py` knows and whether it can run here."""
  import argparse
  argparse.ArgumentParser(description=(
      "The implementations benchmarks/speed.py times, with the cell kinds each "
      "runs and whether it can run on this machine (built at a tiny shape). "
      "speed.py --impls selects them by name.")).parse_args()
  shape = (2, 3, 4, 5)
  for peer in PEERS:
    kind = peer.kinds[0]
    params = KINDS[kind].make(shape[3], jnp.float32).init(jax.random.key(0), shape[2])
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    try:
      program = peer.build(kind, params, jnp.float32, shape)
      ready = "ready"
      if isinstance(program, TorchProgram) and program.device != "cpu":
        ready = "ready if torch sees a CUDA GPU (its worker checks when it starts)"
    except Absent as e:
      ready = str(e)
    print(f"{peer.name:30} {','.join(peer.kinds):34} {ready}")


if __name__ == "__main__":
  main()
