"""A cell written by a user drops into every driver unchanged.

The IndRNN of ARCHITECTURE.md (Li et al. 2018, ``h' = relu(W x + b + u * h)``)
with a hoisted ``project``, the same cell without one (its step takes the raw
``x_t``), and a cell with a dict carry run in `scan`, `rnn`, `bidirectional`,
`stack`, under `jax.vmap` and `jax.jit`, against a NumPy loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxprs import equations

B, T, I, H = 3, 6, 3, 4


def indrnn(hidden_size):                  # h' = relu(W x + b + u * h)
  def init(key, input_size):
    k1, k2 = jax.random.split(key)
    return dict(w=jax.nn.initializers.lecun_normal()(k1, (input_size, hidden_size)),
                u=jax.random.uniform(k2, (hidden_size,)), b=jnp.zeros(hidden_size))

  def step(p, h, gx):
    h = jax.nn.relu(gx + p["u"] * h)
    return h, h

  return jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros_like(p["b"]),
                     step=step, output_size=hidden_size,
                     project=lambda p, xs: xs @ p["w"] + p["b"])


def indrnn_unprojected(hidden_size):
  """The same cell, its input matmul inside the step."""
  cell = indrnn(hidden_size)

  def step(p, h, x):
    return cell.step(p, h, x @ p["w"] + p["b"])

  return cell._replace(step=step, project=None)


def running_mean(size):
  """y_t = the mean of the valid inputs so far; the carry is a dict."""
  def step(p, carry, x):
    carry = dict(total=carry["total"] + x, count=carry["count"] + 1.0)
    return carry, carry["total"] / carry["count"]

  return jaxrnn.Cell(init=lambda key, n: dict(size=jnp.zeros(n)),
                     initial_carry=lambda p: dict(total=jnp.zeros(size), count=jnp.zeros(())),
                     step=step, output_size=size)


CELL, RAW = indrnn(H), indrnn_unprojected(H)
PARAMS = CELL.init(jax.random.key(0), I)
PARAMS = dict(PARAMS, b=jnp.full((H,), 0.1))   # a bias that shows
XS = jax.random.normal(jax.random.key(1), (B, T, I))
LENGTHS = jnp.array([T, 4, 1])
MASKS = jnp.arange(T)[None, :] < LENGTHS[:, None]


def numpy_indrnn(params, xs, h=None, reverse=False):
  w, u, b = (np.asarray(params[k], np.float64) for k in ("w", "u", "b"))
  h = np.zeros(len(b)) if h is None else np.asarray(h, np.float64)
  ys = np.zeros((len(xs), len(b)))
  for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
    h = np.maximum(np.asarray(xs[t], np.float64) @ w + b + u * h, 0.0)
    ys[t] = h
  return h, ys


def assert_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_indrnn_with_and_without_project_equals_the_numpy_loop():
  for cell in (CELL, RAW):
    for reverse in (False, True):
      carry, ys = jaxrnn.scan(cell, PARAMS, XS[1], mask=MASKS[1], reverse=reverse)
      want_h, want_ys = numpy_indrnn(PARAMS, XS[1, :4], reverse=reverse)
      assert_close(carry, want_h)
      assert_close(ys[:4], want_ys)
      assert (ys[4:] == 0.0).all()


def test_jit_of_vmap_as_in_the_architecture_notes():
  for cell in (CELL, RAW):
    run = jax.jit(jax.vmap(lambda p, xs, m: jaxrnn.scan(cell, p, xs, mask=m),
                           in_axes=(None, 0, 0)))
    carry, ys = run(PARAMS, XS, MASKS)
    for b, length in enumerate(LENGTHS.tolist()):
      want_h, want_ys = numpy_indrnn(PARAMS, XS[b, :length])
      assert_close(carry[b], want_h)
      assert_close(ys[b, :length], want_ys)


def test_rnn_apply_and_step_for_both_forms():
  for cell in (CELL, RAW):
    layer = jaxrnn.rnn(cell)
    carry, ys = layer.apply(PARAMS, XS[0])
    assert_close((carry, ys), numpy_indrnn(PARAMS, XS[0]))
    h = layer.initial_carry(PARAMS)
    for t in range(T):
      h, y = layer.step(PARAMS, h, XS[0, t])
      assert_close(y, ys[t])


def test_bidirectional_of_custom_cells():
  layer = jaxrnn.bidirectional(CELL, RAW, merge="sum")
  params = (PARAMS, dict(PARAMS, u=PARAMS["u"] / 2))
  (fw_h, bw_h), ys = jax.jit(layer.apply)(params, XS[1], mask=MASKS[1])
  want_fw = numpy_indrnn(params[0], XS[1, :4])
  want_bw = numpy_indrnn(params[1], XS[1, :4], reverse=True)
  assert_close((fw_h, bw_h), (want_fw[0], want_bw[0]))
  assert_close(ys[:4], want_fw[1] + want_bw[1])


def test_stack_of_custom_cells_applies_and_decodes():
  net = jaxrnn.stack(CELL, RAW, jaxrnn.gru(H), residual=True)
  params = net.init(jax.random.key(2), I)
  carry, ys = jax.jit(net.apply)(params, XS[0])
  h1, ys1 = numpy_indrnn(params[0], XS[0])
  h2, ys2 = numpy_indrnn(params[1], ys1)
  assert_close(carry[:2], (h1, h2))
  step = jax.jit(net.step)
  state = net.initial_carry(params)
  for t in range(T):
    state, y = step(params, state, XS[0, t])
    assert_close(y, ys[t])
  assert_close(state, carry)


def test_gradients_flow_through_a_custom_cell():
  loss = lambda p: jaxrnn.scan(CELL, p, XS[0])[1].sum()
  grads = jax.grad(loss)(PARAMS)
  assert set(grads) == {"w", "u", "b"}
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in grads.values())


def test_a_dict_carry_is_masked_given_and_vmapped():
  cell = running_mean(I)
  params = cell.init(None, I)
  run = jax.jit(jax.vmap(lambda xs, m: jaxrnn.scan(cell, params, xs, mask=m)))
  carry, ys = run(XS, MASKS)
  np.testing.assert_array_equal(carry["count"], LENGTHS.astype(jnp.float32))
  for b, length in enumerate(LENGTHS.tolist()):
    assert_close(ys[b, length - 1], XS[b, :length].mean(axis=0))
  # Continuing from a given dict carry is one longer run.
  first, _ = jaxrnn.scan(cell, params, XS[0, :2])
  carry, ys = jaxrnn.scan(cell, params, XS[0, 2:], carry=first)
  assert float(carry["count"]) == T
  assert_close(ys[-1], XS[0].mean(axis=0))


def test_a_dict_carry_missing_a_key_is_refused():
  cell = running_mean(I)
  params = cell.init(None, I)
  with pytest.raises(ValueError) as info:
    jaxrnn.scan(cell, params, XS[0], carry=dict(total=jnp.zeros(I)))
  assert "carry is {'total': 'float32[3]'}" in str(info.value)
  assert "'count': 'float32[]'" in str(info.value)


def test_a_projection_returning_a_dict_decodes_and_unfuses():
  # h' = sigmoid(x W_g) * relu(x W_a + u * h): project hoists both matmuls,
  # as a dict. Decoding one step and jaxrnn.unfused take row 0 of each leaf.
  def init(key, n):
    k1, k2 = jax.random.split(key)
    return dict(w_a=jax.random.normal(k1, (n, H)), w_g=jax.random.normal(k2, (n, H)),
                u=jnp.linspace(0.1, 0.9, H))

  def step(p, h, gx):
    h = jax.nn.sigmoid(gx["g"]) * jax.nn.relu(gx["a"] + p["u"] * h)
    return h, h

  cell = jaxrnn.Cell(init=init, initial_carry=lambda p: jnp.zeros(H), step=step,
                     output_size=H,
                     project=lambda p, xs: dict(a=xs @ p["w_a"], g=xs @ p["w_g"]))
  params = cell.init(jax.random.key(3), I)
  p = jax.tree.map(np.asarray, params)
  h, want = np.zeros(H), []
  for x in np.asarray(XS[0]):
    h = 1 / (1 + np.exp(-x @ p["w_g"])) * np.maximum(x @ p["w_a"] + p["u"] * h, 0)
    want.append(h)
  _, ys = jaxrnn.scan(cell, params, XS[0])
  assert_close(ys, np.stack(want))
  assert_close(jaxrnn.scan(jaxrnn.unfused(cell), params, XS[0])[1], ys)
  layer = jaxrnn.stack(cell, cell)
  both = layer.init(jax.random.key(4), I)
  _, ys = layer.apply(both, XS[0])
  state = layer.initial_carry(both)
  for t in range(T):
    state, y = layer.step(both, state, XS[0, t])
    assert_close(y, ys[t])


def test_a_fused_cell_whose_projection_is_a_pair_differentiates_on_every_path():
  # An Euler-discretised CTRNN with a time step per step, dt the input's last
  # feature: h' = h + dt (-h + tanh(x U + h W)). project gives (x U, dt).
  cell = jaxrnn.fused_cell(
      init=lambda key, n: dict(U=jax.random.normal(key, (n - 1, H)) / n,
                               w_h=jnp.eye(H) * 0.5 + 0.1),
      initial_carry=lambda p: jnp.zeros(H),
      project=lambda p, xs: (xs[..., :-1] @ p["U"], xs[..., -1]),
      recurrent_input=lambda h: h,
      finish=lambda p, h, g, u: (h + g[1] * (-h + jnp.tanh(g[0] + u)),) * 2,
      output_size=H)
  params = cell.init(jax.random.key(0), I)
  xs = XS.at[..., -1].set(jnp.abs(XS[..., -1]) * 0.2)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h, want = np.zeros(H), []
  for x in np.asarray(xs[0], np.float64):
    h = h + x[-1] * (-h + np.tanh(x[:-1] @ p["U"] + h @ p["w_h"]))
    want.append(h)
  assert_close(jaxrnn.scan(cell, params, xs[0])[1], np.stack(want))
  loss = lambda run: lambda p, x: jnp.sum(run(p, x)[1] ** 2)
  paths = [lambda p, x: jax.vmap(lambda x: jaxrnn.scan(cell, p, x, mask=MASKS[0]))(x),
           lambda p, x: jaxrnn.scan_batch(cell, p, x, mask=jnp.broadcast_to(MASKS[0], (B, T))),
           lambda p, x: jax.vmap(lambda x: jaxrnn.scan(jaxrnn.unfused(cell), p, x,
                                                       mask=MASKS[0]))(x)]
  grads = [jax.jit(jax.grad(loss(run), (0, 1)))(params, xs) for run in paths]
  assert_close(grads[0], grads[2])
  assert_close(grads[1], grads[2])
  assert_close(jax.jacfwd(lambda x: jaxrnn.scan(cell, params, x)[1])(xs[0, :3]),
               jax.jacfwd(lambda x: jaxrnn.scan(jaxrnn.unfused(cell), params, x)[1])(xs[0, :3]))


def test_with_compute_dtype_gives_a_cell_of_your_own_bfloat16_matmuls_and_float32_carry():
  # As the built-in cells' dtype=: the params stay float32, the forward
  # matmuls run in bfloat16, a carry built in carry_dtype stays float32, gradients come
  # back float32. An additive fused cell keeps its batched kernel.
  mine = CELL._replace(initial_carry=lambda p: jnp.zeros(H, jaxrnn.carry_dtype(p["b"].dtype)),
                       project=lambda p, xs: jaxrnn.matmul(xs, p["w"]) + p["b"])
  elman = jaxrnn.fused_cell(
      init=lambda key, n: dict(w_x=jax.random.normal(key, (n, H)),
                               w_h=0.5 * jnp.eye(H), b=jnp.full((H,), 0.1)),
      initial_carry=lambda p: jnp.zeros(H, jaxrnn.carry_dtype(p["b"].dtype)),
      project=lambda p, xs: jaxrnn.matmul(xs, p["w_x"]) + p["b"],
      recurrent_input=lambda h: h, finish=lambda p, h, gx, u: (jnp.tanh(gx + u),) * 2,
      output_size=H, additive=True)
  for cell, params in ((mine, PARAMS), (elman, elman.init(jax.random.key(2), I))):
    half = jaxrnn.with_compute_dtype(cell, jnp.bfloat16)
    assert jaxrnn.with_compute_dtype(cell, None) is cell
    grad = lambda c: jax.grad(lambda p: jaxrnn.scan(c, p, XS[0], mask=MASKS[1])[1].sum())
    # Every product's operands, as the forward program has them.
    for eqn in equations(jax.make_jaxpr(lambda p: jaxrnn.scan(half, p, XS[0]))(params)):
      if eqn.primitive.name == "dot_general":
        assert {v.aval.dtype for v in eqn.invars} == {jnp.dtype(jnp.bfloat16)}, eqn
    carry, ys = jaxrnn.scan(half, params, XS[0], mask=MASKS[1])
    want_carry, want_ys = jaxrnn.scan(cell, params, XS[0], mask=MASKS[1])
    assert carry.dtype == ys.dtype == jnp.float32
    np.testing.assert_allclose(ys, want_ys, rtol=0.05, atol=0.05)
    assert 0 < np.abs(ys - want_ys).max()               # rounded: bfloat16 ran
    grads = grad(half)(params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    for g, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grad(cell)(params))):
      np.testing.assert_allclose(g, want, rtol=0.1, atol=0.1 * np.abs(want).max())
    # The batch: the kernel (elman's) or vmap, the same numbers as scan's.
    batch = jaxrnn.scan_batch(half, params, XS, mask=MASKS)
    per_example = jax.vmap(lambda x, m: jaxrnn.scan(half, params, x, mask=m))(XS, MASKS)
    for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(per_example)):
      np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
  with pytest.raises(TypeError, match=r"jaxrnn.with_compute_dtype: cell is a Seq; expected "
                                      r"a jaxrnn.Cell. Fix: .*jaxrnn.rnn\(jaxrnn.with_compute"):
    jaxrnn.with_compute_dtype(jaxrnn.rnn(mine), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"jaxrnn.with_compute_dtype: dtype='int8'; expected a floating"):
    jaxrnn.with_compute_dtype(mine, "int8")


def test_what_a_fused_step_closes_over_is_differentiated_on_every_path():
  # An activation's scale s closed over, as a user writes it: grad and jvp
  # with respect to s through the fused kernel, the batched kernel (the
  # simple RNN's generic one) and vmap over an ensemble of s, against the
  # plain loop of the same step. (The GRU's finish goes through the same
  # fused_cell code.)
  xs = XS.at[1:].multiply(0.5)
  makers = {"rnn": lambda s: jaxrnn.simple_rnn(H, activation=lambda x: jnp.tanh(s * x))}
  for name, make in makers.items():
    params = make(1.0).init(jax.random.key(0), I)
    each = lambda c: jax.vmap(lambda x, m: jaxrnn.scan(c, params, x, mask=m))(xs, MASKS)
    runs = {"scan": each, "plain": lambda c: each(jaxrnn.unfused(c)),
            "scan_batch": lambda c: jaxrnn.scan_batch(c, params, xs, mask=MASKS)}
    loss = {k: (lambda run: lambda s: jnp.sum(run(make(s))[1] ** 2))(run)
            for k, run in runs.items()}
    both = lambda f: jax.jit(lambda s: (jax.grad(f)(s), jax.jvp(f, (s,), (1.0,))[1]))(1.3)
    want = both(loss["plain"])
    for path in ("scan", "scan_batch"):
      np.testing.assert_allclose(both(loss[path]), want, rtol=1e-5, err_msg=f"{name} {path}")
    ensemble = jnp.array([0.5, 1.3])
    np.testing.assert_allclose(jax.vmap(jax.grad(loss["scan_batch"]))(ensemble),
                               jax.vmap(jax.grad(loss["plain"]))(ensemble), rtol=1e-5)


def test_a_learned_initial_carry_is_what_resets_restore_on_a_borrowed_fused_kernel():
  # A cell whose initial_carry is a param, running the LSTM's own fused
  # sequence: a reset restores the learned carry, not the LSTM's zeros.
  inner = jaxrnn.lstm(H)

  def init(key, n):
    p = inner.init(key, n)
    return dict(inner=p, c0=jax.tree.map(lambda a: a + 0.3, inner.initial_carry(p)))

  cell = jaxrnn.Cell(
      init=init, initial_carry=lambda p: p["c0"], output_size=H,
      step=lambda p, c, gx: inner.step(p["inner"], c, gx),
      project=lambda p, xs: inner.project(p["inner"], xs),
      sequence=lambda p, carry, gxs, **kw: inner.sequence(p["inner"], carry, gxs, **kw))
  params = cell.init(jax.random.key(0), I)
  resets = jnp.zeros(T, bool).at[3].set(True)
  _, ys = jaxrnn.scan(cell, params, XS[0], resets=resets)
  assert_close(ys[3:], jaxrnn.scan(cell, params, XS[0, 3:])[1])     # from the learned c0
  loss = lambda c: lambda p: jnp.sum(jaxrnn.scan(c, p, XS[0], resets=resets)[1] ** 2)
  assert_close(jax.grad(loss(cell))(params), jax.grad(loss(jaxrnn.unfused(cell)))(params))
  # **kwargs passed on to a sequence of one's own that takes no init still runs
  def own(p, carry, gxs, *, mask, resets, reverse, unroll):
    return jaxrnn.scan(jaxrnn.unfused(cell), p, gxs, carry=carry, mask=mask, resets=resets,
                       reverse=reverse, unroll=unroll)
  wrapped = cell._replace(project=None, sequence=lambda p, c, g, **kw: own(p, c, g, **kw))
  assert_close(jaxrnn.scan(wrapped, params, XS[0], resets=resets)[1],
               jaxrnn.scan(jaxrnn.unfused(cell), params, XS[0], resets=resets)[1])
