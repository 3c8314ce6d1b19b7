"""jaxrnn.tasks.language_model against its equations, trained, and refusing bad input."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
import numpy_oracle
from jaxrnn import tasks, train

V, H = 11, 6


def random_params(lm, seed=0):
  """Every param random (init's zero bias would hide a missing one)."""
  shapes = jax.eval_shape(lm.init, jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


@pytest.mark.parametrize("tied", [False, True])
def test_logits_are_the_embedding_lstm_and_readout_composed(tied):
  # x_t = E[w_t], (c, h) = LSTM(x), o_t = h_t W_out + b_out with W_out = E^T when
  # tied: the NumPy LSTM oracle on the embedded ids.
  lm = tasks.language_model(jaxrnn.lstm(H), V, tied=tied)
  params = random_params(lm)
  ids = jnp.array([3, 1, 4, 1, 5, 9, 2, 6])
  carry, logits = jax.jit(lm.apply)(params, ids)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  last, hs = numpy_oracle.scan(numpy_oracle.lstm(), p.core, p.embed[np.asarray(ids)])
  w_out = p.embed.T if tied else p.w_out
  np.testing.assert_allclose(logits, hs @ w_out + p.b_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(carry.h, last["h"], rtol=1e-5, atol=1e-6)
  # step by step from the initial carry, and the batched path, agree
  c, stepped = lm.initial_carry(params), []
  for i in ids:
    c, o = lm.step(params, c, i)
    stepped.append(o)
  np.testing.assert_allclose(jnp.stack(stepped), logits, rtol=1e-5, atol=1e-5)
  batch = jnp.stack([ids, ids[::-1]])
  _, batched = lm.apply_batch(params, batch, carry=lm.initial_carry(params, batch_size=2))
  np.testing.assert_allclose(batched[0], logits, rtol=1e-5, atol=1e-5)
  _, time_major = lm.apply_batch(params, batch.T, time_major=True)
  np.testing.assert_allclose(time_major[:, 0], logits, rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda p: lm.apply(p, ids)[1].sum())(params)
  assert (grads.w_out is None) == tied and float(jnp.abs(grads.embed).sum()) > 0


def test_dropout_draws_per_sequence_as_apply_does_and_only_with_a_key():
  lm = tasks.language_model(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H), dropout=0.3), V,
                            tied=True, dropout=0.5)
  params = random_params(lm)
  ids = jnp.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [0, 2, 4, 6, 8]])
  key = jax.random.key(3)
  _, batched = lm.apply_batch(params, ids, key=key)
  keys = jax.random.split(key, 3)
  _, each = jax.vmap(lambda x, k: lm.apply(params, x, key=k))(ids, keys)
  np.testing.assert_allclose(batched, each, rtol=1e-5, atol=1e-5)
  _, plain = lm.apply_batch(params, ids)
  assert not np.allclose(batched, plain)              # dropped, with a key
  # apply's key is split three ways: the layer's, the embedding's and the
  # output's masks, so no mask repeats another's draws
  k_layer, k_in, k_out = jax.random.split(keys[0], 3)
  drop = lambda k, x: jnp.where(jax.random.bernoulli(k, 0.5, x.shape), x / 0.5, 0.0)
  layer = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H), dropout=0.3)
  _, hs = layer.apply(params.core, drop(k_in, params.embed[ids[0]]), key=k_layer)
  np.testing.assert_allclose(each[0], drop(k_out, hs) @ params.embed.T + params.b_out,
                             rtol=1e-5, atol=1e-5)
  undropped = tasks.language_model(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H)), V, tied=True)
  np.testing.assert_allclose(plain, undropped.apply_batch(params, ids)[1], rtol=1e-6)


def test_evaluate_scores_every_next_token_once_with_the_carry_passed_on():
  lm = tasks.language_model(jaxrnn.gru(H), V, embed_size=4)
  params = random_params(lm)
  stream = np.random.default_rng(1).integers(0, V, size=47)

  def nll(part):            # one stream read whole: sum of -log p(next | prefix)
    logp = jax.nn.log_softmax(lm.apply(params, part[:-1])[1])
    return -float(jnp.take_along_axis(logp, jnp.asarray(part[1:, None]), -1).sum())
  got = lm.evaluate(params, stream, batch_size=1, window=5)
  assert got["tokens"] == 46
  np.testing.assert_allclose(got["loss"], nll(stream) / 46, rtol=1e-5)
  np.testing.assert_allclose(got["perplexity"], math.exp(got["loss"]), rtol=1e-6)
  # 3 streams of ceil(46 / 3) = 16 targets, the last one shorter
  got = lm.evaluate(params, stream, batch_size=3, window=4)
  parts = [stream[0:17], stream[16:33], stream[32:47]]
  np.testing.assert_allclose(got["loss"], sum(map(nll, parts)) / 46, rtol=1e-5)
  # the loss's carry stops at a window's last valid step, as the mask says
  window = jnp.asarray(stream[:8]).reshape(2, 4)
  mask = jnp.array([[True] * 4, [True, True, False, False]])
  *_, carry = lm.loss(params, lm.initial_carry(params, 2), (window, window, mask))
  np.testing.assert_allclose(carry[1], lm.apply(params, window[1, :2])[0], rtol=1e-5, atol=1e-6)


def test_tbptt_training_learns_a_cycle_and_generate_continues_it(tmp_path):
  # The stream 2 3 4 ... 10 2 3 ...: after training, the next token is
  # certain (perplexity near 1, from 11 at chance) and greedy decoding
  # continues the cycle.
  lm = tasks.language_model(jaxrnn.lstm(16), V, tied=True, dropout=0.1)
  stream = np.arange(600) % 9 + 2
  xs, ys = train.windows(stream, batch_size=4, window=10)
  opt = optax.chain(train.optimizer(3e-2), train.reduce_lr_on_plateau(0.5, patience=2))
  step = train.make_tbptt_step(lm.loss, opt, batched=True, key=jax.random.key(1))
  state = train.init_state(lm.init(jax.random.key(0)), opt)
  carry = lm.initial_carry(state.params, batch_size=4)
  before = lm.evaluate(state.params, stream[:200])["perplexity"]
  for epoch in range(3):
    for x, y in zip(xs, ys):
      state, carry, metrics = step(state, carry, (x, y))
    state = train.plateau_step(state, lm.evaluate(state.params, stream[:200])["loss"])
  after = lm.evaluate(state.params, stream[:200])
  assert before > 5 and after["perplexity"] < 1.5, (before, after)
  tokens = tasks.generate(lm, state.params, jnp.array([2, 3, 4]), 12, temperature=0)
  np.testing.assert_array_equal(tokens, (np.arange(3, 15) % 9) + 2)
  jaxrnn.io.save(tmp_path / "lm.msgpack", state.params)
  back = jaxrnn.io.load(tmp_path / "lm.msgpack")
  assert back.w_out is None
  assert lm.evaluate(back, stream[:200])["loss"] == after["loss"]


def test_bad_sizes_and_ids_are_refused_with_the_fix():
  lm = tasks.language_model(jaxrnn.lstm(H), V)
  params = lm.init(jax.random.key(0))
  cases = [
      (lambda: tasks.language_model(jaxrnn.lstm(H), V, embed_size=4, tied=True),
       ValueError, "output size (6) must equal embed_size (4). Fix: embed_size=6"),
      (lambda: lm.apply(params, jax.nn.one_hot(jnp.array([1, 2]), V)),
       TypeError, "ids are float32[2, 11]; expected int token ids in [0, 11)"),
      (lambda: lm.apply(params, jnp.array([1, 11])), ValueError, "ids hold 11; expected ids in [0, 11)"),
      (lambda: lm.evaluate(params, np.array([1, 2, -1, 3])), ValueError, "ids hold -1"),
      (lambda: tasks.generate(lm, params, jnp.array([12]), 3, temperature=0),
       ValueError, "prompt holds 12; expected ids in [0, 11)"),
      (lambda: tasks.language_model(jaxrnn.lstm(H), V, dropout=1.0), ValueError, "dropout"),
  ]
  for run, error, says in cases:
    with pytest.raises(error, match=re.escape(says)):
      run()
  # padding may hold -100 where the mask (or seq_lengths) leaves it out
  ids, mask = train.pad_batch([[1, 2, 3], [4]], value=-100)
  np.testing.assert_allclose(lm.apply_batch(params, ids, mask=mask)[1],
                             lm.apply_batch(params, ids, seq_lengths=mask.sum(1))[1])
  opt = train.optimizer(1e-3)
  with pytest.raises(ValueError, match=r"loss got inputs of shape \(3,\); it takes the whole "
                     r"batch.*Fix: make_tbptt_step\(model.loss, opt, batched=True\)"):
    train.make_tbptt_step(lm.loss, opt)(train.init_state(params, opt),
                                        lm.initial_carry(params, 2), (ids % V,) * 2)
  # A hand-built Model that embeds ids, given generate's default one-hot inputs
  table = jnp.ones((V, 3))
  readout = tasks.readout_model(jaxrnn.gru(4), V)
  core = readout.init(jax.random.key(0), 3)
  by_hand = readout._replace(apply=lambda p, ids, **kw: readout.apply(p, table[ids], **kw),
                             step=lambda p, c, i: readout.step(p, c, table[i]))
  with pytest.raises(TypeError, match=r"Fix: a model that embeds ids itself takes "
                                      r"inputs=lambda ids: ids"):
    tasks.generate(by_hand, core, jnp.array([1, 2]), 3, temperature=0)
  assert tasks.generate(by_hand, core, jnp.array([1, 2]), 3, temperature=0,
                        inputs=lambda ids: ids).shape == (3,)
