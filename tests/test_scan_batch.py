"""`jaxrnn.scan_batch` equals `jaxrnn.scan` under `jax.vmap`, kernel or not.

Cells with a batched kernel (`Cell.batched`, a custom VJP) run it whenever
there are no resets: the standard LSTM (with or without peepholes) and
GRU (either form, any jax.nn activations) their hand-written ones, every
other additive `jaxrnn.fused_cell` (the other LSTM variants, the simple
RNN, a cell of your own) the kernel of `jaxrnn._fused_batch`. Here each is held
to the independent NumPy loop, to the vmapped per-example path (outputs,
final carries, gradients for params, inputs and the initial carry, masked
and reversed), and to finite differences in float64; every other case must
be the vmapped `jaxrnn.scan` itself.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
import numpy_oracle
from numpy_oracle import as_numpy

B, T, I, H = 9, 7, 4, 5


def randomised(params, key, scale=0.5):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [
      l + scale * jax.random.normal(k, l.shape, l.dtype)
      if jnp.issubdtype(l.dtype, jnp.inexact) else l for l, k in zip(leaves, keys)])


# Cells with Cell.batched, named as in numpy_oracle.VARIANTS: the hand-written
# kernels, then additive fused cells on the generic one, chosen so that its
# finish reads vectors (peepholes), a matrix (the projection) and a carried
# gate vector (full_gate_recurrence).
# The generic kernel's cases are fewer: its code is the same for every cell.
HAND = ("lstm", "gru", "gru_reset_before")
PEEPHOLE = "peephole"       # the standard LSTM's hand-written kernel, with peepholes
GENERIC = ("peephole_proj", "peephole_cifg_fgr", "rnn_tanh")
KERNELS = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, PEEPHOLE: jaxrnn.peephole_lstm,
           "gru_reset_before": lambda H, **kw: jaxrnn.gru(H, **{"reset_after": False, **kw})}
KERNELS.update({name: partial(numpy_oracle.library_cell, name) for name in GENERIC})
NO_BIAS = ("lstm_nobias", "gru_nobias")   # the hand-written kernels with use_bias=False
# The GRU's kernel with other jax.nn activations: their derivatives from JAX's JVP.
GRU_ACTIVATIONS = ("gru_relu_hard_gates", "gru_reset_before_relu")
KERNELS.update({name: partial(numpy_oracle.library_cell, name)
                for name in NO_BIAS + GRU_ACTIVATIONS})


def setup(cell=None, batch=B, dtype=jnp.float32, kind="lstm"):
  cell = cell or KERNELS[kind](H, param_dtype=dtype)
  params = randomised(cell.init(jax.random.key(0), I), jax.random.key(1))
  xs = jax.random.normal(jax.random.key(2), (batch, T, I))
  lengths = (T - jnp.arange(batch)) % (T + 1)      # T, T-1, .., 0: full and empty rows
  mask = jnp.arange(T)[None, :] < lengths[:, None]
  leaves, tree = jax.tree.flatten(cell.initial_carry(params))   # h and c differ
  carry = jax.tree.unflatten(tree, [
      jax.random.normal(k, (batch,) + a.shape, a.dtype)
      if jnp.issubdtype(a.dtype, jnp.inexact) else jnp.full((batch,) + a.shape, 2, a.dtype)
      for a, k in zip(leaves, jax.random.split(jax.random.key(3), len(leaves)))])
  return cell, params, xs, mask, carry


def vmapped(cell, params, xs, carry, mask, resets=None, reverse=False):
  def one(x, c, m, r):
    return jaxrnn.scan(cell, params, x, carry=c, mask=m, resets=r, reverse=reverse)
  axis = lambda a: None if a is None else 0
  return jax.vmap(one, in_axes=(0, axis(carry), axis(mask), axis(resets)))(
      xs, carry, mask, resets)


def loss(run, params, xs, carry):
  final, ys = run(params, xs, carry)
  weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
  return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))


def uses_kernel(fn, *args) -> bool:
  return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


# Each flag switches code in the kernels; the scenarios run each switch
# both ways without listing every combination. Row 0 is full length, the
# last one empty; reversed with a given carry, h0 enters dW_h at the last step.
SCENARIOS = {                       # name: (masked, reversed, given carry, batch)
    "plain": (False, False, False, B),
    "reversed_carry": (False, True, True, B),
    "masked_reversed_carry": (True, True, True, B),
    "batch_of_one": (True, False, True, 1),
    # The GRU hoists its input matmul up to B = 2 (gru_batched.HOIST_MAX_BATCH)
    "one_plain": (False, False, False, 1),
    "pair_masked_reversed_carry": (True, True, True, 2),
}


GENERIC_SCENARIOS = ("reversed_carry", "masked_reversed_carry", "batch_of_one")


@pytest.mark.parametrize("kind, scenario", [(k, s) for k in HAND for s in SCENARIOS] +
                         [(k, s) for k in GENERIC + (PEEPHOLE,) + GRU_ACTIVATIONS
                          for s in GENERIC_SCENARIOS])
def test_kernel_matches_vmapped_scan(kind, scenario):
  masked, reverse, given, batch = SCENARIOS[scenario]
  cell, params, xs, mask, carry = setup(kind=kind, batch=batch)
  mask = mask if masked else None
  carry = carry if given else None

  def batched(p, x, c):
    return jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask, reverse=reverse)

  def reference(p, x, c):
    return vmapped(cell, p, x, c, mask, reverse=reverse)

  assert uses_kernel(batched, params, xs, carry)
  assert not uses_kernel(reference, params, xs, carry)
  got, want = jax.jit(batched)(params, xs, carry), jax.jit(reference)(params, xs, carry)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  argnums = (0, 1, 2) if given else (0, 1)
  grads = [jax.jit(jax.grad(lambda p, x, c: loss(run, p, x, c), argnums))(params, xs, carry)
           for run in (batched, reference)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


# The GRU hoists its input matmul at B = 2.
HAND_CASES = [(k, r, b) for k in HAND for r in (False, True) for b in (B, 2)]


@pytest.mark.parametrize("kind, reverse, batch", HAND_CASES + [
    (k, r, B) for k in GENERIC for r in (False, True)])
def test_kernel_matches_numpy_oracle(kind, reverse, batch):
  cell, params, xs, mask, _ = setup(kind=kind, batch=batch)
  final, ys = jaxrnn.scan_batch(cell, params, xs, mask=mask, reverse=reverse)
  ref, p = numpy_oracle.oracle(kind), as_numpy(params)
  finals = {"h": final} if isinstance(final, jax.Array) else final._asdict()
  for b in range(batch):
    carry, want = numpy_oracle.scan(ref, p, np.asarray(xs[b]), mask=np.asarray(mask[b]),
                                    reverse=reverse)
    np.testing.assert_allclose(ys[b], want, atol=1e-5)
    for name, value in carry.items():
      np.testing.assert_allclose(finals[name][b], value, atol=1e-5)


# The variants not named above: which kernel each gets is `jaxrnn.lstm`'s
# choice from its switches, and a variant sent to the standard LSTM's
# hand-written kernel would run the standard equations (NIAF, NOAF) or
# refuse its params (LSTMP), unseen by the tests above, which build only
# the cells they name.
OTHER_VARIANTS = [name for name in numpy_oracle.VARIANTS if name not in HAND + GENERIC]   # NO_BIAS too


@pytest.mark.parametrize("name", OTHER_VARIANTS)
def test_every_variant_through_scan_batch_matches_numpy_oracle(name):
  cell, params, xs, mask, _ = setup(numpy_oracle.library_cell(name, H), batch=3)
  final, ys = jax.jit(lambda p, x: jaxrnn.scan_batch(cell, p, x, mask=mask))(params, xs)
  ref, p = numpy_oracle.oracle(name), as_numpy(params)
  finals = {"h": final} if isinstance(final, jax.Array) else final._asdict()
  for b in range(3):
    carry, want = numpy_oracle.scan(ref, p, np.asarray(xs[b]), mask=np.asarray(mask[b]))
    np.testing.assert_allclose(ys[b], want, atol=1e-5)
    for key, value in carry.items():
      np.testing.assert_allclose(finals[key][b], value, atol=1e-5)


@pytest.mark.parametrize("kind, reverse, batch", HAND_CASES + [(k, True, B) for k in GENERIC] +
                         [(k, False, B) for k in NO_BIAS + (PEEPHOLE,) + GRU_ACTIVATIONS])
def test_kernel_gradients_match_finite_differences(kind, reverse, batch):
  with jax.enable_x64(True):
    cell, params, xs, mask, carry = setup(dtype=jnp.float64, kind=kind, batch=batch)
    xs = xs.astype(jnp.float64)

    @jax.jit
    def f(params, xs, carry):
      return jaxrnn.scan_batch(cell, params, xs, carry=carry, mask=mask, reverse=reverse)

    assert uses_kernel(f, params, xs, carry)
    check_grads(f, (params, xs, carry), order=1, modes=("rev",))


@pytest.mark.parametrize("kind", HAND + (PEEPHOLE, "peephole_proj"))
def test_bfloat16_params_keep_float32_carry_and_their_gradient_dtypes(kind):
  cell, params, xs, mask, _ = setup(dtype=jnp.bfloat16, kind=kind)
  # At this B the GRU's training loop hoists its input matmul in bfloat16
  # (gru_batched.HOIST_MAX_BATCH_BF16_TRAINING) and its forward alone does not.
  # jit throughout: eager dispatch of the kernels' loops costs seconds here.
  final, ys = jax.jit(lambda p: jaxrnn.scan_batch(cell, p, xs, mask=mask))(params)
  _, want = jax.jit(lambda p: vmapped(cell, p, xs, None, mask))(params)
  assert all(c.dtype == jnp.float32 for c in jax.tree.leaves(final))
  assert ys.dtype == jnp.float32
  np.testing.assert_allclose(ys, want, atol=3e-2)
  grads = jax.jit(jax.grad(lambda p: jaxrnn.scan_batch(cell, p, xs, mask=mask)[1].sum()))(
      params)
  want = jax.jit(jax.grad(lambda p: vmapped(cell, p, xs, None, mask)[1].sum()))(params)
  for g, w, p in zip(jax.tree.leaves(grads), jax.tree.leaves(want), jax.tree.leaves(params)):
    assert g.dtype == p.dtype == jnp.bfloat16
    np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32),
                               rtol=5e-2, atol=5e-2 * float(jnp.abs(w).max()))


def elman(additive: bool, counter: bool = False, dtype=jnp.float32, hidden_size: int = H):
  """A custom fused cell, ``h' = tanh(gx + u) * leak`` with a learnable leak
  (so finish reads params) and an integer leaf it ignores; with ``counter``
  the carry is ``(h, steps)``, an integer step count beside h."""
  def finish(p, carry, gx, u):
    h = (jnp.tanh(gx + u) * p["leak"]).astype(jnp.float32)
    return ((h, carry[1] + 1) if counter else h), h

  return jaxrnn.fused_cell(
      init=lambda key, n: jax.tree.map(lambda a: a.astype(dtype), dict(
          w_x=jax.random.normal(key, (n, hidden_size)) / n, w_h=jnp.eye(hidden_size) / 2,
          b=jnp.zeros(hidden_size), leak=jnp.full(hidden_size, 0.9))) | dict(
              steps=jnp.int32(3)),
      initial_carry=lambda p: ((jnp.zeros(hidden_size), jnp.int32(0)) if counter
                               else jnp.zeros(hidden_size)),
      project=lambda p, xs: xs @ p["w_x"] + p["b"],
      recurrent_input=lambda c: c[0] if counter else c,
      finish=finish, output_size=hidden_size, additive=additive)


FALLBACKS = {
    # a function the kernel cannot know to be element-wise
    "gru_own_activation": lambda: (jaxrnn.gru(H, reset_after=False,
                                              activation=lambda z: jnp.tanh(z)), B, False),
    "non_additive_fused_cell": lambda: (elman(additive=False), B, False),
    "resets": lambda: (jaxrnn.lstm(H), B, True),
    "unfused_lstm": lambda: (jaxrnn.unfused(jaxrnn.lstm(H)), B, False),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_other_cases_run_the_vmapped_scan(name):
  cell, batch, with_resets = FALLBACKS[name]()
  cell, params, xs, mask, carry = setup(cell, batch)
  resets = (jnp.zeros((batch, T), bool).at[:, 3].set(True) if with_resets else None)

  def batched(p, x, c):
    return jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask, resets=resets)

  assert not uses_kernel(batched, params, xs, carry)
  got = batched(params, xs, carry)
  want = vmapped(cell, params, xs, carry, mask, resets)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  # The vmapped path keeps forward mode.
  jax.jvp(lambda x: batched(params, x, carry)[1], (xs,), (jnp.ones_like(xs),))


@pytest.mark.parametrize("kind", HAND + GENERIC[:1])
def test_nan_in_padding_reaches_no_gradient(kind):
  # A masked step's result is discarded; its gradient products must not
  # turn 0 * nan into nan in the weight gradients (they did, on every path).
  cell, params, xs, mask, _ = setup(kind=kind)
  padded = jnp.where(mask[..., None], xs, jnp.nan)
  for run in (lambda p, x: jaxrnn.scan_batch(cell, p, x, mask=mask),
              lambda p, x: vmapped(cell, p, x, None, mask)):
    grads = jax.jit(jax.grad(lambda p, x: loss(lambda p, x, c: run(p, x), p, x, None), (0, 1)))
    for got, want in zip(jax.tree.leaves(grads(params, padded)), jax.tree.leaves(grads(params, xs))):
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["lstm", GENERIC[0]])   # one switch, before any kernel
def test_forward_mode_runs_the_per_example_path_as_documented(kind):
  cell, params, xs, mask, carry = setup(kind=kind)
  # the kernel is a custom_vjp; jvp and jacfwd run the vmapped scan instead
  tangents = jax.tree.map(jnp.ones_like, (params, xs, carry))
  runs = (lambda p, x, c: jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask),
          lambda p, x, c: vmapped(cell, p, x, c, mask))
  got, want = (jax.jit(lambda p, t, run=run: jax.jvp(run, p, t))((params, xs, carry), tangents)
               for run in runs)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  if kind == "lstm":    # the switch is the same code for every kernel
    small = xs[:2, :3]
    np.testing.assert_allclose(
        jax.jacfwd(lambda x: jaxrnn.apply_batch(cell, params, x)[1])(small),
        jax.jacfwd(lambda x: vmapped(cell, params, x, None, None)[1])(small),
        rtol=1e-5, atol=1e-6)
    # reverse over forward runs it too
    grads = [jax.jit(jax.grad(lambda x, run=run: jnp.sum(jax.jvp(
        lambda x: run(params, x, carry)[1], (x,), (jnp.ones_like(x),))[1] ** 2)))(xs)
        for run in runs]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="custom_vjp"):  # a jit inside the jvp traced the kernel
    jax.jvp(jax.jit(lambda x: jaxrnn.scan_batch(cell, params, x)[1]), (xs,),
            (jnp.ones_like(xs),))
  # Forward over reverse differentiates the backward, which is plain JAX.
  if kind in HAND:
    xs, mask = xs[:2, :3], mask[:2, :3]
    runs = (lambda p: jaxrnn.scan_batch(cell, p, xs, mask=mask),
            lambda p: vmapped(cell, p, xs, None, mask))
    hessians = [jax.jit(jax.hessian(lambda b: jnp.sum(run(params._replace(b=b))[1] ** 2)))(params.b)
                for run in runs]
    np.testing.assert_allclose(hessians[0], hessians[1], atol=1e-5)


@pytest.mark.parametrize("kind, unroll", [(k, u) for k in HAND for u in (3, True)] +
                         [("peephole_cifg_fgr", 3)])    # 3 does not divide T = 7
def test_unroll_and_empty_inputs(kind, unroll):
  cell, params, xs, mask, carry = setup(kind=kind)

  def run(unroll):
    return lambda p, x, c: jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask, reverse=True,
                                             unroll=unroll)
  plain, unrolled = run(1), run(unroll)
  for a, b in zip(jax.tree.leaves(plain(params, xs, carry)),
                  jax.tree.leaves(unrolled(params, xs, carry))):
    np.testing.assert_allclose(a, b, atol=1e-6)
  grads = [jax.grad(lambda p, x, c: loss(f, p, x, c), (0, 1, 2))(params, xs, carry)
           for f in (plain, unrolled)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  for b, t in ((B, 0), (0, T)):     # no steps; no sequences (as vmap and torch allow)
    final, ys = jaxrnn.scan_batch(cell, params, xs[:b, :t])
    assert ys.shape == (b, t, cell.output_size)
    assert [a.shape for a in jax.tree.leaves(final)] == [
        (b,) + a.shape for a in jax.tree.leaves(cell.initial_carry(params))]
  grads = jax.grad(lambda p: jaxrnn.scan_batch(cell, p, xs[:0], mask=mask[:0])[1].sum())(params)
  assert all(not jnp.any(g) for g in jax.tree.leaves(grads))


def test_bad_input_is_explained():
  cell, params, xs, mask, carry = setup()
  with pytest.raises(ValueError, match=r"expected a batch of sequences \[B, T, I\].*jaxrnn.scan"):
    jaxrnn.scan_batch(cell, params, xs[0])
  with pytest.raises(ValueError, match=r"mask is bool\[9, 6\]; expected bool\[9, 7\]"):
    jaxrnn.scan_batch(cell, params, xs, mask=mask[:, :6])
  with pytest.raises(ValueError, match=r"expected bool\[9, 7\].*lengths\[:, None\]"):
    jaxrnn.scan_batch(cell, params, xs, mask=mask.astype(int))
  with pytest.raises(ValueError, match="leading batch axis of 9"):
    jaxrnn.scan_batch(cell, params, xs, carry=jax.tree.map(lambda a: a[:3], carry))
  with pytest.raises(ValueError, match=r"jnp.broadcast_to\(mask, \(9, 7\)\)"):
    jaxrnn.scan_batch(cell, params, xs, mask=mask[0])


@pytest.mark.parametrize("with_resets", [True, False])   # the vmapped path, the kernel
def test_wrong_input_size_is_explained_on_both_paths(with_resets):
  cell, params, xs, _, _ = setup()
  resets = jnp.zeros((B, T), bool) if with_resets else None
  with pytest.raises(ValueError, match="initialised for input size 4"):
    jaxrnn.scan_batch(cell, params, xs[..., :3], resets=resets)


@pytest.mark.parametrize("kind, other", [
    ("lstm", dict(full_gate_recurrence=True)), ("lstm", dict(proj_size=H)),
    ("lstm", dict(peephole=True)), ("gru", dict(reset_after=False)),
    ("gru_reset_before", dict(reset_after=True))])
def test_scan_batch_refuses_params_of_another_variant(kind, other):
  # Read as they are, some would be ignored (a peephole LSTM's p_i by the
  # standard LSTM), so scan_batch says so instead of computing something else.
  cell, _, xs, _, _ = setup(kind=kind)
  params = KERNELS[kind](H, **other).init(jax.random.key(0), I)
  with pytest.raises(ValueError, match="made by"):
    jaxrnn.scan_batch(cell, params, xs)
  # The kernel's own backstop, for a cell whose init scan_batch cannot trace
  # abstractly to compare (an initializer that needs a concrete key).
  def concrete_init(key, shape, dtype):
    seed = int(jax.random.key_data(key).ravel()[-1])
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) / 10, dtype)
  untraceable = KERNELS[kind](H, kernel_init=concrete_init)
  with pytest.raises(ValueError, match="made by"):
    jaxrnn.scan_batch(untraceable, params, xs)


def test_the_reset_before_kernel_refuses_bias_free_params():
  # jaxrnn.gru(H, use_bias=False) is a reset_after GRU (a bias-free Cho GRU
  # is refused at construction), so its params are the wrong GRU's here.
  cell, _, xs, _, carry = setup(kind="gru_reset_before")
  params = jaxrnn.gru(H, use_bias=False).init(jax.random.key(0), I)
  with pytest.raises(ValueError, match=r"reset_after=False but its params have no biases, so "
                     r"they were made by jaxrnn.gru\(H\)"):
    cell.batched(params, carry, xs, None, False, 1)


def test_the_peephole_lstm_runs_the_hand_written_kernel_and_refuses_standard_params():
  from jaxrnn._cells.lstm_batched import lstm_batch_kernel
  for make in (jaxrnn.peephole_lstm, lambda H: jaxrnn.lstm(H, peephole=True)):
    batched = make(H).batched
    assert batched.func is lstm_batch_kernel and batched.keywords == {"peephole": True}
    assert batched.takes_recurrent_mask
  cell, _, xs, _, _ = setup(kind=PEEPHOLE)
  with pytest.raises(ValueError, match="made by"):     # scan_batch's check of the params
    jaxrnn.scan_batch(cell, jaxrnn.lstm(H).init(jax.random.key(0), I), xs)
  with pytest.raises(ValueError, match=r"peephole LSTM but its params lack p_i, p_f, p_o"):
    batched(jaxrnn.lstm(H).init(jax.random.key(0), I),      # the kernel's own backstop
            jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape),
                         cell.initial_carry(jaxrnn.lstm(H).init(jax.random.key(0), I))),
            xs, None, False, 1)


F32_TOL = (1e-6, 1e-5)      # atol of outputs, of gradients
CUSTOM = {                  # name: (cell, masked, input dtype, tolerances)
    "masked": (lambda: elman(additive=True), True, jnp.float32, F32_TOL),
    "integer_carry_leaf": (lambda: elman(additive=True, counter=True), False,
                           jnp.float32, F32_TOL),
    # bfloat16 params and inputs: project's gx is bfloat16, s = gx + u
    # float32; gradients to 3e-2 of the largest, as in the bfloat16 test
    "bfloat16": (lambda: elman(additive=True, dtype=jnp.bfloat16), True, jnp.bfloat16,
                 (3e-2, None)),
}


@pytest.mark.parametrize("name", CUSTOM)
def test_a_custom_additive_cell_runs_the_generic_kernel(name):
  make, masked, x_dtype, (out_tol, grad_tol) = CUSTOM[name]
  cell = make()
  _, params, xs, mask, carry = setup(cell)
  xs, mask = xs.astype(x_dtype), mask if masked else None

  def batched(p, x, c):
    return jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask, reverse=True)

  def reference(p, x, c):
    return vmapped(cell, p, x, c, mask, reverse=True)

  assert uses_kernel(batched, params, xs, carry)
  for a, b in zip(jax.tree.leaves(jax.jit(batched)(params, xs, carry)),
                  jax.tree.leaves(jax.jit(reference)(params, xs, carry))):
    np.testing.assert_allclose(a, b, atol=out_tol)
  grads = [jax.jit(jax.grad(lambda p, x, c: loss(run, p, x, c), (0, 1, 2), allow_int=True))(
      params, xs, carry) for run in (batched, reference)]
  assert grads[0][0]["steps"].dtype == jax.dtypes.float0    # an integer leaf: no gradient
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    assert a.dtype == b.dtype
    if a.dtype != jax.dtypes.float0:
      a, b = a.astype(np.float32), b.astype(np.float32)
      if grad_tol is None:
        np.testing.assert_allclose(a, b, rtol=5e-2, atol=3e-2 * float(np.abs(b).max()))
      else:
        np.testing.assert_allclose(a, b, atol=grad_tol)
  assert float(jnp.abs(grads[0][0]["leak"]).max()) > 0


@pytest.mark.parametrize("kind", HAND + (PEEPHOLE,) + GENERIC)
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_mask_in_the_kernels_equals_scaled_weights_per_sequence(kind, reverse):
  # The kernels (hand-written and generic) multiply h_{t-1} in their loops;
  # the reference is each sequence's scan with its own diag(m) R, written out here.
  cell, params, xs, mask, carry = setup(kind=kind)
  P = params.w_h.shape[0]
  m = jax.random.bernoulli(jax.random.key(5), 0.6, (B, P)) / 0.6

  def kernel(p, x, c):
    return jaxrnn.scan_batch(cell, p, x, carry=c, mask=mask, reverse=reverse,
                             recurrent_mask=m)

  def reference(p, x, c):
    def one(x, c, k, m_row):
      return jaxrnn.scan(cell, p._replace(w_h=p.w_h * m_row[:, None]), x, carry=c,
                         mask=k, reverse=reverse)
    return jax.vmap(one)(x, c, mask, m)

  assert uses_kernel(kernel, params, xs, carry)
  for a, b in zip(jax.tree.leaves(jax.jit(kernel)(params, xs, carry)),
                  jax.tree.leaves(jax.jit(reference)(params, xs, carry)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
  grads = [jax.jit(jax.grad(partial(loss, run), argnums=(0, 1, 2)))(params, xs, carry)
           for run in (kernel, reference)]
  for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  if reverse:
    return        # what follows does not depend on the direction
  # The mask is a constant on every path (kernel and scan): no gradient reaches it.
  d_mask = [jax.grad(lambda mm: jnp.sum(jaxrnn.scan_batch(
                cell, params, xs, mask=mask, recurrent_mask=mm)[1]))(m),
            jax.grad(lambda mm: jnp.sum(jax.vmap(lambda x, k, r: jaxrnn.scan(
                cell, params, x, mask=k, recurrent_mask=r))(xs, mask, mm)[1]))(m)]
  assert not np.any(d_mask[0]) and not np.any(d_mask[1])
  with pytest.raises(ValueError, match=rf"recurrent_mask is float32\[{P}\]; expected a float "
                     rf"mask \[{B}, {P}\], one row per sequence"):
    jaxrnn.scan_batch(cell, params, xs, recurrent_mask=m[0])


@pytest.mark.parametrize("kind", HAND + ("peephole_proj",))
def test_kernel_gradients_with_a_recurrent_mask_match_finite_differences(kind):
  with jax.enable_x64(True):
    cell, params, xs, mask, carry = setup(dtype=jnp.float64, kind=kind, batch=3)
    xs = xs.astype(jnp.float64)
    P = params.w_h.shape[0]            # units dropped (0) or kept (2), per sequence
    m = jnp.where((jnp.arange(3)[:, None] + jnp.arange(P)) % 2 == 0, 0.0, 2.0)

    @jax.jit
    def f(params, xs, carry):
      return jaxrnn.scan_batch(cell, params, xs, carry=carry, mask=mask, recurrent_mask=m)

    assert uses_kernel(f, params, xs, carry)
    check_grads(f, (params, xs, carry), order=1, modes=("rev",))
