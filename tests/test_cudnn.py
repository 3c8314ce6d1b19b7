"""``jaxrnn.lstm(H, use_cudnn=...)``: the standard LSTM through cuDNN.

CI has no GPU, so cuDNN's kernels cannot run there. Everything around
them can, and runs for real: jaxrnn's calls of
``jax.experimental.rnn.lstm_fwd`` / ``lstm_bwd``, JAX's primitives with
their own shape rules and no batching rule, the weight layout, the flips
for ``reverse``, the gradients' way back to jaxrnn's params, the `jax.vmap`
rule, the choice made when `jax.jit` lowers, and when cuDNN runs, falls
back or raises. Only the primitives' lowering is replaced, for the CPU, by
JAX's own reference of the cuDNN LSTM (``jax.experimental.rnn.lstm_ref``,
written from cuDNN's documented layout), which also checks the arguments
cuDNN would get. The path must equal the XLA kernel and the NumPy oracle.
On a CUDA GPU, `test_cudnn_on_this_machine` and ``benchmarks/speed.py``
check cuDNN's real kernels too (``benchmarks/gpu_check.sh`` runs both).
"""

import functools
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jax_rnn
from jax.interpreters import mlir

import jaxrnn
import numpy_oracle
from jaxprs import equations
from jaxrnn._cells import lstm_cudnn
from numpy_oracle import as_numpy
from test_scan_batch import loss, setup

B, T, I, H = 9, 7, 4, 5
RESERVE = 8                     # the fake reserve space's size
LOWERED = []                    # ("fwd" or "bwd", params) for every lowered cuDNN call


def reference(xs, h0, c0, w, lengths, *, input_size, hidden_size, num_layers,
              dropout, bidirectional):
  weights = jax_rnn.unpack_lstm_weights(w, input_size, hidden_size, num_layers,
                                        bidirectional)
  return jax_rnn.lstm_ref(xs, h0, c0, *weights, lengths, input_size, hidden_size,
                          num_layers, dropout, bidirectional)


def check_arguments(kind, xs, h0, w, lengths, params):
  """What jaxrnn's one-layer, full-length call must pass to cuDNN."""
  LOWERED.append((kind, params))
  Bx, Tx, Ix = xs.shape
  assert params["num_layers"] == 1 and params["bidirectional"] is False
  assert params["dropout"] == 0.0 and isinstance(params["dropout"], float)
  assert (params["input_size"], params["hidden_size"]) == (Ix, h0.shape[-1])
  assert h0.shape == (1, Bx, params["hidden_size"]) and lengths.dtype == jnp.int32
  assert w.shape == (jax_rnn.get_num_params_in_lstm(Ix, params["hidden_size"], 1, False),)


def fwd_on_cpu(xs, h0, c0, w, lengths, **params):
  check_arguments("fwd", xs, h0, w, lengths, params)
  params = {k: v for k, v in params.items() if k != "cudnn_allow_tf32"}
  return (*reference(xs, h0, c0, w, lengths, **params), jnp.zeros((RESERVE,)))


def bwd_on_cpu(dys, dh, dc, xs, h0, c0, w, ys, reserve, lengths, **params):
  check_arguments("bwd", xs, h0, w, lengths, params)
  params = {k: v for k, v in params.items() if k != "cudnn_allow_tf32"}
  run = lambda xs, h0, c0, w: reference(xs, h0, c0, w, lengths, **params)
  return jax.vjp(run, xs, h0, c0, w)[1]((dys, dh, dc))


mlir.register_lowering(jax_rnn.rnn_fwd_p, mlir.lower_fun(fwd_on_cpu, multiple_results=True),
                       platform="cpu")
mlir.register_lowering(jax_rnn.rnn_bwd_p, mlir.lower_fun(bwd_on_cpu, multiple_results=True),
                       platform="cpu")


@pytest.fixture
def cudnn(monkeypatch):
  """A process where cuDNN 'runs' on the CPU: the platform check passes, the
  cuDNN branch is the one lowered for the CPU, and cuDNN's workspace sizes
  are made up. Programs run on the CPU even where a GPU is the default, so
  that the stand-in lowering is the one used. Yields the list of lowered calls."""
  sizes = lambda *args: (0, RESERVE)
  monkeypatch.setattr(jax_rnn, "gpu_rnn",
                      types.SimpleNamespace(compute_rnn_workspace_reserve_space_sizes=sizes))
  monkeypatch.setattr(lstm_cudnn, "platform_reason", lambda: None)
  monkeypatch.setattr(lstm_cudnn, "on_cuda", lambda cudnn, other, *args:
                      jax.lax.platform_dependent(*args, cpu=cudnn, default=other))
  jax.clear_caches()             # so that every program using it is lowered anew
  LOWERED.clear()
  with jax.default_device(jax.devices("cpu")[0]):
    yield LOWERED


@functools.cache
def data():
  """setup()'s params, xs, mask and carry (the same for every cell here), made
  once: the fixture clears JAX's caches, and remaking them would recompile
  every op they take."""
  return setup()[1:]


def lowered(kind):
  return sum(k == kind for k, _ in LOWERED)


def cells(use_cudnn):
  return jaxrnn.lstm(H, use_cudnn=use_cudnn), jaxrnn.lstm(H)


def test_cudnn_weights_are_cudnns_layout():
  params, _, _, _ = data()
  W_ih, W_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(
      lstm_cudnn.cudnn_weights(params), I, H, 1, False)
  np.testing.assert_array_equal(W_ih[0], params.w_x.T)     # [4H, I], blocks i, f, g, o
  np.testing.assert_array_equal(W_hh[0], params.w_h.T)
  np.testing.assert_array_equal(b_ih[0] + b_hh[0], params.b)
  assert jax_rnn.get_num_params_in_lstm(I, H, 1, False) == lstm_cudnn.cudnn_weights(params).size


@pytest.mark.parametrize("use_cudnn, reverse", [(True, False), ("auto", True)])
def test_cudnn_path_matches_xla_kernel(cudnn, use_cudnn, reverse):
  cell, xla = cells(use_cudnn)
  params, xs, _, carry = data()
  run = lambda cell: jax.jit(lambda p, x, c: jaxrnn.scan_batch(cell, p, x, carry=c,
                                                                 reverse=reverse))
  got, want = run(cell)(params, xs, carry), run(xla)(params, xs, carry)
  assert (lowered("fwd"), lowered("bwd")) == (1, 0)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  grads = [jax.grad(lambda p, x, c: loss(run(c_), p, x, c), (0, 1, 2))(params, xs, carry)
           for c_ in (cell, xla)]
  assert lowered("bwd") == 1
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_cudnn_path_matches_numpy_oracle(cudnn, reverse=True):
  cell, _ = cells(True)
  params, xs, _, carry = data()
  final, ys = jaxrnn.scan_batch(cell, params, xs, carry=carry, reverse=reverse)
  assert lowered("fwd") == 1
  ref, p = numpy_oracle.oracle("lstm"), as_numpy(params)
  for b in range(B):
    start = {"h": np.asarray(carry.h[b]), "c": np.asarray(carry.c[b])}
    want_carry, want = numpy_oracle.scan(ref, p, np.asarray(xs[b]), carry=start,
                                         reverse=reverse)
    np.testing.assert_allclose(ys[b], want, atol=1e-5)
    np.testing.assert_allclose(final.h[b], want_carry["h"], atol=1e-5)
    np.testing.assert_allclose(final.c[b], want_carry["c"], atol=1e-5)


def test_cudnn_path_under_vmap_runs_one_call_per_member(cudnn):
  """JAX's cuDNN primitives have no batching rule: vmap would raise unless
  jaxrnn's rule maps them. The results are the XLA kernel's under the same
  transformation."""
  cell, xla = cells(True)
  params, xs, _, _ = data()
  ensemble = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
  xss = jnp.stack([xs, -xs])

  def params_batched(c):
    return jax.vmap(lambda p: jaxrnn.scan_batch(c, p, xs))(ensemble)

  def inputs_batched(c):   # vmap outside jit: batched after tracing
    return jax.vmap(jax.jit(lambda p, x: jaxrnn.scan_batch(c, p, x)),
                    in_axes=(None, 0))(params, xss)

  def grad_of_vmap(c):     # summed over the members
    return jax.grad(lambda p: jax.vmap(
        lambda x: loss(lambda p, x, _: jaxrnn.scan_batch(c, p, x), p, x, None))(xss).sum())(params)

  def vmap_of_grad(c):     # one gradient per member
    return jax.vmap(jax.grad(
        lambda p: loss(lambda p, x, _: jaxrnn.scan_batch(c, p, x), p, xs, None)))(ensemble)

  for fn in (params_batched, inputs_batched, grad_of_vmap, vmap_of_grad):
    for a, b in zip(jax.tree.leaves(fn(cell)), jax.tree.leaves(fn(xla))):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert lowered("fwd") and lowered("bwd")


def test_auto_lowered_for_another_platform_runs_the_xla_kernel(cudnn, monkeypatch):
  """On a GPU host, a program jitted for its CPU: cuDNN is traced, not lowered."""
  monkeypatch.setattr(lstm_cudnn, "on_cuda", lambda cudnn, other, *args:
                      jax.lax.platform_dependent(*args, cuda=cudnn, default=other))
  cell, xla = cells("auto")
  params, xs, _, _ = data()
  f = lambda c: jax.jit(jax.grad(lambda p: loss(
      lambda p, x, _: jaxrnn.scan_batch(c, p, x), p, xs, None)))(params)
  for a, b in zip(jax.tree.leaves(f(cell)), jax.tree.leaves(f(xla))):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert LOWERED == []


def test_cudnn_follows_the_default_matmul_precision(cudnn):
  cell, xla = cells("auto")
  params, xs, _, _ = data()
  allow_tf32 = {}
  for precision in (None, "tensorfloat32", "float32", "highest"):
    LOWERED.clear()
    with jax.default_matmul_precision(precision):
      jax.jit(lambda p: jaxrnn.scan_batch(cell, p, xs))(params)
    allow_tf32[precision] = LOWERED[0][1]["cudnn_allow_tf32"]
  assert allow_tf32 == {None: True, "tensorfloat32": True, "float32": False, "highest": False}
  LOWERED.clear()
  with jax.default_matmul_precision("bfloat16"):   # cuDNN's LSTM would raise
    np.testing.assert_array_equal(jaxrnn.scan_batch(cell, params, xs)[1],
                                  jaxrnn.scan_batch(xla, params, xs)[1])
    assert LOWERED == []
    with pytest.raises(ValueError, match="precision is 'bfloat16'"):
      jaxrnn.scan_batch(cells(True)[0], params, xs)


def test_auto_falls_back_to_the_xla_kernel_where_cudnn_cannot_run(cudnn, monkeypatch):
  cell, xla = cells("auto")
  params, xs, mask, _ = data()
  for args, kwargs in [((params, xs), dict(mask=mask)),                         # a mask
                       ((params, xs.astype(jnp.bfloat16)), {}),                 # not float32
                       ((jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), xs), {})]:
    got, want = jaxrnn.scan_batch(cell, *args, **kwargs), jaxrnn.scan_batch(xla, *args, **kwargs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  monkeypatch.setattr(lstm_cudnn, "platform_reason", lambda: "no GPU")
  np.testing.assert_array_equal(jaxrnn.scan_batch(cell, params, xs)[1],
                                jaxrnn.scan_batch(xla, params, xs)[1])
  assert LOWERED == []


def test_required_cudnn_says_why_it_cannot_run(cudnn):
  cell, _ = cells(True)
  params, xs, mask, carry = data()
  with pytest.raises(ValueError, match="use_cudnn=True.*mask.*use_cudnn='auto'"):
    jaxrnn.scan_batch(cell, params, xs, mask=mask)
  with pytest.raises(ValueError, match="float32 only, and xs is bfloat16"):
    jaxrnn.scan_batch(cell, params, xs.astype(jnp.bfloat16))
  half = carry._replace(c=carry.c.astype(jnp.bfloat16))   # scan_batch's own check stops this
  assert "c is bfloat16" in lstm_cudnn.why_not_cudnn(params, half, xs, None)
  assert LOWERED == []


@pytest.mark.parametrize("reverse", [False, True])
def test_cudnn_on_this_machine(reverse):
  """No stand-in: on a CUDA GPU, "auto" and True run cuDNN's own kernels and
  equal the XLA kernel, values and gradients (at float32 matmul precision,
  which tests/conftest.py sets on a GPU). Elsewhere, as in CI, "auto" is the
  XLA kernel and True says why it cannot run."""
  params, xs, _, carry = data()
  reason = lstm_cudnn.platform_reason()
  if any(d.platform == "cuda" for d in jax.devices()):
    assert reason is None, reason           # a CUDA GPU must run cuDNN, not pass quietly
  elif jax.default_backend() == "cpu":
    assert reason == "the default backend is cpu, and cuDNN needs a CUDA GPU"

  def run(cell):
    f = lambda p, x, h: jaxrnn.scan_batch(cell, p, x, carry=h, reverse=reverse)
    grad = jax.grad(lambda p, x, h: loss(f, p, x, h), (0, 1, 2))
    return jax.jit(f), jax.jit(grad)

  want = [fn(params, xs, carry) for fn in run(jaxrnn.lstm(H))]
  if reason is not None:
    with pytest.raises(ValueError, match="use_cudnn=True.*" + re.escape(reason)):
      jaxrnn.scan_batch(cells(True)[0], params, xs)
  LOWERED.clear()
  for use_cudnn in ["auto"] + ([True] if reason is None else []):
    forward, grad = run(jaxrnn.lstm(H, use_cudnn=use_cudnn))
    # cuDNN's forward call in the forward program, its backward call in the
    # gradient's; neither where cuDNN cannot run
    for fn, call in ((forward, "cudnn_rnn_ffi"), (grad, "cudnn_rnn_bwd_ffi")):
      assert (call in fn.lower(params, xs, carry).as_text()) == (reason is None), use_cudnn
    got = [forward(params, xs, carry), grad(params, xs, carry)]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert LOWERED == []                      # this module's CPU stand-in was not used


def test_use_cudnn_is_checked_when_the_cell_is_built():
  for bad in ("yes", 1):
    with pytest.raises(ValueError, match=f"use_cudnn must be False, True or 'auto'; got {bad!r}"):
      jaxrnn.lstm(H, use_cudnn=bad)
  with pytest.raises(ValueError, match="standard one.*Fix: drop use_cudnn"):
    jaxrnn.lstm(H, peephole=True, use_cudnn=True)
  # "auto" runs cuDNN where it can: a variant runs jaxrnn's own kernels.
  assert (jaxrnn.lstm(H, gate_activation="hard_sigmoid", use_cudnn="auto").batched is not None
          and jaxrnn.lstm(H, peephole=True, use_cudnn="auto").batched is not None)


def test_layers_reach_the_cudnn_path(cudnn):
  def layer(**kwargs):
    return jaxrnn.bidirectional(jaxrnn.rnn(jaxrnn.lstm(H, **kwargs)),
                                jaxrnn.rnn(jaxrnn.lstm(H, **kwargs), reverse=True))
  params = layer().init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (B, T, I))
  run = lambda layer: jax.jit(lambda p: jaxrnn.apply_batch(layer, p, xs))
  got, want = run(layer(use_cudnn=True))(params), run(layer())(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # the forward and the reversed direction
  jaxpr = jax.make_jaxpr(run(layer(use_cudnn=True)))(params)
  assert sum(eqn.primitive.name == "rnn_fwd" for eqn in equations(jaxpr)) == 2
