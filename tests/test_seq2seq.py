"""jaxrnn.seq2seq and benchmarks/attention_task.py --quick."""

import json
import re
import subprocess
import sys
from functools import partial
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


def test_attention_task_with_an_end_token_scores_where_the_output_stops():
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from benchmarks import attention_task as task
  src, mask, tgt, tmask = task.batch(jax.random.key(0), 64, 2, 5, end=True)
  lengths = np.asarray(mask.sum(1))
  assert tgt.shape == (64, 6) and (np.asarray(tmask.sum(1)) == lengths + 1).all()
  for row, L in zip(np.asarray(tgt), lengths):
    assert row[L] == task.END and (row[L + 1:] == seq2seq.PAD).all()
    assert (row[:L] != task.END).all() and (row[:L] >= 2).all()
  plain = task.batch(jax.random.key(0), 64, 2, 5)[2]       # the same reversal
  np.testing.assert_array_equal(jnp.where(tgt == task.END, 0, tgt)[:, :5], plain)
  args = task.argparse.Namespace(min_len=2, max_len=5, end_token=True)
  score = lambda tokens, **kw: task.accuracy_by_length(tokens, tgt, tmask, lengths,
                                                       task.argparse.Namespace(**{**vars(args), **kw}))
  assert score(tgt)["sequence"] == 1.0
  # An output that goes on past its end token is wrong with one, right without.
  babble = jnp.where(tmask, tgt, 2)
  assert score(babble)["sequence"] == float((lengths == 5).mean())
  assert score(babble, end_token=False)["sequence"] == 1.0


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


@pytest.mark.parametrize("target_vocab", [None, 6])
def test_teacher_forced_is_its_documented_parts_composed(target_vocab):
  # attention=None, from the module's equations with the NumPy GRU oracle:
  # m = BiGRU(E[src]), s_0 = tanh([h_fw last; h_bw first] W_b), the decoder
  # GRU from s_0 on E'[BOS, tgt_0 .. tgt_{T-2}], logits y W_o + b_o. Every
  # param random (init's b_o is zero, which would hide a missing bias).
  # E' is E, or the target's own table with target_vocab_size.
  model = seq2seq.seq2seq(8, 5, 6, attention=None, target_vocab_size=target_vocab)
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
  tgt_embed = embed if target_vocab is None else lambda tokens: p.tgt_embed[tokens]
  _, ys = numpy_oracle.scan(gru, p.decoder, tgt_embed(inputs), carry=dict(h=s0),
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


def test_end_token_pads_what_follows_and_changes_nothing_before():
  # The same params with and without an end token: greedy and sample agree
  # up to and including the first end token, then give PAD with zero weights.
  plain = seq2seq.seq2seq(6, 8, 6, attention="general")
  ended = seq2seq.seq2seq(6, 8, 6, attention="general", end_token=5)
  src, mask, _, _ = example()
  params = plain.init(jax.random.key(6))      # the end comes at step 2 and 4
  runs = [jax.jit(lambda m, p: m.greedy(p, src, mask, 10), static_argnums=0),
          jax.jit(lambda m, p: m.sample(p, src, mask, 10, jax.random.key(8), 1.5),
                  static_argnums=0)]
  for run in runs:
    tokens, weights = run(plain, params)
    cut, cut_weights = run(ended, params)
    n = int(np.argmax(np.asarray(tokens) == 5)) + 1
    assert tokens[n - 1] == 5 and 1 < n < 10       # the end came, not first, not last
    np.testing.assert_array_equal(cut[:n], tokens[:n])
    np.testing.assert_array_equal(cut[n:], seq2seq.PAD)
    np.testing.assert_allclose(cut_weights[:n], weights[:n], rtol=1e-6)
    assert (cut_weights[n:] == 0).all()


def test_min_length_rules_the_end_token_out_before_it():
  # The same params that end at step 2 (greedy) and 4 (sample) without it.
  model = seq2seq.seq2seq(6, 8, 6, attention="general", end_token=5)
  params = model.init(jax.random.key(6))
  src, mask, _, _ = example()
  tokens, _ = model.greedy(params, src, mask, 10)
  assert int(np.argmax(np.asarray(tokens) == 5)) == 1
  m = 3
  tokens, _ = model.greedy(params, src, mask, 10, min_length=m)
  assert not (tokens[:m] == 5).any()
  # each token the argmax of teacher forcing's logits on the tokens before
  # it, the end token left out before step m, up to the first end
  n = int(np.argmax(np.asarray(tokens) == 5)) + 1 if (tokens == 5).any() else 10
  logits, _ = model.teacher_forced(params, src, mask, tokens, jnp.ones(10, bool))
  logits = jnp.where((jnp.arange(10)[:, None] < m) & (jnp.arange(6) == 5), -jnp.inf, logits)
  np.testing.assert_array_equal(logits[:n].argmax(-1), tokens[:n])
  # drawn: the end came at step 4 without it
  drawn, _ = model.sample(params, src, mask, 10, jax.random.key(8), 1.5, min_length=5)
  assert not (drawn[:5] == 5).any()
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match="expected an int >= 0"):
      model.greedy(params, src, mask, 5, min_length=bad)
  with pytest.raises(ValueError, match="min_length=2 without an end token"):
    seq2seq.seq2seq(6, 8, 6).beam(params, src, mask, 5, min_length=2)


def every_output(model, params, src, mask, V, steps, end):
  """Every output of ``steps`` tokens by brute force, cut after its first end
  token (PAD after it): tokens, length n (the end token counted; ``steps``
  for one that does not end) and log probability."""
  grid = np.stack(np.meshgrid(*[np.arange(V)] * steps, indexing="ij"), -1).reshape(-1, steps)
  forced = jax.jit(jax.vmap(model.teacher_forced, (None, None, None, 0, None)))
  logits, _ = forced(params, src, mask, grid, jnp.ones(steps, bool))
  log_p = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits), np.float64),
                             grid[..., None], -1)[..., 0]
  n = np.where((grid == end).any(axis=1), np.argmax(grid == end, axis=1) + 1, steps)
  kept = np.arange(steps) < n[:, None]
  tokens = np.where(kept, grid, seq2seq.PAD)
  tokens, first = np.unique(tokens, axis=0, return_index=True)     # one per cut output
  return tokens, n[first], np.where(kept, log_p, 0.0).sum(1)[first]


def test_beam_with_an_end_token_equals_exhaustive_search():
  # V = 4 (PAD, BOS, one data token, the end), 3 steps: at most 9 live
  # prefixes and 36 continuations, so width 18 (2 * 18 kept) never prunes
  # and the beam must return the best output by GNMT's score, and its
  # n_best the best n in order. Outputs that end compete with those still
  # going at `steps` tokens.
  # Widths of V and more (18 here) fill the live beam from fewer finite
  # continuations than it holds at the first step; a large penalty (5)
  # rewards the long outputs that an ended prefix carried on would fake.
  V, steps, end = 4, 3, 3
  model = seq2seq.seq2seq(V, 6, 4, attention="additive", end_token=end)
  params = model.init(jax.random.key(3))
  params = params._replace(b_out=jnp.array([-1.0, 0.0, 0.0, 0.0]))
  beams = {alpha: jax.jit(partial(model.beam, steps=steps, width=18, length_penalty=alpha))
           for alpha in (0.0, 0.6, 5.0)}
  n_best = jax.jit(partial(model.beam, steps=steps, width=18, n_best=4))
  at_least_one = jax.jit(partial(model.beam, steps=steps, width=18, min_length=1))
  teacher_forced = jax.jit(model.teacher_forced)
  found_lengths = set()
  for seed in range(6):
    src = jax.random.randint(jax.random.key(seed), (4,), 2, V)
    mask = jnp.arange(4) < 1 + seed % 4
    tokens, n, log_prob = every_output(model, params, src, mask, V, steps, end)
    for alpha, beam in beams.items():
      best = np.argmax(log_prob / ((5.0 + n) / 6.0) ** alpha)
      found, found_log_prob, weights = beam(params, src, mask)
      np.testing.assert_array_equal(found, tokens[best])
      np.testing.assert_allclose(found_log_prob, log_prob[best], rtol=1e-5)
      _, forced = teacher_forced(params, src, mask, found, jnp.ones(steps, bool))
      np.testing.assert_allclose(weights[:n[best]], forced[:n[best]], rtol=1e-5, atol=1e-7)
      assert (weights[n[best]:] == 0).all()
      found_lengths.add((int(n[best]), bool((found == end).any())))
    # min_length=1: outputs of the end token alone are ruled out
    best = np.argmax(np.where(n > 1, log_prob / ((5.0 + n) / 6.0) ** 0.6, -np.inf))
    found, found_log_prob, _ = at_least_one(params, src, mask)
    np.testing.assert_array_equal(found, tokens[best])
    np.testing.assert_allclose(found_log_prob, log_prob[best], rtol=1e-5)
    order = np.argsort(-log_prob / ((5.0 + n) / 6.0) ** 0.6)[:4]
    found, found_log_prob, weights = n_best(params, src, mask)
    assert found.shape == (4, steps) and weights.shape == (4, steps, 4)
    np.testing.assert_array_equal(found, tokens[order])
    np.testing.assert_allclose(found_log_prob, log_prob[order], rtol=1e-5)
  # the penalty and the sources chose outputs of several lengths, ended or not
  assert {n for n, _ in found_lengths} == {1, 3} and {e for _, e in found_lengths} == {True, False}


def test_beam_with_an_end_token_never_chosen_is_the_plain_beam():
  # Where no hypothesis ends within the steps, the most probable unfinished one.
  plain = seq2seq.seq2seq(8, 8, 6, attention="additive")
  ended = seq2seq.seq2seq(8, 8, 6, attention="additive", end_token=7)
  params = plain.init(jax.random.key(2))
  params = params._replace(b_out=params.b_out.at[7].set(-1e4))
  src, mask, _, _ = example()
  for got, want in zip(ended.beam(params, src, mask, 5, width=3),
                       plain.beam(params, src, mask, 5, width=3)):
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_end_token_and_length_penalty_are_checked():
  for bad in (0, 1, 8, True, 2.0, "7"):
    with pytest.raises(ValueError, match=r"expected a data token, an int in \[2, 8\)"):
      seq2seq.seq2seq(8, 8, 6, end_token=bad)
  model = seq2seq.seq2seq(8, 8, 6, end_token=np.int64(7))
  params = model.init(jax.random.key(0))
  src, mask, _, _ = example()
  with pytest.raises(ValueError, match="length_penalty=-1; expected a number >= 0"):
    model.beam(params, src, mask, 3, length_penalty=-1)
  with pytest.raises(TypeError, match="length_penalty is traced .* static under jit"):
    jax.jit(lambda a: model.beam(params, src, mask, 3, length_penalty=a))(0.6)


def test_beam_outputs_end_once_then_pad_at_any_width():
  # From a reviewer: at widths of V and more, an ended prefix must not go on.
  V, end = 4, 3
  model = seq2seq.seq2seq(V, 6, 4, attention="additive", end_token=end)
  params = model.init(jax.random.key(3))._replace(b_out=jnp.zeros(V))
  beam = jax.jit(jax.vmap(lambda s, m: model.beam(params, s, m, 4, width=6,
                                                  length_penalty=5.0)))
  srcs = jax.random.randint(jax.random.key(0), (32, 4), 2, V)
  masks = jnp.arange(4)[None] < jax.random.randint(jax.random.key(1), (32, 1), 1, 5)
  tokens = np.asarray(beam(srcs, masks)[0])
  for row in tokens:
    ends = np.flatnonzero(row == end)
    if ends.size:
      assert (row[ends[0] + 1:] == seq2seq.PAD).all(), row


def test_decoding_reads_saved_params_and_compiles_once_per_setting(tmp_path, caplog):
  # jaxrnn.io.load gives NumPy arrays; the decoders take them outside jit,
  # and called again with the same settings they reuse their programs.
  from jaxrnn import io
  model = seq2seq.seq2seq(8, 8, 6, attention="general", end_token=7)
  params = model.init(jax.random.key(0))
  io.save(tmp_path / "p.msgpack", params)
  loaded = io.load(tmp_path / "p.msgpack")
  assert isinstance(loaded.embed, np.ndarray)
  src, mask, _, _ = example()
  for run in (lambda p: model.greedy(p, src, mask, 5),
              lambda p: model.sample(p, src, mask, 5, jax.random.key(1), 0.7),
              lambda p: model.beam(p, src, mask, 5, width=3)):
    for got, want in zip(run(loaded), run(params)):
      np.testing.assert_array_equal(got, want)
  with jax.log_compiles(), caplog.at_level("DEBUG", logger="jax"):
    model.greedy(params, src, mask, 5)
    model.sample(params, src, mask, 5, jax.random.key(2), 1.3)     # another temperature
    model.beam(params, src, mask, 5, width=3)
  assert not [r for r in caplog.records if "Finished tracing" in r.getMessage()]


def test_bad_tokens_masks_and_sizes_are_refused_with_the_fix():
  model = seq2seq.seq2seq(8, 8, 6, end_token=jnp.int32(7))    # a jax int is an int
  params = model.init(jax.random.key(0))
  src, mask, tgt, tmask = example()
  cases = [
      (lambda: model.greedy(params, src.at[0].set(8), mask, 3), "src holds token 8; expected ids in [0, 8)"),
      (lambda: model.beam(params, src.at[1].set(-1), mask, 3), "src holds token -1"),
      (lambda: model.loss(params, (src, mask, tgt.at[2].set(99), tmask)), "tgt holds token 99"),
      (lambda: model.greedy(params, src, None, 3), "src_mask is None; expected bool[6]"),
      (lambda: model.greedy(params, src.astype(float), mask, 3), "expected int token ids"),
      (lambda: model.beam(params, src, mask, 3, width=2, n_best=3), "n_best=3; expected at most width=2"),
      (lambda: model.greedy(params, src, mask, -1), "steps=-1; expected an int >= 0"),
      (lambda: seq2seq.seq2seq(2, 8, 6), "vocab_size=2; expected 3 or more"),
  ]
  for run, says in cases:
    with pytest.raises(ValueError, match=re.escape(says)):
      run()
  with pytest.raises(TypeError, match="steps is 2.5; expected an int >= 0"):
    model.greedy(params, src, mask, 2.5)


def test_a_target_vocabulary_of_its_own_decodes_saves_and_is_checked(tmp_path):
  import jaxrnn.io
  model = seq2seq.seq2seq(8, 8, 6, target_vocab_size=4, end_token=3)
  params = model.init(jax.random.key(1))
  assert params.tgt_embed.shape == (4, 16) and params.b_out.shape == (4,)
  src, mask, _, _ = example()               # source ids up to 5, past the target's 4
  tokens, _ = model.greedy(params, src, mask, 5)
  best, log_prob, _ = model.beam(params, src, mask, 5, width=3)
  assert tokens.max() < 4 and best.max() < 4 and np.isfinite(log_prob)
  # the decoder embeds its own tokens with tgt_embed, as teacher forcing does
  _, _, metrics = model.loss(params, (src, mask, tokens, tokens != seq2seq.PAD))
  assert float(metrics["accuracy"]) == float((tokens != seq2seq.PAD).sum())
  jaxrnn.io.save(tmp_path / "p.msgpack", params)
  back = jaxrnn.io.load(tmp_path / "p.msgpack")
  np.testing.assert_array_equal(model.greedy(back, src, mask, 5)[0], tokens)
  shared = seq2seq.seq2seq(8, 8, 6).init(jax.random.key(1))
  cases = [
      (lambda: model.loss(params, (src, mask, src, mask)),
       "tgt holds token 4; expected ids in [0, 4), this model's target_vocab_size=4"),
      (lambda: model.greedy(params, src.at[0].set(8), mask, 3),
       "src holds token 8; expected ids in [0, 8), this model's vocab_size=8"),
      (lambda: seq2seq.seq2seq(8, 8, 6, target_vocab_size=4, end_token=5), "end_token=5"),
      (lambda: seq2seq.seq2seq(8, 8, 6, target_vocab_size=2), "target_vocab_size=2; expected 3"),
      (lambda: model.greedy(shared, src, mask, 3), "params.tgt_embed is None"),
  ]
  for run, says in cases:
    with pytest.raises(ValueError, match=re.escape(says)):
      run()


def test_padding_may_hold_any_id_and_short_searches_pad_their_n_best():
  model = seq2seq.seq2seq(8, 8, 6, attention="general", end_token=7)
  params = model.init(jax.random.key(0))
  src, mask, tgt, tmask = example()
  tmask = tmask.at[3:].set(False)
  # ignore_index-style padding (-100) past the masks is never read as a token
  want = model.loss(params, (src, mask, tgt, tmask))[0]
  got = model.loss(params, (src.at[4:].set(-1), mask, tgt.at[3:].set(-100), tmask))[0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert model.greedy(params, list(np.asarray(src)), list(np.asarray(mask)), 3)[0].shape == (3,)
  # V = 3 tokens, one step: 3 hypotheses for n_best = 4; the last is padding
  tiny = seq2seq.seq2seq(3, 4, 6, attention=None)
  tokens, log_prob, weights = tiny.beam(tiny.init(jax.random.key(0)), src % 3, mask, 1,
                                        width=4, n_best=4)
  assert np.isfinite(log_prob[:3]).all() and log_prob[3] == -np.inf
  assert sorted(np.asarray(tokens[:3, 0])) == [0, 1, 2] and tokens[3, 0] == seq2seq.PAD
