"""The standard LSTM through cuDNN on a CUDA GPU, by `jax.experimental.rnn`.

Lives here: `lstm_cudnn_kernel`, the batched kernel that
``jaxrnn.lstm(H, use_cudnn=True | "auto")`` attaches (``Cell.batched``), and
`cudnn_weights`, the params as cuDNN's flat weight vector. Not here: the
XLA kernel it falls back to (`lstm_batched.py`), the LSTM's definition
(`lstm.py`).

Why: on an NVIDIA GPU, cuDNN's LSTM is the standard to meet (PyTorch and
Keras run it by default), and a well-kept library often beats a
hand-written kernel (not here, as measured below). JAX calls it in
`jax.experimental.rnn`. This module maps jaxrnn's params to its flat
weight vector (`cudnn_weights`: a few transposes and a
concatenation, differentiated by JAX, so the gradients come back in
jaxrnn's layout) and makes the call compose with `jax.vmap`: JAX's cuDNN
primitive has no batching rule, so under `vmap` each member runs as its own
cuDNN call, in a `jax.lax.map` (one call per member: an ensemble runs its
members one after another).

When cuDNN runs: the process has a CUDA GPU and jaxlib has its cuDNN RNN
(``pip install "jax[cuda13]"`` or ``"jax[cuda12]"``); ``xs``, params and
carry are float32 (JAX's cuDNN LSTM takes no other dtype); there is no
mask (cuDNN takes sequence lengths, and a mask need not be a prefix); and
JAX's default matmul precision is one cuDNN's LSTM takes (unset,
``"tensorfloat32"``, ``"high"``, ``"float32"`` or ``"highest"``).
Otherwise ``use_cudnn="auto"`` runs the XLA kernel (`lstm_batch_kernel`)
and ``use_cudnn=True`` raises at trace time, saying which condition
failed. With ``"auto"`` the choice between the two is made when `jax.jit`
lowers the program (`jax.lax.platform_dependent`), so a program lowered
for the CPU of a GPU host runs the XLA kernel; with ``True`` it fails to
lower.

Numbers: the same function as the XLA kernel. cuDNN follows JAX's default
matmul precision, as XLA's own float32 matmuls on a GPU do: TF32 where the
GPU has it (unset, ``"tensorfloat32"``, ``"high"``), not under
``jax.default_matmul_precision("float32")`` or ``("highest")``.

Limits: the gradient is first order (cuDNN's backward has no derivative
of its own; the XLA kernel's has), there is no forward mode (as for the
XLA kernel), and the call has no SPMD partitioning rule, so a batch
sharded over several GPUs by `jax.jit` (`jaxrnn.train.shard_batch`) is
likely gathered onto each GPU: not measured; the XLA kernel partitions
along the batch.

Status: run on one H200 (2026-12-04, jax 0.11.2): `tests/test_cudnn.py`'s
`test_cudnn_on_this_machine` passes (cuDNN's kernels equal the XLA kernel
to 1e-5, values and gradients, both directions), and so does the
benchmark's check. It trains slower than jaxrnn's XLA kernel at every
shape measured: the training step took 1.5-2.6x the time of ``scan_batch`` at
its GPU default unroll=8, and at B = 1 7-9x torch's own cuDNN LSTM, so the
cost is in JAX's binding (``benchmarks/SPEED.md``, "On a GPU"). Hence
``use_cudnn=False`` by default. On CPU, `tests/test_cudnn.py` runs the path
through JAX's real cuDNN primitives (their shape rules, no batching rule),
lowered to JAX's own reference of the cuDNN LSTM
(``jax.experimental.rnn.lstm_ref``, written from cuDNN's layout) in place
of cuDNN's kernels, against the XLA kernel and the NumPy oracle.
``bash benchmarks/gpu_check.sh`` runs the GPU checks and times it.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

try:
  from jax.experimental import rnn as jax_rnn
except ImportError:   # a JAX without it: the XLA kernel everywhere
  jax_rnn = None

from jaxrnn._cell import Array, bias_or_zeros
from jaxrnn._cells.lstm_batched import check_standard_params, lstm_batch_kernel


def cudnn_weights(params) -> Array:
  """cuDNN's flat weight vector ``[W_ih, W_hh, b_ih, b_hh]`` (one layer, one direction).

  ``W_ih = w_x^T [4H, I]``, ``W_hh = w_h^T [4H, H]``, ``b_ih = b [4H]`` and
  ``b_hh = 0``: jaxrnn's single bias is PyTorch's and cuDNN's
  ``b_ih + b_hh``. Gate blocks ``i, f, g, o`` in both layouts.

  >>> import jax, jaxrnn
  >>> params = jaxrnn.lstm(3).init(jax.random.key(0), 2)
  >>> cudnn_weights(params).shape            # 12*2 + 12*3 + 12 + 12
  (84,)
  """
  b = bias_or_zeros(params.b, params.w_h.shape[-1], params.w_h)   # None: use_bias=False
  return jnp.concatenate([params.w_x.T.ravel(), params.w_h.T.ravel(), b, jnp.zeros_like(b)])


# The default matmul precisions that JAX's cuDNN LSTM takes (it raises on
# "bfloat16" and "default", and would read a dot-algorithm preset as TF32).
CUDNN_PRECISIONS = (None, "tensorfloat32", "high", "float32", "highest")


def platform_reason() -> Optional[str]:
  """Why this process cannot run JAX's cuDNN LSTM, or None when it can."""
  if jax_rnn is None:
    return "this JAX has no jax.experimental.rnn"
  backend = jax.default_backend()
  if backend != "gpu":
    return f"the default backend is {backend}, and cuDNN needs a CUDA GPU"
  try:
    jax.devices("cuda")
  except RuntimeError:
    return "the GPU is not a CUDA GPU"
  if not hasattr(jax_rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes"):
    return 'this jaxlib has no cuDNN RNN (pip install "jax[cuda13]" or "jax[cuda12]")'
  return None


def why_not_cudnn(params, carry, xs: Array, mask: Optional[Array],
                  recurrent_mask: Optional[Array] = None) -> Optional[str]:
  """Why cuDNN cannot run this call, or None when it can."""
  if recurrent_mask is not None:
    return ("the call has a recurrent mask (recurrent dropout), which cuDNN's "
            "LSTM has no place for")
  if mask is not None:
    return ("the call has a mask, and cuDNN takes sequence lengths (a mask "
            "need not be a prefix)")
  arrays = dict(xs=xs, w_x=params.w_x, w_h=params.w_h, b=params.b,
                h=carry.h, c=carry.c)
  arrays = {name: a for name, a in arrays.items() if a is not None}
  other = [f"{name} is {jnp.result_type(a)}" for name, a in arrays.items()
           if jnp.result_type(a) != jnp.float32]
  if other:
    return f"JAX's cuDNN LSTM takes float32 only, and {', '.join(other)}"
  precision = jax.config.jax_default_matmul_precision
  if precision not in CUDNN_PRECISIONS:
    return (f"JAX's default matmul precision is {precision!r}, and JAX's cuDNN "
            f"LSTM takes only {', '.join(map(repr, CUDNN_PRECISIONS))}")
  return platform_reason()


def lstm_cudnn_kernel(params, carry, xs: Array, mask: Optional[Array], reverse: bool,
                      unroll: int, recurrent_mask: Optional[Array] = None, *,
                      required: bool):
  """The standard LSTM over a batch through cuDNN where it can run: ``(carry, ys [B, T, H])``.

  Same contract as `lstm_batch_kernel` (params `LSTMParams`, carry
  ``LSTMCarry(h [B, H], c [B, H])``, xs [B, T, I], mask bool[B, T] or
  None); ``unroll`` does not apply to cuDNN's loop. Where cuDNN cannot run
  (see the module's notes), ``required`` raises and otherwise the XLA
  kernel runs.
  """
  check_standard_params(params)
  reason = why_not_cudnn(params, carry, xs, mask, recurrent_mask)
  if reason is not None:
    if required:
      raise ValueError(
          f"jaxrnn.scan_batch: the cell was built with use_cudnn=True, which "
          f"runs cuDNN or fails, and cuDNN cannot run this call: {reason}. "
          f"Fix: build it with use_cudnn='auto' (cuDNN where it can run, "
          f"jaxrnn's XLA kernel elsewhere), or meet that condition.")
    return lstm_batch_kernel(params, carry, xs, mask, reverse, unroll, recurrent_mask)

  def cudnn(params, carry, xs):
    return cudnn_lstm(params, carry, xs, reverse)

  def xla(params, carry, xs):
    return lstm_batch_kernel(params, carry, xs, None, reverse, unroll)
  return cudnn(params, carry, xs) if required else on_cuda(cudnn, xla, params, carry, xs)


lstm_cudnn_kernel.takes_recurrent_mask = True   # by falling back to the XLA kernel


def on_cuda(cudnn, other, *args):
  """``cudnn(*args)`` in a program lowered for CUDA, ``other(*args)`` elsewhere.

  Decided when `jax.jit` lowers the program, not by the default backend:
  `jax.lax.platform_dependent` traces both and lowers one.
  """
  return jax.lax.platform_dependent(*args, cuda=cudnn, default=other)


def cudnn_lstm(params, carry, xs: Array, reverse: bool):
  """cuDNN's LSTM over ``xs [B, T, I]`` from ``carry``: ``(carry, ys [B, T, H])``.

  Reversed, it runs over the time-flipped inputs and flips the outputs back.
  """
  if reverse:
    xs = jnp.flip(xs, axis=1)
  ys, h, c = _cudnn_call(cudnn_weights(params), carry.h, carry.c, xs)
  if reverse:
    ys = jnp.flip(ys, axis=1)
  return carry._replace(h=h, c=c), ys


# The cuDNN call, JAX's primitive underneath: the forward saves cuDNN's
# reserve space, the backward is cuDNN's (state gradients in its reverse
# loop, weight gradients after it).

def rnn_fwd(xs, h0, c0, w, lengths, I: int, H: int):
  """JAX's cuDNN forward, one layer: ``(ys, h_n [1, B, H], c_n), residuals``."""
  return jax_rnn.lstm_fwd(xs, h0, c0, w, lengths, input_size=I, hidden_size=H,
                          num_layers=1, dropout=0.0, bidirectional=False,
                          precision=None)


def rnn_bwd(I: int, H: int, residuals, cotangents):
  """JAX's cuDNN backward, one layer: ``(dw, dh0 [1, B, H], dc0, dxs)``."""
  dxs, dh0, dc0, dw, _ = jax_rnn.lstm_bwd(I, H, 1, 0.0, False, None, residuals,
                                          cotangents)
  return dw, dh0, dc0, dxs


def _one_call_per_member(fn):
  """A `custom_vmap` rule for ``fn``: each member of the mapped axis its own call."""
  def rule(axis_size, in_batched, *args):
    args = jax.tree.map(
        lambda a, batched: a if batched else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a)),
        args, tuple(in_batched))
    out = jax.lax.map(lambda member: fn(*member), args)
    return out, jax.tree.map(lambda _: True, out)
  return rule


@custom_vmap
def _forward_call(w, h0, c0, xs):
  B, T, I = xs.shape
  H = h0.shape[-1]
  lengths = jnp.full((B,), T, jnp.int32)
  (ys, h, c), residuals = rnn_fwd(xs, h0[None], c0[None], w, lengths, I, H)
  return (ys, h[0], c[0]), residuals


@custom_vmap
def _backward_call(residuals, dys, dh, dc):
  I, H = residuals[0].shape[-1], dh.shape[-1]
  dw, dh0, dc0, dxs = rnn_bwd(I, H, residuals, (dys, dh[None], dc[None]))
  return dw, dh0[0], dc0[0], dxs


_forward_call.def_vmap(_one_call_per_member(_forward_call))
_backward_call.def_vmap(_one_call_per_member(_backward_call))


@jax.custom_vjp
def _cudnn_call(w, h0, c0, xs):
  """``(ys [B, T, H], h_T [B, H], c_T [B, H])`` for cuDNN's flat weights ``w``."""
  return _forward_call(w, h0, c0, xs)[0]


def _cudnn_call_fwd(w, h0, c0, xs):
  return _forward_call(w, h0, c0, xs)


def _cudnn_call_bwd(residuals, cotangents):
  return _backward_call(residuals, *cotangents)


_cudnn_call.defvjp(_cudnn_call_fwd, _cudnn_call_bwd)
