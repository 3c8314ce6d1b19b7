"""`jaxrnn.scan`: masking, reversal, resets, a given carry, unroll, no recompile.

Each behaviour is checked against what it promises in plain terms: a masked
run ends with the carry of the truncated run, a reversed run over a padded
sequence equals the flipped valid part, a reset run equals running every
episode on its own. `test_scan_equals_its_docstring_loop` holds `scan` to the
Python loop in its docstring, for the fused kernel and the plain step alike.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxprs import equations

T, I, H = 7, 3, 4


def random_params(cell, input_size, seed):
  """Params of ``cell.init``'s shapes, every leaf random (biases and peepholes
  too); drawn with NumPy, which spares compiling the initialisers."""
  shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


CELL = jaxrnn.lstm(H, peephole=True)
PARAMS = random_params(CELL, I, seed=0)
XS = jax.random.normal(jax.random.key(2), (T, I))


def scan(cell=CELL, **static):
  """A jitted ``scan(cell, params, xs, carry=, mask=, resets=)`` with ``static`` options."""
  return jax.jit(lambda p, xs, carry=None, mask=None, resets=None: jaxrnn.scan(
      cell, p, xs, carry=carry, mask=mask, resets=resets, **static))


RUN = scan()
RUN_REVERSE = scan(reverse=True)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def docstring_loop(cell, params, xs, carry=None, mask=None, resets=None,
                   reverse=False):
  """`jaxrnn.scan`'s semantics, written as the Python loop of its docstring."""
  gxs = cell.project(params, xs) if cell.project else xs
  init = cell.initial_carry(params)
  carry = init if carry is None else carry
  ys = [jnp.zeros(cell.output_size)] * xs.shape[0]
  for t in (reversed(range(xs.shape[0])) if reverse else range(xs.shape[0])):
    if mask is not None and not mask[t]:
      continue
    if resets is not None and resets[t]:
      carry = init
    carry, ys[t] = cell.step(params, carry, gxs[t])
  return carry, jnp.stack(ys)


def test_final_carry_is_the_last_valid_one_under_a_mask():
  for length in (1, 4, T):
    carry, ys = RUN(PARAMS, XS, mask=jnp.arange(T) < length)
    want_carry, want_ys = scan()(PARAMS, XS[:length])
    assert_trees_close(carry, want_carry)
    assert_trees_close(ys[:length], want_ys)


def test_masked_outputs_are_exactly_zero_and_the_carry_is_frozen():
  holes = jnp.array([True, False, True, True, False, False, True])
  carry, ys = RUN(PARAMS, XS, mask=holes)
  assert (ys[~holes] == 0.0).all()
  assert (ys[holes] != 0.0).all()
  # Masked steps are skipped: the run equals the valid steps alone.
  want_carry, want_ys = scan()(PARAMS, XS[holes])
  assert_trees_close(carry, want_carry)
  assert_trees_close(ys[holes], want_ys)


def test_all_masked_returns_the_initial_carry_and_zeros():
  carry, ys = RUN(PARAMS, XS, mask=jnp.zeros(T, bool))
  assert_trees_close(carry, CELL.initial_carry(PARAMS))
  assert (ys == 0.0).all()


def test_an_empty_sequence_returns_the_carry_and_no_outputs():
  given = jax.tree.map(lambda a: a + 0.5, CELL.initial_carry(PARAMS))
  for reverse in (False, True):
    carry, ys = jaxrnn.scan(CELL, PARAMS, XS[:0], carry=given, reverse=reverse)
    assert ys.shape == (0, H)
    assert_trees_close(carry, given)


@pytest.mark.parametrize("cell", [CELL, jaxrnn.gru(H, reset_after=False)],
                         ids=["fused", "plain"])
def test_an_empty_sequence_has_zero_gradients(cell):
  # scan returns before the loop when T = 0: the fused kernel's JVP reads
  # the first step's projected input, which an empty sequence does not have.
  params = random_params(cell, I, seed=1)
  def loss(params, xs):
    carry, ys = jaxrnn.scan(cell, params, xs, mask=jnp.ones(0, bool))
    return jnp.sum(ys) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))
  grads = jax.grad(loss, (0, 1))(params, XS[:0])
  assert grads[1].shape == (0, I)
  assert all(not jnp.any(g) for g in jax.tree.leaves(grads[0]))


def test_reverse_with_right_padding_equals_the_flipped_valid_part():
  length = 5
  carry, ys = RUN_REVERSE(PARAMS, XS, mask=jnp.arange(T) < length)
  want_carry, want_ys = RUN(PARAMS, XS[:length][::-1])
  assert_trees_close(carry, want_carry)
  assert_trees_close(ys[:length], want_ys[::-1])   # ys stay in input order
  assert (ys[length:] == 0.0).all()


def test_reverse_without_mask_reads_from_the_end():
  carry, ys = RUN_REVERSE(PARAMS, XS)
  want_carry, want_ys = RUN(PARAMS, XS[::-1])
  assert_trees_close(carry, want_carry)
  assert_trees_close(ys, want_ys[::-1])


def test_resets_equal_running_each_episode_separately():
  resets = jnp.zeros(T, bool).at[3].set(True).at[5].set(True)
  carry, ys = RUN(PARAMS, XS, resets=resets)
  episodes = [RUN(PARAMS, XS[a:b]) for a, b in ((0, 3), (3, 5), (5, T))]
  assert_trees_close(ys, jnp.concatenate([e[1] for e in episodes]))
  assert_trees_close(carry, episodes[-1][0])


def test_reset_at_step_zero_restarts_a_given_carry():
  given = jax.tree.map(lambda a: a + 0.5, CELL.initial_carry(PARAMS))
  reset_first = RUN(PARAMS, XS, carry=given, resets=jnp.zeros(T, bool).at[0].set(True))
  assert_trees_close(reset_first, RUN(PARAMS, XS))


def test_reversed_resets_equal_each_episode_read_backward():
  # Read backward, a flag at t restarts the carry before step t: the
  # episodes are [5, T), then [3, 5) and [0, 3) once t reaches 4 and 2.
  resets = jnp.zeros(T, bool).at[4].set(True).at[2].set(True)
  carry, ys = RUN_REVERSE(PARAMS, XS, resets=resets)
  episodes = [RUN_REVERSE(PARAMS, XS[a:b]) for a, b in ((0, 3), (3, 5), (5, T))]
  assert_trees_close(ys, jnp.concatenate([e[1] for e in episodes]))
  assert_trees_close(carry, episodes[0][0])


def test_mask_and_resets_together():
  length = 6
  mask = jnp.arange(T) < length
  # The reset at t=6 falls on padding: a masked step is a no-op, reset included.
  resets = jnp.zeros(T, bool).at[2].set(True).at[6].set(True)
  carry, ys = RUN(PARAMS, XS, mask=mask, resets=resets)
  first, second = RUN(PARAMS, XS[:2]), RUN(PARAMS, XS[2:length])
  assert_trees_close(ys[:length], jnp.concatenate([first[1], second[1]]))
  assert (ys[length:] == 0.0).all()
  assert_trees_close(carry, second[0])


def test_a_given_carry_is_used():
  # Running in two chunks, the second from the first's carry, is one run.
  carry_a, ys_a = RUN(PARAMS, XS[:3])
  carry_b, ys_b = RUN(PARAMS, XS[3:], carry=carry_a)
  carry, ys = RUN(PARAMS, XS)
  assert_trees_close(carry_b, carry)
  assert_trees_close(jnp.concatenate([ys_a, ys_b]), ys)
  other = jax.tree.map(lambda a: a + 1.0, CELL.initial_carry(PARAMS))
  assert not np.allclose(RUN(PARAMS, XS, carry=other)[1], ys)


def test_unroll_gives_the_same_result():
  mask = jnp.arange(T) < 5
  resets = jnp.zeros(T, bool).at[2].set(True)
  for unroll, reverse in ((True, False), (3, True)):
    unrolled = scan(unroll=unroll, reverse=reverse)(PARAMS, XS, mask=mask, resets=resets)
    rolled = (RUN_REVERSE if reverse else RUN)(PARAMS, XS, mask=mask, resets=resets)
    assert_trees_close(unrolled, rolled)


def test_unroll_defaults_to_8_on_a_gpu_and_1_elsewhere(monkeypatch):
  lstm = jaxrnn.lstm(H)
  cells = {"fused": (CELL, PARAMS), "plain loop": (jaxrnn.unfused(CELL), PARAMS),
           "hand-written batched": (lstm, random_params(lstm, I, seed=1))}
  xs = jnp.ones((4, T, I))
  runs = {"scan": lambda cell, p: jax.vmap(lambda x: jaxrnn.scan(cell, p, x))(xs),
          "scan_batch": lambda cell, p: jaxrnn.scan_batch(cell, p, xs),
          # the layers, and the backward loops of the gradient
          "rnn layer": lambda cell, p: jaxrnn.rnn(cell).apply(p, xs[0]),
          "rnn layer, batch": lambda cell, p: jaxrnn.apply_batch(jaxrnn.rnn(cell), p, xs),
          "grad": lambda cell, p: jax.grad(
              lambda p: jaxrnn.scan_batch(cell, p, xs)[1].sum())(p)}

  def unrolls(run, cell, params):
    jaxpr = jax.make_jaxpr(lambda p: run(cell, p))(params)
    return {eqn.params["unroll"] for eqn in equations(jaxpr) if eqn.primitive.name == "scan"}

  for backend, want in (("cpu", {1}), ("gpu", {8})):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    for run_name, run in runs.items():
      for cell_name, (cell, params) in cells.items():
        assert unrolls(run, cell, params) == want, (backend, run_name, cell_name)
    explicit = lambda cell, p: jaxrnn.scan_batch(cell, p, xs, unroll=2)
    assert unrolls(explicit, CELL, PARAMS) == {2}


def test_a_jitted_function_over_a_cell_traces_once():
  traces = []

  @jax.jit
  def run(params, xs, length):
    traces.append(1)   # a Python side effect: runs only while tracing
    return jaxrnn.scan(CELL, params, xs, mask=jnp.arange(T) < length)[1].sum()

  for seed in range(4):
    params = random_params(CELL, I, seed)   # new values, same shapes
    xs = jax.random.normal(jax.random.key(10 + seed), (T, I))
    run(params, xs, seed + 2).block_until_ready()
  assert len(traces) == 1


@pytest.mark.parametrize("name", ["lstm", "lstm_plain", "gru_cho", "simple_rnn"])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_equals_its_docstring_loop(name, reverse):
  cell = {"lstm": CELL, "lstm_plain": CELL._replace(sequence=None),
          "gru_cho": jaxrnn.gru(H, reset_after=False),
          "simple_rnn": jaxrnn.simple_rnn(H)}[name]
  params = (PARAMS if name.startswith("lstm")
            else random_params(cell, I, seed=1))
  mask = jnp.array([True, True, False, True, True, True, False])
  resets = jnp.array([False, False, True, False, True, False, True])
  carry = jax.tree.map(lambda a: a + 0.3, cell.initial_carry(params))
  got = jaxrnn.scan(cell, params, XS, carry=carry, mask=mask, resets=resets,
                    reverse=reverse)
  want = docstring_loop(cell, params, XS, carry=carry, mask=mask, resets=resets,
                        reverse=reverse)
  assert_trees_close(got, want)


def test_checkpoint_every_gives_the_same_numbers_keeping_a_fraction_of_the_residuals():
  # 23 steps in chunks of 5 (the last one filled out with masked steps),
  # with a mask and a reset, reversed on the batched path; then the memory
  # the backward pass keeps, read off jax.vjp's residuals, at T = 512.
  cell = jaxrnn.lstm(6)
  params = cell.init(jax.random.key(0), 3)
  B, T = 3, 23
  xs = jax.random.normal(jax.random.key(1), (B, T, 3))
  mask = jnp.arange(T)[None] < jnp.array([23, 11, 4])[:, None]
  resets = jnp.zeros((B, T), bool).at[:, 9].set(True)

  def runs(every):
    each = jax.vmap(lambda x, m, r: jaxrnn.scan(cell, params, x, mask=m, resets=r,
                                                checkpoint_every=every))
    return [lambda x: each(x, mask, resets),
            lambda x: jaxrnn.apply_batch(jaxrnn.rnn(cell, reverse=True, checkpoint_every=every),
                                         params, x, mask=mask)]

  def outputs_and_grad(run):      # one compile: the loss's gradient, ys beside it
    def loss(x):
      carry, ys = run(x)
      return sum(jnp.sum(a ** 2) for a in jax.tree.leaves((carry, ys))), ys
    (_, ys), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(xs)
    return ys, grad
  for plain, chunked in zip(runs(None), runs(5)):
    for got, want in zip(outputs_and_grad(chunked), outputs_and_grad(plain)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  long = jax.random.normal(jax.random.key(2), (512, 3))

  def residual_bytes(every):        # traced, not run: the pullback's residuals' shapes
    pullback = jax.eval_shape(lambda p: jax.vjp(
        lambda p: jaxrnn.scan(cell, p, long, checkpoint_every=every)[1], p)[1], params)
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(pullback))
  assert residual_bytes(23) < residual_bytes(None) / 5
  with pytest.raises(ValueError, match=r"checkpoint_every=0; expected None or an int >= 1"):
    jaxrnn.scan(cell, params, long, checkpoint_every=0)
  # forward mode in chunks (under vmap too): the per-example path, as the kernel has none
  under_vmap = jax.jvp(lambda x: jax.vmap(lambda b: jaxrnn.scan_batch(
      cell, params, b, checkpoint_every=5)[1])(x[None])[0], (xs,), (jnp.ones_like(xs),))[1]
  np.testing.assert_allclose(under_vmap, jax.jvp(
      lambda x: jaxrnn.scan_batch(cell, params, x)[1], (xs,), (jnp.ones_like(xs),))[1],
      rtol=1e-5, atol=1e-6)
  decoder = jaxrnn.attention_decoder(jaxrnn.gru(4), jaxrnn.attention("dot"), 5, 4)
  dec_params = decoder.init(jax.random.key(0), 3)
  for run in (lambda: jaxrnn.scan(decoder, dec_params, long, checkpoint_every=8),
              lambda: jaxrnn.scan_batch(decoder, dec_params, long[None], checkpoint_every=8)):
    with pytest.raises(ValueError, match="the cell is an attention decoder"):   # no carry
      run()
