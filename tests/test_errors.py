"""Misuse fails at trace time with a message that names the argument, what
was expected, what came, and the fix; eagerly and under `jax.jit` alike."""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

T, I, H = 5, 3, 4
CELL = jaxrnn.lstm(H)
PARAMS = CELL.init(jax.random.key(0), I)
XS = jnp.ones((T, I))


def assert_fails(error, fn, *args, says):
  """``fn(*args)`` raises ``error`` eagerly and while `jax.jit` traces it,
  and the message holds every string in ``says``."""
  for run in (fn, jax.jit(fn)):
    with pytest.raises(error) as info:
      run(*args)
    message = str(info.value)
    for part in says:
      assert part in message, f"{part!r} missing from: {message}"


def scan_with(*names):
  """``(xs, *values) -> scan(CELL, PARAMS, xs, name=value, ...)``."""
  return lambda xs, *values: jaxrnn.scan(CELL, PARAMS, xs, **dict(zip(names, values)))


def test_batched_xs_says_to_use_vmap():
  assert_fails(ValueError, scan_with(), jnp.ones((2, T, I)),
               says=["jaxrnn.scan", "xs has shape (2, 5, 3)", "[T, I]", "jax.vmap"])


def test_rank_one_xs_says_how_to_add_the_feature_axis():
  assert_fails(ValueError, scan_with(), jnp.ones(T),
               says=["xs has shape (5,)", "[T, I]", "Fix", "xs[:, None]"])
  # Token ids, as an nn.Embedding user passes them: one-hot or an embedding.
  assert_fails(ValueError, scan_with(), jnp.arange(T),
               says=["xs has shape (5,)", "token ids go in as vectors: jax.nn.one_hot(ids, V)"])


def leaky(hidden_size):
  """A custom cell whose project does not check the input size itself."""
  def init(key, input_size):
    return dict(w=jax.random.normal(key, (input_size, hidden_size)), b=jnp.zeros(hidden_size))
  return jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros_like(p["b"]),
                     step=lambda p, h, gx: (jnp.tanh(gx + h), jnp.tanh(gx + h)),
                     output_size=hidden_size, project=lambda p, xs: xs @ p["w"] + p["b"])


@pytest.mark.parametrize("cell", [jaxrnn.lstm(H), jaxrnn.gru(H), jaxrnn.simple_rnn(H), leaky(H)])
def test_wrong_input_size_names_the_expected_size(cell):
  params = cell.init(jax.random.key(0), I)
  assert_fails(ValueError, lambda xs: jaxrnn.scan(cell, params, xs), jnp.ones((T, 2)),
               says=["jaxrnn.scan", "xs has shape (5, 2)", "input size 3",
                     "[T, 3]", "Fix", "input_size=2"])
  assert_fails(ValueError, lambda xs: jaxrnn.scan_batch(cell, params, xs), jnp.ones((2, T, 2)),
               says=["jaxrnn.scan_batch", "(2, 5, 2)", "input size 3", "[B, T, 3]"])


@pytest.mark.parametrize("cell, made_by, says", [
    (jaxrnn.lstm(H), jaxrnn.peephole_lstm(H), [".p_f, .p_i, .p_o, which this cell's init does not make"]),
    (jaxrnn.peephole_lstm(H), jaxrnn.lstm(H), ["lack .p_f, .p_i, .p_o, which it makes"]),
    (jaxrnn.gru(H), jaxrnn.gru(H, reset_after=False), ["lack .b_hn"]),
    (jaxrnn.gru(H, reset_after=False), jaxrnn.gru(H), [".b_hn, which this cell's init does not make"]),
    (jaxrnn.lstm(H), jaxrnn.gru(H), ["params are GRUParams", "makes LSTMParams"]),
    (jaxrnn.lstm(H), jaxrnn.cifg_lstm(H), [f".w_x is [{I}, {3 * H}] where it makes [{I}, {4 * H}]"]),
    (jaxrnn.lstm(H), jaxrnn.lstm(2 * H), [f".w_h is [{2 * H}, {8 * H}] where it makes [{H}, {4 * H}]"]),
])
def test_params_of_another_variant_or_size(cell, made_by, says):
  # Read as they are, the first two would run a plain LSTM on a peephole
  # LSTM's params and the reverse, with no error.
  params = made_by.init(jax.random.key(0), I)
  for run in (jaxrnn.scan, jaxrnn.scan_batch):
    xs = XS if run is jaxrnn.scan else XS[None]
    assert_fails(ValueError, lambda xs: run(cell, params, xs), xs,
                 says=[f"jaxrnn.{run.__name__}", *says, "Fix", f"cell.init(key, {I})"])
  # A stream's first call, before any input says the input size.
  with pytest.raises(ValueError) as error:
    jaxrnn.rnn(cell).initial_carry(params)
  for part in ["jaxrnn.rnn(...).initial_carry", *says, "Fix", "cell.init(key, input_size)"]:
    assert part in str(error.value), (part, str(error.value))


def test_initial_carry_takes_params_of_any_input_size_and_refuses_a_decoder():
  for size in (1, I, 40):
    params = CELL.init(jax.random.key(0), size)
    for a, b in zip(jaxrnn.rnn(CELL).initial_carry(params), CELL.initial_carry(params),
                    strict=True):
      np.testing.assert_array_equal(a, b)
  # A weight over [h, x], Colah's form: its size is I + H, not I.
  concat = jaxrnn.Cell(
      init=lambda key, n: dict(w=jax.random.normal(key, (H + n, H)), b=jnp.zeros(H)),
      initial_carry=lambda p: jnp.zeros(H),
      step=lambda p, h, x: (jnp.tanh(jnp.concatenate([h, x]) @ p["w"] + p["b"]),) * 2,
      output_size=H)
  for layer in (jaxrnn.rnn(concat), jaxrnn.stack(concat, concat)):
    params = layer.init(jax.random.key(0), I)
    assert jax.tree.structure(layer.initial_carry(params)) == jax.tree.structure(
        layer.apply(params, XS)[0])
  dec = jaxrnn.attention_decoder(jaxrnn.gru(H), jaxrnn.attention("dot"), 4, H)
  with pytest.raises(ValueError, match=r"initial_carry: the cell is an attention decoder.*"
                                       r"Fix: carry = cell.decoder_carry\(params, memory, mask\)"):
    jaxrnn.rnn(dec).initial_carry(dec.init(jax.random.key(0), I))


def test_params_in_another_container_with_the_same_leaves_are_fine():
  cell = leaky(H)
  init = cell.init
  cell = cell._replace(init=lambda key, n: tuple(init(key, n).values()),
                       initial_carry=lambda p: jnp.zeros_like(p[1]),
                       project=lambda p, xs: xs @ p[0] + p[1])
  params = cell.init(jax.random.key(0), I)
  want = jaxrnn.scan(cell, params, XS)[1]
  np.testing.assert_array_equal(jaxrnn.scan(cell, list(params), XS)[1], want)


def test_wrong_input_size_in_a_layer_step():
  layer = jaxrnn.rnn(CELL)
  carry = layer.initial_carry(PARAMS)
  assert_fails(ValueError, lambda x: layer.step(PARAMS, carry, x), jnp.ones(2),
               says=["jaxrnn.rnn(...).step", "x has shape (2,)", "input size 3",
                     "x must be [3]", "Fix"])


@pytest.mark.parametrize("reset_after", [True, False])
def test_a_gru_step_given_the_raw_input_is_told_to_project_it(reset_after):
  # Cho's GRU split a raw [3] into three gates of 1 and broadcast them silently.
  cell = jaxrnn.gru(4, reset_after=reset_after)
  params = cell.init(jax.random.key(0), 3)
  with pytest.raises(ValueError, match=r"jaxrnn.gru: the step's gx is float32\[3\]; expected "
                     r"the projected input \[12\].*cell.project\(params, x_t\[None\]\)\[0\]"):
    cell.step(params, cell.initial_carry(params), jnp.ones(3))


def test_a_layer_step_refuses_a_batch_and_a_carry_that_would_broadcast():
  layer = jaxrnn.rnn(CELL)
  carry = layer.initial_carry(PARAMS)
  assert_fails(ValueError, lambda x: layer.step(PARAMS, carry, x), jnp.ones((2, I)),
               says=["jaxrnn.rnn(...).step", "x has shape (2, 3)", "one step's input [I]",
                     "jax.vmap(layer.step"])
  for bad in (carry._replace(c=jnp.zeros(1)),                       # [1] broadcasts to [H]
              jax.tree.map(lambda a: jnp.stack([a, a]), carry)):      # a batch of carries
    assert_fails(ValueError, lambda x, c: layer.step(PARAMS, c, x), XS[0], bad,
                 says=["jaxrnn.rnn(...).step", "carry is LSTMCarry", "c='float32[4]'"])


def test_mask_of_wrong_length():
  assert_fails(ValueError, scan_with("mask"), XS, jnp.ones(T - 1, bool),
               says=["mask has shape (4,)", "expected (5,)", "Fix",
                     "jnp.arange(5) < length"])


def test_batched_mask_says_to_use_vmap():
  assert_fails(ValueError, scan_with("mask"), XS, jnp.ones((2, T), bool),
               says=["mask has shape (2, 5)", "jax.vmap"])


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float32])
def test_mask_of_int_or_float_dtype(dtype):
  assert_fails(ValueError, scan_with("mask"), XS, jnp.ones(T, dtype),
               says=["mask has dtype", jnp.dtype(dtype).name, "expected bool",
                     "mask.astype(bool)"])


def test_resets_of_wrong_length():
  assert_fails(ValueError, scan_with("resets"), XS, jnp.zeros(T + 1, bool),
               says=["resets has shape (6,)", "expected (5,)", "Fix", "resets="])


def test_resets_of_wrong_dtype():
  assert_fails(ValueError, scan_with("resets"), XS, jnp.zeros(T, jnp.int32),
               says=["resets has dtype int32", "expected bool", "resets.astype(bool)"])


def test_carry_of_wrong_structure():
  assert_fails(ValueError, scan_with("carry"), XS, jnp.zeros(H),
               says=["carry is float32[4]", "LSTMCarry", "cell.initial_carry(params)",
                     "Fix"])
  # Flax's LSTM carry, a plain pair (c, h), one sequence or a batch
  flax_says = "Flax's LSTM carry (c, h) goes in as jaxrnn.LSTMCarry(h=h, c=c)"
  assert_fails(ValueError, scan_with("carry"), XS, (jnp.zeros(H), jnp.zeros(H)),
               says=[flax_says])
  assert_fails(ValueError, lambda xs, c: jaxrnn.scan_batch(CELL, PARAMS, xs, carry=c),
               XS[None], (jnp.zeros((1, H)), jnp.zeros((1, H))), says=[flax_says])


def test_carry_of_wrong_shape_names_both_shapes():
  batched = jaxrnn.LSTMCarry(h=jnp.zeros((2, H)), c=jnp.zeros((2, H)))
  assert_fails(ValueError, scan_with("carry"), XS, batched,
               says=["float32[2, 4]", "expected LSTMCarry(h='float32[4]'", "jax.vmap",
                     "Fix"])


def test_carry_of_wrong_dtype_names_both_dtypes():
  low = jaxrnn.LSTMCarry(h=jnp.zeros(H, jnp.bfloat16), c=jnp.zeros(H))
  assert_fails(ValueError, scan_with("carry"), XS, low,
               says=["bfloat16[4]", "expected LSTMCarry(h='float32[4]'", "Fix"])


def plain_cell(step):
  """A custom cell without a fused kernel, taking raw inputs."""
  return jaxrnn.Cell(init=lambda key, n: dict(w=jnp.ones((n, H)) / n),
                     initial_carry=lambda p: jnp.zeros(H), step=step, output_size=H)


@pytest.mark.parametrize("step,got", [
    (lambda p, h, x: ((h, h), h), "('float32[4]', 'float32[4]')"),
    (lambda p, h, x: (h.astype(jnp.bfloat16), h), "bfloat16[4]"),
    (lambda p, h, x: (jnp.zeros((2, H)), h), "float32[2, 4]"),
])
def test_a_step_that_changes_the_carry_is_a_type_error(step, got):
  cell = plain_cell(step)
  params = cell.init(None, I)
  assert_fails(TypeError, lambda xs: jaxrnn.scan(cell, params, xs), XS,
               says=["cell.step returned a carry", got, "given float32[4]",
                     "same structure, shapes and dtypes", "Fix"])


@pytest.mark.parametrize("step,got", [
    (lambda p, h, x: jnp.tanh(x @ p["w"] + h), "returned float32[4]"),
    (lambda p, h, x: (h, h, h), "returned ('float32[4]', 'float32[4]', 'float32[4]')"),
])
def test_a_step_that_does_not_return_a_pair_says_so(step, got):
  cell = plain_cell(step)
  params = cell.init(None, I)
  assert_fails(TypeError, lambda xs: jaxrnn.scan(cell, params, xs), XS,
               says=["jaxrnn.scan", "cell.step", got, "pair (new_carry, y_t)",
                     "Fix", "return new_carry, y"])


def test_a_step_may_return_its_pair_as_a_named_tuple():
  class Out(NamedTuple):
    carry: jax.Array
    y: jax.Array
  cell = plain_cell(lambda p, h, x: Out(h + x @ p["w"], 2 * h))
  assert jaxrnn.scan(cell, cell.init(None, I), XS)[1].shape == (T, H)


def test_a_step_returning_y_first_is_told_the_order():
  cell = jaxrnn.Cell(
      init=lambda key, n: dict(w=jnp.ones((n, H)) / n),
      initial_carry=lambda p: dict(h=jnp.zeros(H), n=jnp.zeros((), jnp.int32)),
      step=lambda p, c, x: (c["h"], dict(h=c["h"] + x @ p["w"], n=c["n"] + 1)),
      output_size=H)
  assert_fails(TypeError, lambda xs: jaxrnn.scan(cell, cell.init(None, I), xs), XS,
               says=["returned a carry float32[4]", "(new_carry, y_t), in that order",
                     "the other way round"])


def test_a_step_whose_output_is_not_output_size_is_refused():
  # A typo in output_size once surfaced in the next layer, blaming its inputs.
  cell = plain_cell(lambda p, h, x: (h + x @ p["w"], (h + x @ p["w"])[:2]))
  params = cell.init(None, I)
  says = ["y_t of shape (2,)", "output_size=4", "Fix", "output_size=2"]
  assert_fails(ValueError, lambda xs: jaxrnn.scan(cell, params, xs), XS,
               says=["jaxrnn.scan"] + says)
  assert_fails(ValueError, lambda xs: jaxrnn.scan_batch(cell, params, xs), XS[None],
               says=["jaxrnn.scan_batch"] + says)
  net = jaxrnn.stack(cell, jaxrnn.gru(H))
  assert_fails(ValueError, lambda xs: net.apply(net.init(jax.random.key(0), I), xs), XS,
               says=["layer 0 of the stack"] + says)


def elman_parts(**overrides):
  """fused_cell arguments of an Elman RNN, some replaced."""
  parts = dict(init=lambda key, n: dict(w_x=jnp.ones((n, H)), w_h=jnp.eye(H)),
               initial_carry=lambda p: jnp.zeros(H),
               project=lambda p, xs: xs @ p["w_x"], recurrent_input=lambda h: h,
               finish=lambda p, h, gx, u: (jnp.tanh(gx + u),) * 2,
               output_size=H, additive=True)
  return dict(parts, **overrides)


@pytest.mark.parametrize("overrides,says", [
    (dict(init=lambda key, n: dict(w_x=jnp.ones((n, H)), u=jnp.eye(H))),
     ["params have no 'w_h'", "they have ['w_x', 'u']", "weight='"]),
    (dict(recurrent_input=lambda h: (h, h)),
     ["recurrent_input(carry) returned", "'w_h' of shape [4, 4]", "a_t [R]"]),
    (dict(project=lambda p, xs: xs @ p["w_x"][:, :2]),
     ["additive=True", "gx is float32[2]", "is [4]", "additive=False"]),
])
def test_fused_cell_parts_that_do_not_fit_are_named(overrides, says):
  cell = jaxrnn.fused_cell(**elman_parts(**overrides))
  params = cell.init(jax.random.key(0), I)
  for run in (lambda xs: jaxrnn.scan(cell, params, xs),
              lambda xs: jaxrnn.scan(jaxrnn.unfused(cell), params, xs),
              lambda xs: jaxrnn.scan_batch(cell, params, xs[None])):
    assert_fails(ValueError, run, XS, says=["jaxrnn.fused_cell"] + says)


def test_fused_cell_checks_its_switches():
  with pytest.raises(ValueError, match="additive='yes'; expected True or False"):
    jaxrnn.fused_cell(**elman_parts(additive="yes"))
  with pytest.raises(ValueError, match="read_ahead=1; expected True or False"):
    jaxrnn.fused_cell(**elman_parts(read_ahead=1))
  with pytest.raises(TypeError, match="output_size must be a positive int"):
    jaxrnn.fused_cell(**elman_parts(output_size="4"))


def test_a_cell_declared_additive_that_is_not_is_refused_on_every_kernel():
  # finish scales u by 0.5: gx + u is not what it reads, so the batched
  # kernel (finish(p, c, gx + u, 0)) and the fused gradients would be wrong.
  parts = elman_parts(additive=True)
  parts["finish"] = lambda p, h, gx, u: (jnp.tanh(gx + 0.5 * u),) * 2
  cell = jaxrnn.fused_cell(**parts)
  params = cell.init(jax.random.key(0), 3)
  for run in (lambda: jaxrnn.scan(cell, params, jnp.ones((5, 3))),
              lambda: jax.jit(lambda p: jaxrnn.scan_batch(cell, p, jnp.ones((2, 5, 3))))(params)):
    with pytest.raises(ValueError, match=r"additive=True says finish reads gx and u only "
                       r"through gx \+ u, but on random values .*Fix: additive=False"):
      run()
  jaxrnn.scan(jaxrnn.fused_cell(**elman_parts(additive=True)), params, jnp.ones((5, 3)))


def test_stack_params_of_wrong_length():
  net = jaxrnn.stack(jaxrnn.gru(H), jaxrnn.gru(H))
  params = net.init(jax.random.key(0), I)
  assert_fails(ValueError, lambda p, xs: net.apply(p, xs), params[:1], XS,
               says=["jaxrnn.stack", "tuple of 2 layer params", "length 1", "Fix"])
  with pytest.raises(ValueError, match="got list"):
    net.apply(list(params), XS)


def test_stack_carry_of_wrong_length_in_apply_and_step():
  net = jaxrnn.stack(jaxrnn.gru(H), jaxrnn.gru(H))
  params = net.init(jax.random.key(0), I)
  carry = net.initial_carry(params)[:1]
  says = ["jaxrnn.stack", "tuple of 2 layer carries", "length 1", "Fix"]
  assert_fails(ValueError, lambda xs: net.apply(params, xs, carry=carry), XS, says=says)
  assert_fails(ValueError, lambda x: net.step(params, carry, x), XS[0], says=says)


def test_stack_residual_size_mismatch_fails_at_init():
  net = jaxrnn.stack(jaxrnn.lstm(H), jaxrnn.lstm(H + 1), residual=True)
  assert_fails(ValueError, lambda key: net.init(key, I), jax.random.key(0),
               says=["residual=True", "layer 1 takes size 4 and returns 5", "Fix"])


def test_stack_rejects_no_layers_and_bad_dropout():
  with pytest.raises(ValueError, match="at least one layer"):
    jaxrnn.stack()
  with pytest.raises(ValueError, match="dropout=1.0"):
    jaxrnn.stack(CELL, CELL, dropout=1.0)
  with pytest.warns(UserWarning, match=r"dropout=0.3 acts between layers, and one layer has "
                    r"none: nothing is dropped. Fix: jaxrnn.rnn\(cell, dropout=...\)"):
    jaxrnn.stack(CELL, dropout=0.3)


def test_bidirectional_bad_merge():
  with pytest.raises(ValueError) as info:
    jaxrnn.bidirectional(CELL, CELL, merge="mean")
  for part in ["merge='mean'", "'concat'", "'sum'", "'ave'", "'mul'", "Fix"]:
    assert part in str(info.value)
  with pytest.raises(TypeError, match="merge is a int"):
    jaxrnn.bidirectional(CELL, CELL, merge=3)
  with pytest.raises(TypeError, match=r"merge is keyword-only. Fix: jaxrnn.bidirectional\(layer, "
                     r"merge='sum'\)"):
    jaxrnn.bidirectional(CELL, "sum")
  with pytest.raises(ValueError, match=r"already runs from the sequence's end"):
    jaxrnn.bidirectional(jaxrnn.rnn(CELL, reverse=True))
  for merge in ("sum", "ave", "mul"):
    with pytest.raises(ValueError, match="forward layer puts out 4 features and the backward one 5"):
      jaxrnn.bidirectional(CELL, jaxrnn.lstm(5), merge=merge)


def test_bidirectional_params_and_carry_must_be_pairs():
  net = jaxrnn.bidirectional(CELL, CELL)
  params = net.init(jax.random.key(0), I)
  assert_fails(ValueError, lambda p, xs: net.apply(p, xs), PARAMS, XS,
               says=["jaxrnn.bidirectional: params is LSTMParams of 8",
                     "expected a pair (forward, backward)", "Fix", "from_torch"])
  h0 = jnp.zeros((2, 2, H))       # PyTorch's layout, [directions, B, H]
  assert_fails(ValueError, lambda xs: jaxrnn.apply_batch(net, params, xs, carry=h0),
               jnp.ones((2, T, I)), says=["jaxrnn.bidirectional: carry is float32[2, 2, 4]",
                                          "expected a pair", "carry_from_torch"])
  # PyTorch's (h0, c0) is a pair too: the direction's own check names the call.
  assert_fails(ValueError, lambda xs: jaxrnn.apply_batch(net, params, xs, carry=(h0, h0)),
               jnp.ones((2, T, I)), says=["jaxrnn.apply_batch (in the bidirectional layer's "
                                          "forward direction): carry is float32[2, 2, 4]",
                                          "previous apply_batch returned", "carry_from_torch"])


def test_messages_say_which_layer_and_direction_of_a_composite_layer_failed():
  net = jaxrnn.stack(CELL, jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H)))
  params = net.init(jax.random.key(0), I)
  carry = net.initial_carry(params)
  bad = (carry[0], (carry[1][0], jnp.zeros(H + 1)))     # the backward GRU's h
  where = ("(in layer 1 of the stack, counted from 0, the bidirectional layer's "
           "backward direction)")
  assert_fails(ValueError, lambda xs: net.apply(params, xs, carry=bad), XS,
               says=["jaxrnn.scan " + where, "carry is float32[5]"])
  batch = jax.tree.map(lambda a: jnp.stack([a, a]), bad)
  assert_fails(ValueError, lambda xs: jaxrnn.apply_batch(net, params, xs, carry=batch),
               jnp.stack([XS, XS]), says=["jaxrnn.apply_batch " + where,
                                          "carry is float32[2, 5]"])
  # Outside a composite layer, nothing is added.
  assert_fails(ValueError, lambda xs: jaxrnn.scan(CELL, PARAMS, xs), jnp.ones((T, 2)),
               says=["jaxrnn.scan: xs has shape (5, 2)"])


def test_keys_that_are_not_one_prng_key_are_refused_by_the_layers():
  layer = jaxrnn.rnn(CELL, dropout=0.5)
  net = jaxrnn.stack(layer, layer)
  for run, where in ((lambda k: layer.apply(PARAMS, XS, key=k), "jaxrnn.rnn(...).apply"),
                     (lambda k: net.apply(net.init(jax.random.key(0), I), XS, key=k),
                      "jaxrnn.stack(...).apply"),
                     (lambda k: jaxrnn.apply_batch(layer, PARAMS, XS[None], key=k),
                      "jaxrnn.apply_batch")):
    for bad, got in ((0, "key is int"),
                     (jax.random.split(jax.random.key(0), 2), "key is key<fry>[2]")):
      with pytest.raises(ValueError, match=rf"{re.escape(where)}: {re.escape(got)}; "
                         r"expected one PRNG key.*Fix"):
        run(bad)


def test_a_hand_written_apply_batch_without_keys_is_told_the_protocol():
  layer = jaxrnn.rnn(CELL, dropout=0.5)
  old = layer._replace(apply_batch=lambda p, xs, *, carry=None, mask=None, resets=None,
                       key=None: None)          # the protocol before keys=
  with pytest.raises(TypeError, match=r"apply_batch takes no keys=.*Fix: take keys=None"):
    jaxrnn.apply_batch(old, PARAMS, XS[None], key=jax.random.key(0))
  with jax.default_prng_impl("rbg"):                  # its raw keys are uint32[4]
    jaxrnn.apply_batch(layer, PARAMS, XS[None], key=jax.random.PRNGKey(0))


def test_a_layer_given_for_a_cell_or_a_batch_given_to_apply_is_told_what_runs_it():
  layer = jaxrnn.rnn(CELL)
  for run in (jaxrnn.scan, jaxrnn.scan_batch):
    with pytest.raises(TypeError, match=rf"jaxrnn.{run.__name__}: got a layer \(Seq.*Fix: "
                       r"layer.apply\(params, xs\) runs one sequence, jaxrnn.apply_batch"):
      run(layer, PARAMS, XS)
  with pytest.raises(TypeError, match=r"got a str for the cell; expected a jaxrnn.Cell"):
    jaxrnn.scan("lstm", PARAMS, XS)
  net = jaxrnn.stack(layer, layer)
  for name, seq, params in (("rnn", layer, PARAMS), ("stack", net, (PARAMS, PARAMS)),
                            ("bidirectional", jaxrnn.bidirectional(CELL), (PARAMS, PARAMS))):
    assert_fails(ValueError, lambda xs: seq.apply(params, xs), jnp.ones((2, T, I)),
                 says=[f"jaxrnn.{name}(...).apply: xs has shape (2, 5, 3); apply takes "
                       f"one sequence [T, I]", "Fix: jaxrnn.apply_batch(layer, params, xs)"])


def test_params_restored_without_a_template_are_told_to_restore_into_one():
  from flax import serialization as flax_serialization   # flax is in the [test] extra
  restored = flax_serialization.msgpack_restore(flax_serialization.to_bytes(PARAMS))
  assert isinstance(restored, dict)          # LSTMParams' fields as a dict's keys
  assert_fails(ValueError, lambda p: jaxrnn.scan(CELL, p, XS), restored,
               says=["the arrays this cell's init makes but in dicts, where it makes "
                     "LSTMParams (.b, .w_h, .w_x)", "Fix: Params restored without a template",
                     "flax.serialization.from_bytes(template, data)"])
  net = jaxrnn.stack(jaxrnn.rnn(CELL), jaxrnn.rnn(CELL))
  for seq in (net, jaxrnn.bidirectional(CELL)):
    params = flax_serialization.msgpack_restore(flax_serialization.to_bytes((PARAMS, PARAMS)))
    with pytest.raises(ValueError, match="restored without a template"):
      seq.apply(params, XS)


def test_reversed_layer_has_no_step():
  layer = jaxrnn.rnn(CELL, reverse=True)
  with pytest.raises(ValueError, match="reverse=True.*Fix: use apply"):
    layer.step(PARAMS, layer.initial_carry(PARAMS), XS[0])


@pytest.mark.parametrize("switches", [dict(input_gate=False), dict(forget_gate=False)])
def test_lstm_invalid_switch_combination(switches):
  with pytest.raises(ValueError) as info:
    jaxrnn.lstm(H, coupled_input_forget=True, **switches)
  for part in ["jaxrnn.lstm", "coupled_input_forget=True", "input_gate=True",
               "forget_gate=True", "Fix"]:
    assert part in str(info.value)
  with pytest.raises(ValueError, match="proj_size"):
    jaxrnn.lstm(H, proj_size=0)


def test_forget_bias_without_a_forget_gate_is_refused():
  with pytest.raises(ValueError, match="forget_bias=2.0.*forget_gate=False.*Fix"):
    jaxrnn.lstm(H, forget_gate=False, forget_bias=2.0)


def test_activations_by_name_are_jax_nn_functions_and_typos_are_refused():
  # Keras' activation="relu" and torch's nonlinearity="relu" spell it as a name.
  params = jaxrnn.simple_rnn(H).init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I))
  by_name = jaxrnn.scan(jaxrnn.simple_rnn(H, "relu"), params, xs)
  by_function = jaxrnn.scan(jaxrnn.simple_rnn(H, jax.nn.relu), params, xs)
  np.testing.assert_array_equal(by_name[1], by_function[1])
  assert float(jnp.min(by_name[1])) == 0.0            # relu, not the default tanh
  with pytest.raises(ValueError, match="='rleu'; expected a function, or one of tanh, relu"):
    jaxrnn.simple_rnn(H, "rleu")
  with pytest.raises(TypeError, match="output_activation=3; expected a function, None, or"):
    jaxrnn.lstm(H, output_activation=3)
  sigmoid_g = jaxrnn.lstm(H, input_activation="sigmoid")
  assert sigmoid_g.init(jax.random.key(0), I).w_x.shape == (I, 4 * H)


@pytest.mark.parametrize("make", [jaxrnn.lstm, jaxrnn.gru, jaxrnn.simple_rnn])
@pytest.mark.parametrize("size, error", [(0, ValueError), (-1, ValueError), (8.5, TypeError),
                                         ("8", TypeError), (True, TypeError)])
def test_constructors_take_a_positive_int_size(make, size, error):
  with pytest.raises(error, match=f"hidden_size must be a positive int; got {size!r}.*Fix"):
    make(size)


def test_complex_xs_are_refused_and_int_or_bool_xs_cast():
  for run, xs in ((jaxrnn.scan, XS), (jaxrnn.scan_batch, XS[None])):
    assert_fails(TypeError, lambda x: run(CELL, PARAMS, x), xs.astype(jnp.complex64),
                 says=["xs has dtype complex64", "imaginary part", "Fix"])
    one_hot = xs > 0.5
    np.testing.assert_array_equal(run(CELL, PARAMS, one_hot)[1],
                                  run(CELL, PARAMS, one_hot.astype(jnp.float32))[1])


def test_xs_as_a_nested_list_is_an_array():
  want = jaxrnn.scan(CELL, PARAMS, XS)[1]
  np.testing.assert_array_equal(jaxrnn.scan(CELL, PARAMS, XS.tolist())[1], want)
  np.testing.assert_array_equal(jaxrnn.scan_batch(CELL, PARAMS, [XS.tolist()])[1],
                                jaxrnn.scan_batch(CELL, PARAMS, XS[None])[1])


@pytest.mark.parametrize("run", [
    lambda xs, **kw: jaxrnn.scan(CELL, PARAMS, xs, **kw),
    lambda xs, **kw: jaxrnn.scan_batch(CELL, PARAMS, xs[None], **kw),
], ids=["scan", "scan_batch"])
def test_loop_options_must_be_python_values(run):
  with pytest.raises(TypeError, match="reverse is 'yes'; expected True or False"):
    run(XS, reverse="yes")
  with pytest.raises(TypeError, match="unroll is -1; expected an int >= 0 or a bool"):
    run(XS, unroll=-1)
  with pytest.raises(TypeError, match="reverse is a traced value.*static_argnames"):
    jax.jit(lambda xs, r: run(xs, reverse=r))(XS, True)
  assert run(XS, reverse=np.True_, unroll=np.int64(2))[1].shape[-2:] == (T, H)
  # a NumPy True unrolls fully, as Python's does (lax.scan reads only a bool so)
  jaxpr = str(jax.make_jaxpr(lambda xs: run(xs, unroll=np.True_))(XS))
  assert f"unroll={T}" in jaxpr or "unroll=True" in jaxpr


def test_shard_map_checking_varying_types_is_told_the_fix():
  # check_vma=True refused jaxrnn's loops deep inside JAX; a one-device mesh
  # tracks varying types as any other.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  P = jax.sharding.PartitionSpec
  runs = {"scan": lambda x: jax.vmap(lambda s: jaxrnn.scan(CELL, PARAMS, s)[1])(x),
          "scan_batch": lambda x: jaxrnn.scan_batch(CELL, PARAMS, x)[1]}
  for name, run in runs.items():
    checked = jax.shard_map(run, mesh=mesh, in_specs=P("data"), out_specs=P("data"))
    with pytest.raises(ValueError, match=rf"jaxrnn.{name}: xs varies over the shard_map "
                                         r"axes \('data',\).*check_vma=False"):
      jax.jit(checked)(XS[None])
    unchecked = jax.shard_map(run, mesh=mesh, in_specs=P("data"), out_specs=P("data"),
                              check_vma=False)
    np.testing.assert_allclose(jax.jit(unchecked)(XS[None]), run(XS[None]), atol=1e-6)

  def given_varying_carry(x):     # a loop that starts varying runs, checked
    carry = jax.tree.map(lambda a: jax.lax.pcast(a, ("data",), to="varying"),
                         CELL.initial_carry(PARAMS))
    return jax.vmap(lambda s: jaxrnn.scan(CELL, PARAMS, s, carry=carry)[1])(x)
  checked = jax.shard_map(given_varying_carry, mesh=mesh, in_specs=P("data"),
                          out_specs=P("data"))
  np.testing.assert_allclose(jax.jit(checked)(XS[None]), runs["scan"](XS[None]), atol=1e-6)


def test_a_constructor_not_called_or_a_flax_cell_is_named_where_a_layer_goes():
  flax_nn = pytest.importorskip("flax.linen")
  from jaxrnn.interop.flax import LinenRecurrent
  uncalled = "got the function jaxrnn.lstm itself"
  cases = [
      (lambda: jaxrnn.apply_batch(jaxrnn.lstm, PARAMS, jnp.ones((2, T, I))), uncalled),
      (lambda: jaxrnn.scan(jaxrnn.lstm, PARAMS, XS), uncalled),
      (lambda: jaxrnn.rnn(jaxrnn.lstm), uncalled),
      (lambda: jaxrnn.bidirectional(CELL, jaxrnn.lstm), uncalled),
      (lambda: jaxrnn.stack(CELL, flax_nn.GRUCell(H)), "got a Flax GRUCell"),
      (lambda: LinenRecurrent(flax_nn.LSTMCell(H)), "got a Flax LSTMCell"),
      (lambda: jaxrnn.stack(CELL, "lstm"), "got a str"),
  ]
  for run, says in cases:
    with pytest.raises(TypeError, match=re.escape(says)) as info:
      run()
    assert "Fix: " in str(info.value)
  with pytest.raises(TypeError, match=r"from_linen or from_nnx"):
    LinenRecurrent(flax_nn.LSTMCell(H))
  with pytest.raises(TypeError, match=r"call it to build the cell or layer, e.g. jaxrnn.lstm\(H\)"):
    jaxrnn.rnn(jaxrnn.lstm)
  from jaxrnn.interop import torch as jt      # not jaxrnn.layer: its own module's name
  with pytest.raises(TypeError, match=r"got the function jaxrnn.interop.torch.layer itself"):
    jaxrnn.apply_batch(jt.layer, PARAMS, jnp.ones((2, T, I)))


def test_a_merge_returning_the_two_directions_apart_is_told_how():
  # Keras' merge_mode=None: split the concatenation instead.
  with pytest.raises(TypeError, match=re.escape(
      "merge returned a tuple; expected one array ys [T, O] from (fw [T, 4], bw [T, 6])")) as info:
    jaxrnn.bidirectional(jaxrnn.lstm(4), jaxrnn.gru(6), merge=lambda fw, bw: (fw, bw))
  assert "ys[..., :4], ys[..., 4:]" in str(info.value)


def test_token_ids_of_the_wrong_size_are_told_to_be_embedded():
  ids = jnp.ones((T, 7), jnp.int32)          # [B, T] ids, read as one sequence
  says = ["initialised for input size 3", "xs holds integers: token ids",
          "jax.nn.one_hot(ids, V)"]
  assert_fails(ValueError, lambda x: jaxrnn.scan(CELL, PARAMS, x), ids, says=says)
  assert_fails(ValueError, lambda x: jaxrnn.scan_batch(CELL, PARAMS, x), ids[None], says=says)
  with pytest.raises(ValueError) as info:       # floats of the wrong size: no such hint
    jaxrnn.scan(CELL, PARAMS, jnp.ones((T, 7)))
  assert "token ids" not in str(info.value)
  # ids [B, T] to the batched API: named by the function called, with the embedding fix
  assert_fails(ValueError, lambda x: jaxrnn.apply_batch(CELL, PARAMS, x), ids,
               says=["jaxrnn.apply_batch: xs has shape", "token ids [B, T] go in as vectors"])


def test_flax_modules_of_ones_own_and_the_wrappers_are_named_where_a_layer_goes():
  flax_nn = pytest.importorskip("flax.linen")
  from jaxrnn.interop.flax import LinenRecurrent

  class Mine(flax_nn.Module):          # has .apply, but is no jaxrnn layer
    @flax_nn.compact
    def __call__(self, x):
      return x
  with pytest.raises(TypeError, match="got a Flax Mine; expected a jaxrnn Cell or Seq"):
    jaxrnn.stack(CELL, Mine())
  with pytest.raises(TypeError, match=r"Flax LinenRecurrent \(jaxrnn's wrapper\).*pass the "
                                      r"jaxrnn layer it wraps"):
    jaxrnn.apply_batch(LinenRecurrent(CELL), PARAMS, jnp.ones((2, T, I)))
