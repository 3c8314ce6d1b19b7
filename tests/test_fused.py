"""The fused sequence kernel (`Cell.sequence`) equals stepping `Cell.step`.

Every built-in cell runs through `jaxrnn.fused_cell`'s kernel in `scan`; here
each is held to the plain loop over its own step (``sequence=None``): outputs,
final carries, reverse-mode gradients (also per example under vmap) and
forward-mode derivatives, masked, reset and reversed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

CELLS = {
    "simple_rnn": lambda: jaxrnn.simple_rnn(5),
    "simple_rnn_relu": lambda: jaxrnn.simple_rnn(5, jax.nn.relu),
    "lstm": lambda: jaxrnn.lstm(5),
    "peephole_lstm": lambda: jaxrnn.peephole_lstm(5),
    "cifg_fgr_peephole": lambda: jaxrnn.lstm(5, coupled_input_forget=True,
                                             full_gate_recurrence=True, peephole=True),
    "nig_noaf": lambda: jaxrnn.lstm(5, input_gate=False, output_activation=None),
    "lstmp": lambda: jaxrnn.lstm(5, proj_size=3, peephole=True),
    "gru": lambda: jaxrnn.gru(5),
    "cho_gru": lambda: jaxrnn.gru(5, reset_after=False),   # read_ahead_sequence, no fused kernel
}
T, I = 9, 4


def randomised(params, key):
  """Every leaf perturbed, so zero-initialised biases and peepholes count."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                   for l, k in zip(leaves, keys)])


def setup(name):
  cell = CELLS[name]()
  assert cell.sequence is not None, "built-in cells bring a fused kernel"
  params = randomised(cell.init(jax.random.key(0), I), jax.random.key(1))
  xs = jax.random.normal(jax.random.key(2), (3, T, I))
  mask = jnp.arange(T)[None, :] < jnp.array([[9], [6], [1]])
  resets = jnp.zeros((3, T), bool).at[:, 4].set(True)
  return cell, cell._replace(sequence=None), params, xs, mask, resets


def run(cell, params, xs, mask, resets, reverse):
  def one(x, m, r):
    carry, ys = jaxrnn.scan(cell, params, x, mask=m, resets=r, reverse=reverse)
    return carry, ys
  return jax.vmap(one)(xs, mask, resets)


def loss(cell, params, xs, mask, resets, reverse):
  carry, ys = run(cell, params, xs, mask, resets, reverse)
  weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
  return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name,reverse", [(n, False) for n in sorted(CELLS)]
                         + [("lstm", True), ("gru", True), ("peephole_lstm", True)])
def test_fused_equals_plain_values_and_gradients(name, reverse):
  fused, plain, params, xs, mask, resets = setup(name)
  args = (xs, mask, resets, reverse)
  assert_trees_close(jax.jit(run, static_argnums=(0, 5))(fused, params, *args),
                     run(plain, params, *args))
  grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=(0, 5))
  assert_trees_close(grad(fused, params, *args), grad(plain, params, *args))


@pytest.mark.parametrize("name", ["lstm", "gru", "lstmp"])
def test_fused_per_example_gradients_and_forward_mode(name):
  fused, plain, params, xs, mask, resets = setup(name)

  def per_example(cell):   # vmap(grad): shared params, one gradient per example
    g = jax.grad(lambda p, x, m: jaxrnn.scan(cell, p, x, mask=m)[1].sum())
    return jax.vmap(g, in_axes=(None, 0, 0))(params, xs, mask)

  assert_trees_close(per_example(fused), per_example(plain))
  tangent = jax.tree.map(jnp.ones_like, params)
  jvp = lambda cell: jax.jvp(lambda p: loss(cell, p, xs, mask, resets, False),
                             (params,), (tangent,))
  assert_trees_close(jvp(fused), jvp(plain))


def test_fused_cell_with_dict_params_and_given_carry():
  cell = jaxrnn.fused_cell(
      init=lambda key, n: dict(w_x=jax.random.normal(key, (n, 3)), w_h=0.5 * jnp.eye(3),
                               u=jnp.full((3,), 0.2), b=jnp.zeros(3)),
      initial_carry=lambda p: jnp.zeros(3),
      project=lambda p, xs: xs @ p["w_x"] + p["b"],
      recurrent_input=lambda h: h,
      finish=lambda p, h, gx, u: (jnp.tanh(gx + u + p["u"] * h),) * 2,
      output_size=3)
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I))
  carry0 = jnp.full((3,), 0.1)
  f = lambda c, p: jaxrnn.scan(c, p, xs, carry=carry0)[1].sum()
  assert_trees_close(jax.grad(f, argnums=1)(cell, params),
                     jax.grad(f, argnums=1)(cell._replace(sequence=None), params))


@pytest.mark.parametrize("name", ["lstm", "cifg_fgr_peephole", "lstmp", "gru", "simple_rnn"])
def test_unfused_cell_equals_fused_values_and_gradients(name):
  # jaxrnn.unfused: the input matmul moves into the step, the kernel goes.
  fused, _, params, xs, mask, resets = setup(name)
  unfused = jaxrnn.unfused(fused)
  assert unfused.project is None and unfused.sequence is None
  args = (xs, mask, resets, False)
  assert_trees_close(run(unfused, params, *args), run(fused, params, *args))
  grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=(0, 5))
  assert_trees_close(grad(unfused, params, *args), grad(fused, params, *args))
  # a custom cell without project only loses its (absent) kernel
  custom = jaxrnn.Cell(init=fused.init, initial_carry=fused.initial_carry,
                       step=unfused.step, output_size=fused.output_size)
  assert jaxrnn.unfused(custom) == custom


def elman_with(initial_carry, finish, extra_params):
  """An Elman-style fused cell with a custom carry and extra params."""
  return jaxrnn.fused_cell(
      init=lambda key, n: dict(w_x=jax.random.normal(key, (n, 3)), w_h=0.5 * jnp.eye(3),
                               b=jnp.full((3,), 0.1), **extra_params),
      initial_carry=initial_carry,
      project=lambda p, xs: xs @ p["w_x"] + p["b"],
      recurrent_input=lambda c: c["h"] if isinstance(c, dict) else c,
      finish=finish, output_size=3)


def assert_kernel_derivatives_equal_plain(cell, resets=None):
  """Gradient and forward-mode derivative of sum(ys), fused against plain."""
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, I))
  f = lambda c, p: jaxrnn.scan(c, p, xs, resets=resets)[1].sum()
  plain = cell._replace(sequence=None)
  assert_trees_close(jax.grad(f, argnums=1)(cell, params),
                     jax.grad(f, argnums=1)(plain, params))
  tangent = jax.tree.map(jnp.ones_like, params)
  assert_trees_close(jax.jvp(lambda p: f(cell, p), (params,), (tangent,)),
                     jax.jvp(lambda p: f(plain, p), (params,), (tangent,)))


def test_fused_cell_with_learned_initial_carry_and_resets():
  # A reset restores initial_carry(params): its gradient flows both through
  # the recurrent matmul and through finish's own use of the carry.
  cell = elman_with(lambda p: p["h0"],
                    lambda p, h, gx, u: (jnp.tanh(gx + u + p["v"] * h),) * 2,
                    dict(h0=jnp.array([0.3, -0.2, 0.5]), v=jnp.array([0.4, 0.1, -0.3])))
  assert_kernel_derivatives_equal_plain(
      cell, resets=jnp.zeros(T, bool).at[3].set(True).at[6].set(True))


def test_fused_cell_with_an_integer_leaf_in_its_carry():
  # A step counter in the carry: its tangent is float0, which the kernel
  # must pass through rather than add to.
  def finish(p, c, gx, u):
    h = jnp.tanh(gx + u + p["v"] * c["h"])
    return dict(h=h, n=c["n"] + 1), h * c["n"].astype(h.dtype)
  cell = elman_with(lambda p: dict(h=jnp.zeros(3), n=jnp.int32(1)), finish,
                    dict(v=jnp.array([0.4, 0.1, -0.3])))
  assert_kernel_derivatives_equal_plain(cell)


@pytest.mark.parametrize("read", ["tanh", "affine"])
def test_fused_cell_reading_its_carry_through_a_nonlinear_or_affine_function(read):
  # The tangent loop once applied recurrent_input to the carry's tangent, as
  # if it were linear: forward mode came out wrong and reverse mode failed
  # to transpose tanh. The carry here is a pre-activation, read as tanh(s),
  # or h read as [h, 1] with the bias as W's last row.
  reads = {"tanh": (jnp.tanh, 3), "affine": (lambda h: jnp.append(h, 1.0), 4)}
  recurrent_input, rows = reads[read]
  cell = jaxrnn.fused_cell(
      init=lambda key, n: dict(w_x=jax.random.normal(key, (n, 3)),
                               w_h=0.5 * jax.random.normal(jax.random.key(9), (rows, 3))),
      initial_carry=lambda p: jnp.full((3,), 0.5),
      project=lambda p, xs: xs @ p["w_x"],
      recurrent_input=recurrent_input,
      finish=lambda p, s, gx, u: (gx + u, jnp.tanh(gx + u)), output_size=3,
      additive=True)
  assert_kernel_derivatives_equal_plain(cell, resets=jnp.zeros(T, bool).at[4].set(True))
  # scan_batch's generic kernel (the cell is additive) differentiates read too
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (2, T, I))
  plain = cell._replace(sequence=None, batched=None)
  assert cell.batched is not None
  f = lambda c, p: jaxrnn.scan_batch(c, p, xs)[1].sum()
  assert_trees_close(jax.grad(f, argnums=1)(cell, params),
                     jax.grad(f, argnums=1)(plain, params))


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_ahead_is_lax_scan(reverse):
  # The GRU's and the peephole LSTM's forward loops read each step's input
  # a step early; every step must still see its own input, in either order.
  from jaxrnn._fused import scan_ahead

  def body(carry, inputs):
    x, flag, nothing = inputs
    carry = 0.5 * carry + jnp.where(flag, x["a"], -x["a"])
    return carry, (carry, x["b"] * 2)

  for T in (1, 2, 7):
    xs = ({"a": jnp.arange(T * 3.0).reshape(T, 3), "b": jnp.arange(T)},
          jnp.arange(T) % 3 == 0, None)
    for unroll in (1, 3):
      got = scan_ahead(body, jnp.ones(3), xs, reverse=reverse, unroll=unroll)
      want = jax.lax.scan(body, jnp.ones(3), xs, reverse=reverse, unroll=unroll)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_chos_gru_reads_ahead_forward_and_differentiates_as_the_plain_loop():
  # Its sequence (read_ahead_sequence) carries the next step's input in
  # the forward loop, on a CPU; jax.grad sees the plain loop's derivative:
  # the same loops and arithmetic (the custom JVP adds a few broadcast
  # zeros and constants outside them).
  from collections import Counter
  from jaxprs import equations
  cell, plain, params, xs, mask, resets = setup("cho_gru")
  forward = lambda c: jax.make_jaxpr(lambda p, x: jaxrnn.scan(c, p, x))(params, xs[0])
  carries = lambda c: [e.params["num_carry"] for e in equations(forward(c))
                       if e.primitive.name == "scan"]
  assert carries(plain) == [1]
  assert carries(cell) == ([2] if jax.default_backend() == "cpu" else [1])

  def ops(c):
    grad = jax.jit(jax.grad(lambda p: loss(c, p, xs, mask, resets, False)))
    text = grad.lower(params).as_text()
    names = (line.split("=", 1)[1].split()[0].split("(")[0] for line in text.splitlines()
             if " = stablehlo." in line)
    return Counter(n for n in names
                   if n not in ("stablehlo.constant", "stablehlo.broadcast_in_dim"))
  assert ops(cell) == ops(plain)


def test_chos_gru_read_ahead_keeps_bfloat16_gradients_and_closed_over_values():
  # From a review: with dtype=bfloat16 its weight gradient is summed in the
  # params' float32 (0.02 relative error at T = 400 when it was not), and
  # a step closing over a differentiated value (an activation's scale)
  # differentiates as the plain loop does.
  ref = jaxrnn.gru(32, reset_after=False)
  params = ref.init(jax.random.key(0), 8)
  xs = jax.random.normal(jax.random.key(1), (400, 8))
  grad = lambda c: jax.jit(jax.grad(lambda p: jnp.mean(jaxrnn.scan(c, p, xs)[1] ** 2)))(params).w_h
  g32 = grad(ref)
  g16 = grad(jaxrnn.gru(32, reset_after=False, dtype=jnp.bfloat16))
  assert float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32)) < 0.01

  cell = lambda s: jaxrnn.gru(5, reset_after=False, activation=lambda x: jnp.tanh(s * x))
  p = cell(1.0).init(jax.random.key(2), I)
  run = lambda c: lambda s: jaxrnn.scan(c(s), p, jnp.ones((T, I)))[1].sum()
  plain = lambda s: cell(s)._replace(sequence=None)
  np.testing.assert_allclose(jax.grad(run(cell))(1.3), jax.grad(run(plain))(1.3), rtol=1e-5)
  np.testing.assert_allclose(jax.jvp(run(cell), (1.3,), (1.0,))[1],
                             jax.jvp(run(plain), (1.3,), (1.0,))[1], rtol=1e-5)
