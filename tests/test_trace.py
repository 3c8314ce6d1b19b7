"""`jaxrnn.trace`: the traced run equals the normal run, and its signals obey
the cell's equations (so they are the cell's real internals, not a copy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

T, I, H = 8, 3, 4
XS = jax.random.normal(jax.random.key(1), (T, I))
MASK = jnp.arange(T) < 6


def setup(cell):
  params = cell.init(jax.random.key(0), I)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  return jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                   for l, k in zip(leaves, keys)])


@pytest.mark.parametrize("cell", [jaxrnn.lstm(H), jaxrnn.peephole_lstm(H),
                                  jaxrnn.lstm(H, forget_gate=False), jaxrnn.gru(H),
                                  jaxrnn.gru(H, reset_after=False), jaxrnn.simple_rnn(H)],
                         ids=["lstm", "peephole", "nfg", "gru", "gru_cho", "rnn"])
def test_traced_run_equals_normal_run(cell):
  params = setup(cell)
  carry, ys = jaxrnn.scan(cell, params, XS, mask=MASK)
  t_carry, t_ys, signals = jax.jit(lambda p: jaxrnn.trace(cell, p, XS, mask=MASK))(params)
  np.testing.assert_allclose(t_ys, ys, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(t_carry), jax.tree.leaves(carry)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(signals["h"], ys, rtol=1e-5, atol=1e-6)
  assert all(np.all(np.asarray(v)[6:] == 0) for v in signals.values())  # masked steps


def test_lstm_signals_obey_the_cell_state_equations():
  cell = jaxrnn.peephole_lstm(H)
  _, _, s = jaxrnn.trace(cell, setup(cell), XS)
  c_prev = np.vstack([np.zeros((1, H)), s["c"][:-1]])
  np.testing.assert_allclose(s["c"], s["f"] * c_prev + s["i"] * s["g"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s["h"], s["o"] * np.tanh(s["c"]), rtol=1e-5, atol=1e-6)
  for gate in "ifo":
    assert np.all((s[gate] > 0) & (s[gate] < 1))


def test_removed_gates_are_not_recorded():
  cell = jaxrnn.lstm(H, forget_gate=False, output_gate=False)
  _, _, s = jaxrnn.trace(cell, setup(cell), XS)
  assert sorted(s) == ["c", "g", "h", "i"]


def test_gru_signals_obey_the_update_equation():
  cell = jaxrnn.gru(H)
  _, _, s = jaxrnn.trace(cell, setup(cell), XS)
  h_prev = np.vstack([np.zeros((1, H)), s["h"][:-1]])
  np.testing.assert_allclose(s["h"], (1 - s["z"]) * s["n"] + s["z"] * h_prev, rtol=1e-5, atol=1e-6)


def test_custom_cell_records_its_own_signals():
  def step(p, h, x):
    gate = jaxrnn.record("gate", jax.nn.sigmoid(x @ p))
    h = gate * h + (1 - gate) * jnp.tanh(x @ p)
    return h, h
  cell = jaxrnn.Cell(init=lambda k, n: jax.random.normal(k, (n, H)),
                     initial_carry=lambda p: jnp.zeros(H), step=step, output_size=H)
  params = cell.init(jax.random.key(0), I)
  _, ys, signals = jaxrnn.trace(cell, params, XS)
  assert signals["gate"].shape == (T, H)
  np.testing.assert_allclose(ys, jaxrnn.scan(cell, params, XS)[1], rtol=1e-6)


def test_a_layer_of_a_stack_is_traced_through_its_cell_and_the_layers_below():
  # The recipe the error for a layer gives: layer k's cell on the outputs of
  # the layers below it. Its h is the stack's output when k is the top.
  cells = [jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.peephole_lstm(H)]
  net = jaxrnn.stack(*cells)
  params = net.init(jax.random.key(0), I)
  below = jaxrnn.stack(*cells[:2]).apply(params[:2], XS)[1]
  _, ys, signals = jaxrnn.trace(cells[2], params[2], below)
  np.testing.assert_allclose(signals["h"], net.apply(params, XS)[1], atol=1e-6)
  np.testing.assert_allclose(ys, signals["h"])
  for layer in (net, jaxrnn.rnn(cells[0])):
    with pytest.raises(TypeError, match=r"jaxrnn.trace: cell is a Seq; expected a jaxrnn.Cell.*"
                                        r"jaxrnn.trace\(cell_k, params\[k\], ys\); layer 0 reads xs"):
      jaxrnn.trace(layer, params[0], XS)
  with pytest.raises(ValueError, match=r"jaxrnn.trace: xs has shape \(2, 8, 3\); expected one "
                                       r"sequence \[T, I\]. Fix: .*jax.vmap"):
    jaxrnn.trace(cells[0], params[0], jnp.stack([XS, XS]))
  with pytest.raises(ValueError, match=r"xs has shape \(8,\); .*Fix: for T steps of one "
                                       r"feature, xs\[:, None\]"):
    jaxrnn.trace(cells[0], params[0], XS[:, 0])
  batch = jax.vmap(lambda x: jaxrnn.trace(cells[0], params[0], x))(jnp.stack([XS, XS]))
  assert batch[2]["f"].shape == (2, T, H)
