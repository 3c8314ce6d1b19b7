"""jaxrnn.interop.torch against PyTorch itself: outputs, final carries and
gradients of converted params, bit-exact round trips, and every error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxrnn
from jaxrnn.interop import torch as jt

torch.set_num_threads(1)

I, H, P, T = 3, 5, 2, 6
LENGTHS = np.array([6, 3, 1])
B = len(LENGTHS)

CONFIGS = {  # id -> (torch class, kwargs)
    "lstm": (torch.nn.LSTM, {}),
    "gru": (torch.nn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, {}),
    "rnn_relu": (torch.nn.RNN, dict(nonlinearity="relu")),
    "lstm_2x_bi_proj": (torch.nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=P)),
    "gru_2x_bi_nobias": (torch.nn.GRU, dict(num_layers=2, bidirectional=True, bias=False)),
    "rnn_bi": (torch.nn.RNN, dict(bidirectional=True)),
}


def make_module(name, seed=0):
  cls, kwargs = CONFIGS[name]
  torch.manual_seed(seed)
  module = cls(I, H, batch_first=True, **kwargs)
  with torch.no_grad():  # nonzero, distinct biases so folding is exercised
    for key, value in module.named_parameters():
      if key.startswith("bias"):
        value.uniform_(-0.5, 0.5)
  return module


def inputs(seed=1):
  return np.random.RandomState(seed).randn(B, T, I).astype(np.float32)


def run_jaxrnn(net, params, xs, lengths, carry):
  mask = jnp.arange(T)[None] < jnp.asarray(lengths)[:, None]
  apply = net.apply if isinstance(net, jaxrnn.Seq) else (
      lambda p, x, mask, carry: jaxrnn.scan(net, p, x, mask=mask, carry=carry))
  return jax.vmap(lambda x, m, c: apply(params, x, mask=m, carry=c))(xs, mask, carry)


def run_torch(module, xs, lengths, state):
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      torch.as_tensor(xs), torch.from_numpy(lengths), batch_first=True,
      enforce_sorted=False)
  out, state = module(packed, state)
  ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                 total_length=T)
  return ys, state


def initial_state(module):
  """Random h_0 (and c_0): [L * D, B, P or H], as torch takes them."""
  rng = np.random.RandomState(3)
  n = module.num_layers * (2 if module.bidirectional else 1)
  h0 = rng.randn(n, B, module.proj_size or H).astype(np.float32)
  c0 = rng.randn(n, B, H).astype(np.float32)
  return h0, (c0 if isinstance(module, torch.nn.LSTM) else None)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_masked_outputs_final_carry_and_gradients_match_torch(name):
  module = make_module(name)
  net, params = jt.layer(module), jt.from_torch(module)
  xs = inputs()
  weights = np.random.RandomState(2).randn(B, T, net.output_size).astype(np.float32)

  h0, c0 = initial_state(module)
  carry0 = jt.carry_from_torch(h0, c0, num_layers=module.num_layers,
                               bidirectional=module.bidirectional)

  @jax.jit
  def loss(params, xs):
    carry, ys = run_jaxrnn(net, params, xs, LENGTHS, carry0)
    return jnp.sum(jnp.tanh(ys) * weights), (carry, ys)

  (_, (carry, ys)), (g_params, g_xs) = jax.value_and_grad(
      loss, argnums=(0, 1), has_aux=True)(params, xs)
  xs_t = torch.from_numpy(xs).requires_grad_()
  h0_t = torch.from_numpy(h0)
  ys_t, state = run_torch(module, xs_t, LENGTHS,
                          h0_t if c0 is None else (h0_t, torch.from_numpy(c0)))
  torch.sum(torch.tanh(ys_t) * torch.from_numpy(weights)).backward()

  np.testing.assert_allclose(ys, ys_t.detach().numpy(), atol=1e-5, rtol=0)
  assert np.all(np.asarray(ys)[2, 1:] == 0)  # padded outputs are zero in both
  # The final carry is torch's h_n (and c_n): each sequence's last valid state.
  for got, want in zip(jax.tree.leaves(jt.carry_to_torch(carry)),
                       state if isinstance(state, tuple) else (state,), strict=True):
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-5, rtol=0)

  np.testing.assert_allclose(g_xs, xs_t.grad.numpy(), atol=1e-5, rtol=1e-4)
  # to_torch maps a gradient like a param: W -> W^T, b -> bias_ih and, for
  # the GRU, b_hn -> the n part of bias_hh. torch's bias_hh gradient equals
  # bias_ih's wherever the two biases are simply added.
  expected = jt.to_torch(g_params, bidirectional=module.bidirectional)
  for key, value in module.named_parameters():
    want = expected[key]
    if key.startswith("bias_hh") and isinstance(module, torch.nn.GRU):
      want = np.concatenate([expected[key.replace("hh", "ih")][:2 * H], want[2 * H:]])
    elif key.startswith("bias_hh"):
      want = expected[key.replace("hh", "ih")]
    np.testing.assert_allclose(want, value.grad.numpy(), atol=1e-5, rtol=1e-4,
                               err_msg=key)


def random_params(net, seed):
  """Params with every bias nonzero, and a -0.0 whose sign must survive."""
  shapes = jax.eval_shape(lambda k: net.init(k, I), jax.random.key(0))
  rng = np.random.RandomState(seed)

  def leaf(s):
    x = rng.randn(*s.shape).astype(s.dtype)
    x[..., 0] = -0.0
    return jnp.asarray(x)

  return jax.tree.map(leaf, shapes)


def bits_equal(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_bits(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert all(type(x) is type(y) for x, y in zip(
      jax.tree.leaves(a, is_leaf=lambda x: isinstance(x, tuple)),
      jax.tree.leaves(b, is_leaf=lambda x: isinstance(x, tuple))))
  assert all(bits_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jaxrnn_to_torch_to_jaxrnn_is_bit_exact(name):
  module = make_module(name)
  net = jt.layer(module)
  params = random_params(net, seed=3)
  state = jt.to_torch(params, bidirectional=module.bidirectional)
  assert list(state) == list(module.state_dict())  # torch's own key order
  module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
  assert_same_bits(jt.from_torch(module), params)
  assert_same_bits(jt.from_torch(state, net_kind(module)), params)


def net_kind(module):
  return {torch.nn.LSTM: "lstm", torch.nn.GRU: "gru", torch.nn.RNN: "rnn"}[type(module)]


def test_bias_false_converts_to_cells_without_biases_and_refuses_nonzero_ones():
  module = make_module("gru_2x_bi_nobias")
  net, params = jt.layer(module), jt.from_torch(module)
  assert all(p.b is None and p.b_hn is None for lay in params for p in lay)
  assert jax.tree.structure(params) == jax.tree.structure(net.init(jax.random.key(0), I))
  for sd in (jt.to_torch(params, bidirectional=True),          # bias=False inferred
             jt.to_torch(params, bidirectional=True, bias=False)):
    assert list(sd) == list(module.state_dict())
    assert_same_bits(jt.from_torch(sd, "gru"), params)
  # bias=True writes zero biases: a bias=True module computing the same thing.
  with_bias = jt.to_torch(params, bidirectional=True, bias=True)
  assert all(not np.any(v) for k, v in with_bias.items() if k.startswith("bias"))
  dense_module = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
  dense_module.load_state_dict({k: torch.from_numpy(v) for k, v in with_bias.items()})
  xs = torch.from_numpy(inputs())
  with torch.no_grad():
    np.testing.assert_array_equal(dense_module(xs)[0].numpy(), module(xs)[0].numpy())
  # Params with biases exported into a bias=False module must have zero ones.
  dense = jt.from_torch(with_bias, "gru")
  assert_same_bits(jt.from_torch(jt.to_torch(dense, bidirectional=True, bias=False), "gru"),
                   params)
  bumped = (dense[0], (dense[1][0]._replace(b_hn=dense[1][0].b_hn + 1), dense[1][1]))
  with pytest.raises(ValueError, match=r"layer l1 has nonzero params.b_hn but bias=False"):
    jt.to_torch(bumped, bidirectional=True, bias=False)


def test_torch_to_jaxrnn_folds_biases_and_keeps_dtype():
  module = make_module("gru").double()
  state = module.state_dict()
  with pytest.warns(UserWarning, match="float64 and jax_enable_x64 is off, so they become float32"):
    params = jt.from_torch(state, "gru")
  assert params.w_x.dtype == jnp.float32  # jax_enable_x64 is off: jax's rule
  b_ih, b_hh = state["bias_ih_l0"].numpy(), state["bias_hh_l0"].numpy()
  np.testing.assert_allclose(params.b[:2 * H], (b_ih + b_hh)[:2 * H], rtol=1e-6)
  np.testing.assert_allclose(params.b[2 * H:], b_ih[2 * H:], rtol=1e-6)
  np.testing.assert_allclose(params.b_hn, b_hh[2 * H:], rtol=1e-6)
  bf16 = jt.from_torch(make_module("lstm").to(torch.bfloat16))
  assert bf16.w_h.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(bf16.w_h, np.float32),
      make_module("lstm").state_dict()["weight_hh_l0"].to(torch.bfloat16).float().numpy().T)
  # back: float32 arrays torch.from_numpy takes, loading into a bfloat16
  # module bit for bit
  sd = jt.to_torch(bf16)
  assert {v.dtype for v in sd.values()} == {np.dtype(np.float32)}
  module = make_module("lstm", seed=5).to(torch.bfloat16)
  module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  again = jt.from_torch(module)
  assert again.w_h.dtype == jnp.bfloat16
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32),
                                                          np.asarray(b, np.float32)), again, bf16)


def test_prefix_selects_a_submodule_and_layer_reads_module_settings():
  module = make_module("lstm_2x_bi_proj")
  outer = {"encoder." + k: v for k, v in module.state_dict().items()}
  outer["decoder.weight"] = torch.zeros(1)
  assert_same_bits(jt.from_torch(outer, "lstm", prefix="encoder."),
                   jt.from_torch(module))
  with pytest.raises(ValueError, match=r"missing key 'weight_hh_l0'.*Fix: .*this one has "
                     r"prefix='encoder.'"):
    jt.from_torch(outer, "lstm")
  out = jt.to_torch(jt.from_torch(module), bidirectional=True, prefix="encoder.")
  assert list(out) == [k for k in outer if k.startswith("encoder.")]
  with pytest.warns(UserWarning, match=r"the module has batch_first=False, so its data is "
                    r"laid out \[T, B, I\].*time_major=True"):
    net = jt.layer(torch.nn.LSTM(I, H, num_layers=2, dropout=0.25, proj_size=P))
  assert net.output_size == P
  carry, ys = jax.eval_shape(
      lambda k: net.apply(net.init(k, I), jnp.ones((T, I)), key=k), jax.random.key(0))
  assert ys.shape == (T, P) and len(carry) == 2 and carry[1].c.shape == (H,)


def test_layer_keeps_the_modules_dropout():
  # torch drops every layer's output but the last's while training; the
  # layer built from the module does too when given a key, and without a
  # key (inference) it computes the same as with dropout=0.
  net = jt.layer(torch.nn.GRU(I, H, num_layers=2, dropout=0.5, batch_first=True))
  same = jt.layer(torch.nn.GRU(I, H, num_layers=2, batch_first=True))
  params = net.init(jax.random.key(0), I)
  xs = jnp.asarray(inputs()[0])
  _, plain = jax.jit(net.apply)(params, xs)
  np.testing.assert_array_equal(plain, jax.jit(same.apply)(params, xs)[1])
  _, dropped = jax.jit(lambda p, x, k: net.apply(p, x, key=k))(params, xs, jax.random.key(1))
  _, kept = jax.jit(lambda p, x, k: same.apply(p, x, key=k))(params, xs, jax.random.key(1))
  np.testing.assert_array_equal(kept, plain)
  assert not np.allclose(dropped, plain)


class MyLSTMCell(torch.nn.LSTMCell):     # a subclass converts as its base
  pass


@pytest.mark.parametrize("module", [MyLSTMCell(I, H), torch.nn.GRUCell(I, H),
                                    torch.nn.RNNCell(I, H, nonlinearity="relu"),
                                    torch.nn.GRUCell(I, H, bias=False)], ids=str)
def test_torch_cells_convert_to_a_cell_whose_step_is_one_call(module):
  torch.manual_seed(0)
  cell, params = jt.layer(module), jt.from_torch(module)
  assert isinstance(cell, jaxrnn.Cell)
  x, h = torch.randn(B, I), torch.randn(B, H)
  if isinstance(module, torch.nn.LSTMCell):
    c = torch.randn(B, H)
    want = module(x, (h, c))
    carry = jaxrnn.LSTMCarry(h=jnp.asarray(h.numpy()), c=jnp.asarray(c.numpy()))
  else:
    want, carry = (module(x, h),), jnp.asarray(h.numpy())
  step = lambda c, x_t: cell.step(params, c, cell.project(params, x_t[None])[0])
  got, _ = jax.vmap(step)(carry, jnp.asarray(x.numpy()))
  for a, b in zip(jax.tree.leaves(got), want):     # LSTM: h and c, else h
    np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-6)
  back = jt.to_torch(params, cell=True)
  assert list(back) == list(module.state_dict())
  assert_same_bits(jt.from_torch(back, jt.cell_module_kind(module)), params)


def test_numpy_state_dict_needs_no_torch_tensors():
  state = {k: v.numpy() for k, v in make_module("rnn_tanh").state_dict().items()}
  params = jt.from_torch(state, "RNN")
  assert isinstance(params, jaxrnn.RNNParams) and params.w_x.shape == (I, H)


# ------------------------------------------------------------------ errors


def lstm_state():
  return dict(make_module("lstm").state_dict())


@pytest.mark.parametrize("edit, kind, match", [
    (lambda s: s.pop("bias_hh_l0"), "lstm", r"missing key 'bias_hh_l0'.*shape \(20,\)"),
    (lambda s: s.pop("weight_hh_l0"), "lstm", r"missing key 'weight_hh_l0'"),
    (lambda s: s.update(weight_ih_l0=torch.zeros(21, 3)), "lstm",
     r"\['weight_ih_l0'\] has shape \(21, 3\); expected \(20, 3\)"),
    (lambda s: s.update(bias_ih_l0=torch.zeros(21)), "lstm",
     r"\['bias_ih_l0'\] has shape \(21,\); expected \(20,\)"),
    (lambda s: s.update(extra=torch.zeros(1)), "lstm", r"unexpected key 'extra'"),
    (lambda s: s.update(weight_hr_l0=torch.zeros(2, 5)), "gru",
     r"expects \[3 \* hidden_size"),
    (lambda s: None, "gru", r"kind='gru' expects \[3 \* hidden_size"),
    (lambda s: None, "lstmp", r"kind='lstmp'; expected 'lstm', 'gru' or 'rnn'"),
    (lambda s: None, None, r"a state dict needs kind="),
    (lambda s: s.update(weight_hh_l0=np.array([["a"] * 5] * 20)), "lstm",
     r"\['weight_hh_l0'\] has dtype <U1; expected a numeric array"),
])
def test_from_torch_errors_name_the_key(edit, kind, match):
  state = lstm_state()
  edit(state)
  with pytest.raises((ValueError, TypeError), match=match):
    jt.from_torch(state, kind)


def test_from_torch_errors_for_projection_on_rnn_and_wrong_module():
  state = {"weight_ih_l0": np.zeros((H, I)), "weight_hh_l0": np.zeros((H, H)),
           "weight_hr_l0": np.zeros((2, H))}
  with pytest.raises(ValueError, match=r"'weight_hr_l0' is an LSTM projection"):
    jt.from_torch(state, "rnn")
  with pytest.raises(ValueError, match=r"kind='gru' but the module is a LSTM"):
    jt.from_torch(make_module("lstm"), "gru")
  with pytest.raises(TypeError, match=r"source is a list"):
    jt.from_torch([1, 2], "lstm")
  with pytest.raises(ValueError, match=r"expected a torch.nn.LSTM, nn.GRU or nn.RNN"):
    jt.layer(torch.nn.Linear(2, 2))


def ones_params(cell, input_size=I):
  """The cell's params, all ones, without running its initialisers."""
  shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
  return jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)


def test_to_torch_errors_for_params_torch_cannot_hold():
  lstm = ones_params(jaxrnn.lstm(H))
  cases = [
      (ones_params(jaxrnn.peephole_lstm(H)), {}, r"layer l0 has params.p_i set"),
      (ones_params(jaxrnn.lstm(H, full_gate_recurrence=True)), {}, r"params.w_gates set"),
      (ones_params(jaxrnn.cifg_lstm(H)), {}, r"3 gate blocks of hidden size 5; torch's LSTM has 4"),
      (ones_params(jaxrnn.gru(H, reset_after=False)), {}, r"reset_after=False"),
      (lstm, dict(bidirectional=True), r"with bidirectional=True expected"),
      (((lstm, lstm), (lstm,)), dict(bidirectional=True), r"expected a \(forward, backward\)"),
      ({"w": 1}, {}, r"params is a dict"),
      ((lstm, ones_params(jaxrnn.gru(H), H)), {}, r"mix cell kinds \['gru', 'lstm'\]"),
      (lstm, dict(bias=False), r"nonzero params.b but bias=False"),
  ]
  for params, kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      jt.to_torch(params, **kwargs)


def test_to_torch_tells_a_bidirectional_layer_from_two_layers_by_their_sizes():
  # Both are a tuple of two LSTMParams; read the wrong way, torch would hold
  # another network (and load it without a word when I == H).
  bi, two = (jt.layer("lstm", H, num_layers=n, bidirectional=b).init(jax.random.key(0), I)
             for n, b in ((1, True), (2, False)))
  assert I != H
  assert "weight_ih_l0_reverse" in jt.to_torch(bi) and "weight_ih_l1" not in jt.to_torch(bi)
  assert "weight_ih_l1" in jt.to_torch(two) and "weight_ih_l0_reverse" not in jt.to_torch(two)
  with pytest.raises(ValueError, match=r"layer l1 takes inputs of size 3 but layer l0 puts out 5"):
    jt.to_torch(bi, bidirectional=False)
  with pytest.raises(ValueError, match=r"two directions take inputs of sizes \[3, 5\]"):
    jt.to_torch(two, bidirectional=True)
  square = jt.layer("lstm", H, bidirectional=True).init(jax.random.key(0), H)
  with pytest.raises(ValueError, match="bidirectional=True or bidirectional=False"):
    jt.to_torch(square)
  assert "weight_ih_l0_reverse" in jt.to_torch(square, bidirectional=True)


def test_layer_errors_name_the_argument():
  for kwargs, match in [
      (dict(kind="gru", hidden_size=4, proj_size=2), r"proj_size=2 is an LSTM option"),
      (dict(kind="rnn", hidden_size=4, nonlinearity="gelu"), r"nonlinearity='gelu'"),
      (dict(kind="lstm", hidden_size=4, nonlinearity="relu"), r"is an nn.RNN option"),
      (dict(kind="lstm", hidden_size=0), r"hidden_size=0; expected a positive int"),
      (dict(kind="lstm", hidden_size=4, batch_first=False),
       r"batch_first=False; jaxrnn's layout is fixed.*Fix: .*time_major=True"),
  ]:
    with pytest.raises(ValueError, match=match):
      jt.layer(**kwargs)
  # torch's batch_first=True is jaxrnn's layout: accepted, the same layer
  assert jt.layer("gru", 4, batch_first=True).output_size == 4
  with pytest.raises(TypeError, match=r"got a state dict; a state dict holds the weights, "
                     r"not the settings. Fix: pass the module itself"):
    jt.layer(torch.nn.GRU(3, 4).state_dict(), "gru")
  with pytest.raises(ValueError, match=r"cell=True but params are tuple"):
    jt.to_torch(jt.from_torch(torch.nn.GRU(3, 4, num_layers=2)), cell=True)
  with pytest.raises(ValueError, match=r"cell=True but params.w_proj is set"):
    jt.to_torch(jt.from_torch(torch.nn.LSTM(3, 4, proj_size=2)), cell=True)
  # A torch cell's state dict is told about its own keys, not nn.LSTM's.
  with pytest.raises(ValueError, match=r"state_dict\['weight_hh'\] has shape \(12, 4\); "
                     r"expected .*\(read from weight_ih and weight_hh\)"):
    jt.from_torch(torch.nn.GRUCell(3, 4).state_dict(), "lstm")


def test_a_packed_sequence_is_told_the_padded_batch_it_stands_for():
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      torch.ones(2, T, I), torch.tensor([T, 2]), batch_first=True, enforce_sorted=False)
  net = jt.layer("gru", H)
  params = net.init(jax.random.key(0), I)
  for run in (lambda: jaxrnn.apply_batch(net, params, packed),
              lambda: jaxrnn.scan_batch(jaxrnn.gru(H), params, packed)):
    with pytest.raises(TypeError, match=r"xs is a torch PackedSequence; expected the padded "
                       r"batch \[B, T, I\] with its lengths. Fix: .*pad_packed_sequence"):
      run()


def test_carry_from_torch_names_the_shape_torch_takes():
  with pytest.raises(ValueError, match=r"h0 has shape \(2, 3, 5\); expected .* = \[4, B, H\]"):
    jt.carry_from_torch(np.zeros((2, 3, 5)), num_layers=2, bidirectional=True)
  with pytest.raises(ValueError, match=r"c0 has shape \(2, 4, 5\) and h0 \(2, 3, 5\)"):
    jt.carry_from_torch(np.zeros((2, 3, 5)), np.zeros((2, 4, 5)), num_layers=2)
  # A learned initial state is a Parameter that requires grad.
  h0 = torch.nn.Parameter(torch.arange(30.0).reshape(2, 3, 5))
  carry = jt.carry_from_torch(h0, torch.nn.Parameter(torch.ones(2, 3, 5)), num_layers=2)
  np.testing.assert_array_equal(carry[1].h, h0.detach().numpy()[1])


def test_layer_warns_that_one_layer_has_no_dropout_as_torch_does():
  with pytest.warns(UserWarning, match="dropout=0.3 acts between layers"):
    net = jt.layer("gru", H, dropout=0.3)
  # One layer, one direction: a Seq like the others, with apply (rnn(cell)).
  assert isinstance(net, jaxrnn.Seq)
  params = net.init(jax.random.key(0), I)
  assert isinstance(params, jaxrnn.GRUParams)
  key = jax.random.key(1)        # no dropout runs, with a key or without
  np.testing.assert_array_equal(net.apply(params, jnp.ones((T, I)), key=key)[1],
                                jaxrnn.scan(jaxrnn.gru(H), params, jnp.ones((T, I)))[1])


def torch_and_optax(recipe):
  """The same optimizer, torch's and optax's (a learning rate of 1e-2,
  gradients clipped to a global norm of 0.5)."""
  import optax
  if recipe == "sgd":          # momentum and weight decay in the gradient
    return (lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.1),
            optax.chain(optax.clip_by_global_norm(0.5), optax.add_decayed_weights(0.1),
                        optax.sgd(1e-2, momentum=0.9)))
  return (lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
          optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, weight_decay=0.1)))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("name, recipe", [("lstm_2x_bi_proj", "adamw"), ("gru", "sgd")])
def test_fine_tuning_with_torch_biases_follows_torchs_training(name, recipe):
  # Five clipped steps of torch's training and of jaxrnn's on the ported
  # params: with_torch_biases(opt) lands where torch does, opt alone does not.
  import optax
  module = make_module(name)
  xs = inputs()
  target = np.random.RandomState(4).randn(B, T, module.proj_size or H).astype(np.float32)
  target = np.concatenate([target] * (2 if module.bidirectional else 1), -1)
  net, start = jt.layer(module), jt.from_torch(module)
  torch_opt, opt = torch_and_optax(recipe)

  optimizer = torch_opt(module.parameters())
  for _ in range(5):
    optimizer.zero_grad()
    loss = ((module(torch.as_tensor(xs))[0] - torch.as_tensor(target)) ** 2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
    optimizer.step()
  want = jt.from_torch(module)      # weights as they are, the two biases summed

  grad = jax.jit(jax.grad(lambda p: ((jaxrnn.apply_batch(net, p, xs)[1] - target) ** 2).mean()))

  def train(opt):
    params, state = start, opt.init(start)
    for _ in range(5):
      updates, state = opt.update(grad(params), state, params)
      params = optax.apply_updates(params, updates)
    return params

  got = train(jt.with_torch_biases(opt))
  # Adam divides by each gradient's running RMS, which scales the float
  # rounding of small gradients up (3e-5 relative, compiled unoptimized)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=5e-5, atol=2e-6), got, want)
  plain = train(opt)
  merged = [p.b for p in jax.tree.leaves(plain, is_leaf=jt.is_cell)]
  wanted = [p.b for p in jax.tree.leaves(want, is_leaf=jt.is_cell)]
  assert max(float(np.abs(a - b).max()) for a, b in zip(merged, wanted)) > 3e-4


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_layer_init_draws_as_torch_initialises(kind):
  # Leaf by leaf, the same range and spread as a fresh torch module's
  # converted params: U(-k, k), k = 1/sqrt(H); merged biases the sum of two.
  H, I = 64, 32
  torch.manual_seed(0)
  cls = dict(lstm=torch.nn.LSTM, gru=torch.nn.GRU, rnn=torch.nn.RNN)[kind]
  extra = dict(proj_size=16) if kind == "lstm" else {}
  module = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, **extra)
  want = jt.from_torch(module)
  got = jt.layer(module).init(jax.random.key(0), I)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for path, a, b in zip(*zip(*jax.tree_util.tree_flatten_with_path(got)[0]), jax.tree.leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    bound = 1 / np.sqrt(H) * (2 if np.abs(b).max() > 1 / np.sqrt(H) else 1)
    assert np.abs(a).max() <= bound, path
    np.testing.assert_allclose(a.std(), b.std(), rtol=0.15, err_msg=str(path))
  # drawn apart: the bias from neither the weights' keys nor each other's
  for p in jax.tree.leaves(got, is_leaf=jt.is_cell):
    b = np.asarray(p.b)
    for row in (np.asarray(p.w_h)[0], np.asarray(p.w_x)[0]):
      assert abs(np.corrcoef(b, row)[0, 1]) < 4 / np.sqrt(b.size)   # 4 sigma; one key: 0.7
  cell = jt.layer(torch.nn.GRUCell(I, H)).init(jax.random.key(0), I)
  assert np.abs(np.asarray(cell.w_h)).max() <= 1 / np.sqrt(H)
  for other, says in [(jaxrnn.peephole_lstm(H), "have p_i"),
                      (jaxrnn.lstm(H, coupled_input_forget=True), "a missing gate"),
                      (jaxrnn.gru(H, reset_after=False), "Cho et al.'s")]:
    with pytest.raises(ValueError, match=says):
      jt.init_like_torch(jax.random.key(0), other.init(jax.random.key(1), I))


def test_a_carry_of_torch_tensors_is_read_as_xs_is():
  module = make_module("lstm")
  net, params = jt.layer(module), jt.from_torch(module)
  xs = torch.as_tensor(inputs())
  h0, c0 = initial_state(module)
  want = jaxrnn.apply_batch(net, params, xs.numpy(), carry=jt.carry_from_torch(h0, c0))
  learned = torch.tensor(c0[0], requires_grad=True)      # a learned initial state
  carry = jaxrnn.LSTMCarry(torch.as_tensor(h0[0]), learned)
  got = jaxrnn.apply_batch(net, params, xs, carry=carry)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
  got = jax.vmap(lambda x, c: jaxrnn.scan(jaxrnn.lstm(H), params, x, carry=c))(
      xs.numpy(), jt.carry_from_torch(h0, c0))
  one = jaxrnn.scan(jaxrnn.lstm(H), params, xs[0].numpy(),
                    carry=jaxrnn.LSTMCarry(torch.as_tensor(h0[0, 0]), learned[0]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[0], rtol=1e-6), one, got)
  # torch's own (h0, c0), [L * D, B, H], are told the conversion
  with pytest.raises(ValueError, match="convert with jaxrnn.interop.torch.carry_from_torch"):
    jaxrnn.apply_batch(net, params, xs, carry=(torch.as_tensor(h0), torch.as_tensor(c0)))
  gru = make_module("gru")
  ys = jaxrnn.apply_batch(jt.layer(gru), jt.from_torch(gru), xs, carry=torch.zeros(B, H))[1]
  np.testing.assert_allclose(ys, gru(xs)[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_carry_to_torch_refuses_a_carry_no_torch_module_has():
  stack = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.gru(H))
  carry, _ = jaxrnn.apply_batch(stack, stack.init(jax.random.key(0), I), inputs())
  with pytest.raises(ValueError, match=r"holds \['LSTMCarry', \[3, 5\]\]; expected the "
                                       r"carry of one torch module's layers"):
    jt.carry_to_torch(carry)


def test_with_torch_biases_fits_masks_labels_and_nnx_state():
  # b becomes a pair in place, so pytree masks and labels still fit, a b
  # masked out from outside is left alone, and NNX's dict-shaped cell
  # params are found.
  import optax
  from flax import nnx
  from jaxrnn.interop.flax import Recurrent
  params = jt.from_torch(make_module("gru"))
  grads = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)),
                       params)
  step = lambda opt, p=params, g=grads: opt.update(g, opt.init(p), p)[0]
  want = step(jt.with_torch_biases(optax.adamw(0.1, weight_decay=0.5,
                                               mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p))))
  decay_weights = jax.tree.map(lambda a: a.ndim > 1, params)           # a pytree mask
  got = step(jt.with_torch_biases(optax.adamw(0.1, weight_decay=0.5, mask=decay_weights)))
  jax.tree.map(np.testing.assert_array_equal, got, want)
  labels = params._replace(**{f: ("bias" if f.startswith("b") else "weight")
                              for f in params._fields})
  got = step(jt.with_torch_biases(optax.multi_transform(
      {"bias": optax.sgd(0.1), "weight": optax.sgd(0.01)}, labels)))
  np.testing.assert_allclose(got.w_h, -0.01 * grads.w_h, rtol=1e-6)
  doubled = grads.b + jnp.concatenate([grads.b[:2 * H], jnp.zeros(H)])   # r, z parts twice
  np.testing.assert_allclose(got.b, -0.1 * doubled, rtol=1e-6)
  np.testing.assert_allclose(got.b_hn, -0.1 * grads.b_hn, rtol=1e-6)
  # a label function reading key paths sees the twin as the b it stands for
  by_path = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if getattr(path[-1], "name", None) == "b" else "train", p)
  got = step(jt.with_torch_biases(optax.multi_transform(
      {"train": optax.sgd(0.1), "frozen": optax.set_to_zero()}, by_path)))
  assert not np.asarray(got.b).any() and np.asarray(got.w_x).any()
  frozen = params._replace(b=False, b_hn=False, w_x=True, w_h=True)
  got = step(optax.masked(jt.with_torch_biases(optax.sgd(0.1)), frozen))
  np.testing.assert_array_equal(got.b, grads.b)              # masked: passed through
  np.testing.assert_allclose(got.w_x, -0.1 * grads.w_x, rtol=1e-6)

  model = Recurrent(jaxrnn.gru(H), I, rngs=nnx.Rngs(0))
  model.set_params(params)
  optimizer = nnx.Optimizer(model, jt.with_torch_biases(optax.sgd(0.1)), wrt=nnx.Param)
  nnx_grads = nnx.grad(lambda m: m(inputs())[1].sum())(model)
  g = jax.grad(lambda p: jaxrnn.apply_batch(jaxrnn.gru(H), p, inputs())[1].sum())(params)
  optimizer.update(model, nnx_grads)
  b = model.params_tree().b
  np.testing.assert_allclose(b, params.b - 0.1 * (g.b + jnp.concatenate([g.b[:2 * H], jnp.zeros(H)])),
                             rtol=1e-5, atol=1e-6)
