"""jaxrnn.seq2seq and benchmarks/attention_task.py --quick."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_oracle
from jaxrnn import seq2seq

ROOT = Path(__file__).resolve().parent.parent


def example():
  src = jnp.array([2, 3, 4, 5, 0, 0])
  mask = jnp.arange(6) < 4
  return src, mask, src[jnp.array([3, 2, 1, 0, 4, 5])], mask


def test_loss_ignores_padding_on_both_sides():
  for attention in (None, "additive", "dot", "scaled_dot", "general"):
    model = seq2seq.seq2seq(8, 8, 6, attention=attention)
    params = model.init(jax.random.key(0))
    src, mask, tgt, tmask = example()
    nll, count, metrics = model.loss(params, (src, mask, tgt, tmask))
    assert float(count) == 4.0 and np.isfinite(float(nll))
    # garbage in the padded positions of source and target changes nothing
    src2 = src.at[4:].set(7)
    tgt2 = tgt.at[4:].set(6)
    nll2, _, _ = model.loss(params, (src2, mask, tgt2, tmask))
    np.testing.assert_allclose(nll, nll2, rtol=1e-6)


def test_greedy_feeds_back_its_own_tokens():
  model = seq2seq.seq2seq(8, 8, 6, attention="general")
  params = model.init(jax.random.key(1))
  src, mask, _, _ = example()
  tokens, weights = model.greedy(params, src, mask, 5)
  # teacher forcing on the greedy tokens gives the same argmaxes
  tmask = jnp.ones(5, bool)
  _, _, metrics = model.loss(params, (src, mask, tokens, tmask))
  assert float(metrics["accuracy"]) == 5.0
  assert (weights[:, 4:] == 0).all()
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_sample_draws_tokens_fed_back_as_greedy_feeds_back_its_own():
  model = seq2seq.seq2seq(8, 8, 6, attention="general")
  params = model.init(jax.random.key(1))
  src, mask, _, _ = example()
  draw = jax.jit(lambda k, t: model.sample(params, src, mask, 12, k, temperature=t))
  tokens, weights = draw(jax.random.key(2), 2.0)
  np.testing.assert_array_equal(tokens, draw(jax.random.key(2), 2.0)[0])
  assert not np.array_equal(tokens, draw(jax.random.key(3), 2.0)[0])
  # The weights are teacher forcing's on the drawn tokens: each was fed back.
  _, forced = model.teacher_forced(params, src, mask, tokens, jnp.ones(12, bool))
  np.testing.assert_allclose(weights, forced, rtol=1e-5, atol=1e-6)
  cold = model.sample(params, src, mask, 5, jax.random.key(4), temperature=1e-4)[0]
  np.testing.assert_array_equal(cold, model.greedy(params, src, mask, 5)[0])
  with pytest.raises(ValueError, match="temperature=0; expected a number above 0"):
    model.sample(params, src, mask, 5, jax.random.key(4), temperature=0)


def test_attention_task_quick(tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attention_task.py"),
                         "--quick", "--quiet", "--out", str(tmp_path)],
                        cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "attention_task.json").read_text())
  acc = {r["model"]: r["sequence_accuracy"] for r in report["records"]}
  # Measured: sequences 0.38 plain, 0.96 attention (lengths 3..10, 300 steps, seed 0).
  assert acc["attention"] > 0.85
  assert acc["attention"] > acc["plain"] + 0.3
  for r in report["records"]:     # beam search scored too, every length present
    assert set(r["scores"]) == {"greedy", "beam4"}
    assert len(r["scores"]["beam4"]["sequence_by_length"]) == 8
  for png in ("attention_alignment.png", "attention_accuracy.png"):
    assert (tmp_path / png).stat().st_size > 5_000
  assert "held-out sequence accuracy" in proc.stdout


def log_prob_of(model, params, src, mask, tokens):
  nll, _, _ = model.loss(params, (src, mask, tokens, jnp.ones(tokens.shape, bool)))
  return -float(nll)


def test_empty_target_and_wrong_source_length():
  model = seq2seq.seq2seq(8, 8, 6, attention="general")
  params = model.init(jax.random.key(0))
  src, mask, _, _ = example()
  nll, count, _ = model.loss(params, (src, mask, src[:0], mask[:0]))
  assert float(nll) == 0.0 and float(count) == 0.0
  with pytest.raises(ValueError, match="src_length=6"):
    model.greedy(params, jnp.ones(9, jnp.int32), jnp.ones(9, bool), 3)


def test_beam_keeps_each_hypothesis_alignment():
  # width 3 with attention: the returned weights are those of the returned
  # tokens' own history (parents reordered at every step), i.e. what teacher
  # forcing on those tokens gives.
  model = seq2seq.seq2seq(8, 8, 6, attention="additive")
  params = model.init(jax.random.key(4))
  src, mask, _, _ = example()
  tokens, log_prob, weights = model.beam(params, src, mask, 5, width=3)
  _, forced = model.teacher_forced(params, src, mask, tokens, jnp.ones(5, bool))
  np.testing.assert_allclose(weights, forced, rtol=1e-5, atol=1e-7)


def test_beam_width_one_is_greedy_and_scores_are_log_probs():
  model = seq2seq.seq2seq(8, 8, 6, attention="additive")
  params = model.init(jax.random.key(2))
  src, mask, _, _ = example()
  greedy, greedy_w = model.greedy(params, src, mask, 5)
  tokens, log_prob, weights = model.beam(params, src, mask, 5, width=1)
  np.testing.assert_array_equal(tokens, greedy)
  np.testing.assert_allclose(weights, greedy_w, rtol=1e-5, atol=1e-7)
  for width in (1, 3):
    tokens, log_prob, _ = model.beam(params, src, mask, 5, width=width)
    np.testing.assert_allclose(log_prob, log_prob_of(model, params, src, mask, tokens),
                               rtol=1e-4)
  assert float(log_prob) >= log_prob_of(model, params, src, mask, greedy) - 1e-5
  with pytest.raises(ValueError, match="width must be a positive int; got 0"):
    model.beam(params, src, mask, 5, width=0)
  # No steps: no tokens, as greedy gives, with probability 1.
  tokens, log_prob, weights = model.beam(params, src, mask, 0, width=2)
  assert tokens.shape == (0,) and float(log_prob) == 0.0
  assert weights.shape == model.greedy(params, src, mask, 0)[1].shape
  with pytest.raises(ValueError, match="for a batch, jax.vmap"):
    model.greedy(params, jnp.stack([src, src]), jnp.stack([mask, mask]), 5)


def test_wide_beam_equals_exhaustive_search():
  # V = 5 tokens, 3 steps: a beam of V**2 = 25 never prunes, so it must find
  # the most probable of all 125 sequences, scored here by teacher forcing.
  model = seq2seq.seq2seq(5, 6, 4, attention=None)
  params = model.init(jax.random.key(3))
  src, mask = jnp.array([2, 3, 4, 0]), jnp.arange(4) < 3
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3)
  nll = jax.vmap(lambda t: model.loss(params, (src, mask, t, jnp.ones(3, bool)))[0])(grid)
  tokens, log_prob, _ = model.beam(params, src, mask, 3, width=25)
  np.testing.assert_array_equal(tokens, grid[jnp.argmin(nll)])
  np.testing.assert_allclose(log_prob, -nll.min(), rtol=1e-4)


def test_teacher_forced_is_its_documented_parts_composed():
  # attention=None, from the module's equations with the NumPy GRU oracle:
  # m = BiGRU(E[src]), s_0 = tanh([h_fw last; h_bw first] W_b), the decoder
  # GRU from s_0 on E[BOS, tgt_0 .. tgt_{T-2}], logits y W_o + b_o. Every
  # param random (init's b_o is zero, which would hide a missing bias).
  model = seq2seq.seq2seq(8, 5, 6, attention=None)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)
  src, mask, tgt, _ = example()
  tmask = jnp.arange(6) < 5
  logits, _ = jax.jit(model.teacher_forced)(params, src, mask, tgt, tmask)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  gru = numpy_oracle.gru()
  embed = lambda tokens: p.embed[np.asarray(tokens)]
  fw, _ = numpy_oracle.scan(gru, p.encoder[0], embed(src), mask=np.asarray(mask))
  bw, _ = numpy_oracle.scan(gru, p.encoder[1], embed(src), mask=np.asarray(mask), reverse=True)
  s0 = np.tanh(np.concatenate([fw["h"], bw["h"]]) @ p.bridge)
  inputs = np.concatenate([[seq2seq.BOS], np.asarray(tgt)[:-1]])
  _, ys = numpy_oracle.scan(gru, p.decoder, embed(inputs), carry=dict(h=s0),
                            mask=np.asarray(tmask))
  np.testing.assert_allclose(logits, ys @ p.w_out + p.b_out, rtol=1e-5, atol=1e-5)


def test_beam_as_wide_as_the_vocabulary_is_exhaustive_over_two_steps():
  # width V, 2 steps: every first token stays a hypothesis, so the beam
  # finds the most probable pair, also where it does not start with the
  # greedy first token (a beam whose K start copies all scored 0 would
  # keep K copies of that token). Over many sources, so that case occurs.
  V = 5
  model = seq2seq.seq2seq(V, 6, 4, attention=None)
  params = model.init(jax.random.key(3))
  srcs = jax.random.randint(jax.random.key(4), (16, 4), 2, V)
  masks = jnp.arange(4)[None] < jax.random.randint(jax.random.key(5), (16, 1), 1, 5)
  grid = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)

  @jax.jit
  @jax.vmap
  def best_and_beam(src, mask):
    nll = jax.vmap(lambda t: model.loss(params, (src, mask, t, jnp.ones(2, bool)))[0])(grid)
    tokens, log_prob, _ = model.beam(params, src, mask, 2, width=V)
    greedy, _ = model.greedy(params, src, mask, 2)
    return grid[jnp.argmin(nll)], -nll.min(), tokens, log_prob, greedy

  best, best_log_prob, tokens, log_prob, greedy = best_and_beam(srcs, masks)
  np.testing.assert_array_equal(tokens, best)
  np.testing.assert_allclose(log_prob, best_log_prob, rtol=1e-4)
  assert (best[:, 0] != greedy[:, 0]).any()    # the case the test is for occurred
