"""Sequence layers: `rnn`, `bidirectional`, `stack` and their one-step path.

Each layer is held to what it is made of: `rnn` to `scan`, `bidirectional`
to a forward and a reversed run merged, `stack` to its layers chained by
hand, and `Seq.step` token by token to `apply` on the whole sequence.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

T, I, H = 6, 3, 4
KEY = jax.random.key(0)
XS = jax.random.normal(jax.random.key(1), (T, I))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def random_params(layer, input_size, seed=0):
  """Params of ``layer.init``'s shapes, every leaf random (biases too); drawn
  with NumPy, which spares compiling the initialisers for every shape."""
  shapes = jax.eval_shape(lambda key: layer.init(key, input_size), KEY)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


def identity(size):
  """A cell whose output is its input: shows what reaches a layer."""
  return jaxrnn.Cell(init=lambda key, n: (), initial_carry=lambda p: jnp.zeros(()),
                     step=lambda p, c, x: (c, x), output_size=size)


# rnn


def test_rnn_equals_scan():
  cell = jaxrnn.gru(H)
  params = random_params(cell, I)
  mask = jnp.arange(T) < 5
  resets = jnp.zeros(T, bool).at[2].set(True)
  carry = jnp.full((H,), 0.2)
  for reverse in (False, True):
    layer = jaxrnn.rnn(cell, reverse=reverse)
    assert layer.output_size == H
    assert_trees_close(layer.initial_carry(params), cell.initial_carry(params))
    got = layer.apply(params, XS, carry=carry, mask=mask, resets=resets)
    want = jaxrnn.scan(cell, params, XS, carry=carry, mask=mask, resets=resets,
                       reverse=reverse)
    assert_trees_close(got, want)


# bidirectional


def bidirectional_parts(merge="concat", bw_size=H + 1):
  fw_cell, bw_cell = jaxrnn.lstm(H), jaxrnn.gru(bw_size)
  layer = jaxrnn.bidirectional(fw_cell, bw_cell, merge=merge)
  return layer, random_params(layer, I), fw_cell, bw_cell


def first_times_first(fw, bw):
  return jnp.concatenate([fw, bw, fw[:, :1] * bw[:, :1]], axis=-1)


@pytest.mark.parametrize("merge,bw_size,merge_fn,size", [
    ("concat", H + 1, lambda fw, bw: jnp.concatenate([fw, bw], -1), 2 * H + 1),
    ("sum", H, lambda fw, bw: fw + bw, H),
    ("ave", H, lambda fw, bw: (fw + bw) / 2, H),       # Keras' merge_mode names
    ("mul", H, lambda fw, bw: fw * bw, H),
    (first_times_first, H + 1, first_times_first, 2 * H + 2),
])
def test_bidirectional_is_a_forward_and_a_reversed_run_merged(merge, bw_size,
                                                              merge_fn, size):
  layer, params, fw_cell, bw_cell = bidirectional_parts(merge, bw_size)
  assert layer.output_size == size
  mask = jnp.arange(T) < 4
  (fw_carry, bw_carry), ys = jax.jit(layer.apply)(params, XS, mask=mask)
  want_fw = jaxrnn.scan(fw_cell, params[0], XS, mask=mask)
  want_bw = jaxrnn.scan(bw_cell, params[1], XS, mask=mask, reverse=True)
  assert ys.shape == (T, size)
  assert_trees_close(ys, merge_fn(want_fw[1], want_bw[1]))
  assert_trees_close((fw_carry, bw_carry), (want_fw[0], want_bw[0]))


def test_bidirectional_of_one_layer_runs_it_both_ways_with_params_of_its_own():
  # Keras' Bidirectional(layer): the backward direction is the same layer.
  cell = jaxrnn.gru(H, reset_after=False)
  one, two = jaxrnn.bidirectional(cell), jaxrnn.bidirectional(cell, cell)
  params = one.init(jax.random.key(0), I)
  assert_trees_close(params, two.init(jax.random.key(0), I))
  assert not np.allclose(params[0].w_h, params[1].w_h)       # independent directions
  assert_trees_close(one.apply(params, XS), two.apply(params, XS))


def test_bidirectional_with_a_mask_equals_the_truncated_sequence():
  layer, params, _, _ = bidirectional_parts()
  apply = jax.jit(layer.apply)
  length = 4
  carry, ys = apply(params, XS, mask=jnp.arange(T) < length)
  want_carry, want_ys = apply(params, XS[:length])
  assert_trees_close(carry, want_carry)
  assert_trees_close(ys[:length], want_ys)
  assert (ys[length:] == 0.0).all()


def test_bidirectional_with_resets_equals_each_episode_separately():
  layer, params, _, _ = bidirectional_parts()
  apply = jax.jit(layer.apply)
  resets = jnp.zeros(T, bool).at[2].set(True)
  (fw_carry, bw_carry), ys = apply(params, XS, resets=resets)
  (fw_1, bw_1), ys_1 = apply(params, XS[:2])
  (fw_2, bw_2), ys_2 = apply(params, XS[2:])
  assert_trees_close(ys, jnp.concatenate([ys_1, ys_2]))
  assert_trees_close(fw_carry, fw_2)   # the forward run ends in the last episode
  assert_trees_close(bw_carry, bw_1)   # the backward run ends in the first


def test_bidirectional_takes_seqs_and_a_given_carry():
  fw, bw = jaxrnn.rnn(jaxrnn.gru(H)), jaxrnn.rnn(jaxrnn.gru(H), reverse=True)
  layer = jaxrnn.bidirectional(fw, bw)
  params = random_params(layer, I)
  carry = (jnp.full((H,), 0.3), jnp.full((H,), -0.3))
  got = layer.apply(params, XS, carry=carry)
  fw_run = fw.apply(params[0], XS, carry=carry[0])
  bw_run = bw.apply(params[1], XS, carry=carry[1])
  assert_trees_close(got, ((fw_run[0], bw_run[0]),
                           jnp.concatenate([fw_run[1], bw_run[1]], -1)))
  with pytest.raises(ValueError, match="bidirectional.*cannot decode one step at a time"):
    layer.step(params, carry, XS[0])   # it needs the future


def test_bidirectional_runs_any_backward_layer_from_the_end():
  # A Seq passed as the backward layer used to run forward. Every form of it
  # now reads the sequence from its end, as Flax's nn.Bidirectional does: a
  # deep direction (a stack) run over the flipped sequence equals a stack of
  # reversed layers, under left padding, a gap and resets, batched too.
  a, b, c, d = jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.lstm(H), jaxrnn.gru(H)
  deep = jaxrnn.bidirectional(jaxrnn.stack(a, b), jaxrnn.stack(c, d))
  by_hand = jaxrnn.bidirectional(
      jaxrnn.stack(a, b), jaxrnn.stack(jaxrnn.rnn(c, reverse=True),
                                       jaxrnn.rnn(d, reverse=True)))
  params = random_params(deep, I)
  xs = jnp.stack([XS, XS[::-1]])
  mask = jnp.array([[0, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0]], bool)
  resets = jnp.zeros((2, T), bool).at[1, 3].set(True)
  for run in (lambda layer: jax.vmap(lambda x, m, r: layer.apply(params, x, mask=m, resets=r)),
              lambda layer: lambda x, m, r: jaxrnn.apply_batch(layer, params, x, mask=m,
                                                               resets=r)):
    assert_trees_close(jax.jit(run(deep))(xs, mask, resets),
                       jax.jit(run(by_hand))(xs, mask, resets))
  loss = lambda layer: lambda p: jnp.sum(jaxrnn.apply_batch(layer, p, xs, mask=mask)[1] ** 2)
  assert_trees_close(jax.jit(jax.grad(loss(deep)))(params),
                     jax.jit(jax.grad(loss(by_hand)))(params))
  # A cell, rnn(cell) and rnn(cell, reverse=True) are the same backward layer.
  one_layer = (params[0][0], params[1][0])              # (a's params, c's params)
  ys = [jax.jit(jaxrnn.bidirectional(a, bw).apply)(one_layer, XS, mask=mask[1])[1]
        for bw in (c, jaxrnn.rnn(c), jaxrnn.rnn(c, reverse=True))]
  assert_trees_close(ys[1], ys[0])
  assert_trees_close(ys[2], ys[0])
  with pytest.raises(ValueError, match="layers run in both directions"):
    jaxrnn.bidirectional(a, jaxrnn.stack(c, jaxrnn.rnn(d, reverse=True)))


# stack


def test_stack_equals_its_layers_chained_by_hand():
  lstm, gru = jaxrnn.lstm(H), jaxrnn.rnn(jaxrnn.gru(H + 1), reverse=True)
  both = jaxrnn.bidirectional(jaxrnn.simple_rnn(2), jaxrnn.simple_rnn(2))
  net = jaxrnn.stack(lstm, gru, both)   # a Cell and two Seqs
  params = random_params(net, I)
  assert len(params) == 3 and net.output_size == 4
  mask = jnp.arange(T) < 5
  carry, ys = jax.jit(net.apply)(params, XS, mask=mask)
  xs, carries = XS, []
  for layer, p in zip((jaxrnn.rnn(lstm), gru, both), params):
    c, xs = layer.apply(p, xs, mask=mask)
    carries.append(c)
  assert_trees_close(ys, xs)
  assert_trees_close(carry, tuple(carries))
  with pytest.raises(ValueError, match="one step at a time.*Fix: use apply"):
    net.step(params, net.initial_carry(params), XS[0])   # it holds layers that read backward


def test_stack_initial_carry_is_each_layers():
  net = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H))
  params = random_params(net, I)
  assert_trees_close(net.initial_carry(params),
                     (jaxrnn.lstm(H).initial_carry(params[0]),
                      jaxrnn.gru(H).initial_carry(params[1])))


def test_residual_adds_each_layers_input_after_the_first():
  cells = (jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.simple_rnn(H))
  net = jaxrnn.stack(*cells, residual=True)
  plain = jaxrnn.stack(*cells)
  params = random_params(net, I)
  mask = jnp.arange(T) < 4
  _, ys = net.apply(params, XS, mask=mask)
  ys_1 = jaxrnn.scan(cells[0], params[0], XS, mask=mask)[1]   # no residual: I != H
  ys_2 = jaxrnn.scan(cells[1], params[1], ys_1, mask=mask)[1] + ys_1
  ys_3 = jaxrnn.scan(cells[2], params[2], ys_2, mask=mask)[1] + ys_2
  assert_trees_close(ys[:4], ys_3[:4])
  assert (ys[4:] == 0.0).all()   # padded outputs stay zero with the residual
  assert not np.allclose(plain.apply(params, XS)[1], net.apply(params, XS)[1])


# dropout

DROP_T, DROP_H, P = 40, 32, 0.3
DROP_CELLS = (jaxrnn.simple_rnn(DROP_H), identity(DROP_H))
DROP_NET = jaxrnn.stack(*DROP_CELLS, dropout=P)
DROP_PARAMS = random_params(DROP_NET, I)
DROP_XS = jax.random.normal(jax.random.key(2), (DROP_T, I))
DROP_APPLY = jax.jit(DROP_NET.apply)


def test_dropout_without_key_is_deterministic_and_equals_no_dropout():
  no_dropout = jaxrnn.stack(*DROP_CELLS).apply(DROP_PARAMS, DROP_XS)
  assert_trees_close(DROP_NET.apply(DROP_PARAMS, DROP_XS), no_dropout)
  assert_trees_close(DROP_NET.apply(DROP_PARAMS, DROP_XS), no_dropout)


def test_dropout_with_key_drops_a_fraction_near_p_and_rescales():
  _, clean = DROP_APPLY(DROP_PARAMS, DROP_XS)
  _, ys = DROP_APPLY(DROP_PARAMS, DROP_XS, key=jax.random.key(7))
  dropped = np.asarray(ys == 0.0)
  # 1280 draws: the standard error of the fraction is 0.013. Only the first
  # layer's output is dropped (dropping the last too would give 0.51).
  assert abs(dropped.mean() - P) < 0.05
  np.testing.assert_allclose(ys[~dropped], clean[~dropped] / (1 - P), rtol=1e-5)


def test_dropout_same_key_same_result_other_key_other_result():
  run = lambda seed: DROP_APPLY(DROP_PARAMS, DROP_XS, key=jax.random.key(seed))[1]
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.array_equal(run(3), run(4))
  assert not np.allclose(run(3), DROP_APPLY(DROP_PARAMS, DROP_XS)[1])


def test_dropout_changes_the_carry_of_later_layers_only():
  net = jaxrnn.stack(jaxrnn.gru(H), jaxrnn.gru(H), dropout=0.5)
  params = random_params(net, I)
  (c1, c2), _ = net.apply(params, XS)
  (d1, d2), _ = net.apply(params, XS, key=jax.random.key(1))
  assert_trees_close(c1, d1)
  assert not np.allclose(c2, d2)


def test_dropout_draws_an_independent_mask_for_each_layer():
  # Identity layers: the output is the input times both dropped layers'
  # masks. Independent masks drop 1 - (1 - p)^2 = 0.51 of it; one mask
  # shared by the layers (a key not split per layer) would drop only p.
  net = jaxrnn.stack(identity(DROP_H), identity(DROP_H), identity(DROP_H), dropout=P)
  xs = jax.random.normal(jax.random.key(2), (DROP_T, DROP_H))
  _, ys = jax.jit(net.apply)(((), (), ()), xs, key=jax.random.key(7))
  dropped = np.asarray(ys == 0.0)
  assert abs(dropped.mean() - (1 - (1 - P) ** 2)) < 0.05, dropped.mean()
  np.testing.assert_allclose(ys[~dropped], xs[~dropped] / (1 - P) ** 2, rtol=1e-5)


def test_bidirectional_directions_draw_their_own_dropout():
  # Each direction a stack with dropout over identity layers (the backward
  # one of reversed layers, so it runs as it is, unflipped): both see the
  # same inputs and only their dropout keys tell their outputs apart. One
  # key for both would drop the same units in both.
  def direction(reverse):
    return jaxrnn.stack(*[jaxrnn.rnn(identity(DROP_H), reverse=reverse)] * 2, dropout=P)
  layer = jaxrnn.bidirectional(direction(False), direction(True))
  xs = jax.random.normal(jax.random.key(2), (DROP_T, DROP_H))
  _, ys = jax.jit(layer.apply)((((), ()), ((), ())), xs, key=jax.random.key(7))
  fw, bw = np.asarray(ys[:, :DROP_H]), np.asarray(ys[:, DROP_H:])
  assert abs((fw == 0).mean() - P) < 0.05 and abs((bw == 0).mean() - P) < 0.05
  assert not np.array_equal(fw == 0, bw == 0)


def test_residual_keeps_padding_zero_after_a_layer_that_does_not():
  # A custom merge adds 1 everywhere, padded steps too; the residual stack
  # still puts out zeros there (its padded outputs stay zero whatever its
  # layers return).
  inner = jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), merge=lambda fw, bw: fw + bw + 1.0)
  net = jaxrnn.stack(jaxrnn.lstm(H), inner, residual=True)
  params = random_params(net, I)
  mask = jnp.arange(T) < 4
  _, ys = jax.jit(net.apply)(params, XS, mask=mask)
  ys_1 = jaxrnn.scan(jaxrnn.lstm(H), params[0], XS, mask=mask)[1]
  want = inner.apply(params[1], ys_1, mask=mask)[1] + ys_1
  assert_trees_close(ys[:4], want[:4])
  assert (ys[4:] == 0.0).all()


# step-by-step decoding


def test_step_token_by_token_equals_apply_on_the_whole_sequence():
  net = jaxrnn.stack(jaxrnn.lstm(H, proj_size=2), jaxrnn.rnn(jaxrnn.gru(2)),
                     jaxrnn.simple_rnn(2), residual=True)
  params = random_params(net, I)
  want_carry, want_ys = jax.jit(net.apply)(params, XS)
  # The first half at once, then token by token from its carry.
  carry, first = net.apply(params, XS[:3])
  step = jax.jit(net.step)
  ys = [first]
  for x in XS[3:]:
    carry, y = step(params, carry, x)
    ys.append(y[None])
  assert_trees_close(jnp.concatenate(ys), want_ys)
  assert_trees_close(carry, want_carry)
  # And from the initial carry, every step.
  carry = net.initial_carry(params)
  for t, x in enumerate(XS):
    carry, y = step(params, carry, x)
    assert_trees_close(y, want_ys[t])
  assert_trees_close(carry, want_carry)
