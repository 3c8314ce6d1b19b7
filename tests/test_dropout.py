"""Keras' recurrent-layer dropout, ``rnn(cell, dropout=, recurrent_dropout=)``.

Held to NumPy loops written from Keras' equations (one input mask and one
recurrent mask per sequence, the carry itself unmasked), to ``jax.vmap``
of ``apply`` for ``apply_batch``, and to plain inference without a key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import numpy_oracle
from jaxrnn._dropout import variational_masks
from numpy_oracle import as_numpy, block, sigmoid

B, T, I, H = 4, 6, 3, 5
XS = jax.random.normal(jax.random.key(1), (B, T, I))
MASK = jnp.arange(T)[None] < jnp.array([6, 4, 1, 5])[:, None]
RATES = dict(dropout=0.3, recurrent_dropout=0.4)


def random_params(cell, seed=0):
  shapes = jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


def gru_step(p, h, x, m_h):
  """Keras' GRU (reset_after=True) with its recurrent mask: U sees m_h * h,
  the update z * h the true h."""
  Hs = p["w_h"].shape[0]
  W = [block(p["w_x"], k, Hs) for k in range(3)]
  U = [block(p["w_h"], k, Hs) for k in range(3)]
  b = [block(p["b"], k, Hs) for k in range(3)]
  hm = h * m_h
  r = sigmoid(x @ W[0] + hm @ U[0] + b[0])
  z = sigmoid(x @ W[1] + hm @ U[1] + b[1])
  n = np.tanh(x @ W[2] + b[2] + r * (hm @ U[2] + p["b_hn"]))
  return (1 - z) * n + z * h


def reference(name, params, x, key, rates):
  """One sequence through Keras' equations, its masks drawn as the layer draws them."""
  p = as_numpy(params)
  m_x, m_h = variational_masks(key, I, p["w_h"].shape[0], rates["dropout"],
                               rates["recurrent_dropout"])
  m_x = np.ones(I) if m_x is None else np.asarray(m_x, np.float64)
  m_h = np.ones(p["w_h"].shape[0]) if m_h is None else np.asarray(m_h, np.float64)
  x = np.asarray(x, np.float64) * m_x
  if name == "gru":
    h, ys = np.zeros(H), []
    for t in range(T):
      h = gru_step(p, h, x[t], m_h)
      ys.append(h)
    return np.stack(ys)
  # The LSTM's and the Elman RNN's steps read h_{t-1} only through R h, so
  # the oracle given m_h * h computes Keras' equations; its new h is its own.
  ref = numpy_oracle.oracle({"lstm": "lstm", "lstmp": "lstmp", "rnn": "rnn_tanh"}[name])
  carry, ys = ref.initial_carry(params), []
  for t in range(T):
    carry, y = ref.step(params, dict(carry, h=carry["h"] * m_h), x[t])
    ys.append(y)
  return np.stack(ys)


CELLS = {"lstm": lambda: jaxrnn.lstm(H), "lstmp": lambda: jaxrnn.lstm(H, proj_size=2),
         "gru": lambda: jaxrnn.gru(H), "rnn": lambda: jaxrnn.simple_rnn(H)}


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("rates", [RATES, dict(dropout=0.5, recurrent_dropout=0.0),
                                   dict(dropout=0.0, recurrent_dropout=0.5)],
                         ids=["both", "inputs", "recurrent"])
def test_apply_matches_keras_equations_with_one_mask_per_sequence(name, rates):
  cell = CELLS[name]()
  layer = jaxrnn.rnn(cell, **rates)
  params = random_params(cell)
  key = jax.random.key(7)
  _, ys = jax.jit(lambda p, x: layer.apply(p, x, key=key))(params, XS[0])
  np.testing.assert_allclose(ys, reference(name, params, XS[0], key, rates), atol=1e-5)
  # Without a key (inference) nothing is dropped.
  np.testing.assert_array_equal(layer.apply(params, XS[0])[1],
                                jaxrnn.rnn(cell).apply(params, XS[0])[1])


def test_apply_batch_equals_vmap_over_split_keys_with_gradients(rates=RATES):
  # rnn's masks inside a stack (with its own dropout between layers) and a
  # bidirectional layer: sequence b draws from split(key, B)[b] what apply
  # draws from its key, dropped units included.
  net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H), **rates),
                     jaxrnn.bidirectional(jaxrnn.rnn(jaxrnn.gru(H), **rates),
                                          jaxrnn.rnn(jaxrnn.simple_rnn(H), **rates)),
                     dropout=0.3)
  params = random_params(net)
  key = jax.random.key(3)

  def batched(p):
    return jaxrnn.apply_batch(net, p, XS, mask=MASK, key=key)

  def by_hand(p):
    return jax.vmap(lambda x, m, k: net.apply(p, x, mask=m, key=k))(
        XS, MASK, jax.random.split(key, B))

  got, want = jax.jit(batched)(params), jax.jit(by_hand)(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  loss = lambda run: lambda p: jnp.sum(jnp.sin(run(p)[1]))
  for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(batched)))(params)),
                  jax.tree.leaves(jax.jit(jax.grad(loss(by_hand)))(params)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # Dropout runs, and each sequence has its own masks: the same input gives
  # different outputs, none of them the output without a key.
  same = jnp.broadcast_to(XS[:1], XS.shape)
  ys = jaxrnn.apply_batch(net, params, same, key=key)[1]
  assert not np.allclose(ys[0], ys[1])
  assert not np.allclose(ys[0], jaxrnn.apply_batch(net, params, same)[1][0])


def test_masks_are_zero_or_scaled_at_the_rate():
  m_x, m_h = variational_masks(jax.random.key(0), 20_000, 10_000, 0.25, 0.6)
  for m, rate in ((m_x, 0.25), (m_h, 0.6)):
    assert set(np.unique(np.asarray(m))) == {0.0, np.float32(1 / (1 - rate))}
    assert abs(float(jnp.mean(m == 0)) - rate) < 0.02


def test_bad_rates_and_cells_without_w_h_are_refused():
  for bad in (-0.1, 1.0, "0.2", True):
    with pytest.raises(ValueError, match=r"jaxrnn.rnn: dropout=.*; expected a rate in \[0, 1\)"):
      jaxrnn.rnn(jaxrnn.lstm(H), dropout=bad)
  cell = jaxrnn.Cell(init=lambda k, i: {"w": jnp.ones((i, H))},
                     initial_carry=lambda p: jnp.zeros(H),
                     step=lambda p, h, x: (jnp.tanh(x @ p["w"] + h),) * 2, output_size=H)
  layer = jaxrnn.rnn(cell, recurrent_dropout=0.2)
  with pytest.raises(ValueError, match=r"recurrent_dropout masks h_\(t-1\) through the rows "
                     r"of the recurrent weights, params.w_h"):
    layer.apply(cell.init(jax.random.key(0), I), XS[0], key=jax.random.key(1))
  with pytest.raises(ValueError, match=r"these params \(dict\) have none"):
    layer.init(jax.random.key(0), I)        # at init, before any training step
  # Input dropout alone needs nothing of the cell.
  jaxrnn.rnn(cell, dropout=0.2).apply(cell.init(jax.random.key(0), I), XS[0],
                                      key=jax.random.key(1))


def test_a_hand_written_cell_with_w_h_in_a_dict_and_numpy_rates_work():
  # fused_cell's documented example keeps its params in a dict.
  def init(key, input_size):
    kx, kh = jax.random.split(key)
    return {"w_x": jax.random.normal(kx, (input_size, H)),
            "w_h": jax.random.normal(kh, (H, H)) / H}

  cell = jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros(H),
                     step=lambda p, h, x: (jnp.tanh(x @ p["w_x"] + h @ p["w_h"]),) * 2,
                     output_size=H)
  layer = jaxrnn.rnn(cell, recurrent_dropout=np.float32(0.5))
  params, key = cell.init(jax.random.key(0), I), jax.random.key(4)
  _, m_h = variational_masks(key, I, H, 0.0, 0.5)
  h, want = jnp.zeros(H), []
  for x in XS[0]:
    h = jnp.tanh(x @ params["w_x"] + (h * m_h) @ params["w_h"])
    want.append(h)
  np.testing.assert_allclose(layer.apply(params, XS[0], key=key)[1], jnp.stack(want),
                             atol=1e-6)


def test_cudnn_cells_run_recurrent_dropout_on_the_xla_kernel_or_refuse():
  # cuDNN's LSTM has no recurrent mask: "auto" runs jaxrnn's kernel (with the
  # mask, as the plain cell does), True says why it cannot run.
  params = random_params(jaxrnn.lstm(H))
  key = jax.random.key(2)
  plain = jaxrnn.apply_batch(jaxrnn.rnn(jaxrnn.lstm(H), **RATES), params, XS, key=key)
  auto = jaxrnn.apply_batch(jaxrnn.rnn(jaxrnn.lstm(H, use_cudnn="auto"), **RATES), params,
                            XS, key=key)
  for a, b in zip(jax.tree.leaves(auto), jax.tree.leaves(plain), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="recurrent mask \\(recurrent dropout\\), which cuDNN"):
    jaxrnn.apply_batch(jaxrnn.rnn(jaxrnn.lstm(H, use_cudnn=True), **RATES), params, XS,
                       key=key)
