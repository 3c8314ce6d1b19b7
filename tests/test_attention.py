"""Attention (jaxrnn._cells.attention): NumPy oracles, masking, gradients, decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn._cells.attention import (Prepared, attention, attention_decoder,
                                     masked_softmax)

S, D, Q = 5, 6, 4


def np_softmax(e, mask):
  e = np.where(mask, e, -np.inf)
  if not mask.any():
    return np.zeros_like(e)
  w = np.exp(e - e.max())
  return np.where(mask, w / w.sum(), 0.0)


def np_scores(score, p, m, q):
  p = jax.tree.map(np.asarray, p)
  if score == "additive":
    return np.tanh(m @ p.w_k + q @ p.w_q) @ p.v
  if score == "dot":
    return m @ q
  if score == "scaled_dot":
    return m @ q / np.sqrt(m.shape[-1])
  return m @ p.w_k @ q               # general: q^T W m_s with W = w_k^T


def setup(score, key=0):
  q_size = Q if score in ("additive", "general") else D
  att = attention(score, 7 if score == "additive" else None)
  km, kq, kp = jax.random.split(jax.random.key(key), 3)
  params = att.init(kp, q_size, D)
  memory = jax.random.normal(km, (S, D))
  query = jax.random.normal(kq, (q_size,))
  return att, params, memory, query


@pytest.mark.parametrize("score", ["additive", "dot", "scaled_dot", "general"])
def test_scores_and_step_match_numpy(score):
  att, params, memory, query = setup(score)
  mask = np.array([True, True, False, True, False])
  context, weights = att.attend(params, att.prepare(params, memory, mask), query)
  m, q = np.asarray(memory), np.asarray(query)
  want_w = np_softmax(np_scores(score, params, m, q), mask)
  np.testing.assert_allclose(weights, want_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, want_w @ m, rtol=1e-5, atol=1e-6)
  assert weights[2] == 0.0 and weights[4] == 0.0           # exactly zero
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)


def test_all_masked_memory_gives_zeros_and_finite_grads():
  att, params, memory, query = setup("additive")
  mask = jnp.zeros(S, bool)
  context, weights = att.attend(params, att.prepare(params, memory, mask), query)
  assert (weights == 0).all() and (context == 0).all()
  g = jax.grad(lambda q: att.attend(params, att.prepare(params, memory, mask), q)[0].sum())(query)
  assert np.isfinite(g).all()


def test_masked_softmax_ignores_huge_masked_scores():
  w = masked_softmax(jnp.array([0.0, 1e30, 1.0]), jnp.array([True, False, True]))
  np.testing.assert_allclose(w, [1 / (1 + np.e), 0.0, np.e / (1 + np.e)], rtol=1e-6)


def test_non_finite_padding_rows_do_not_leak():
  att, params, memory, query = setup("additive")
  mask = jnp.array([True, True, False, True, False])
  memory = memory.at[2].set(jnp.inf).at[4].set(jnp.nan)

  def context(params, query):
    return att.attend(params, att.prepare(params, memory, mask), query)[0].sum()

  assert np.isfinite(context(params, query))
  grads = jax.grad(context, argnums=(0, 1))(params, query)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="score is 'cosine'"):
    attention("cosine")
  with pytest.raises(ValueError, match="only score='additive' has an attention size"):
    attention("general", 16)
  with pytest.raises(ValueError, match="query size == memory size"):
    attention("dot").init(jax.random.key(0), 3, 4)
  att, params, memory, _ = setup("general")
  with pytest.raises(ValueError, match="bool\\[5\\]"):
    att.prepare(params, memory, jnp.ones(4, bool))
  dec = jaxrnn.attention_decoder(jaxrnn.gru(4), att, 10, 6)
  dec_params = dec.init(jax.random.key(0), 3)
  for shape, fix in [((10, 32), "memory_size=32"), ((7, 6), "pad the memory to 10 rows"),
                     ((12, 6), "memory_length=12"), ((2, 10, 6), "jax.vmap")]:
    with pytest.raises(ValueError, match=f"memory has shape .*Fix: .*{fix}"):
      dec.decoder_carry(dec_params, jnp.ones(shape))
  with pytest.raises(ValueError, match=r"attend over nothing.*carry=cell.decoder_carry"):
    jaxrnn.scan(dec, dec_params, jnp.ones((4, 3)))     # no memory given


@pytest.mark.parametrize("score", ["additive", "general"])
def test_attend_grads_float64(score):
  with jax.enable_x64(True):
    att, params, memory, query = setup(score)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    memory, query = memory.astype(jnp.float64), query.astype(jnp.float64)
    mask = jnp.array([True, True, False, True, True])

    def f(params, memory, query):
      return att.attend(params, att.prepare(params, memory, mask), query)

    check_grads(f, (params, memory, query), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def make_decoder(cell=None, score="general"):
  att = attention(score, 7 if score == "additive" else None)
  dec = attention_decoder(cell or jaxrnn.gru(8), att, S, D)
  params = dec.init(jax.random.key(1), 3)
  km, kx = jax.random.split(jax.random.key(2))
  memory = jax.random.normal(km, (S, D))
  xs = jax.random.normal(kx, (7, 3))
  return dec, params, memory, xs


def test_decoder_is_a_cell_and_scan_equals_python_loop():
  dec, params, memory, xs = make_decoder(jaxrnn.lstm(8))
  assert isinstance(dec, jaxrnn.Cell) and dec.output_size == 8
  assert jaxrnn.unfused(dec) is dec            # already unfused: kept whole
  mask = jnp.arange(S) < 3
  carry0 = dec.decoder_carry(params, memory, mask)
  carry, (ys, ws) = jaxrnn.scan(dec, params, xs, carry=carry0)
  c, outs, wts = carry0, [], []
  for t in range(xs.shape[0]):
    c, (y, w) = dec.step(params, c, xs[t])
    outs.append(y)
    wts.append(w)
  np.testing.assert_allclose(ys, np.stack(outs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ws, np.stack(wts), rtol=1e-5, atol=1e-6)
  assert (ws[:, 3:] == 0).all()
  np.testing.assert_allclose(ws.sum(-1), 1.0, rtol=1e-5)


def test_decoder_step_matches_numpy():
  dec, params, memory, xs = make_decoder(jaxrnn.simple_rnn(8), "general")
  # init makes b_c zero, which would hide a step that leaves it out.
  params = params._replace(b_c=jax.random.normal(jax.random.key(5), params.b_c.shape))
  carry = dec.decoder_carry(params, memory, jnp.ones(S, bool))
  carry, (y, w) = dec.step(params, carry, xs[0])
  carry, (y, w) = dec.step(params, carry, xs[1])
  p = jax.tree.map(np.asarray, params)
  m, x = np.asarray(memory), np.asarray(xs)
  h, ctx = np.zeros(8), np.zeros(D)
  for t in range(2):
    h = np.tanh(np.concatenate([x[t], ctx]) @ p.cell.w_x + p.cell.b + h @ p.cell.w_h)
    a = np_softmax(m @ p.attention.w_k @ h, np.ones(S, bool))
    ctx = a @ m
    out = np.tanh(np.concatenate([h, ctx]) @ p.w_c + p.b_c)
  np.testing.assert_allclose(w, a, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(y, out, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(carry.context, ctx, rtol=1e-4, atol=1e-6)


def test_decoder_vmap_equals_loop_over_examples():
  dec, params, _, _ = make_decoder()
  B = 3
  memories = jax.random.normal(jax.random.key(3), (B, S, D))
  masks = jnp.arange(S)[None, :] < jnp.array([5, 2, 0])[:, None]   # incl. all-masked
  xs = jax.random.normal(jax.random.key(4), (B, 4, 3))

  def run(memory, mask, x):
    return jaxrnn.scan(dec, params, x, carry=dec.decoder_carry(params, memory, mask))[1]

  ys, ws = jax.vmap(run)(memories, masks, xs)
  for b in range(B):
    y, w = run(memories[b], masks[b], xs[b])
    np.testing.assert_allclose(ys[b], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ws[b], w, rtol=1e-5, atol=1e-6)
  assert np.isfinite(ys).all() and (ws[2] == 0).all()


def test_decoder_step_grads_float64():
  with jax.enable_x64(True):
    dec, params, memory, xs = make_decoder(jaxrnn.gru(4), "additive")
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    memory, x = memory.astype(jnp.float64), xs[0].astype(jnp.float64)
    mask = jnp.array([True, False, True, True, True])

    def f(params, memory, x):
      carry = dec.decoder_carry(params, memory, mask)
      carry, (y, w) = dec.step(params, carry, x)
      carry, (y, w) = dec.step(params, carry, x)
      return y, w

    check_grads(f, (params, memory, x), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_key_projection_happens_once_outside_the_step():
  # The step only reads the prepared keys: its jaxpr has no matmul with the
  # memory's [D, A] key weights, so nothing of size S x D x A runs per step.
  dec, params, memory, xs = make_decoder(jaxrnn.gru(8), "additive")
  carry = dec.decoder_carry(params, memory, jnp.ones(S, bool))
  assert isinstance(carry.memory, Prepared)
  np.testing.assert_allclose(carry.memory.keys, memory @ params.attention.w_k, rtol=1e-5)
  jaxpr = jax.make_jaxpr(dec.step)(params, carry, xs[0])
  D_, A = params.attention.w_k.shape
  assert (D_, A) == (D, 7)
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      shapes = [tuple(v.aval.shape) for v in eqn.invars]
      assert (D_, A) not in shapes, shapes      # only weights [S] @ values [S, D]
  # ... and the step does not depend on the raw key weights at all.
  no_wk = params._replace(attention=params.attention._replace(w_k=params.attention.w_k * 0))
  y1 = dec.step(params, carry, xs[0])[1][0]
  y2 = dec.step(no_wk, carry, xs[0])[1][0]
  np.testing.assert_array_equal(y1, y2)


def test_decoder_wraps_a_custom_cell_without_project():
  def init(key, input_size):
    return dict(w=jax.random.normal(key, (input_size + 8, 8)) * 0.3)

  def step(p, h, x):            # h' = tanh([x; h] W), the raw x (no project)
    h = jnp.tanh(jnp.concatenate([x, h]) @ p["w"])
    return h, h

  custom = jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros(8), step=step,
                       output_size=8)
  dec, params, memory, xs = make_decoder(custom, "additive")
  carry0 = dec.decoder_carry(params, memory, jnp.arange(S) < 4)
  _, (ys, ws) = jax.jit(lambda p, c, x: jaxrnn.scan(dec, p, x, carry=c))(params, carry0, xs)
  c, h, ctx = carry0, np.zeros(8), np.zeros(D)
  p = jax.tree.map(np.asarray, params)
  for t in range(xs.shape[0]):
    c, (y, w) = dec.step(params, c, xs[t])
    np.testing.assert_allclose(ys[t], y, rtol=1e-5, atol=1e-6)
    # the same step from the equations: input feeding of the previous context
    h = np.tanh(np.concatenate([np.asarray(xs[t]), ctx, h]) @ p.cell["w"])
    a = np_softmax(np_scores("additive", p.attention, np.asarray(memory), h),
                   np.arange(S) < 4)
    ctx = a @ np.asarray(memory)
    np.testing.assert_allclose(ws[t], a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        y, np.tanh(np.concatenate([h, ctx]) @ p.w_c + p.b_c), rtol=1e-4, atol=1e-5)
