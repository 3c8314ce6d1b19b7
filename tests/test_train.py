"""jaxrnn.train: the step learns, compiles once, averages padding exactly,
runs data-parallel with the same loss, and checkpoints resume a killed run
to the same params."""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train

CELL = jaxrnn.gru(8)
HEAD_SIZE = 1


def model_init(key, input_size=2):
  k1, k2 = jax.random.split(key)
  return {"rnn": CELL.init(k1, input_size),
          "head": jax.random.normal(k2, (8, HEAD_SIZE)) * 0.1}


def adding_loss(params, example):
  """MSE at the last valid step of a masked sequence."""
  xs, mask, target = example
  _, ys = jaxrnn.scan(CELL, params["rnn"], xs, mask=mask)
  pred = train.last_valid(ys, mask) @ params["head"]
  return (*train.mse(pred[0], target), {})


def batched_adding_loss(params, batch):
  """`adding_loss` for a whole batch, through `jaxrnn.scan_batch` (the GRU's kernel)."""
  xs, mask, target = batch
  _, ys = jaxrnn.scan_batch(CELL, params["rnn"], xs, mask=mask)
  pred = jax.vmap(train.last_valid)(ys, mask) @ params["head"]
  return (*train.mse(pred[:, 0], target), {})


def make_batch(key, batch=16, T=8):
  from jaxrnn.tasks import adding
  xs, y = adding(key, batch, T)
  return xs, jnp.ones((batch, T), bool), y


def test_loss_decreases_and_step_traces_once():
  traces = []
  def counted_loss(params, example):
    traces.append(1)
    return adding_loss(params, example)
  opt = train.optimizer(1e-2)
  state = train.init_state(model_init(jax.random.key(0)), opt)
  step = train.make_train_step(counted_loss, opt)
  data = [make_batch(k) for k in jax.random.split(jax.random.key(1), 150)]
  state, history = train.fit(step, state, data, steps=150, quiet=True)
  first = np.mean([h["loss"] for h in history[:10]])
  last = np.mean([h["loss"] for h in history[-10:]])
  assert last < 0.5 * first, (first, last)
  assert int(state.step) == 150
  assert len(traces) == 1, "the train step must compile once"


def test_padding_does_not_change_the_loss():
  params = model_init(jax.random.key(0))
  xs, _, y = make_batch(jax.random.key(3), batch=4, T=6)
  lengths = jnp.array([6, 3, 5, 1])
  mask = jnp.arange(6)[None] < lengths[:, None]
  padded = jnp.where(mask[..., None], xs, 99.0)        # garbage in padded steps
  eval_step = train.make_eval_step(adding_loss)
  a = eval_step(params, (xs, mask, y))["loss"]
  b = eval_step(params, (padded, mask, y))["loss"]
  np.testing.assert_allclose(a, b, rtol=1e-6)


def padded_start():
  """``(opt, state, batch)``: a fresh state and a batch of 16 with lengths 1 to 8."""
  opt = train.optimizer(1e-2)
  state = train.init_state(model_init(jax.random.key(0)), opt)
  lengths = jnp.arange(16) % 8 + 1
  xs, _, y = make_batch(jax.random.key(4))
  return opt, state, (xs, jnp.arange(8)[None] < lengths[:, None], y)


def test_batched_loss_with_scan_batch_trains_like_the_per_example_one():
  # The GRU's batched kernel runs; same loss, same update.
  opt, state, batch = padded_start()
  per_example = train.make_train_step(adding_loss, opt, donate=False)(state, batch)
  whole_batch = train.make_train_step(batched_adding_loss, opt, donate=False,
                                      batched=True)(state, batch)
  np.testing.assert_allclose(whole_batch[1]["loss"], per_example[1]["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(whole_batch[0].params),
                  jax.tree.leaves(per_example[0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  eval_batched = train.make_eval_step(batched_adding_loss, batched=True)(state.params, batch)
  np.testing.assert_allclose(eval_batched["loss"], per_example[1]["loss"], rtol=1e-5)


DROPPED = jaxrnn.rnn(CELL, dropout=0.3, recurrent_dropout=0.3)


def dropout_loss(params, example, key):
  """`adding_loss` through a layer with Keras' dropout, drawn from ``key``."""
  xs, mask, target = example
  _, ys = DROPPED.apply(params["rnn"], xs, mask=mask, key=key)
  return (*train.mse((train.last_valid(ys, mask) @ params["head"])[0], target), {})


def batched_dropout_loss(params, batch, key):
  xs, mask, target = batch
  _, ys = jaxrnn.apply_batch(DROPPED, params["rnn"], xs, mask=mask, key=key)
  pred = jax.vmap(train.last_valid)(ys, mask) @ params["head"]
  return (*train.mse(pred[:, 0], target), {})


def test_a_keyed_step_drops_units_afresh_each_update_and_resumes_the_same_draws():
  opt, state, batch = padded_start()
  key = jax.random.key(9)
  per_example = train.make_train_step(dropout_loss, opt, donate=False, key=key)
  whole_batch = train.make_train_step(batched_dropout_loss, opt, donate=False,
                                      batched=True, key=key)
  # The two forms draw each sequence's masks from the same key: same update.
  a, b = per_example(state, batch), whole_batch(state, batch)
  np.testing.assert_allclose(b[1]["loss"], a[1]["loss"], rtol=1e-5)
  for x, z in zip(jax.tree.leaves(b[0].params), jax.tree.leaves(a[0].params)):
    np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-6)
  # Dropout runs: not the loss without it, another draw at the next step
  # number, and the same draw for the same step number (a resumed run).
  plain = train.make_eval_step(adding_loss)(state.params, batch)["loss"]
  later = state._replace(step=state.step + 1)
  assert abs(float(a[1]["loss"]) - float(plain)) > 1e-4
  assert abs(float(per_example(later, batch)[1]["loss"]) - float(a[1]["loss"])) > 1e-4
  np.testing.assert_array_equal(per_example(state, batch)[1]["loss"], a[1]["loss"])
  with pytest.raises(ValueError, match=r"make_train_step: key is int32\[\]; expected one "
                     r"PRNG key.*Fix: key=jax.random.key\(seed\)"):
    train.make_train_step(dropout_loss, opt, key=jnp.int32(3))


def test_a_loss_that_cannot_take_or_do_without_the_key_is_told_the_fix():
  opt, state, batch = padded_start()
  key = jax.random.key(9)
  with pytest.raises(TypeError, match=r"loss_fn\(params, example\) takes no third argument.*"
                     r"Fix: add a last argument key=None"):
    train.make_train_step(adding_loss, opt, donate=False, key=key)(state, batch)
  with pytest.raises(TypeError, match=r"loss_fn\(params, example, key\) needs a key.*"
                     r"Fix: give the key a default, key=None"):
    train.make_eval_step(lambda params, example, key: adding_loss(params, example)
                         )(state.params, batch)
  # A decorator may add the key (functools.wraps copies the 2-argument signature).
  def keyed(loss):
    @functools.wraps(loss)
    def with_key(params, example, key=None):
      return loss(params, example)
    return with_key
  train.make_train_step(keyed(adding_loss), opt, donate=False, key=key)(state, batch)
  # A Model built by hand whose apply takes no key= is told so by the task loss.
  from jaxrnn.tasks import last_step_classification_loss, readout_model
  model = readout_model(CELL, 2)
  hand = model._replace(apply=lambda params, xs, *, carry=None, mask=None:
                        model.apply(params, xs), apply_batch=None)
  start = train.init_state(hand.init(jax.random.key(0), 2), opt)
  labelled = (batch[0], jnp.zeros(batch[0].shape[0], int))
  for batched in (False, True):
    step = train.make_train_step(last_step_classification_loss(hand, batched=batched),
                                 opt, donate=False, batched=batched, key=key)
    with pytest.raises(TypeError, match=r"the Model's apply\(params, xs, \*, carry=None, "
                       r"mask=None\) takes no key=.*Fix: give apply"):
      step(start, labelled)


def test_a_loss_in_another_format_is_told_the_format_and_donation_spares_the_start():
  opt, state, batch = padded_start()
  start = model_init(jax.random.key(0))
  state = train.init_state(start, opt)
  mean = lambda params, example: adding_loss(params, example)[0]    # PyTorch's habit
  pair = lambda params, example: adding_loss(params, example)[:2]
  no_dict = lambda params, example: (*adding_loss(params, example)[:2], None)
  for loss, got in ((mean, r"float32\[\]"), (pair, "a tuple of 2"),
                    (no_dict, "a tuple of 3 whose third is a NoneType, not a dict")):
    with pytest.raises(TypeError, match=rf"loss_fn returned {got}; expected \(loss_sum, "
                       r"count, metric_sums\).*Fix: return \(\*train.mse"):
      train.make_train_step(loss, opt)(state, batch)
  # The step donates the state, a copy: the params it started from stay.
  train.make_train_step(adding_loss, opt)(state, batch)
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(start))


def test_masked_mean_counts_valid_steps_only():
  def per_step(params, example):
    preds, mask = example
    return (*train.mse(preds, 0.0, mask), {})
  preds = jnp.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
  mask = jnp.array([[True, True, True], [True, False, False]])
  loss = train.make_eval_step(per_step)(None, (preds, mask))["loss"]
  np.testing.assert_allclose(loss, (1 + 1 + 1 + 9) / 4)   # not the mean of means


def test_mse_with_a_step_mask_counts_valid_elements_not_steps():
  # pred [T, C] and mask [T]: the count is that of the elements averaged,
  # as without a mask (err.size), so the mean is per element.
  total, count = train.mse(jnp.full((3, 2), 2.0), 0.0, jnp.array([True, True, False]))
  assert (float(total), float(count)) == (16.0, 4.0)
  total, count = train.mse(jnp.full((3, 2), 2.0), 0.0)
  assert (float(total), float(count)) == (24.0, 6.0)


def test_cross_entropy_and_accuracy_leave_out_masked_steps():
  # The padded steps' logits and labels, chosen so that they would count
  # (a confident right answer, a confident wrong one), add nothing: the
  # sums equal those of the valid steps alone.
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
  labels = jnp.array([0, 2, 0, 1])
  mask = jnp.array([True, True, False, False])
  got = (train.cross_entropy(logits, labels, mask), train.accuracy(logits, labels, mask))
  want = (train.cross_entropy(logits[:2], labels[:2]), train.accuracy(logits[:2], labels[:2]))
  for (total, count), (want_total, want_count) in zip(got, want):
    np.testing.assert_allclose(total, want_total, rtol=1e-6)
    assert float(count) == float(want_count) == 2.0
  assert float(got[1][0]) == 1.0            # step 0 right, step 1 wrong
  # a label outside [0, C) is refused where known, but not at a masked step
  with pytest.raises(ValueError, match=r"cross_entropy: labels hold 7 at a step the mask "
                                       r"keeps; expected class indices in \[0, 3\)"):
    train.cross_entropy(logits, labels.at[1].set(7), mask)
  train.cross_entropy(logits, labels.at[3].set(-100), mask)
  # a mask of weights would be read as True: refused (0/1 floats are flags)
  train.cross_entropy(logits, labels, mask.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"cross_entropy: mask holds 5.0; expected bool \(or 0/1\)"
                                       r".*it does not weight it"):
    train.cross_entropy(logits, labels, jnp.array([1.0, 5.0, 0.0, 0.0]))
  with pytest.raises(ValueError, match=r"last_step_cross_entropy: labels hold -1"):
    train.last_step_cross_entropy(logits[None], jnp.array([-1]))
  for bad in (7, -1):           # traced: nan, not the class -1 would wrap to
    assert np.isnan(jax.jit(train.cross_entropy)(logits, labels.at[1].set(bad))[0])


def test_metrics_are_divided_by_the_batch_count_like_the_loss():
  # Per-example sums over the total count (3 of 4 valid steps right), not
  # a mean of the per-example sums (1.5) or of per-example means (0.5).
  def loss_fn(params, example):
    count, correct = example
    return jnp.float32(0.0), count, {"correct": correct}
  metrics = train.make_eval_step(loss_fn)(None, (jnp.array([3.0, 1.0]), jnp.array([3.0, 0.0])))
  np.testing.assert_allclose(metrics["correct"], 0.75)


def test_optimizer_clips_by_global_norm_unless_told_not_to():
  # Gradients of global norm 5 (3 and 4 in two leaves) scaled to norm 1.
  grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
  params = jax.tree.map(jnp.zeros_like, grads)
  for clip_norm, scale in ((1.0, 0.2), (None, 1.0), (10.0, 1.0)):
    opt = train.optimizer(0.1, clip_norm=clip_norm, base=optax.sgd)
    updates, _ = opt.update(grads, opt.init(params), params)
    for name in grads:
      np.testing.assert_allclose(updates[name], -0.1 * scale * grads[name], rtol=1e-6)


def test_a_batch_with_nothing_valid_leaves_the_params_as_they_were():
  # Its loss is 0 over a count of 0: 0 and a zero gradient, not NaN.
  opt = train.optimizer(1e-2)
  state = train.init_state(model_init(jax.random.key(0)), opt)
  xs, mask, y = make_batch(jax.random.key(5), batch=4, T=6)
  def every_step_loss(params, example):            # counts the valid steps only
    xs, mask, target = example
    _, ys = jaxrnn.scan(CELL, params["rnn"], xs, mask=mask)
    return (*train.mse((ys @ params["head"])[:, 0], target, mask), {})
  step = train.make_train_step(every_step_loss, opt, donate=False)
  new_state, metrics = step(state, (xs, jnp.zeros_like(mask), y))
  assert float(metrics["loss"]) == 0.0
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_last_valid_is_the_last_true_step_wherever_the_padding_is():
  ys = jnp.arange(5.0) + 10
  masks = {"right": [1, 1, 1, 0, 0], "left": [0, 0, 1, 1, 1], "gap": [1, 1, 0, 1, 0],
           "none valid": [0, 0, 0, 0, 0]}
  for name, m in masks.items():
    m = np.array(m, bool)
    want = ys[np.flatnonzero(m)[-1]] if m.any() else ys[0]
    got = jax.jit(train.last_valid)(ys, jnp.asarray(m))
    assert float(got) == float(want), name
  logits = jnp.array([[0.0, 5.0], [5.0, 0.0], [0.0, 0.0]])
  total, count = train.last_step_cross_entropy(logits, 0, jnp.array([False, True, False]))
  np.testing.assert_allclose(total, -jax.nn.log_softmax(logits[1])[0], rtol=1e-6)
  assert float(count) == 1.0
  total, count = train.last_step_cross_entropy(logits, 0, jnp.zeros(3, bool))
  assert (float(total), float(count)) == (0.0, 0.0)   # a padding row adds nothing


def test_losses_on_a_batch_equal_the_sum_of_their_per_example_values():
  # A loss for make_train_step(batched=True) passes [B, T, ...] arrays; each
  # helper then sums over the batch what it sums over one example.
  B, T, C = 4, 5, 3
  logits = jax.random.normal(jax.random.key(0), (B, T, C))
  labels = jax.random.randint(jax.random.key(1), (B, T), 0, C)
  mask = jnp.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 0], [0] * 5], bool)
  pairs = {
      "mse": (lambda pred, _, *m: train.mse(pred, jnp.float32(0.5), *m), (logits, labels, mask)),
      "cross_entropy": (train.cross_entropy, (logits, labels, mask)),
      "accuracy": (train.accuracy, (logits, labels, mask)),
      "last_step_cross_entropy": (train.last_step_cross_entropy, (logits, labels[:, 0], mask)),
  }
  for name, (loss, args) in pairs.items():
    for args_used in (args, args[:2]):                       # masked, and without a mask
      got = loss(*args_used)
      want = [v.sum() for v in jax.vmap(loss)(*args_used)]
      for g, w in zip(got, want, strict=True):
        assert g.shape == ()
        np.testing.assert_allclose(g, w, rtol=1e-6, err_msg=name)
  np.testing.assert_array_equal(train.last_valid(logits, mask),
                                jax.vmap(train.last_valid)(logits, mask))
  # Shapes that fit neither one example nor a batch are refused, not broadcast.
  bad = [
      (lambda: train.cross_entropy(logits, labels[:, :4]), r"cross_entropy: got logits "
       r"float32\[4, 5, 3\] and labels int32\[4, 4\]; expected .*\[B, T\] for a batch"),
      (lambda: train.cross_entropy(logits, labels, mask[0]), r"got mask bool\[5\]; "
       r"expected a mask \[4, 5\]"),
      (lambda: train.cross_entropy(logits, labels.astype(jnp.float32)), "class indices"),
      (lambda: train.last_step_cross_entropy(logits, labels, mask), r"labels int\[B\]"),
      (lambda: train.last_valid(logits, mask.T), r"ys \[B, T, ...\] with mask \[B, T\]"),
      (lambda: train.mse(logits[..., 0], 0.0, mask[:, :4]), r"mask over the leading axes"),
      (lambda: train.mse(logits[..., 0], logits[0, :, 0]), r"mse: got pred float32\[4, 5\] "
       r"and target float32\[5\]; expected a target of pred's shape, or a scalar"),
      (lambda: train.last_step_cross_entropy(logits[:, :4], labels[:, 0], mask[0, :4]),
       r"got logits float32\[4, 4, 3\] and mask bool\[4\]"),           # B = T: not one example
  ]
  for fail, message in bad:
    with pytest.raises(ValueError, match=message):
      fail()
  # What one example took before still works: lists, bool labels, Keras' y [N, 1].
  assert [float(v) for v in train.mse([1.0, 2.0], 0.0, [True, False])] == [1.0, 1.0]
  for pred, target in ((jnp.arange(4.0), jnp.arange(4.0)[:, None]),   # not [4, 4] broadcast
                       (jnp.arange(4.0)[:, None], jnp.arange(4.0))):
    assert [float(v) for v in train.mse(pred, target)] == [0.0, 4.0]
  assert [float(v) for v in train.accuracy(jnp.eye(2), jnp.array([False, True]))] == [2.0, 2.0]
  np.testing.assert_allclose(
      train.last_step_cross_entropy(logits, labels[:, :1], mask)[0],
      train.last_step_cross_entropy(logits, labels[:, 0], mask)[0])


def test_tbptt_windows_continue_each_stream_and_carry_passes():
  stream = np.arange(1000) % 7
  xs, ys = train.windows(stream, batch_size=4, window=10)
  assert xs.shape == ys.shape and xs.shape[1:] == (4, 10)
  np.testing.assert_array_equal(ys[:, :, :-1], xs[:, :, 1:])
  np.testing.assert_array_equal(xs[1, :, 0], ys[0, :, -1])     # window k+1 continues k
  for bad in (dict(batch_size=0, window=10), dict(batch_size=4, window=0)):
    with pytest.raises(ValueError, match="both must be 1 or more"):
      train.windows(stream, **bad)
  cell = jaxrnn.lstm(16)
  V = 7
  def loss_fn(params, carry, example):
    x, y = example
    carry, hs = jaxrnn.scan(cell, params["rnn"], jax.nn.one_hot(x, V), carry=carry)
    return (*train.cross_entropy(hs @ params["out"], y), {}, carry)
  params = {"rnn": cell.init(jax.random.key(0), V),
            "out": jax.random.normal(jax.random.key(1), (16, V)) * 0.1}
  opt = train.optimizer(1e-2)
  state = train.init_state(params, opt)
  step = train.make_tbptt_step(loss_fn, opt)
  carry = jax.vmap(lambda _: cell.initial_carry(params["rnn"]))(jnp.arange(4))
  losses = []
  for epoch in range(3):
    for k in range(len(xs)):
      state, carry, metrics = step(state, carry, (xs[k], ys[k]))
      losses.append(float(metrics["loss"]))
  assert carry.c.shape == (4, 16) and np.any(np.asarray(carry.c) != 0)
  # The stream is periodic: with the carry passed on, it becomes predictable.
  assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses


def test_tbptt_losses_in_another_form_are_told_the_fix_and_the_loss_reaches_the_optimizer():
  cell = jaxrnn.gru(8)
  params = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
  carry = jnp.zeros((2, 8))
  def loss_fn(params, carry, batch, key=None):
    carry, ys = jaxrnn.scan_batch(cell, params, batch, carry=carry)
    return (*train.mse(ys, 0.5), {}, carry)
  opt = train.optimizer(1e-2)
  state = train.init_state(params, opt)
  cases = [
      (lambda p, c, b: loss_fn(p, c, b)[:3], {},
       r"loss_fn returned a tuple of 3; expected \(loss_sum, count, metric_sums, new_carry\)"),
      (lambda p, b: loss_fn(p, None, b), {}, r"takes no carry; a TBPTT step calls "
       r"loss_fn\(params, carry, batch\)"),
      (lambda p, c, b: loss_fn(p, c, b), {"key": jax.random.key(0)},
       r"takes no fourth argument, and the step was built with key="),
  ]
  def swapped(params, batch, carry):
    return loss_fn(params, carry, batch)
  cases.append((swapped, {}, r"takes the carry third; .*Fix: take the carry second"))
  for loss, extra, says in cases:
    with pytest.raises(TypeError, match=says):
      train.make_tbptt_step(loss, opt, batched=True, donate=False, **extra)(state, carry, xs)
  with pytest.raises(TypeError, match=r"takes a carry second, as a TBPTT loss does.*"
                                      r"Fix: make_tbptt_step"):
    train.make_train_step(loss_fn, opt, batched=True, donate=False)(state, xs)
  # donate=False spares the state; the loss reaches optax as value=, which
  # reduce_on_plateau reads (it raised without one).
  plateau = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=1))
  state = train.init_state(params, plateau)
  step = train.make_tbptt_step(loss_fn, plateau, batched=True, donate=False)
  new, carry, metrics = step(state, carry, xs)
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state))
  assert int(new.step) == 1 and carry.shape == (2, 8)
  step = train.make_train_step(lambda p, b: loss_fn(p, jnp.zeros((2, 8)), b)[:3], plateau,
                               batched=True)
  assert int(step(train.init_state(params, plateau), xs)[0].step) == 1
  # fit runs (state, batch) steps: a TBPTT step is told how to hold the carry.
  tbptt = train.make_tbptt_step(loss_fn, opt, batched=True)
  with pytest.raises(TypeError, match=r"fit: train_step\(state.*, carry, batch\) cannot be "
                                      r"called as train_step\(state, batch\).*Fix: hold the carry"):
    train.fit(tbptt, state, [xs], 1, quiet=True)
  (trained, carry), history = train.fit(
      train.carry_in_state(tbptt), (train.init_state(params, opt), jnp.zeros((2, 8))),
      [xs] * 3, 3, quiet=True)
  assert int(trained.step) == 3 and len(history) == 3
  for bad in (0, -1.0, True):
    with pytest.raises(ValueError, match=rf"clip_norm={bad!r}; expected a number above 0.*"
                                         r"clip_norm=None for no clipping"):
      train.optimizer(1e-2, clip_norm=bad)


@pytest.mark.parametrize("dropout", [False, True])
def test_tbptt_step_on_the_whole_batch_equals_the_per_example_one(dropout):
  cell, V, B = jaxrnn.lstm(8), 5, 3
  xs, ys = train.windows(np.arange(200) % V, batch_size=B, window=6)
  # With a key, each window's masks are drawn per sequence, alike in both forms.
  layer = jaxrnn.rnn(cell, dropout=0.3 * dropout, recurrent_dropout=0.3 * dropout)
  key = jax.random.key(2) if dropout else None

  def per_example(params, carry, example, *key):
    carry, hs = layer.apply(params["rnn"], jax.nn.one_hot(example[0], V), carry=carry,
                            key=key[0] if key else None)
    return (*train.cross_entropy(hs @ params["out"], example[1]), {}, carry)

  def whole_batch(params, carry, batch, *key):
    carry, hs = jaxrnn.apply_batch(layer, params["rnn"], jax.nn.one_hot(batch[0], V),
                                   carry=carry, key=key[0] if key else None)
    return (*jax.vmap(train.cross_entropy)(hs @ params["out"], batch[1]), {}, carry)

  params = {"rnn": cell.init(jax.random.key(0), V),
            "out": jax.random.normal(jax.random.key(1), (8, V)) * 0.1}
  opt = train.optimizer(1e-2)
  runs = []
  for loss_fn, batched in ((per_example, False), (whole_batch, True)):
    step = train.make_tbptt_step(loss_fn, opt, batched=batched, key=key)
    state = train.init_state(jax.tree.map(jnp.copy, params), opt)   # the step donates it
    carry = jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape),
                         cell.initial_carry(params["rnn"]))
    losses = []
    for k in range(3):                       # the carry crosses two windows
      state, carry, metrics = step(state, carry, (xs[k], ys[k]))
      losses.append(metrics["loss"])
    runs.append((losses, carry, state.params))
  np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(runs[1][1:]), jax.tree.leaves(runs[0][1:])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if dropout:   # the first window's loss is not the loss without dropout
    start = jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape),
                         cell.initial_carry(params["rnn"]))
    plain = whole_batch(params, start, (xs[0], ys[0]))
    assert abs(float(runs[0][0][0]) - float(jnp.sum(plain[0]) / jnp.sum(plain[1]))) > 1e-4


def test_checkpoint_round_trip_is_exact(tmp_path):
  opt = train.optimizer(1e-3)
  state = train.init_state(model_init(jax.random.key(0)), opt)
  step = train.make_train_step(adding_loss, opt, donate=False)
  state, _ = step(state, make_batch(jax.random.key(1)))
  ckpts = train.Checkpoints(tmp_path, keep=2)
  for position in (1, 2, 3):
    ckpts.save(state, position=position)
  assert ckpts.positions() == [2, 3]                    # older ones pruned
  assert not [p for p in os.listdir(tmp_path) if not p.startswith("checkpoint_")]
  template = train.init_state(model_init(jax.random.key(9)), opt)
  restored, position = ckpts.restore(template)
  assert position == 3
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  # A template of another structure or size: the leaves that differ are named.
  with pytest.raises(ValueError, match=r"only in the file: \.params.*; only in the template: \['something'\]"):
    ckpts.restore({"something": jnp.zeros(1)})
  wider = jax.tree.map(lambda a: jnp.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
                       if a.ndim else a, template)
  with pytest.raises(ValueError, match=r"leaf \.params.* is float32\[\d+(, \d+)*\] in the file"):
    ckpts.restore(wider)
  # A new run in this directory would have its saves pruned: refused.
  with pytest.raises(ValueError, match=r"holds checkpoints at positions \[2, 3\], past this save's 1"):
    ckpts.save(state, position=1)
  assert ckpts.positions() == [2, 3]
  # A serving process restores the params alone, into a model's init.
  params, position = ckpts.restore_params(model_init(jax.random.key(9)))
  assert position == 3 and jax.tree.structure(params) == jax.tree.structure(state.params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  params, position = ckpts.restore_params(
      jax.eval_shape(lambda: model_init(jax.random.key(9))), position=2)
  assert position == 2
  with pytest.raises(ValueError, match=r"restore_params: .* holds params \(at the root.params\) "
                     r"of another structure than the template: only in the file: .*; only "
                     r"in the template: \['other'\]"):
    ckpts.restore_params({"other": jnp.zeros(1)})
  # fit's TBPTT state (train_state, carry) holds the params at [0].params
  tbptt = train.Checkpoints(tmp_path / "tbptt")
  tbptt.save((state, jnp.zeros((4, 3))), position=7)
  params, position = tbptt.restore_params(model_init(jax.random.key(9)))
  assert position == 7
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  tbptt.save({"w": jnp.zeros(2)}, position=8)
  with pytest.raises(ValueError, match=r"holds no TrainState's .params; its leaves are \['w'\]"):
    tbptt.restore_params(params)
  with pytest.raises(FileNotFoundError, match=r"restore_params: .* holds no checkpoint"):
    train.Checkpoints(tmp_path / "none").restore_params(params)
  # A file from before checkpoints named their leaves: restore() is the way.
  old = train.Checkpoints(tmp_path / "old")
  old.directory.mkdir()
  jaxrnn.io.save(old.path(5), {"leaves": [np.zeros(2)], "position": np.int64(5),
                               "structure": np.frombuffer(b"PyTreeDef(*)", np.uint8)})
  with pytest.raises(ValueError, match=r"written before checkpoints named their leaves.*"
                                       r"Fix: restore\(template\) with the whole state"):
    old.restore_params(params)


def test_restore_at_a_position_and_refusing_another_dtype(tmp_path):
  ckpts = train.Checkpoints(tmp_path, keep=3)
  for position in (1, 2):
    ckpts.save({"w": jnp.full(3, float(position)), "step": jnp.int32(position)}, position)
  template = {"w": jnp.zeros(3), "step": jnp.int32(0)}
  for position in (1, 2):          # the one asked for, not the latest
    restored, at = ckpts.restore(template, position=position)
    assert at == position and int(restored["step"]) == position
    np.testing.assert_array_equal(restored["w"], np.full(3, float(position)))
  # Same shapes, another dtype: refused, not restored in the file's dtype.
  with pytest.raises(ValueError, match=r"leaf \['w'\] is float32\[3\] in the file but int32\[3\]"):
    ckpts.restore({"w": jnp.zeros(3, jnp.int32), "step": jnp.int32(0)})


def test_fit_evaluates_and_checkpoints_on_schedule_and_saves_at_the_end(tmp_path):
  step = lambda s, b: (s + b, {"loss": s + b})
  ckpts = train.Checkpoints(tmp_path, keep=10)
  state, history = train.fit(step, jnp.float32(0.0), [1.0] * 9, steps=5, quiet=True,
                             evaluate=lambda s: {"value": 10 * s}, eval_every=2,
                             checkpoints=ckpts, checkpoint_every=2, start=3)
  assert float(state) == 5.0 and len(history) == 5
  assert [h.get("eval") for h in history] == [None, {"value": 20.0}, None,
                                              {"value": 40.0}, None]
  # Every 2 steps (positions count from start=3), then at the end.
  assert ckpts.positions() == [5, 7, 8]
  assert float(ckpts.restore(jnp.float32(0.0))[0]) == 5.0


RUN = textwrap.dedent("""
    import os, signal, sys, jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import model_init, adding_loss, make_batch
    from jaxrnn import train
    directory, total, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opt = train.optimizer(1e-2)
    ckpts = train.Checkpoints(directory, keep=2)
    state, start = ckpts.restore(train.init_state(model_init(jax.random.key(0)), opt))
    step = train.make_train_step(adding_loss, opt)
    keys = jax.random.split(jax.random.key(1), total)
    data = (make_batch(k) for k in keys[start:])           # the data position resumes too
    def stop(history):
      if start + len(history) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)               # a real kill, no cleanup
      return False
    state, _ = train.fit(step, state, data, steps=total - start, quiet=True, stop=stop,
                         checkpoints=ckpts, checkpoint_every=3, start=start)
    np.save(os.path.join(directory, "final.npy"),
            np.concatenate([np.ravel(l) for l in jax.tree.leaves(state.params)]))
""")


def test_killed_run_resumes_to_the_same_params(tmp_path):
  script = tmp_path / "run.py"
  script.write_text(RUN.format(tests=os.path.dirname(__file__)))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  run = lambda d, kill: subprocess.run([sys.executable, str(script), str(d), "20", str(kill)],
                                       env=env, capture_output=True, text=True)
  straight = run(tmp_path / "a", -1)
  assert straight.returncode == 0, straight.stderr
  killed = run(tmp_path / "b", 11)
  assert killed.returncode == -signal.SIGKILL
  assert train.Checkpoints(tmp_path / "b").positions()[-1] == 9   # saved every 3 steps
  resumed = run(tmp_path / "b", -1)
  assert resumed.returncode == 0, resumed.stderr
  np.testing.assert_array_equal(np.load(tmp_path / "a" / "final.npy"),
                                np.load(tmp_path / "b" / "final.npy"))


SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import re, sys, jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import model_init, adding_loss, batched_adding_loss, make_batch
    import jaxrnn
    from jaxrnn import train
    assert len(jax.devices()) == 4
    opt = train.optimizer(1e-2)
    batches = [make_batch(k) for k in jax.random.split(jax.random.key(1), 5)]
    def run(mesh, step):
      state = train.init_state(model_init(jax.random.key(0)), opt)
      if mesh is not None:
        state = train.replicate(state, mesh)
      losses = []
      for b in batches:
        state, m = step(state, train.shard_batch(b, mesh) if mesh is not None else b)
        losses.append(float(m["loss"]))
      return losses
    per_example = train.make_train_step(adding_loss, opt, donate=False)
    batched = train.make_train_step(batched_adding_loss, opt, donate=False, batched=True)
    one = run(None, per_example)
    for step in (per_example, batched):
      four = run(train.data_mesh(), step)
      print("ONE", one); print("FOUR", four)
      np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-7)

    # Every gradient is summed after the time loop, so the partitioned step
    # all-reduces once, never inside a loop (a per-step all-reduce of the
    # peepholes' or b_hn's gradient made data-parallel training 2-4x slower).
    def all_reduces_by_computation(hlo):
      bodies = set(re.findall(r"body=(%[\\w.\\-]+)", hlo))
      found, current = [], None
      for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?(%[\\w.\\-]+) ", line)
        if header:
          current = header.group(1)
        if " all-reduce(" in line or " all-reduce-start(" in line:
          found.append(current)
      return found, bodies
    mesh = train.data_mesh()
    xs = jnp.ones((8, 5, 3))
    for cell in (jaxrnn.peephole_lstm(8), jaxrnn.gru(8), jaxrnn.lstm(8)):
      params = cell.init(jax.random.key(0), 3)
      for run_batch in (jax.vmap(lambda p, x: jaxrnn.scan(cell, p, x)[1], (None, 0)),
                        lambda p, x: jaxrnn.scan_batch(cell, p, x)[1]):
        loss = lambda p, x: run_batch(p, x).sum()
        hlo = jax.jit(jax.grad(loss)).lower(
            train.replicate(params, mesh), train.shard_batch(xs, mesh)).compile().as_text()
        found, bodies = all_reduces_by_computation(hlo)
        assert found and not set(found) & bodies, (cell, found, bodies)

    # A replicated state restores replicated, on the template's devices.
    import tempfile
    state = train.replicate(train.init_state(model_init(jax.random.key(0)), opt), mesh)
    ckpts = train.Checkpoints(tempfile.mkdtemp())
    ckpts.save(state, 1)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            state)                   # a template without arrays too
    for template in (state, abstract):
      back, _ = ckpts.restore(template)
      assert all(b.sharding == s.sharding and len(b.devices()) == 4
                 for b, s in zip(jax.tree.leaves(back), jax.tree.leaves(state)))

    # A mesh with Explicit axes (jax.make_mesh's default): the batched
    # kernels run with them as Auto and return the batch sharded as xs.
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    explicit = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
    x = jax.random.normal(jax.random.key(2), (8, 5, 3))
    mask = jnp.arange(5) < jnp.arange(8)[:, None] % 5 + 1
    # (unfused: scan_batch's jax.vmap(scan) path)
    for cell in (jaxrnn.lstm(8), jaxrnn.gru(8), jaxrnn.cifg_lstm(8), jaxrnn.unfused(jaxrnn.lstm(8))):
      params = cell.init(jax.random.key(0), 3)
      loss = lambda p, x: jaxrnn.scan_batch(cell, p, x, mask=mask)[1].sum()
      want = jax.jit(jax.value_and_grad(loss))(params, x)
      with jax.set_mesh(explicit):
        got = jax.jit(jax.value_and_grad(loss))(params, jax.device_put(x, P("data")))
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
      ys = jax.jit(lambda p, x: jaxrnn.scan_batch(cell, p, x)[1])(
          params, jax.device_put(x, NamedSharding(explicit, P("data"))))
      assert jax.typeof(ys).sharding.spec[0] == "data"
    # in rematerialised chunks too
    chunked = lambda p, x: jaxrnn.scan_batch(cell, p, x, mask=mask, checkpoint_every=2)[1].sum()
    with jax.set_mesh(explicit):
      got = jax.jit(jax.value_and_grad(chunked))(params, jax.device_put(x, P("data")))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
""")


def test_data_parallel_on_four_devices_gives_the_same_loss(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(SHARDED.format(tests=os.path.dirname(__file__)))
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stdout + result.stderr


def test_fit_warns_when_the_batches_run_out_before_steps():
  step = lambda s, b: (s + b, {"loss": s + b})
  with pytest.warns(UserWarning, match=r"batches ran out after 5 of steps=8; training "
                                       r"stopped there"):
    state, history = train.fit(step, 0.0, [1.0] * 5, steps=8, quiet=True)
  assert state == 5.0 and len(history) == 5
  with warnings.catch_warnings():
    warnings.simplefilter("error")        # exactly enough, or stopped early: no warning
    train.fit(step, 0.0, [1.0] * 5, steps=5, quiet=True)
    train.fit(step, 0.0, iter([1.0] * 9), steps=8, quiet=True)
    train.fit(step, 0.0, [1.0] * 5, steps=8, quiet=True, stop=lambda h: len(h) == 2)


def test_windows_keep_tail_scores_every_target_once_in_stream_order():
  for n, B, W in [(20, 2, 4), (101, 4, 7), (9, 5, 3), (2, 3, 8), (1000, 32, 35)]:
    stream = np.arange(n) + 100          # distinct tokens, none 0 (padding's)
    xs, ys, mask = train.windows(stream, B, W, keep_tail=True)
    assert xs.shape == ys.shape == mask.shape and xs.shape[1:] == (B, W)
    assert mask.dtype == bool and int(mask.sum()) == n - 1
    np.testing.assert_array_equal(ys[mask], xs[mask] + 1)      # next-token targets
    np.testing.assert_array_equal(np.sort(xs[mask]), stream[:-1])
    assert (xs[~mask] == 0).all() and (ys[~mask] == 0).all()
    for b in range(B):    # each stream contiguous across its windows, then padding
      flat_x, flat_m = xs[:, b].reshape(-1), mask[:, b].reshape(-1)
      valid = flat_x[flat_m]
      assert (np.diff(valid) == 1).all() and not flat_m[flat_m.sum():].any()
  # where whole windows cover every target, the same windows as without keep_tail
  stream = np.arange(1 + 3 * 2 * 5) % 11
  xs, ys, mask = train.windows(stream, 3, 5, keep_tail=True)
  plain = train.windows(stream, 3, 5)
  assert mask.all()
  np.testing.assert_array_equal(xs, plain[0])
  np.testing.assert_array_equal(ys, plain[1])
  with pytest.raises(ValueError, match="or keep_tail=True"):
    train.windows(np.arange(10), 4, 5)
  with pytest.raises(ValueError, match="no next token to predict"):
    train.windows(np.arange(1), 4, 5, keep_tail=True)


def test_fit_restores_the_best_evaluated_state_and_takes_ensemble_metrics():
  # A real, donating step: the best params must survive the steps after them.
  from jaxrnn.tasks import readout_model
  model = readout_model(jaxrnn.gru(4), 1)
  params = model.init(jax.random.key(0), 2)
  opt = train.optimizer(0.3)                     # large: the loss goes up and down

  def loss_fn(params, batch):
    xs, ys = batch
    _, out = model.apply_batch(params, xs)
    return (*train.mse(out[:, -1, 0], ys), {})
  step = train.make_train_step(loss_fn, opt, batched=True)
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(8, 5, 2)).astype(np.float32),
              rng.normal(size=8).astype(np.float32)) for _ in range(12)]
  held_out = batches[0]
  evaluate = jax.jit(lambda s: {"loss": loss_fn(s.params, held_out)[0] / 8})
  best, history = train.fit(step, train.init_state(params, opt), batches, 12, quiet=True,
                            evaluate=evaluate, eval_every=1, restore_best="loss")
  evals = [h["eval"]["loss"] for h in history]
  assert int(best.step) == 1 + int(np.argmin(evals)) and int(best.step) != 12
  np.testing.assert_allclose(float(evaluate(best)["loss"]), min(evals), rtol=1e-6)
  last, _ = train.fit(step, train.init_state(params, opt), batches, 12, quiet=True,
                      evaluate=evaluate, eval_every=1, restore_best="loss", best_mode="max")
  assert int(last.step) == 1 + int(np.argmax(evals))
  # early_stopping(patience=2): the first evaluation two past the best ends it
  _, stopped = train.fit(step, train.init_state(params, opt), batches, 12, quiet=True,
                         evaluate=evaluate, eval_every=1,
                         stop=train.early_stopping("loss", patience=2))
  first = next(i for i in range(2, 12) if min(evals[i - 1:i + 1]) >= min(evals[:i - 1]))
  assert len(stopped) == first + 1
  with pytest.raises(ValueError, match="patience=0; expected an int >= 1"):
    train.early_stopping(patience=0)
  # per-member metrics of a vmapped ensemble step come back as lists
  ensemble = lambda s, b: (s + b, {"loss": jnp.stack([s + b, 2 * (s + b)])})
  _, history = train.fit(ensemble, 0.0, [1.0] * 3, 3, quiet=True)
  assert history[-1]["loss"] == [3.0, 6.0]
  for kwargs, says in [(dict(evaluate=evaluate), "eval_every=0, so it would never run"),
                       (dict(restore_best="loss"), "no evaluate is given"),
                       (dict(evaluate=evaluate, eval_every=1, restore_best="acc"),
                        r"evaluate returned \['loss'\]")]:
    with pytest.raises(ValueError, match=says):
      train.fit(step, train.init_state(params, opt), batches, 2, quiet=True, **kwargs)


def test_windows_carries_a_series_feature_axes():
  series = np.arange(101 * 3, dtype=np.float32).reshape(101, 3)    # [N, F]
  xs, ys = train.windows(series, 4, 5)
  ids = train.windows(np.arange(101), 4, 5)
  assert xs.shape == (5, 4, 5, 3)
  np.testing.assert_array_equal(xs, series[ids[0]])
  np.testing.assert_array_equal(ys, series[ids[1]])
  xs, ys, mask = train.windows(series, 4, 7, keep_tail=True)
  ids = train.windows(np.arange(101), 4, 7, keep_tail=True)
  assert xs.shape == (4, 4, 7, 3) and mask.shape == (4, 4, 7)
  np.testing.assert_array_equal(mask, ids[2])
  np.testing.assert_array_equal(xs[mask], series[ids[0][mask]])
  assert (xs[~mask] == 0).all()
  # PyTorch's batchify output, token ids [N / B, B], is told how to pass the stream
  batchified = np.arange(400).reshape(4, 100).T                  # column b: stream b
  with pytest.warns(UserWarning, match=r"int64\[100, 4\], read as 100 steps of 4 integer "
                    r"features.*windows\(data.T.reshape\(-1\), B, window\)"):
    train.windows(batchified, 4, 5)
  np.testing.assert_array_equal(train.windows(batchified.T.reshape(-1), 4, 5)[0],
                                train.windows(np.arange(400), 4, 5)[0])


@pytest.mark.parametrize("mode,factor,patience,threshold,cooldown,min_scale", [
    ("min", 0.1, 0, 0.05, 2, 0.02),
    ("max", 0.3, 2, 0.01, 1, 0.0)])
def test_plateau_rule_is_pytorchs_reduce_lr_on_plateau(mode, factor, patience, threshold,
                                                       cooldown, min_scale):
  torch = pytest.importorskip("torch")
  values = np.random.default_rng(0).uniform(1.0, 2.0, size=40)
  values[:6] = [5.0, 4.0, 4.0, 3.9999, 3.0, 3.0]    # a tie, a change under the threshold
  opt = optax.chain(optax.sgd(1.0), train.reduce_lr_on_plateau(
      factor, patience, mode=mode, threshold=threshold, cooldown=cooldown,
      min_scale=min_scale))
  state = opt.init(jnp.zeros(()))
  sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
      sgd, mode=mode, factor=factor, patience=patience, threshold=threshold,
      cooldown=cooldown, min_lr=min_scale, eps=0.0)
  ours, theirs = [], []
  for value in values:
    state = train.plateau_step(state, value)
    scheduler.step(value)
    ours.append(float(-opt.update(jnp.ones(()), state)[0]))   # sgd(1.0) update of a unit grad
    theirs.append(sgd.param_groups[0]["lr"])
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  assert len(set(theirs)) > 2                       # it did cut, more than once


def test_fit_cuts_the_rate_on_an_evaluated_plateau_and_checkpoints_the_scale(tmp_path):
  # loss (p - 1)^2 on SGD: each update is lr * scale * 2 (p - 1), so the
  # steps' sizes show the scale in use; evaluate reports a scripted metric.
  loss_fn = lambda p, x: (jnp.sum((p - x) ** 2), jnp.float32(1), {})
  opt = optax.chain(optax.sgd(0.1), train.reduce_lr_on_plateau(0.5, patience=0))
  step = train.make_train_step(loss_fn, opt)          # donating, as by default
  scripted = iter([3.0, 2.0, 2.0, 1.0, 1.5, 1.5])
  evaluate = lambda s: {"loss": next(scripted)}
  state, history = train.fit(step, train.init_state(jnp.zeros(()), opt),
                             [jnp.ones((1,))] * 12, 12, quiet=True, evaluate=evaluate,
                             eval_every=2, reduce_lr_on="loss")
  scales = [h["lr_scale"] for h in history if "eval" in h]
  assert scales == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
  # replay: p_{k+1} = p_k - 0.1 * scale_k * 2 (p_k - 1), the scale from the last evaluation
  p = 0.0
  for k in range(12):
    p -= 0.1 * ([1.0] + scales)[k // 2] * 2 * (p - 1)
  np.testing.assert_allclose(float(state.params), p, rtol=1e-5)
  jaxrnn.io.save(tmp_path / "s.msgpack", state)
  back = jaxrnn.io.load(tmp_path / "s.msgpack")
  assert float(back.opt_state[1].scale) == 0.125 and int(back.opt_state[1].bad_count) == 0
  step = train.make_train_step(loss_fn, opt, donate=False)   # start is reused below
  start = train.init_state(jnp.zeros(()), opt)
  batches = [jnp.ones((1,))] * 2
  for kwargs, says in [(dict(reduce_lr_on="loss"), "no evaluate is given"),
                       (dict(evaluate=lambda s: {"loss": 1.0}, eval_every=1,
                             reduce_lr_on="acc"),
                        r"reduce_lr_on='acc', but evaluate returned \['loss'\]")]:
    with pytest.raises(ValueError, match=says):
      train.fit(step, start, batches, 2, quiet=True, **kwargs)
  plain = train.optimizer(0.1)
  with pytest.raises(ValueError, match="holds no jaxrnn.train.reduce_lr_on_plateau"):
    train.fit(step, train.init_state(jnp.zeros(()), plain), batches, 2, quiet=True,
              evaluate=lambda s: {"loss": 1.0}, eval_every=1, reduce_lr_on="loss")
  with pytest.warns(UserWarning, match="its scale stays at 1"):     # evaluated, not cut
    train.fit(step, start, batches, 2, quiet=True, evaluate=lambda s: {"loss": 1.0},
              eval_every=1)
  with warnings.catch_warnings():          # no evaluations: plateau_step is the caller's
    warnings.simplefilter("error")
    train.fit(step, start, batches, 2, quiet=True)
  # plateau_step under jit and vmap (an ensemble's schedules)
  states = jax.vmap(opt.init)(jnp.zeros(3))
  states = jax.jit(jax.vmap(train.plateau_step))(states, jnp.array([1.0, 2.0, 3.0]))
  assert states[1].best.tolist() == [1.0, 2.0, 3.0]
  with pytest.raises(ValueError, match=r"factor=1.5; expected a number in \(0, 1\)"):
    train.reduce_lr_on_plateau(1.5)
  with pytest.raises(ValueError, match="patience=-1; expected an int >= 0"):
    train.reduce_lr_on_plateau(patience=-1)


def test_pad_batch_pads_to_a_multiple_and_its_mask_leaves_the_padding_out():
  rng = np.random.default_rng(0)
  seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 9, 2)]
  batch, mask = train.pad_batch(seqs, multiple=8)
  assert batch.shape == (3, 16, 3) and batch.dtype == np.float32
  assert mask.sum(1).tolist() == [5, 9, 2] and (batch[~mask] == 0).all()
  for b, s in enumerate(seqs):
    np.testing.assert_array_equal(batch[b, :len(s)], s)
  # the masked loss of the padded batch is the loss of the sequences alone
  cell = jaxrnn.gru(4)
  params = cell.init(jax.random.key(0), 3)
  total = lambda ys, m: train.mse(ys, 0.5, m)[0]
  _, ys = jaxrnn.scan_batch(cell, params, batch, mask=mask)
  alone = sum(float(total(jaxrnn.scan(cell, params, s)[1], None)) for s in seqs)
  np.testing.assert_allclose(float(total(ys, mask)), alone, rtol=1e-5)
  ids, mask = train.pad_batch([[1, 2], [3]], length=4, value=-100)
  assert ids.tolist() == [[1, 2, -100, -100], [3, -100, -100, -100]]
  for kwargs, says in [(dict(length=1), r"length=1, but a sequence has 2 steps"),
                       (dict(multiple=0), r"multiple=0; expected an int >= 1")]:
    with pytest.raises(ValueError, match=says):
      train.pad_batch([[1, 2], [3]], **kwargs)
  ids, mask = train.pad_batch([np.array([1, 2], np.int32), [], [3]])   # an empty one too
  assert ids.dtype == np.int64 and mask.sum(1).tolist() == [2, 0, 1]
  with pytest.raises(ValueError, match=r"sequences are float64\[2, 3\], float64\[1, 2\]; "
                     r"expected \[T_b\] or \[T_b, ...\] arrays with the same trailing axes"):
    train.pad_batch([np.zeros((2, 3)), np.zeros((1, 2))])
