"""The task generators have the statistics their docstrings state, and a
short training run on each task lowers its loss.

Data tests use large samples and fixed keys; training tests use tiny
models and bounds measured with margin (see each test).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import tasks


def test_adding_constant_predictor_scores_one_sixth():
  xs, y = tasks.adding(jax.random.key(0), batch_size=100_000, length=20)
  mse = float(jnp.mean((y - 1.0) ** 2))
  # Var(u1 + u2) = 1/6; the standard error of this estimate is about 0.0008.
  assert abs(mse - tasks.ADDING_BASELINE_MSE) < 0.004, mse
  assert abs(float(y.mean()) - 1.0) < 0.01


@pytest.mark.parametrize("length", [2, 7, 50])
def test_adding_has_one_marker_in_each_half(length):
  xs, y = tasks.adding(jax.random.key(1), batch_size=2000, length=length)
  values, markers = np.asarray(xs[..., 0]), np.asarray(xs[..., 1])
  half = length // 2
  assert set(np.unique(markers).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(markers[:, :half].sum(1), 1)
  np.testing.assert_array_equal(markers[:, half:].sum(1), 1)
  np.testing.assert_allclose(y, (values * markers).sum(1), rtol=1e-6)
  assert values.min() >= 0.0 and values.max() <= 1.0
  # Every position of each half is used as a marker position.
  if length == 7:
    assert (markers.sum(0) > 0).all()


def test_adding_rejects_a_length_with_no_halves():
  with pytest.raises(ValueError, match="length=1"):
    tasks.adding(jax.random.key(0), 4, 1)


def test_recall_answer_is_the_first_symbol():
  xs, y = tasks.recall(jax.random.key(2), batch_size=3000, length=30,
                       num_symbols=5, num_distractors=3)
  tokens = np.asarray(xs.argmax(-1))
  assert xs.shape == (3000, 31, 8)
  np.testing.assert_array_equal(np.asarray(xs.sum(-1)), 1.0)   # one-hot
  np.testing.assert_array_equal(tokens[:, 0], np.asarray(y))
  assert (tokens[:, 1:] >= 5).all() and (tokens[:, 1:] < 8).all()
  # Answers are balanced: each of the 5 classes near 600 of 3000.
  counts = np.bincount(np.asarray(y), minlength=5)
  assert counts.min() > 500, counts


def test_copy_memory_layout():
  T = 12
  xs, ys = tasks.copy_memory(jax.random.key(3), batch_size=500, length=T)
  tokens, ys = np.asarray(xs.argmax(-1)), np.asarray(ys)
  assert xs.shape == (500, T + 20, tasks.COPY_VOCAB) and ys.shape == (500, T + 20)
  data = tokens[:, :10]
  assert data.min() >= 1 and data.max() <= 8
  np.testing.assert_array_equal(tokens[:, 10:T + 9], 0)          # the wait
  np.testing.assert_array_equal(tokens[:, T + 9], 9)             # delimiter
  np.testing.assert_array_equal(tokens[:, T + 10:], 0)           # recall phase
  np.testing.assert_array_equal(ys[:, :T + 10], 0)
  np.testing.assert_array_equal(ys[:, T + 10:], data)
  assert tasks.copy_memory_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))


def test_copy_memory_baseline_is_the_memoryless_cross_entropy():
  # Blanks predicted with certainty, then uniform over the 8 data symbols.
  T = 30
  _, ys = tasks.copy_memory(jax.random.key(4), batch_size=64, length=T)
  logits = jnp.where(jnp.arange(T + 20)[:, None] < T + 10,
                     jnp.where(jnp.arange(10) == 0, 0.0, -1e9),
                     jnp.where((jnp.arange(10) >= 1) & (jnp.arange(10) <= 8),
                               0.0, -1e9))
  logp = jnp.broadcast_to(jax.nn.log_softmax(logits), ys.shape + (10,))
  ce = -jnp.take_along_axis(logp, ys[..., None], -1)
  assert float(ce.mean()) == pytest.approx(tasks.copy_memory_baseline(T), rel=1e-5)


def test_sequential_digits_shapes_labels_and_split():
  train, test = tasks.sequential_digits(jax.random.key(5), test_fraction=0.25)
  assert train.xs.shape[1:] == (64, 1) and train.xs.dtype == np.float32
  assert len(train.y) + len(test.y) == 1797
  assert len(test.y) == round(0.25 * 1797)
  assert train.xs.min() == 0.0 and train.xs.max() == 1.0
  assert set(train.y.tolist()) == set(range(10)) == set(test.y.tolist())
  # No image is in both splits, and the split depends on the key.
  flat = lambda s: {x.tobytes() for x in s.xs}
  assert len(flat(train) & flat(test)) < 5   # a few digits are exact duplicates
  other, _ = tasks.sequential_digits(jax.random.key(6), test_fraction=0.25)
  assert not np.array_equal(other.y, train.y)


def test_corpus_round_trip_and_split():
  text = tasks.reference_text()
  assert len(text) > 100_000
  vocab = tasks.Vocab.from_text(text)
  ids = vocab.encode(text[:20_000])
  assert ids.dtype == np.int32 and ids.max() < len(vocab)
  assert vocab.decode(ids) == text[:20_000]
  with pytest.raises(ValueError, match="not in the vocabulary"):
    tasks.Vocab.from_text("abc").encode("abd")
  with pytest.raises(TypeError, match=r"text is a list; expected a str.*vocabulary of words"):
    tasks.Vocab.from_text(["hello", "world"])
  train, valid, test = tasks.split_tokens(ids, 0.1, 0.1)
  np.testing.assert_array_equal(np.concatenate([train, valid, test]), ids)
  assert len(valid) == len(test) == 2000
  with pytest.raises(ValueError, match="id -1 is outside"):
    vocab.decode([-1])
  with pytest.raises(ValueError, match="together under 1"):
    tasks.split_tokens(ids, 0.6, 0.6)      # the pieces would overlap


def test_readout_model_and_its_classification_loss_from_their_equations():
  # o_t = h_t W_out + b_out at every step, for apply and for step, with
  # every param random (init's b_out is zero, which would hide a missing
  # bias); the loss is the cross-entropy of the last step's logits and its
  # "correct" that step's argmax.
  cell = jaxrnn.gru(4)
  model = tasks.readout_model(cell, output_size=3)
  shapes = jax.eval_shape(lambda key: model.init(key, 2), jax.random.key(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
  xs = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
  _, hs = jaxrnn.scan(cell, params.core, xs)
  want = hs @ params.w_out + params.b_out
  got_carry, got = model.apply(params, xs)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  step_carry, o = model.step(params, model.apply(params, xs[:4])[0], xs[4])
  np.testing.assert_allclose(o, want[4], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(step_carry, got_carry, rtol=1e-5, atol=1e-6)
  # The first and last steps' argmaxes differ, so "correct" shows which it read.
  assert want[0].argmax() != want[-1].argmax()
  for label in range(3):
    total, count, metrics = tasks.last_step_classification_loss(model)(params, (xs, label))
    np.testing.assert_allclose(total, -jax.nn.log_softmax(want[-1])[label], rtol=1e-5)
    assert float(count) == 1.0
    assert float(metrics["correct"]) == float(want[-1].argmax() == label)


def test_readout_model_runs_its_layers_dropout_with_a_key():
  # The classification loss takes the train step's key last; batched, each
  # sequence draws from split(key, B), as jaxrnn.apply_batch splits it.
  layer = jaxrnn.rnn(jaxrnn.gru(6, reset_after=False), dropout=0.3, recurrent_dropout=0.3)
  model = tasks.readout_model(layer, output_size=3)
  params = model.init(jax.random.key(0), 4)
  xs, labels = jax.random.normal(jax.random.key(1), (5, 7, 4)), jnp.arange(5) % 3
  key = jax.random.key(9)
  per_example = tasks.last_step_classification_loss(model)
  batched = tasks.last_step_classification_loss(model, batched=True)
  got = batched(params, (xs, labels), key)[0]
  want = jax.vmap(lambda x, y, k: per_example(params, (x, y), k)[0])(
      xs, labels, jax.random.split(key, 5))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, batched(params, (xs, labels))[0])   # without a key: no dropout


def test_readout_model_takes_the_batch_options_of_apply_batch():
  # seq_lengths, time_major and resets reach the layer: the same numbers as
  # the mask, the transpose and a second sequence started from scratch.
  model = tasks.readout_model(jaxrnn.lstm(6), output_size=2)
  params = model.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (4, 7, 3))
  lengths = jnp.array([7, 5, 1, 3])
  mask = jnp.arange(7) < lengths[:, None]
  want = model.apply_batch(params, xs, mask=mask)
  got = model.apply_batch(params, xs.swapaxes(0, 1), seq_lengths=lengths, time_major=True)
  np.testing.assert_allclose(got[1].swapaxes(0, 1), want[1], atol=1e-6)
  for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0]), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  resets = jnp.arange(7) == 4
  one = model.apply(params, xs[0], resets=resets)[1]
  np.testing.assert_allclose(one[4:], model.apply(params, xs[0, 4:])[1], atol=1e-6)
  np.testing.assert_allclose(
      model.apply_batch(params, xs, resets=jnp.broadcast_to(resets, (4, 7)))[1][0], one, atol=1e-6)


def test_generate_continues_a_prompt_greedily_or_by_drawing():
  model = tasks.readout_model(jaxrnn.gru(8), output_size=6)
  params = model.init(jax.random.key(0), 6)
  prompt = jnp.array([1, 4, 2])
  greedy = tasks.generate(model, params, prompt, 5, temperature=0)
  # Greedy: each token the argmax of the logits apply gives its prefix.
  ids = jnp.concatenate([prompt, greedy])
  logits = model.apply(params, jax.nn.one_hot(ids, 6))[1]
  np.testing.assert_array_equal(logits[2:-1].argmax(-1), greedy)
  # Drawn: a pure function of the key; nearly greedy when cold.
  draw = jax.jit(lambda p, k: tasks.generate(model, p, prompt, 40, k, temperature=1.5))
  np.testing.assert_array_equal(draw(params, jax.random.key(1)), draw(params, jax.random.key(1)))
  assert not np.array_equal(draw(params, jax.random.key(1)), draw(params, jax.random.key(2)))
  cold = tasks.generate(model, params, prompt, 5, jax.random.key(3), temperature=1e-4)
  np.testing.assert_array_equal(cold, greedy)
  # A NumPy zero is greedy; a traced temperature is chosen at run time.
  np.testing.assert_array_equal(
      tasks.generate(model, params, prompt, np.int64(5), temperature=np.float32(0)), greedy)
  traced = jax.jit(lambda t, k: tasks.generate(model, params, prompt, 40, k, temperature=t))
  np.testing.assert_array_equal(traced(0.0, jax.random.key(1))[:5], greedy)
  np.testing.assert_array_equal(traced(1.5, jax.random.key(1)), draw(params, jax.random.key(1)))
  batch = jax.vmap(lambda p, k: tasks.generate(model, params, p, 5, k))(
      jnp.stack([prompt, prompt[::-1]]), jax.random.split(jax.random.key(4), 2))
  assert batch.shape == (2, 5) and batch.dtype == jnp.int32
  for call, says in [
      (lambda: tasks.generate(model, params, prompt, 3), "needs a key"),
      (lambda: tasks.generate(model, params, jnp.array([], int), 3, temperature=0),
       r"prompt is int32\[0\]; expected int\[P\] with P >= 1"),
      (lambda: tasks.generate(model, params, prompt, -1, temperature=0), "steps is -1"),
      (lambda: tasks.generate(model, params, prompt, 3, temperature=-1.0), "temperature=-1.0")]:
    with pytest.raises(ValueError, match=says):
      call()


def test_generate_drives_a_model_that_embeds_its_own_ids():
  # A Model built by hand around an embedding (E = 3 for 6 tokens): with
  # inputs=identity it takes ids, and continues the prompt as the one-hot
  # readout_model does with the embedding as its first layer's input.
  core = tasks.readout_model(jaxrnn.gru(8), output_size=6)
  params = {"embed": jax.random.normal(jax.random.key(5), (6, 3)),
            "model": core.init(jax.random.key(0), 3)}
  embedded = tasks.Model(
      init=None, output_size=6,
      apply=lambda p, ids, **kw: core.apply(p["model"], p["embed"][ids], **kw),
      step=lambda p, c, i: core.step(p["model"], c, p["embed"][i]),
      initial_carry=lambda p: core.initial_carry(p["model"]))
  prompt = jnp.array([1, 4, 2])
  got = tasks.generate(embedded, params, prompt, 6, jax.random.key(1), temperature=0.8,
                       inputs=lambda ids: ids)
  # the same draws from the one-hot path through an equivalent first layer
  # (one_hot(ids) @ embed = embed[ids])
  linear = tasks.Model(
      init=None, output_size=6,
      apply=lambda p, x, **kw: core.apply(p["model"], x @ p["embed"], **kw),
      step=lambda p, c, x: core.step(p["model"], c, x @ p["embed"]),
      initial_carry=lambda p: core.initial_carry(p["model"]))
  want = tasks.generate(linear, params, prompt, 6, jax.random.key(1), temperature=0.8)
  np.testing.assert_array_equal(got, want)
  ids = jnp.concatenate([prompt, got])
  assert got.dtype == jnp.int32 and embedded.apply(params, ids)[1].shape == (9, 6)


# A short run of each task lowers its loss. Tiny models, fixed keys; each
# bound was measured with a wide margin (the measured value is in a comment).

def short_run(model, loss_fn, batches, input_size=None, lr=1e-2):
  """Trains with jaxrnn.train for len(batches) steps; returns (params, losses)."""
  from jaxrnn import train
  opt = train.optimizer(lr, clip_norm=1.0)
  input_size = input_size or batches[0][0].shape[-1]
  state = train.init_state(model.init(jax.random.key(0), input_size), opt)
  step = train.make_train_step(loss_fn, opt)
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return state.params, losses


def last_step_loss(model, kind):
  from jaxrnn import train

  def loss_fn(params, example):
    xs, target = example
    _, out = model.apply(params, xs)
    if kind == "mse":
      total, count = train.mse(out[-1, 0], target)
      return total, count, {}
    total, count = train.last_step_cross_entropy(out, target)
    return total, count, {"correct": (out[-1].argmax() == target) * 1.0}
  return loss_fn


def eval_metrics(loss_fn, params, batch):
  from jaxrnn import train
  return {k: float(v) for k, v in train.make_eval_step(loss_fn)(params, batch).items()}


def test_adding_short_run_learns():
  model = tasks.readout_model(jaxrnn.gru(16), 1)
  loss_fn = last_step_loss(model, "mse")
  gen = jax.jit(lambda k: tasks.adding(k, 32, 10))
  params, _ = short_run(model, loss_fn, [gen(k) for k in jax.random.split(jax.random.key(1), 80)])
  mse = eval_metrics(loss_fn, params, tasks.adding(jax.random.key(2), 512, 10))["loss"]
  assert mse < 0.5 * tasks.ADDING_BASELINE_MSE, mse   # measured 0.021


def test_recall_short_run_learns():
  model = tasks.readout_model(jaxrnn.gru(16), 8)
  loss_fn = last_step_loss(model, "ce")
  gen = jax.jit(lambda k: tasks.recall(k, 32, 5))
  params, _ = short_run(model, loss_fn, [gen(k) for k in jax.random.split(jax.random.key(1), 60)])
  acc = eval_metrics(loss_fn, params, tasks.recall(jax.random.key(2), 512, 5))["correct"]
  assert acc > 0.5, acc   # chance 0.125; measured 0.94


def test_copy_memory_short_run_beats_its_start():
  from jaxrnn import train
  model = tasks.readout_model(jaxrnn.lstm(32), tasks.COPY_VOCAB)

  def loss_fn(params, example):
    xs, ys = example
    _, logits = model.apply(params, xs)
    total, count = train.cross_entropy(logits, ys)
    return total, count, {}
  gen = jax.jit(lambda k: tasks.copy_memory(k, 32, 5))
  _, losses = short_run(model, loss_fn, [gen(k) for k in jax.random.split(jax.random.key(1), 60)])
  # From about 2.1 per step down towards the memoryless 0.83 (measured 0.84).
  assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-20:])


def test_sequential_digits_short_run_learns():
  train_split, test_split = tasks.sequential_digits(jax.random.key(0))
  model = tasks.readout_model(jaxrnn.gru(32), tasks.DIGITS_CLASSES)
  loss_fn = last_step_loss(model, "ce")
  order = np.asarray(jax.random.randint(jax.random.key(1), (80, 64), 0, len(train_split.y)))
  batches = [(train_split.xs[i], train_split.y[i]) for i in order]
  params, _ = short_run(model, loss_fn, batches)
  acc = eval_metrics(loss_fn, params, (test_split.xs, test_split.y))["correct"]
  assert acc > 0.3, acc   # chance 0.1; measured 0.64


def test_corpus_short_run_learns():
  from jaxrnn import train
  text = tasks.reference_text()[:60_000]
  vocab = tasks.Vocab.from_text(text)
  V = len(vocab)
  inputs, targets = train.windows(vocab.encode(text), 16, 32)
  model = tasks.readout_model(jaxrnn.lstm(32), V)

  def loss_fn(params, example):
    x, y = example
    _, logits = model.apply(params, jax.nn.one_hot(x, V))
    total, count = train.cross_entropy(logits, y)
    return total, count, {}
  _, losses = short_run(model, loss_fn, [(inputs[k], targets[k]) for k in range(80)],
                        input_size=V)
  # Nats per character: log(V) ~ 4.4 at the start; the unigram entropy is ~3.
  assert np.mean(losses[-10:]) < np.log(V) - 1.0, (np.log(V), losses[-10:])


def test_rollout_feeds_each_prediction_back_as_apply_would_read_it():
  # A model trained on increments: the next input is x + y. Reference: apply
  # over the context and the inputs the rollout fed, grown one step at a time.
  model = tasks.readout_model(jaxrnn.lstm(8), output_size=2)
  params = model.init(jax.random.key(0), 2)
  context = jax.random.normal(jax.random.key(1), (6, 2))
  feedback = lambda x, y: x + 0.1 * y
  got = jax.jit(lambda p, c: tasks.rollout(model, p, c, 4, feedback=feedback))(params, context)
  inputs = [*context]                 # the inputs the rollout fed, from its predictions
  for y in got[:-1]:
    inputs.append(feedback(inputs[-1], y))
  ys = model.apply(params, jnp.stack(inputs))[1]       # read as one sequence
  np.testing.assert_allclose(got, ys[5:], rtol=1e-5, atol=1e-6)
  batch = jnp.stack([context, -context])
  np.testing.assert_allclose(jax.vmap(lambda c: tasks.rollout(model, params, c, 4,
                                                              feedback=feedback))(batch)[0],
                             got, rtol=1e-5, atol=1e-6)
  assert tasks.rollout(model, params, context, 0).shape == (0, 2)
  wide = tasks.readout_model(jaxrnn.gru(4), output_size=3)
  wide_params = wide.init(jax.random.key(0), 2)
  for run, says in [
      (lambda: tasks.rollout(wide, wide_params, context, 3), r"outputs 3 values per step and "
       r"reads 2.*Fix: feedback=lambda x, y"),
      (lambda: tasks.rollout(model, params, jnp.arange(6), 3), r"context is int32\[6\]; expected float"),
      (lambda: tasks.rollout(model, params, context, -1), r"steps is -1"),
      (lambda: tasks.rollout(wide, wide_params, context, 2, feedback=lambda x, y: y),
       r"feedback returned \(3,\); expected the next input \[2\]")]:
    with pytest.raises(ValueError, match=says):
      run()


def test_generate_draws_within_top_k_and_top_p():
  lm = tasks.language_model(jaxrnn.gru(8), 6)
  params = lm.init(jax.random.key(0))
  prompt = jnp.array([1, 2])
  draw = jax.jit(lambda key, k, p: tasks.generate(lm, params, prompt, 12, key, top_k=k, top_p=p),
                 static_argnums=(1, 2))
  greedy = tasks.generate(lm, params, prompt, 12, temperature=0)
  # one token left, by either filter: the draws are greedy decoding
  np.testing.assert_array_equal(draw(jax.random.key(1), 1, None), greedy)
  np.testing.assert_array_equal(draw(jax.random.key(1), None, 1e-6), greedy)
  for key in range(3):     # top_k=2: each token among the two its logits rank highest
    tokens = draw(jax.random.key(key), 2, None)
    logits = lm.apply(params, jnp.concatenate([prompt, tokens]))[1][1:-1]
    ranks = jnp.argsort(jnp.argsort(-logits, axis=-1), axis=-1)
    assert (jnp.take_along_axis(ranks, tokens[:, None], -1) < 2).all()
    # top_p=0.6: each token among the fewest most likely whose mass reaches 0.6
    tokens = draw(jax.random.key(key), None, 0.6)
    probs = jax.nn.softmax(lm.apply(params, jnp.concatenate([prompt, tokens]))[1][1:-1])
    for p, t in zip(np.asarray(probs), np.asarray(tokens)):
      assert p[p > p[t]].sum() < 0.6
  for kwargs, says in [(dict(top_k=7), r"top_k=7; expected an int in \[1, 6\]"),
                       (dict(top_p=0.0), r"top_p=0.0; expected a Python number in \(0, 1\]")]:
    with pytest.raises(ValueError, match=says):
      tasks.generate(lm, params, prompt, 3, jax.random.key(0), **kwargs)
