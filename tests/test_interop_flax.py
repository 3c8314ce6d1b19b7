"""jaxrnn.interop.flax against Flax itself: linen and NNX cells give the
same outputs, carries and gradients as the converted jaxrnn cells; round
trips are bit-exact; the Flax wrappers train; every error names its key."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn
from jaxrnn.interop.flax import (LinenRecurrent, Recurrent, from_linen,
                                 from_nnx, to_linen, to_nnx)

I, H, T = 3, 4, 5
LENGTHS = np.array([5, 2, 1])
B = len(LENGTHS)
XS = np.random.RandomState(0).randn(B, T, I).astype(np.float32)
MASK = np.arange(T)[None] < LENGTHS[:, None]
BIAS = nn.initializers.normal(0.5)

LINEN = {  # flax cell -> jaxrnn cell
    "LSTMCell": (lambda: nn.LSTMCell(H, bias_init=BIAS), jaxrnn.lstm(H)),
    "OptimizedLSTMCell": (lambda: nn.OptimizedLSTMCell(H, bias_init=BIAS), jaxrnn.lstm(H)),
    "GRUCell": (lambda: nn.GRUCell(H, bias_init=BIAS), jaxrnn.gru(H)),
    "SimpleCell": (lambda: nn.SimpleCell(H, bias_init=BIAS), jaxrnn.simple_rnn(H)),
}


def final_h(carry):
  return carry.h if isinstance(carry, jaxrnn.LSTMCarry) else carry


def flax_h(carry):
  return carry[1] if isinstance(carry, tuple) else carry  # linen LSTM: (c, h)


def jaxrnn_run(cell, params, reverse=False):
  run = lambda x, m: jaxrnn.scan(cell, params, x, mask=m, reverse=reverse)
  return jax.vmap(run)(XS, MASK)


@pytest.mark.parametrize("name, reverse", [
    ("LSTMCell", False), ("LSTMCell", True), ("OptimizedLSTMCell", False),
    ("GRUCell", True), ("SimpleCell", False)])
def test_linen_cells_match_masked_and_reversed_with_gradients(name, reverse):
  make, cell = LINEN[name]
  weights = np.random.RandomState(1).randn(B, T, H).astype(np.float32)
  valid = MASK[..., None]  # Flax leaves padded outputs as they come
  rnn = nn.RNN(make(), return_carry=True, reverse=reverse, keep_order=True)
  variables = rnn.init(jax.random.key(0), XS, seq_lengths=LENGTHS)
  params = from_linen(variables, name)

  def flax_loss(v):
    carry, ys = rnn.apply(v, XS, seq_lengths=LENGTHS)
    return jnp.sum(jnp.where(valid, jnp.tanh(ys), 0) * weights), (carry, ys)

  def jaxrnn_loss(p):
    carry, ys = jaxrnn_run(cell, p, reverse)
    return jnp.sum(jnp.where(valid, jnp.tanh(ys), 0) * weights), (carry, ys)

  (_, (c_f, ys_f)), g_f = jax.jit(jax.value_and_grad(flax_loss, has_aux=True))(variables)
  (_, (c_j, ys_j)), g_j = jax.jit(jax.value_and_grad(jaxrnn_loss, has_aux=True))(params)
  np.testing.assert_allclose(np.where(valid, ys_j, 0), np.where(valid, ys_f, 0),
                             atol=1e-5, rtol=0)
  assert not np.any(np.where(valid, 0, ys_j))
  np.testing.assert_allclose(final_h(c_j), flax_h(c_f), atol=1e-5, rtol=0)
  if isinstance(c_j, jaxrnn.LSTMCarry):
    np.testing.assert_allclose(c_j.c, c_f[0], atol=1e-5, rtol=0)
  # The conversion is a relabelling, so it maps gradients as it maps params.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
               to_linen(g_j)["params"], g_f["params"]["cell"])
  # The first sequence is full: forward, its last output has read all of
  # it; reversed, its first output has.
  full = ys_j[0, 0 if reverse else -1]
  np.testing.assert_allclose(final_h(c_j)[0], full, atol=1e-6)


NNX = {
    "LSTMCell": (nnx.LSTMCell, jaxrnn.lstm(H)),
    "OptimizedLSTMCell": (nnx.OptimizedLSTMCell, jaxrnn.lstm(H)),
    "GRUCell": (nnx.GRUCell, jaxrnn.gru(H)),
    "SimpleCell": (nnx.SimpleCell, jaxrnn.simple_rnn(H)),
}


def randomize(module, seed):
  """Sets every param of an NNX module to a random value (biases included)."""
  state = nnx.state(module, nnx.Param)
  pure = nnx.to_pure_dict(state)
  rng = np.random.RandomState(seed)
  pure = jax.tree.map(lambda a: jnp.asarray(rng.randn(*a.shape), a.dtype), pure)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)
  return module


@pytest.mark.parametrize("name", sorted(NNX))
def test_nnx_cells_match_and_convert_both_ways(name):
  make, cell = NNX[name]
  module = randomize(make(I, H, rngs=nnx.Rngs(0)), seed=2)
  params = from_nnx(module)
  h = jnp.zeros((B, H))
  carry = (h, h) if "LSTM" in name else h
  ys = []
  for t in range(T):
    carry, y = module(carry, XS[:, t])
    ys.append(y)
  c_j, ys_j = jax.vmap(lambda x: jaxrnn.scan(cell, params, x))(XS)
  np.testing.assert_allclose(ys_j, jnp.stack(ys, 1), atol=1e-5, rtol=0)
  np.testing.assert_allclose(final_h(c_j), flax_h(carry), atol=1e-5, rtol=0)
  # jaxrnn -> NNX -> jaxrnn, through the module and through its state.
  fresh = random_params(cell, seed=3)
  if name == "GRUCell":
    fresh = fresh._replace(b_hn=jnp.zeros_like(fresh.b_hn))
  to_nnx(fresh, module)
  assert_same_bits(from_nnx(module), fresh)
  assert_same_bits(from_nnx(nnx.state(module, nnx.Param)), fresh)
  assert_same_bits(from_nnx(nnx.to_pure_dict(nnx.state(module, nnx.Param))), fresh)


def random_params(cell, seed, dtype=np.float32):
  """Random params with a -0.0 and a NaN whose bits must survive."""
  shapes = jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
  rng = np.random.RandomState(seed)

  def leaf(s):
    x = rng.randn(*s.shape).astype(np.float32)
    x[..., 0] = -0.0
    x.reshape(-1)[-1] = np.nan
    return jnp.asarray(x.astype(dtype))

  return jax.tree.map(leaf, shapes)


def assert_same_bits(a, b):
  assert type(a) is type(b) and jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_jaxrnn_to_linen_to_jaxrnn_is_bit_exact(dtype):
  for name in ("LSTMCell", "GRUCell", "SimpleCell"):
    params = random_params(LINEN[name][1], seed=4, dtype=dtype)
    variables = to_linen(params, name)
    assert_same_bits(from_linen(variables), params)
    assert_same_bits(from_linen(variables["params"], name), params)
    # The layout is Flax's own: a Flax cell initialises the same tree.
    flax_vars = LINEN[name][0]().init(
        jax.random.key(0), flax_carry(name), jnp.zeros((I,)))
    assert jax.tree.structure(flax_vars) == jax.tree.structure(variables)
    assert jax.tree.map(jnp.shape, flax_vars) == jax.tree.map(jnp.shape, variables)


@pytest.mark.parametrize("name", ["OptimizedLSTMCell", "GRUCell", "SimpleCell"])
def test_params_without_biases_go_to_flax_as_zero_biases_computing_the_same(name):
  no_bias = {"OptimizedLSTMCell": jaxrnn.lstm, "GRUCell": jaxrnn.gru,
             "SimpleCell": jaxrnn.simple_rnn}[name](H, use_bias=False)
  params = jax.tree.map(lambda a: a * 0.7, no_bias.init(jax.random.key(1), I))
  variables = to_linen(params, name)
  back = from_linen(variables, name)
  assert all(not np.any(np.asarray(b)) for b in (back.b, getattr(back, "b_hn", 0)))
  flax_rnn = nn.RNN(LINEN[name][0](), return_carry=True)
  c_f, ys_f = flax_rnn.apply({"params": {"cell": variables["params"]}}, XS)
  c_j, ys_j = jax.vmap(lambda x: jaxrnn.scan(no_bias, params, x))(XS)
  np.testing.assert_allclose(ys_j, ys_f, atol=1e-5, rtol=0)
  np.testing.assert_allclose(final_h(c_j), flax_h(c_f), atol=1e-5, rtol=0)
  module = to_nnx(params, NNX[name][0](I, H, rngs=nnx.Rngs(0)))
  assert_same_bits(from_nnx(module), back)


def flax_carry(name):
  h = jnp.zeros((H,))
  return (h, h) if "LSTM" in name else h


# ------------------------------------------------------------ the wrappers


def test_nnx_wrapper_holds_jaxrnn_params_and_trains():
  layer = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H))
  model = Recurrent(layer, I, rngs=nnx.Rngs(0))
  params = model.params_tree()
  assert jax.tree.structure(params) == jax.tree.structure(
      layer.init(jax.random.key(0), I))
  n_state = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n_state == len(jax.tree.leaves(params)) == 3 + 4

  def loss_jaxrnn(p):
    _, ys = jax.vmap(lambda x, m: layer.apply(p, x, mask=m))(XS, MASK)
    return jnp.sum(ys ** 2)

  loss_nnx = lambda m: jnp.sum(m(XS, mask=MASK)[1] ** 2)
  opt = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, opt):
    value, grads = nnx.value_and_grad(loss_nnx)(model)
    opt.update(model, grads)
    return value, grads

  value, grads = train_step(model, opt)
  expected_value, expected = jax.jit(jax.value_and_grad(loss_jaxrnn))(params)
  np.testing.assert_allclose(value, expected_value, rtol=1e-6)
  rest = nnx.state(model, nnx.Not(nnx.Param))              # the dropout stream
  got = nnx.merge(nnx.graphdef(model), grads, rest).params_tree()  # grads as jaxrnn params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got, expected)
  assert not np.array_equal(model.params_tree()[0].w_x, params[0].w_x)
  assert train_step(model, opt)[0] < value


def test_linen_wrapper_holds_jaxrnn_params_in_flax_state():
  layer = jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.simple_rnn(H))
  model = LinenRecurrent(layer)
  variables = model.init(jax.random.key(0), XS, MASK)
  params = variables["params"]["layer"]
  assert isinstance(params[0], jaxrnn.GRUParams) and isinstance(params[1], jaxrnn.RNNParams)

  def loss_flax(v):
    ys = model.apply(v, XS, MASK)[1]
    return jnp.sum(ys ** 2), ys

  def loss_jaxrnn(p):
    ys = jax.vmap(lambda x, m: layer.apply(p, x, mask=m))(XS, MASK)[1]
    return jnp.sum(ys ** 2), ys

  (_, ys), grads = jax.jit(jax.value_and_grad(loss_flax, has_aux=True))(variables)
  (_, ys_j), expected = jax.jit(jax.value_and_grad(loss_jaxrnn, has_aux=True))(params)
  np.testing.assert_allclose(ys, ys_j, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads["params"]["layer"], expected)
  _, y_one = model.apply(variables, XS[0, :2])  # one unbatched sequence
  np.testing.assert_allclose(y_one, layer.apply(params, XS[0, :2])[1], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match=r"xs has shape \(3,\); expected \[T, I\] or \[B, T, I\]"):
    model.apply(variables, XS[0, 0])
  # jaxrnn's message on the input size, not Flax's ScopeParamShapeError.
  with pytest.raises(ValueError, match=rf"jaxrnn.apply_batch \(in the bidirectional layer's "
                     rf"forward direction\): xs has shape \({B}, {T}, 2\); "
                     rf"these params were initialised for input size {I}"):
    model.apply(variables, XS[..., :2])


def test_set_params_puts_converted_params_in_place_and_checks_their_shapes():
  model = Recurrent(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H)), I, rngs=nnx.Rngs(0))
  param = model.params[0].w_h                     # the same Param object after
  new = jax.tree.map(lambda a: a + 1, model.params_tree())
  model.set_params(new)
  assert model.params[0].w_h is param
  for a, b in zip(jax.tree.leaves(model.params_tree()), jax.tree.leaves(new), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"set_params: params are .*; expected .*this "
                     r"layer's. Fix: convert params of the same cell, sizes and layers"):
    model.set_params(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H + 1)).init(
        jax.random.key(0), I))


@pytest.mark.parametrize("reverse", [False, True])
def test_wrappers_take_seq_lengths_and_time_major_as_flax_nn_rnn_does(reverse):
  # Flax's own nn.RNN is the reference: time-major [T, B, I] in and out,
  # right padding given as seq_lengths, the final carry the last valid one.
  make, cell = LINEN["LSTMCell"]
  flax_rnn = nn.RNN(make(), return_carry=True, time_major=True, reverse=reverse,
                    keep_order=True)
  xs = XS.swapaxes(0, 1)
  variables = flax_rnn.init(jax.random.key(0), xs, seq_lengths=LENGTHS)
  c_f, ys_f = flax_rnn.apply(variables, xs, seq_lengths=LENGTHS)
  params = from_linen(variables, "LSTMCell")
  layer = jaxrnn.rnn(cell, reverse=reverse)
  def nnx_model(**kwargs):
    model = Recurrent(layer, I, rngs=nnx.Rngs(0), **kwargs)
    model.set_params(params)
    return model
  linen_model = LinenRecurrent(layer, time_major=True)
  runs = {
      "nnx": lambda: nnx_model(time_major=True)(xs, seq_lengths=LENGTHS),
      "nnx, the call's time_major": lambda: nnx_model()(xs, seq_lengths=LENGTHS,
                                                        time_major=True),
      "linen": lambda: linen_model.apply({"params": {"layer": params}}, xs,
                                         seq_lengths=LENGTHS),
      "linen, the call's time_major": lambda: LinenRecurrent(layer).apply(
          {"params": {"layer": params}}, xs, seq_lengths=LENGTHS, time_major=True),
  }
  valid = MASK.T[..., None]
  for name, run in runs.items():
    carry, ys = run()
    assert ys.shape == (T, B, H), name
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, ys_f, 0), atol=1e-5)
    np.testing.assert_allclose(carry.h, c_f[1], atol=1e-5)
    np.testing.assert_allclose(carry.c, c_f[0], atol=1e-5)
  # One sequence takes its length as an int.
  carry, ys = linen_model.apply({"params": {"layer": params}}, XS[1], seq_lengths=2)
  np.testing.assert_allclose(carry.h, c_f[1][1], atol=1e-5)
  with pytest.raises(ValueError, match=r"interop.flax: got both mask and seq_lengths"):
    linen_model.apply({"params": {"layer": params}}, XS[1], mask=MASK[1], seq_lengths=2)
  with pytest.raises(ValueError, match=r"seq_lengths has shape \(1,\) but xs \(5, 3\) is one "
                     r"sequence \[T, I\]; expected an int"):
    linen_model.apply({"params": {"layer": params}}, XS[1], seq_lengths=jnp.array([2]))


def test_wrappers_return_the_outputs_alone_for_sequential_as_flax_nn_rnn_does():
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  params = layer.init(jax.random.key(0), I)
  whole = jaxrnn.apply_batch(layer, params, XS)[1]       # Sequential passes no mask
  want = jaxrnn.apply_batch(layer, params, XS, mask=MASK)
  linen = nn.Sequential([LinenRecurrent(layer, return_carry=False), nn.Dense(2)])
  variables = linen.init(jax.random.key(1), XS)
  variables["params"]["layers_0"]["layer"] = params
  dense = variables["params"]["layers_1"]
  np.testing.assert_allclose(linen.apply(variables, XS),
                             whole @ dense["kernel"] + dense["bias"], atol=1e-5)
  model = Recurrent(layer, I, return_carry=False, rngs=nnx.Rngs(0))
  model.set_params(params)
  head = nnx.Linear(H, 2, rngs=nnx.Rngs(1))
  np.testing.assert_allclose(nnx.Sequential(model, head)(XS), head(whole), atol=1e-5)
  # The call's return_carry wins; True gives both, as it does by default.
  for got in (model(XS, mask=MASK, return_carry=True),
              LinenRecurrent(layer, return_carry=False).apply(
                  {"params": {"layer": params}}, XS, mask=MASK, return_carry=True),
              LinenRecurrent(layer).apply({"params": {"layer": params}}, XS, mask=MASK)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(model(XS, mask=MASK), want[1], atol=1e-6)
  with pytest.raises(ValueError, match=r"interop.flax.Recurrent: return_carry='no'; "
                                       r"expected True or False"):
    Recurrent(layer, I, return_carry="no", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"interop.flax.LinenRecurrent: return_carry=1; "
                                       r"expected True or False"):
    LinenRecurrent(layer).apply({"params": {"layer": params}}, XS, return_carry=1)


def test_wrappers_run_dropout_as_flax_dropout_does():
  layer = jaxrnn.stack(jaxrnn.gru(H), jaxrnn.gru(H), dropout=0.5)
  model = Recurrent(layer, I, rngs=nnx.Rngs(0, dropout=1))
  params = model.params_tree()
  without = jaxrnn.apply_batch(layer, params, XS, mask=MASK)[1]
  first, second = model(XS, mask=MASK)[1], model(XS, mask=MASK)[1]   # train mode: on
  assert not np.allclose(first, without) and not np.allclose(first, second)
  key = jax.random.key(7)
  np.testing.assert_allclose(model(XS, mask=MASK, key=key)[1],
                             jaxrnn.apply_batch(layer, params, XS, mask=MASK, key=key)[1],
                             rtol=1e-6, atol=1e-6)
  for off in (lambda: nnx.view(model, deterministic=True)(XS, mask=MASK),
              lambda: model(XS, mask=MASK, deterministic=True)):
    np.testing.assert_allclose(off()[1], without, rtol=1e-6, atol=1e-6)
  model.eval()
  np.testing.assert_allclose(model(XS, mask=MASK, key=key)[1], without, rtol=1e-6, atol=1e-6)
  model.train()
  assert not np.allclose(model(XS, mask=MASK)[1], without)
  # Without a "dropout" stream, as nnx.LSTMCell takes nnx.Rngs(params=0): a
  # layer that drops nothing runs; one that drops asks for a key.
  plain = Recurrent(jaxrnn.gru(H), I, rngs=nnx.Rngs(params=0))
  np.testing.assert_array_equal(plain(XS, mask=MASK)[1], jaxrnn.apply_batch(
      jaxrnn.gru(H), plain.params_tree(), XS, mask=MASK)[1])
  # With a stream, a layer that drops nothing draws no key, as nnx.Dropout(0.0):
  # the stream's count stays, so jax.jacfwd of a call traces no state change.
  counted = Recurrent(jaxrnn.gru(H), I, rngs=nnx.Rngs(0))
  count = lambda: jax.tree.leaves(nnx.state(counted, nnx.RngCount))
  before = count()
  counted(XS, mask=MASK)
  assert count() == before
  assert jax.jacfwd(lambda x: counted(x)[1].sum())(XS[0]).shape == XS[0].shape
  streamless = Recurrent(layer, I, rngs=nnx.Rngs(params=0))
  with pytest.raises(ValueError, match=r"the layer runs dropout, deterministic is False, "
                     r"and there is no key.*Fix: build it with rngs=nnx.Rngs\(params=..., "):
    streamless(XS, mask=MASK)
  np.testing.assert_allclose(streamless(XS, mask=MASK, deterministic=True)[1],
                             jaxrnn.apply_batch(layer, streamless.params_tree(), XS,
                                                mask=MASK)[1], rtol=1e-6, atol=1e-6)

  linen = LinenRecurrent(layer)
  variables = linen.init(jax.random.key(0), XS, MASK)
  params = variables["params"]["layer"]
  without = jaxrnn.apply_batch(layer, params, XS, mask=MASK)[1]
  np.testing.assert_allclose(linen.apply(variables, XS, MASK)[1], without, rtol=1e-6, atol=1e-6)
  train = lambda k: linen.apply(variables, XS, MASK, deterministic=False,
                                rngs={"dropout": jax.random.key(k)})[1]
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), without) and not np.allclose(train(1), train(2))
  # deterministic unset: a "dropout" rng asks for dropout, as a key does.
  np.testing.assert_array_equal(
      linen.apply(variables, XS, MASK, rngs={"dropout": jax.random.key(1)})[1], train(1))
  np.testing.assert_allclose(linen.apply(variables, XS, MASK, key=key)[1],
                             jaxrnn.apply_batch(layer, params, XS, mask=MASK, key=key)[1],
                             rtol=1e-6, atol=1e-6)


def test_wrappers_pass_a_batched_carry_on_and_run_the_batched_kernel():
  # [B, T, I] goes through jaxrnn.apply_batch: the given carry (leading B)
  # is the one each sequence starts from, and the GRU's kernel runs.
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  carry = jnp.asarray(np.random.RandomState(1).randn(B, H), jnp.float32)
  nnx_model = Recurrent(layer, I, rngs=nnx.Rngs(0))
  params = nnx_model.params_tree()
  linen_model = LinenRecurrent(layer)
  variables = {"params": {"layer": params}}
  want = jax.vmap(lambda x, m, c: layer.apply(params, x, mask=m, carry=c))(XS, MASK, carry)
  # deterministic: no dropout key drawn from the module's stream (make_jaxpr)
  for run in (lambda x: nnx_model(x, mask=MASK, carry=carry, deterministic=True),
              lambda x: linen_model.apply(variables, x, MASK, carry)):
    got = run(XS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 got, want)
    assert "custom_vjp_call" in str(jax.make_jaxpr(run)(XS))


# ------------------------------------------------------------------ errors


def linen_gru_vars():
  return to_linen(random_params(jaxrnn.gru(H), seed=5))


@pytest.mark.parametrize("edit, cell, match", [
    (lambda v: v["params"]["hn"].pop("bias"), None, r"missing key params\['hn'\]\['bias'\]"),
    (lambda v: v["params"].pop("hz"), None, r"keys \['hn', 'hr', 'in', 'ir', 'iz'\]; expected those of a linen"),
    (lambda v: v["params"]["iz"].update(kernel=np.zeros((I, H + 1))), None,
     r"params\['iz'\]\['kernel'\] has shape \(3, 5\); expected \(3, 4\)"),
    (lambda v: v["params"]["hn"].update(bias=np.zeros((2,))), None,
     r"params\['hn'\]\['bias'\] has shape \(2,\); expected \(4,\)"),
    (lambda v: None, "LSTMCell", r"cell='LSTMCell' but the params are a GRU's"),
    (lambda v: None, "ConvLSTMCell", r"cell='ConvLSTMCell'; expected one of"),
    (lambda v: v["params"]["ir"].update(kernel=np.zeros(H)), None,
     r"params\['ir'\]\['kernel'\] has shape \(4,\); expected \[input_size, hidden_size\]"),
])
def test_from_linen_errors_name_the_key(edit, cell, match):
  variables = jax.tree.map(np.array, linen_gru_vars())
  edit(variables)
  with pytest.raises(ValueError, match=match):
    from_linen(variables, cell)


def test_conversions_under_a_transformation_say_to_convert_before_it():
  variables = linen_gru_vars()
  with pytest.raises(TypeError, match=r"from_linen: params\['ir'\]\['kernel'\] is traced.*"
                     r"Fix: convert once, before the jitted step"):
    jax.jit(from_linen)(variables)


def test_to_linen_and_to_nnx_refuse_what_flax_cannot_hold():
  key = jax.random.key(0)
  init = lambda cell, size=I: jax.tree.map(
      lambda s: np.ones(s.shape, s.dtype),
      jax.eval_shape(lambda k: cell.init(k, size), key))
  for params, match in [
      (init(jaxrnn.peephole_lstm(H)), r"params.p_i is set"),
      (init(jaxrnn.lstm(H, proj_size=2)), r"params.w_proj is set"),
      (init(jaxrnn.cifg_lstm(H)), r"3 gate blocks of size 4; Flax's LSTM has 4"),
      (init(jaxrnn.gru(H, reset_after=False)), r"reset_after=False"),
      ((init(jaxrnn.gru(H)),) * 2, r"params is a tuple; expected one cell's"),
  ]:
    with pytest.raises(ValueError, match=match):
      to_linen(params)
    with pytest.raises(ValueError, match=match):
      to_nnx(params, nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"cell='SimpleCell' but the params are a GRU's"):
    to_linen(init(jaxrnn.gru(H)), nn.SimpleCell)
  gru = init(jaxrnn.gru(H))
  with pytest.raises(ValueError, match=r"params.b_hn is nonzero, but NNX's GRUCell"):
    to_nnx(gru, nnx.GRUCell(I, H, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"GRUCell has param shapes .* Fix: build the cell with in_features=3, hidden_features=4"):
    to_nnx(gru._replace(b_hn=0 * gru.b_hn), nnx.GRUCell(I + 1, H, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"cell='LSTMCell' but the params are a GRU's"):
    to_nnx(gru, nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)))
  with pytest.raises(TypeError, match=r"module is a State; expected the NNX cell itself"):
    to_nnx(gru, nnx.state(nnx.GRUCell(I, H, rngs=nnx.Rngs(0)), nnx.Param))


def test_from_nnx_errors_name_the_key():
  with pytest.raises(ValueError, match=r"got an nnx.Linear; expected an NNX LSTMCell"):
    from_nnx(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
  with pytest.raises(TypeError, match=r"got a int; expected an NNX cell"):
    from_nnx(3)
  pure = nnx.to_pure_dict(nnx.state(nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)), nnx.Param))
  pure["hg"]["bias"] = np.zeros(H + 1)
  with pytest.raises(ValueError, match=r"state\['hg'\]\['bias'\] has shape \(5,\); expected \(4,\)"):
    from_nnx(pure)
  del pure["hg"]
  with pytest.raises(ValueError, match=r"expected those of an NNX LSTMCell"):
    from_nnx(pure)
  pure = nnx.to_pure_dict(nnx.state(nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(0)), nnx.Param))
  pure["dense_h"].pop("bias")
  with pytest.raises(ValueError, match=r"state\['dense_h'\] has keys \['kernel'\]; expected \['bias', 'kernel'\]"):
    from_nnx(pure)
  pure = nnx.to_pure_dict(nnx.state(nnx.SimpleCell(I, H, rngs=nnx.Rngs(0)), nnx.Param))
  pure["dense_h"]["bias"] = np.zeros(H)
  with pytest.raises(ValueError, match=r"state\['dense_h'\] has keys \['bias', 'kernel'\]; expected \['kernel'\]"):
    from_nnx(pure)


def test_a_linen_bidirectional_converts_whole_and_a_models_params_are_told_apart():
  # nn.Bidirectional(nn.RNN(cell), nn.RNN(cell)) is jaxrnn.bidirectional(cell,
  # cell) with its default concatenation, on the valid steps (Flax's padded
  # outputs are not zero).
  bi = nn.Bidirectional(nn.RNN(nn.GRUCell(H, bias_init=BIAS)),
                        nn.RNN(nn.GRUCell(H, bias_init=BIAS)))
  variables = bi.init(jax.random.key(0), XS)
  params = from_linen(variables)
  want = bi.apply(variables, XS, seq_lengths=LENGTHS)
  _, got = jaxrnn.apply_batch(jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H)), params, XS,
                              seq_lengths=LENGTHS)
  np.testing.assert_allclose(np.where(MASK[..., None], got, 0),
                             np.where(MASK[..., None], want, 0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="cell='LSTMCell' but the params are a GRU"):
    from_linen(variables, "LSTMCell")

  class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, xs):
      hs = nn.RNN(nn.LSTMCell(H))(xs)           # LSTMCell_0, then LSTMCell_1
      return nn.RNN(nn.LSTMCell(H))(hs)

  variables = TwoLayers().init(jax.random.key(0), XS)
  with pytest.raises(ValueError, match=r"look like a model's submodules .* a tuple in "
                                       r"layer order for jaxrnn.stack"):
    from_linen(variables)
  names = sorted(variables["params"])
  stacked = tuple(from_linen(variables["params"][n]) for n in names)
  _, ys = jaxrnn.apply_batch(jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.lstm(H)), stacked, XS)
  np.testing.assert_allclose(ys, TwoLayers().apply(variables, XS), rtol=1e-5, atol=1e-6)
