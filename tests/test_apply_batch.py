"""`jaxrnn.apply_batch` and ``Model.apply_batch``: layers over a batch.

Each is held to ``jax.vmap`` of the per-sequence ``apply`` (outputs, final
carries and parameter gradients), with masks, given carries, reversed and
bidirectional layers, residual stacks and a custom merge; the LSTM and GRU
must reach the batched kernels of `jaxrnn.scan_batch`, and a hand-written
Seq without ``apply_batch`` must fall back to the vmap.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.tasks import last_step_classification_loss, readout_model

B, T, I, H = 5, 6, 3, 4


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def random_params(layer, input_size, seed=0):
  shapes = jax.eval_shape(lambda key: layer.init(key, input_size), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


XS = jax.random.normal(jax.random.key(1), (B, T, I))
MASK = jnp.arange(T)[None, :] < (jnp.arange(B) % T + 1)[:, None]   # ragged, right-padded


def vmapped(layer, params, xs, **flags):
  """``jax.vmap(layer.apply)``, with each flag batched or absent."""
  names = sorted(k for k, v in flags.items() if v is not None)

  def one(x, *values):
    return layer.apply(params, x, **dict(zip(names, values)))
  return jax.vmap(one)(xs, *(flags[k] for k in names))


def kernel_calls(fn, *args) -> int:
  return str(jax.make_jaxpr(fn)(*args)).count("custom_vjp_call")


def weighted_sum(carry, ys):
  weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
  return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))


def assert_same_as_vmap(layer, params, **flags):
  """Outputs, carries and parameter gradients of apply_batch equal vmap(apply)."""
  batched = lambda p: jaxrnn.apply_batch(layer, p, XS, **flags)
  plain = lambda p: vmapped(layer, p, XS, **flags)
  assert_trees_close(batched(params), plain(params))
  assert_trees_close(jax.grad(lambda p: weighted_sum(*batched(p)))(params),
                     jax.grad(lambda p: weighted_sum(*plain(p)))(params), atol=1e-5)


@pytest.mark.parametrize("make_cell", [jaxrnn.lstm, jaxrnn.gru, jaxrnn.simple_rnn,
                                       jaxrnn.peephole_lstm])
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_apply_batch_equals_vmap_of_apply(make_cell, reverse):
  layer = jaxrnn.rnn(make_cell(H), reverse=reverse)
  params = random_params(layer, I)
  carry = jax.tree.map(lambda a: jnp.broadcast_to(a + 0.3, (B,) + a.shape),
                       layer.initial_carry(params))
  assert_same_as_vmap(layer, params, mask=MASK, carry=carry)


@pytest.mark.parametrize("make_cell", [jaxrnn.lstm, jaxrnn.gru])
def test_the_lstm_and_gru_layers_reach_the_batched_kernel(make_cell):
  net = jaxrnn.stack(make_cell(H), jaxrnn.bidirectional(make_cell(H), make_cell(H)))
  params = random_params(net, I)
  # One kernel per recurrent layer: the stack's first and both directions.
  assert kernel_calls(lambda p: jaxrnn.apply_batch(net, p, XS, mask=MASK), params) == 3
  assert kernel_calls(lambda p: vmapped(net, p, XS, mask=MASK), params) == 0


def test_stack_apply_batch_with_residual_and_mask_equals_vmap():
  net = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.simple_rnn(H), residual=True)
  assert_same_as_vmap(net, random_params(net, I), mask=MASK)


def test_bidirectional_apply_batch_with_a_per_sequence_merge_equals_vmap():
  # Written for one sequence [T, O]: the mean over time must not become a
  # mean over the batch.
  merge = lambda fw, bw: fw * jnp.mean(bw, axis=0)
  layer = jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), merge=merge)
  assert_same_as_vmap(layer, random_params(layer, I), mask=MASK)


def test_nested_apply_batch_with_a_given_carry_equals_vmap():
  net = jaxrnn.stack(jaxrnn.gru(H), jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H)))
  params = random_params(net, I)
  carry = jax.tree.map(lambda a: jnp.broadcast_to(a - 0.2, (B,) + a.shape),
                       net.initial_carry(params))
  assert_same_as_vmap(net, params, mask=MASK, carry=carry)


def test_bidirectional_apply_batch_with_resets_equals_vmap():
  layer = jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H))
  resets = jnp.zeros((B, T), bool).at[:, 2].set(True).at[1, 4].set(True)
  assert_same_as_vmap(layer, random_params(layer, I), resets=resets)


def test_a_seq_without_apply_batch_is_vmapped():
  inner = jaxrnn.rnn(jaxrnn.lstm(H))
  by_hand = jaxrnn.Seq(init=inner.init, apply=inner.apply,
                       initial_carry=inner.initial_carry, step=None,
                       output_size=H)                    # no apply_batch
  assert by_hand.apply_batch is None
  params = random_params(inner, I)
  assert_same_as_vmap(by_hand, params, mask=MASK)
  net = jaxrnn.stack(by_hand, jaxrnn.gru(H))
  assert_same_as_vmap(net, random_params(net, I), mask=MASK)


def test_apply_batch_dropout_draws_per_example_masks_and_follows_the_key():
  p = 0.5
  net = jaxrnn.stack(identity_seq(I), identity_seq(I), dropout=p)
  xs = jnp.ones((64, T, I))
  params = net.init(jax.random.key(0), I)
  _, ys = jaxrnn.apply_batch(net, params, xs, key=jax.random.key(3))
  kept = np.asarray(ys != 0)
  assert set(np.unique(np.asarray(ys))) <= {0.0, 1.0 / (1 - p)}
  assert abs(kept.mean() - (1 - p)) < 0.05
  assert not all((kept[0] == kept[b]).all() for b in range(1, 64))   # not one mask for all
  _, again = jaxrnn.apply_batch(net, params, xs, key=jax.random.key(3))
  _, other = jaxrnn.apply_batch(net, params, xs, key=jax.random.key(4))
  np.testing.assert_array_equal(ys, again)
  assert not np.array_equal(ys, other)
  _, none = jaxrnn.apply_batch(net, params, xs)
  np.testing.assert_array_equal(none, xs)


def identity_seq(size):
  """A layer whose output is its input: shows what dropout does."""
  return jaxrnn.rnn(jaxrnn.Cell(init=lambda key, n: (),
                                initial_carry=lambda p: jnp.zeros(()),
                                step=lambda p, c, x: (c, x), output_size=size))


def test_readout_model_apply_batch_and_batched_loss_equal_the_per_example_ones():
  model = readout_model(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H)), output_size=3)
  params = random_params(model, I)
  assert_trees_close(model.apply_batch(params, XS, mask=MASK),
                     jax.vmap(lambda x, m: model.apply(params, x, mask=m))(XS, MASK))
  labels = jnp.arange(B) % 3
  per_example = last_step_classification_loss(model)
  batched = last_step_classification_loss(model, batched=True)
  assert_trees_close(batched(params, (XS, labels)),
                     jax.vmap(per_example, in_axes=(None, 0))(params, (XS, labels)))
  from jaxrnn import train
  grad_batched = jax.grad(lambda p: train.batch_loss(batched, p, (XS, labels),
                                                     batched=True)[0])(params)
  grad_plain = jax.grad(lambda p: train.batch_loss(per_example, p, (XS, labels))[0])(params)
  assert_trees_close(grad_batched, grad_plain, atol=1e-5)


def test_batched_loss_of_a_hand_built_model_falls_back_to_vmap():
  model = readout_model(jaxrnn.gru(H), output_size=3)
  by_hand = model._replace(apply_batch=None)
  params = random_params(model, I)
  labels = jnp.arange(B) % 3
  assert_trees_close(last_step_classification_loss(by_hand, batched=True)(params, (XS, labels)),
                     last_step_classification_loss(model, batched=True)(params, (XS, labels)))


# ------------------------------------------- seq_lengths and time_major

LENGTHS = jnp.arange(B) % T + 1          # MASK's lengths


@pytest.mark.parametrize("layer", [
    jaxrnn.rnn(jaxrnn.lstm(H)),                       # the LSTM kernel
    jaxrnn.rnn(jaxrnn.gru(H), reverse=True),          # the GRU kernel, from the end
    jaxrnn.stack(jaxrnn.peephole_lstm(H), jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.simple_rnn(H))),
], ids=["lstm", "gru-reverse", "stack-bidirectional"])
def test_seq_lengths_and_time_major_are_the_mask_and_the_transpose(layer):
  params = random_params(layer, I)
  time_first = XS.swapaxes(0, 1)
  batch_first = lambda run: lambda p: (lambda carry, ys: (carry, ys.swapaxes(0, 1)))(*run(p))
  runs = {
      "seq_lengths": lambda p: jaxrnn.apply_batch(layer, p, XS, seq_lengths=LENGTHS),
      "time_major": batch_first(lambda p: jaxrnn.apply_batch(
          layer, p, time_first, mask=MASK.T, time_major=True)),
      "both": batch_first(lambda p: jaxrnn.apply_batch(
          layer, p, time_first, seq_lengths=LENGTHS, time_major=True)),
  }
  want = lambda p: jaxrnn.apply_batch(layer, p, XS, mask=MASK)
  want_grads = jax.grad(lambda p: weighted_sum(*want(p)))(params)
  assert jaxrnn.apply_batch(layer, params, time_first, time_major=True)[1].shape == (
      T, B, layer.output_size)
  for name, run in runs.items():
    assert_trees_close(run(params), want(params), rtol=1e-6, atol=1e-6)
  # Gradients through both options at once (each alone is a subset).
  assert_trees_close(jax.grad(lambda p: weighted_sum(*runs["both"](p)))(params), want_grads,
                     atol=1e-5)


def test_scan_batch_takes_seq_lengths_and_time_major_resets_and_a_hand_written_seq_too():
  cell = jaxrnn.lstm(H)
  params = random_params(cell, I)
  resets = jnp.zeros((B, T), bool).at[:, 3].set(True)
  want = jaxrnn.scan_batch(cell, params, XS, mask=MASK, resets=resets)
  got = jaxrnn.scan_batch(cell, params, XS.swapaxes(0, 1), seq_lengths=LENGTHS,
                          resets=resets.T, time_major=True)
  assert_trees_close((got[0], got[1].swapaxes(0, 1)), want, rtol=1e-6, atol=1e-6)
  # A Seq without apply_batch is vmapped over the batch-first data.
  by_hand = jaxrnn.Seq(init=cell.init, apply=jaxrnn.rnn(cell).apply,
                       initial_carry=cell.initial_carry, step=None, output_size=H)
  got = jaxrnn.apply_batch(by_hand, params, XS.swapaxes(0, 1), seq_lengths=LENGTHS,
                           time_major=True)
  assert_trees_close((got[0], got[1].swapaxes(0, 1)),
                     jaxrnn.scan_batch(cell, params, XS, mask=MASK), rtol=1e-6, atol=1e-6)


def test_seq_lengths_beyond_the_ends_are_refused_when_known_and_clipped_when_traced():
  cell = jaxrnn.gru(H)
  params = random_params(cell, I)
  lengths = jnp.array([0, -2, T, T + 3, 2])
  with pytest.raises(ValueError, match=rf"seq_lengths\[1\] is -2; expected a length from 0 "
                                       rf"to T = {T}.*xs.shape\[1\]"):
    jaxrnn.scan_batch(cell, params, XS, seq_lengths=np.asarray(lengths))
  carry, ys = jax.jit(lambda n: jaxrnn.scan_batch(cell, params, XS, seq_lengths=n))(lengths)
  want = jaxrnn.scan_batch(cell, params, XS, mask=jnp.arange(T) < jnp.clip(lengths, 0, T)[:, None])
  assert_trees_close((carry, ys), want, rtol=0, atol=0)
  np.testing.assert_array_equal(ys[:2], 0)                    # nothing valid
  np.testing.assert_array_equal(carry[:2], cell.initial_carry(params)[None].repeat(2, 0))


@pytest.mark.parametrize("call, match", [
    (lambda f: f(XS, mask=MASK, seq_lengths=LENGTHS), r"got both mask and seq_lengths"),
    (lambda f: f(XS, seq_lengths=LENGTHS.astype(jnp.float32)),
     r"seq_lengths is float32\[5\]; expected int\[5\]"),
    (lambda f: f(XS, seq_lengths=LENGTHS[:2]), r"seq_lengths is int32\[2\]; expected int\[5\]"),
    (lambda f: f(XS.swapaxes(0, 1), seq_lengths=LENGTHS + 2, time_major=True),
     r"seq_lengths\[4\] is 7; expected a length from 0 to T = 6.*xs.shape\[0\] \(time_major"),
    (lambda f: f(XS.swapaxes(0, 1), mask=MASK, time_major=True),
     r"mask is bool\[5, 6\]; expected bool\[6, 5\].*\[T, B\] \(time_major=True\).*"
     r"jnp.arange\(6\)\[:, None\] < lengths"),
    (lambda f: f(XS, resets=MASK.T), r"resets is bool\[6, 5\]; expected bool\[5, 6\]"),
    (lambda f: f(XS[0, :, 0], time_major=True),
     r"expected a batch of sequences \[T, B, (I|...)\] \(with time_major=True\)"),
])
@pytest.mark.parametrize("entry", ["scan_batch", "apply_batch"])
def test_seq_lengths_and_time_major_errors_say_what_was_expected(call, match, entry):
  cell = jaxrnn.lstm(H)
  params = random_params(cell, I)
  f = (partial(jaxrnn.scan_batch, cell, params) if entry == "scan_batch" else
       partial(jaxrnn.apply_batch, jaxrnn.rnn(cell), params))
  with pytest.raises(ValueError, match=f"jaxrnn.{entry}: .*" + match):
    call(f)


def test_a_time_major_input_of_the_wrong_size_is_named_in_the_callers_layout():
  cell = jaxrnn.lstm(H)
  with pytest.raises(ValueError, match=r"jaxrnn.scan_batch: xs has shape \(6, 5, 2\); these "
                     r"params were initialised for input size 3, so xs must be \[T, B, 3\]"):
    jaxrnn.scan_batch(cell, random_params(cell, I), XS.swapaxes(0, 1)[..., :2],
                      time_major=True)
  # apply_batch runs its layers batch-major (a stack's layers through
  # apply_batch again), yet names the shape and layout its caller passed.
  net = jaxrnn.stack(cell, jaxrnn.gru(H))
  for time_major, shape in ((True, r"\(6, 5, 2\)"), (False, r"\(5, 6, 2\)")):
    xs = XS.swapaxes(0, 1) if time_major else XS
    with pytest.raises(ValueError, match=rf"jaxrnn.apply_batch \(in layer 0 of the stack, "
                       rf"counted from 0\): xs has shape {shape}; .* so "
                       rf"xs must be \[{'T, B' if time_major else 'B, T'}, 3\]"):
      jax.jit(lambda x: jaxrnn.apply_batch(net, random_params(net, I), x,
                                           time_major=time_major))(xs[..., :2])
