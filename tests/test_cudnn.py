"""``jaxrnn.lstm(H, use_cudnn=...)``: the standard LSTM through cuDNN.

This machine has no GPU, so cuDNN itself cannot run here. Everything around
it can: the weight layout, the flips for ``reverse``, the gradients' way
back to jaxrnn's params, the `jax.vmap` rule, and when cuDNN runs, falls
back or raises. Those are tested with JAX's cuDNN call replaced by JAX's
own reference of it (``jax.experimental.rnn.lstm_ref``, written from
cuDNN's documented layout), wrapped so that, like the cuDNN primitive, it
has no batching rule. The path must equal the XLA kernel and the NumPy
oracle. On a GPU, ``benchmarks/speed.py`` checks the real call.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.custom_batching import custom_vmap
from jax.experimental import rnn as jax_rnn

import jaxrnn
import numpy_oracle
from jaxrnn._cells import lstm_cudnn
from numpy_oracle import as_numpy
from test_scan_batch import loss, setup

B, T, I, H = 9, 7, 4, 5


def reference(xs, h0, c0, w, lengths, I, H):
  """JAX's reference of the cuDNN LSTM: ``(ys, h_n, c_n)``."""
  weights = jax_rnn.unpack_lstm_weights(w, I, H, 1, False)
  return jax_rnn.lstm_ref(xs, h0, c0, *weights, lengths, I, H, 1, 0.0, False)


def unbatchable(fn):
  """``fn`` with no batching rule, as JAX's cuDNN primitive: vmap raises."""
  wrapped = custom_vmap(fn)

  @wrapped.def_vmap
  def rule(axis_size, in_batched, *args):
    raise NotImplementedError("Batching rule for 'rnn_fwd' not implemented")
  return wrapped


class FakeCuDNN:
  """Stands in for `lstm_cudnn.rnn_fwd` / `rnn_bwd`, counting the calls."""

  def __init__(self):
    self.calls = 0

  def fwd(self, xs, h0, c0, w, lengths, I, H):
    self.calls += 1
    run = unbatchable(lambda xs, h0, c0, w, lengths: reference(xs, h0, c0, w, lengths, I, H))
    ys, h, c = run(xs, h0, c0, w, lengths)
    return (ys, h, c), (xs, h0, c0, w, lengths, ys, jnp.zeros((3,)))

  def bwd(self, I, H, residuals, cotangents):
    def grads(xs, h0, c0, w, lengths, dys, dh, dc):
      run = lambda xs, h0, c0, w: reference(xs, h0, c0, w, lengths, I, H)
      dxs, dh0, dc0, dw = jax.vjp(run, xs, h0, c0, w)[1]((dys, dh, dc))
      return dw, dh0, dc0, dxs
    xs, h0, c0, w, lengths, _, _ = residuals
    return unbatchable(grads)(xs, h0, c0, w, lengths, *cotangents)


@pytest.fixture
def cudnn(monkeypatch):
  """A process where cuDNN 'runs': the platform check passes, the call is the reference."""
  fake = FakeCuDNN()
  monkeypatch.setattr(lstm_cudnn, "platform_reason", lambda: None)
  monkeypatch.setattr(lstm_cudnn, "rnn_fwd", fake.fwd)
  monkeypatch.setattr(lstm_cudnn, "rnn_bwd", fake.bwd)
  return fake


def cells(use_cudnn):
  return jaxrnn.lstm(H, use_cudnn=use_cudnn), jaxrnn.lstm(H)


def test_cudnn_weights_are_cudnns_layout():
  _, params, _, _, _ = setup()
  W_ih, W_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(
      lstm_cudnn.cudnn_weights(params), I, H, 1, False)
  np.testing.assert_array_equal(W_ih[0], params.w_x.T)     # [4H, I], blocks i, f, g, o
  np.testing.assert_array_equal(W_hh[0], params.w_h.T)
  np.testing.assert_array_equal(b_ih[0] + b_hh[0], params.b)
  assert jax_rnn.get_num_params_in_lstm(I, H, 1, False) == lstm_cudnn.cudnn_weights(params).size


@pytest.mark.parametrize("use_cudnn", [True, "auto"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("given_carry", [False, True])
def test_cudnn_path_matches_xla_kernel(cudnn, use_cudnn, reverse, given_carry):
  cell, xla = cells(use_cudnn)
  _, params, xs, _, carry = setup(cell)
  carry = carry if given_carry else None
  run = lambda cell: jax.jit(lambda p, x, c: jaxrnn.scan_batch(cell, p, x, carry=c,
                                                                 reverse=reverse))
  got, want = run(cell)(params, xs, carry), run(xla)(params, xs, carry)
  assert cudnn.calls == 1
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  argnums = (0, 1, 2) if given_carry else (0, 1)
  grads = [jax.grad(lambda p, x, c: loss(run(c_), p, x, c), argnums)(params, xs, carry)
           for c_ in (cell, xla)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("reverse", [False, True])
def test_cudnn_path_matches_numpy_oracle(cudnn, reverse):
  cell, _ = cells(True)
  _, params, xs, _, _ = setup(cell)
  final, ys = jaxrnn.scan_batch(cell, params, xs, reverse=reverse)
  ref, p = numpy_oracle.oracle("lstm"), as_numpy(params)
  for b in range(B):
    carry, want = numpy_oracle.scan(ref, p, np.asarray(xs[b]), reverse=reverse)
    np.testing.assert_allclose(ys[b], want, atol=1e-5)
    np.testing.assert_allclose(final.h[b], carry["h"], atol=1e-5)
    np.testing.assert_allclose(final.c[b], carry["c"], atol=1e-5)


def test_cudnn_path_under_vmap_runs_one_call_per_member(cudnn):
  """The fake raises under vmap, as cuDNN's primitive does, unless the rule
  maps it; the results are the XLA kernel's under the same transformation."""
  cell, xla = cells(True)
  _, params, xs, _, _ = setup(cell)
  ensemble = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
  xss = jnp.stack([xs, -xs])
  got = jax.vmap(lambda p: jaxrnn.scan_batch(cell, p, xs)[1])(ensemble)
  want = jax.vmap(lambda p: jaxrnn.scan_batch(xla, p, xs)[1])(ensemble)
  np.testing.assert_allclose(got, want, atol=1e-5)

  def inputs_batched(c):
    return jax.vmap(jax.jit(lambda p, x: jaxrnn.scan_batch(c, p, x)[1]),
                    in_axes=(None, 0))(params, xss)
  np.testing.assert_allclose(inputs_batched(cell), inputs_batched(xla), atol=1e-5)

  def grad_of_vmap(c):   # summed over the ensemble
    return jax.grad(lambda p: jax.vmap(
        lambda x: loss(lambda p, x, _: jaxrnn.scan_batch(c, p, x), p, x, None))(xss).sum())(params)

  def vmap_of_grad(c):   # one gradient per member
    return jax.vmap(jax.grad(
        lambda p: loss(lambda p, x, _: jaxrnn.scan_batch(c, p, x), p, xs, None)))(ensemble)
  for fn in (grad_of_vmap, vmap_of_grad):
    for a, b in zip(jax.tree.leaves(fn(cell)), jax.tree.leaves(fn(xla))):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert cudnn.calls > 0


def test_auto_falls_back_to_the_xla_kernel_where_cudnn_cannot_run(cudnn, monkeypatch):
  cell, xla = cells("auto")
  _, params, xs, mask, _ = setup(cell)
  for args, kwargs in [((params, xs), dict(mask=mask)),                         # a mask
                       ((params, xs.astype(jnp.bfloat16)), {}),                 # not float32
                       ((jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), xs), {})]:
    got, want = jaxrnn.scan_batch(cell, *args, **kwargs), jaxrnn.scan_batch(xla, *args, **kwargs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  monkeypatch.setattr(lstm_cudnn, "platform_reason", lambda: "no GPU")
  np.testing.assert_array_equal(jaxrnn.scan_batch(cell, params, xs)[1],
                                jaxrnn.scan_batch(xla, params, xs)[1])
  assert cudnn.calls == 0


def test_auto_on_this_cpu_is_the_xla_kernel():
  cell, xla = cells("auto")
  _, params, xs, _, _ = setup(cell)
  assert "the default backend is cpu" in lstm_cudnn.platform_reason()
  np.testing.assert_array_equal(jaxrnn.scan_batch(cell, params, xs)[1],
                                jaxrnn.scan_batch(xla, params, xs)[1])


def test_required_cudnn_says_why_it_cannot_run(cudnn):
  cell, _ = cells(True)
  _, params, xs, mask, _ = setup(cell)
  with pytest.raises(ValueError, match="use_cudnn=True.*mask.*use_cudnn='auto'"):
    jaxrnn.scan_batch(cell, params, xs, mask=mask)
  with pytest.raises(ValueError, match="float32 only, and xs is bfloat16"):
    jaxrnn.scan_batch(cell, params, xs.astype(jnp.bfloat16))
  assert cudnn.calls == 0


def test_required_cudnn_on_this_cpu_raises():
  cell, _ = cells(True)
  _, params, xs, _, _ = setup(cell)
  with pytest.raises(ValueError, match="default backend is cpu, and cuDNN needs a CUDA GPU"):
    jaxrnn.scan_batch(cell, params, xs)


def test_use_cudnn_is_checked_when_the_cell_is_built():
  with pytest.raises(ValueError, match="use_cudnn must be False, True or 'auto'; got 'yes'"):
    jaxrnn.lstm(H, use_cudnn="yes")
  with pytest.raises(ValueError, match="standard one.*Fix: drop use_cudnn"):
    jaxrnn.lstm(H, peephole=True, use_cudnn="auto")


def test_layers_reach_the_cudnn_path(cudnn):
  def layer(**kwargs):
    return jaxrnn.bidirectional(jaxrnn.rnn(jaxrnn.lstm(H, **kwargs)),
                                jaxrnn.rnn(jaxrnn.lstm(H, **kwargs), reverse=True))
  params = layer().init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (B, T, I))
  got = jaxrnn.apply_batch(layer(use_cudnn=True), params, xs)
  want = jaxrnn.apply_batch(layer(), params, xs)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert cudnn.calls == 2                     # the forward and the reversed direction
