"""Every built-in cell and variant equals its independent NumPy oracle.

The oracle (`numpy_oracle.py`) is written gate by gate from the papers'
equations in float64; here the library, in float32 with every param
randomised (so zero-initialised biases and peepholes count), is held to it
one step at a time and through `jaxrnn.scan` (plain, masked, reversed, reset,
from a given carry, unrolled, vmapped), with and without `jax.jit`. Also:
bfloat16 params keep a float32 carry, the initialisers, and the invalid
switch combinations.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from numpy_oracle import VARIANTS, library_cell, oracle
import numpy_oracle

H, I, T = 3, 4, 7
NAMES = list(VARIANTS)
TOL = dict(rtol=1e-5, atol=1e-5)
# Every variant under jax.jit. Without jit each scan compiles on its own and
# every op dispatches alone, so eagerly: one variant per family and the
# trickiest LSTMs, with one driver scenario each (see `scenarios`).
EAGER = {"rnn_relu": "plain", "peephole_cifg_fgr": "masked_resets_reversed",
         "nig_fgr_proj_noaf": "unroll_3", "gru": "resets_from_carry",
         "gru_reset_before": "masked_resets_reversed"}
CASES = [(name, True) for name in NAMES] + [(name, False) for name in EAGER]
CASE_IDS = [f"{name}-{'jit' if use_jit else 'eager'}" for name, use_jit in CASES]


def random_params(cell, seed, scale=0.5):
  """Params with init's structure and every leaf random, none zero.

  Biases and peepholes, zero at init, must count. The structure comes from
  `jax.eval_shape` and the values from NumPy: eager random draws and
  initialisers would compile once per new shape, seconds per variant.
  """
  shapes = jax.eval_shape(lambda key: cell.init(key, I), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def setup(name, seed=0, **kwargs):
  cell = library_cell(name, H, **kwargs)
  return cell, random_params(cell, seed), oracle(name)


def random_xs(seed=5, shape=(T, I)):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def as_dict(carry) -> dict:
  """A library carry (an array or an LSTMCarry) as the oracle's dict."""
  if isinstance(carry, jaxrnn.LSTMCarry):
    return {k: v for k, v in carry._asdict().items() if v is not None}
  return dict(h=carry)


def from_dict(carry: dict, like):
  """The oracle's dict carry as a float32 library carry shaped like ``like``."""
  if isinstance(like, jaxrnn.LSTMCarry):
    return jaxrnn.LSTMCarry(**{k: jnp.asarray(v, jnp.float32) for k, v in carry.items()})
  return jnp.asarray(carry["h"], jnp.float32)


def random_carry(ref, params, key):
  """A nonzero carry in the oracle's layout; FGR's previous gates lie in (0, 1)."""
  rng = np.random.default_rng(key)
  carry = {k: rng.normal(size=v.shape) for k, v in ref.initial_carry(params).items()}
  if "gates" in carry:
    carry["gates"] = rng.uniform(0.05, 0.95, size=carry["gates"].shape)
  return {k: v.astype(np.float32).astype(np.float64) for k, v in carry.items()}


def assert_carry_close(got, want, **tol):
  got = as_dict(got)
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(np.asarray(got[k]), want[k], err_msg=k, **(tol or TOL))


@pytest.mark.parametrize("name, use_jit", CASES, ids=CASE_IDS)
def test_step_matches_oracle(name, use_jit):
  cell, params, ref = setup(name)
  x = np.asarray(random_xs(7, (I,)), np.float64)
  carry = random_carry(ref, params, 3)

  def step(params, carry, x):
    gx = cell.project(params, x[None])[0]
    return cell.step(params, carry, gx)

  step = jax.jit(step) if use_jit else step
  got_carry, got_y = step(params, from_dict(carry, cell.initial_carry(params)),
                          jnp.asarray(x, jnp.float32))
  want_carry, want_y = ref.step(params, carry, x)
  np.testing.assert_allclose(np.asarray(got_y), want_y, **TOL)
  assert_carry_close(got_carry, want_carry)
  assert got_y.shape == (cell.output_size,)


def scenarios(carry0):
  """Driver settings: name -> scan keyword arguments.

  Few scans, each exercising several features, keep the compile time down;
  with "vmap" (forward, masked, three lengths) each path of the driver runs:
  mask or none, resets or none, forward and reverse, a given carry.
  """
  length = jnp.arange(T) < 5
  return {
      "plain": dict(),
      # The reset at t=5 falls on a masked step, so it must be a no-op.
      "masked_resets_reversed": dict(mask=length, reverse=True,
                                     resets=(jnp.arange(T) == 1) | (jnp.arange(T) == 5)),
      "resets_from_carry": dict(carry=carry0, resets=jnp.arange(T) % 3 == 2),
      # unroll=3 does not divide T=7: the remainder steps run too.
      "unroll_3": dict(carry=carry0, unroll=3, mask=length, reverse=True,
                       resets=jnp.arange(T) == 2),
  }


def run_all(cell, params, xs, carry0, names):
  """Every named scenario's (carry, ys); "vmap" is a batch of three lengths."""
  out = {}
  for scenario, kwargs in scenarios(carry0).items():
    if scenario in names:
      out[scenario] = jaxrnn.scan(cell, params, xs, **kwargs)
  if "vmap" in names:
    masks = jnp.arange(T)[None, :] < jnp.array([[T], [4], [1]])
    batch = jnp.stack([xs, xs[::-1], 2 * xs])
    out["vmap"] = jax.vmap(lambda x, m: jaxrnn.scan(cell, params, x, mask=m))(
        batch, masks)
  return out


def oracle_all(ref, params, xs, carry0, names):
  out = {}
  for scenario, kwargs in scenarios(carry0).items():
    if scenario in names:
      kwargs = {k: np.asarray(v) if k in ("mask", "resets") else v
                for k, v in kwargs.items() if k != "unroll"}
      if "carry" in kwargs:
        kwargs["carry"] = as_dict(kwargs["carry"])
      out[scenario] = numpy_oracle.scan(ref, params, xs, **kwargs)
  if "vmap" in names:
    results = [numpy_oracle.scan(ref, params, x, mask=np.arange(T) < n)
               for x, n in [(xs, T), (xs[::-1], 4), (2 * xs, 1)]]
    out["vmap"] = ({k: np.stack([c[k] for c, _ in results]) for k in results[0][0]},
                   np.stack([ys for _, ys in results]))
  return out


# Under jit, every variant; unroll=3 only where it is a different loop body.
JITTED = ("masked_resets_reversed", "resets_from_carry", "vmap")
UNROLLED = ("rnn_tanh", "peephole_cifg_fgr", "nig_fgr_proj_noaf", "gru_reset_before")


@pytest.mark.parametrize("name, use_jit", CASES, ids=CASE_IDS)
def test_scan_matches_oracle(name, use_jit):
  cell, params, ref = setup(name)
  xs = random_xs()
  carry0 = from_dict(random_carry(ref, params, 11), cell.initial_carry(params))
  if use_jit:
    names = JITTED + (("unroll_3",) if name in UNROLLED else ())
  else:
    names = (EAGER[name],)
  run = lambda params, xs, carry0: run_all(cell, params, xs, carry0, names)
  got = (jax.jit(run) if use_jit else run)(params, xs, carry0)
  want = oracle_all(ref, params, np.asarray(xs, np.float64), carry0, names)
  assert set(got) == set(names)
  for scenario in names:
    (got_carry, got_ys), (want_carry, want_ys) = got[scenario], want[scenario]
    np.testing.assert_allclose(np.asarray(got_ys), want_ys, err_msg=scenario, **TOL)
    assert_carry_close(got_carry, want_carry)
    if "mask" in scenarios(None).get(scenario, {}):
      # Masked steps output exactly zero, not merely something small.
      assert np.all(np.asarray(got_ys)[5:] == 0.0)


BF16_NAMES = ["rnn_tanh", "peephole_cifg_fgr", "peephole_proj", "gru_reset_before"]


@pytest.mark.parametrize("name", BF16_NAMES)
def test_bfloat16_keeps_float32_carry(name):
  cell, params, _ = setup(name)
  xs = random_xs()
  mask = jnp.arange(T) < 6
  run = jax.jit(lambda p, x: jaxrnn.scan(cell, p, x, mask=mask))
  carry32, ys32 = run(params, xs)
  params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(cell.initial_carry(params16)))
  carry16, ys16 = run(params16, xs.astype(jnp.bfloat16))
  for a in jax.tree.leaves(carry16):
    assert a.dtype == jnp.float32
  # bfloat16 has an 8-bit mantissa (rounding ~4e-3); measured errors are ~2e-3.
  np.testing.assert_allclose(np.asarray(ys16, np.float32), ys32, atol=2e-2, rtol=2e-2)
  for a, b in zip(jax.tree.leaves(carry16), jax.tree.leaves(carry32)):
    np.testing.assert_allclose(a, b, atol=2e-2, rtol=2e-2)
  assert not np.allclose(ys32, 0.0)   # the comparison had something to compare


@pytest.mark.parametrize("name", ["rnn_tanh", "peephole_proj", "gru_reset_before", "lstm", "gru"])
def test_compute_dtype_runs_bfloat16_matmuls_on_float32_params(name):
  # dtype=bfloat16 (Flax's dtype) with float32 params: the same numbers as
  # bfloat16 params, float32 gradients, a float32 carry, bfloat16 products.
  mixed = library_cell(name, H, dtype=jnp.bfloat16)
  low = library_cell(name, H, param_dtype=jnp.bfloat16)
  params = random_params(mixed, 0)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
  params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  xs = random_xs(shape=(2, T, I))
  mask = jnp.arange(T) < jnp.array([[T], [4]])
  for run in (lambda c, p: jaxrnn.scan_batch(c, p, xs, mask=mask),   # kernel where there is one
              lambda c, p: jax.vmap(lambda x, m: jaxrnn.scan(c, p, x, mask=m))(xs, mask)):
    got = jax.jit(lambda p: run(mixed, p))(params)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got))
    want = jax.jit(lambda p: run(low, p))(params16)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(run(mixed, p)[1] ** 2)))(params)
    grads16 = jax.jit(jax.grad(lambda p: jnp.sum(run(low, p)[1] ** 2)))(params16)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads16), strict=True):
      assert a.dtype == jnp.float32
      np.testing.assert_allclose(a, np.asarray(b, np.float32), atol=2e-2, rtol=2e-2)
    # Every product's operands, as the compiled program has them.
    hlo = jax.jit(lambda p: run(mixed, p)).lower(params).as_text()
    operands = re.findall(r"dot_general.*?: \((tensor<[^)]*)\) ->", hlo)
    assert operands and all(t.count("bf16>") == 2 for t in operands), operands
  for bad in (jnp.int32, "bf16"):      # named by its constructor, jaxrnn.lstm etc.
    with pytest.raises(ValueError, match=r"jaxrnn\.\w+: dtype=.*; expected a floating dtype"):
      library_cell(name, H, dtype=bad)
  if name == "lstm":   # cuDNN computes in float32 only
    with pytest.raises(ValueError, match="use_cudnn=True runs JAX's cuDNN LSTM"):
      jaxrnn.lstm(H, dtype="bfloat16", use_cudnn=True)


# ----------------------------------------------------------------------------
# Initialisers and layouts.


INITS = {}


def init(name, **kwargs):
  """Variant ``name``'s initial params, cached: the init tests share them.

  Under jit, one compile instead of one per eager op; every random draw
  still costs a compile, so the layout tests pass ``CHEAP`` initialisers.
  """
  key = (name, tuple(sorted(kwargs.items(), key=str)))
  if key not in INITS:
    cell = library_cell(name, H, **kwargs)
    INITS[key] = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), I)
  return INITS[key]


# Constant weights: the layout and bias tests need no random draws.
CHEAP = dict(kernel_init=jax.nn.initializers.ones,
             recurrent_init=jax.nn.initializers.ones)


def gate_blocks(w, n):
  return np.split(np.asarray(w, np.float32), n, axis=-1)


def assert_orthogonal(w):
  w = np.asarray(w, np.float64)
  np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-5)


# name: (gate blocks, index of the forget block, peepholes present, FGR size S)
LSTM_LAYOUTS = {
    "lstm": (4, 1, "", 0),
    "nig": (3, 0, "", 0),
    "cifg": (3, 0, "", 0),
    "nfg": (3, None, "", 0),
    "peephole_cifg_fgr": (3, 0, "fo", 2 * H),
    "peephole_nfg_nog": (2, None, "i", 0),
    "nig_fgr_proj_noaf": (3, 0, "", 2 * H),
}


@pytest.mark.parametrize("name", LSTM_LAYOUTS)
def test_lstm_init_layout(name):
  """Gate blocks present, biases, peepholes, FGR and projection shapes."""
  n_gates, forget_block, peepholes, S = LSTM_LAYOUTS[name]
  params = init(name, **CHEAP)
  assert jax.tree.structure(params) == jax.tree.structure(
      jax.eval_shape(lambda key: library_cell(name, H).init(key, I), jax.random.key(0)))
  P = VARIANTS[name][1].get("proj_size", H)
  assert params.w_x.shape == (I, n_gates * H)
  assert params.w_h.shape == (P, n_gates * H)
  assert params.b.shape == (n_gates * H,)
  # Forget-gate bias 1.0 (Jozefowicz et al. 2015), every other bias 0.
  for k, b in enumerate(gate_blocks(params.b, n_gates)):
    np.testing.assert_array_equal(b, 1.0 if k == forget_block else 0.0)
  for gate in "ifo":
    p = getattr(params, "p_" + gate)
    if gate in peepholes:
      assert p.shape == (H,) and np.all(np.asarray(p) == 0.0)
    else:
      assert p is None
  if S:
    assert params.w_gates.shape == (S, S)
  else:
    assert params.w_gates is None
  if P != H:
    assert params.w_proj.shape == (H, P)
    carry = library_cell(name, H).initial_carry(params)
    assert carry.h.shape == (P,) and carry.c.shape == (H,)
  else:
    assert params.w_proj is None


def test_lstm_forget_bias_override():
  params = init("lstm", forget_bias=2.5, **CHEAP)
  i, f, g, o = gate_blocks(params.b, 4)
  np.testing.assert_array_equal(f, 2.5)
  for b in (i, g, o):
    np.testing.assert_array_equal(b, 0.0)


def test_lstm_forget_bias_adds_to_bias_init():
  # "forget_bias: added to the forget gate's initial bias": on top of what
  # bias_init gives (zeros by default, which hides a set in place of an add).
  params = init("lstm", forget_bias=2.5, bias_init=jax.nn.initializers.ones, **CHEAP)
  i, f, g, o = gate_blocks(params.b, 4)
  np.testing.assert_array_equal(f, 3.5)
  for b in (i, g, o):
    np.testing.assert_array_equal(b, 1.0)


# The GRU's blocks come from the same `stacked_init` as the LSTM's.
@pytest.mark.parametrize("name, n_gates", [("lstm", 4), ("peephole_cifg_fgr", 3),
                                           ("rnn_tanh", 1)])
def test_recurrent_blocks_orthogonal(name, n_gates):
  """Each gate's recurrent block is orthogonal on its own, an independent draw."""
  params = init(name)
  blocks = gate_blocks(params.w_h, n_gates)
  for w in blocks:
    assert_orthogonal(w)
  if n_gates > 1:
    assert not np.allclose(blocks[0], blocks[1])
  if name == "peephole_cifg_fgr":
    assert_orthogonal(params.w_gates)
  assert not np.allclose(params.w_x, 0.0)


@pytest.mark.parametrize("name", ["gru", "gru_reset_before"])
def test_gru_init_layout(name):
  params = init(name, **CHEAP)
  assert params.w_x.shape == (I, 3 * H) and params.w_h.shape == (H, 3 * H)
  np.testing.assert_array_equal(params.b, np.zeros(3 * H))
  if name == "gru":
    np.testing.assert_array_equal(params.b_hn, np.zeros(H))
  else:
    assert params.b_hn is None


def test_simple_rnn_init_layout():
  params = init("rnn_tanh", **CHEAP)
  assert params.w_x.shape == (I, H) and params.w_h.shape == (H, H)
  np.testing.assert_array_equal(params.b, np.zeros(H))


@pytest.mark.parametrize("name", ["rnn_tanh", "peephole_cifg_fgr", "nig_fgr_proj_noaf",
                                  "gru", "gru_reset_before"])
def test_param_dtype_honoured(name):
  params = init(name, param_dtype=jnp.bfloat16, **CHEAP)
  leaves = jax.tree.leaves(params)
  assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves)
  carry = library_cell(name, H).initial_carry(params)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(carry))


def test_bfloat16_default_init():
  """Orthogonal init has no bfloat16 QR: it is drawn in float32 and rounded."""
  params = init("rnn_tanh", param_dtype=jnp.bfloat16)
  assert params.w_h.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(params.w_h, np.float32),
      np.asarray(init("rnn_tanh").w_h.astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("kwargs", [
    dict(coupled_input_forget=True, forget_gate=False),
    dict(coupled_input_forget=True, input_gate=False),
])
def test_invalid_switches_raise(kwargs):
  with pytest.raises(ValueError, match="coupled_input_forget"):
    jaxrnn.lstm(H, **kwargs)


@pytest.mark.parametrize("make", [jaxrnn.simple_rnn, jaxrnn.lstm, jaxrnn.gru,
                                  jaxrnn.peephole_lstm])
def test_use_bias_false_makes_no_biases_and_refuses_params_with_them(make):
  params = make(H, use_bias=False).init(jax.random.key(0), I)
  assert params.b is None and getattr(params, "b_hn", None) is None
  with_bias = make(H).init(jax.random.key(0), I)
  for cell, wrong in ((make(H, use_bias=False), with_bias), (make(H), params)):
    with pytest.raises(ValueError, match=r"\.b\b.*made by another cell or variant"):
      jaxrnn.scan(cell, wrong, random_xs())
  with pytest.raises(ValueError, match="use_bias=False leaves the cell without biases"):
    jaxrnn.lstm(H, use_bias=False, forget_bias=1.0)
  with pytest.raises(ValueError, match=r"use_bias=None; expected True or False"):
    make(H, use_bias=None)
  # Without biases the two GRUs' params would be the same leaves: refused,
  # so that no export can take one for the other.
  with pytest.raises(ValueError, match="reset_after=False with use_bias=False is not built"):
    jaxrnn.gru(H, reset_after=False, use_bias=False)
  # A mismatch in biases alone is named as such.
  with pytest.raises(ValueError, match=r"only biases differ: one side was built with use_bias=False"):
    jaxrnn.scan(make(H), params, random_xs())


def test_which_kernel_other_activations_run():
  # The LSTM's hand-written kernel hard-codes sigmoid gates and tanh; the
  # GRU's takes any of jax.nn's element-wise functions, in both forms.
  from jaxrnn._cells.gru_batched import gru_batch_kernel
  from jaxrnn._cells.lstm_batched import lstm_batch_kernel
  assert jaxrnn.lstm(H, gate_activation="sigmoid").batched is lstm_batch_kernel
  assert jaxrnn.gru(H, activation="tanh", gate_activation="sigmoid").batched is gru_batch_kernel
  hard = jaxrnn.lstm(H, gate_activation="hard_sigmoid").batched
  assert hard is not None and hard is not lstm_batch_kernel       # the generic kernel
  for reset_after in (True, False):
    for act, gate in (("tanh", "sigmoid"), ("relu", "sigmoid"), ("tanh", "hard_sigmoid")):
      kernel = jaxrnn.gru(H, reset_after=reset_after, activation=act,
                          gate_activation=getattr(jax.nn, gate)).batched
      if reset_after and (act, gate) == ("tanh", "sigmoid"):
        continue                                                  # checked above
      assert kernel.func is gru_batch_kernel and kernel.takes_recurrent_mask
      assert kernel.keywords == dict(reset_after=reset_after, activation=getattr(jax.nn, act),
                                     gate_activation=getattr(jax.nn, gate))
    linear = jaxrnn.gru(H, reset_after=reset_after, activation="linear").batched
    assert linear.keywords["activation"] is jax.nn.identity      # Keras' "linear"
    # A function of one's own might mix elements: vmap of scan.
    assert jaxrnn.gru(H, reset_after=reset_after, activation=lambda z: jnp.tanh(z)).batched is None
  params = jaxrnn.gru(H).init(jax.random.key(0), 3)           # and the kernel's own check
  with pytest.raises(ValueError, match=r"activation=<function .*<lambda> .*is not one of jax.nn's"):
    gru_batch_kernel(params, jnp.zeros((2, H)), jnp.ones((2, 4, 3)), None, False, 1,
                     activation=lambda z: jnp.tanh(z))
  for make, name in ((jaxrnn.lstm, "gate_activation"), (jaxrnn.gru, "activation")):
    with pytest.raises(ValueError, match=f"{name}='hard_sigmod'"):
      make(H, **{name: "hard_sigmod"})


def test_oracle_catches_a_wrong_gate():
  """The oracle is sharp enough: swapping the i and f blocks is noticed."""
  cell, params, ref = setup("peephole")
  i, f, g, o = jnp.split(params.w_x, 4, axis=-1)
  swapped = params._replace(w_x=jnp.concatenate([f, i, g, o], axis=-1))
  xs = random_xs()
  _, want = numpy_oracle.scan(ref, params, np.asarray(xs, np.float64))
  _, got = jaxrnn.scan(cell, swapped, xs)
  assert not np.allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("name", ["gru_reset_before", "lstm"])
def test_a_reset_on_a_masked_step_after_valid_ones_is_a_no_op(name):
  """Forward from a nonzero carry, the reset at t=5 falls on padding after
  the valid steps 0..4: the final carry is step 4's, not the initial one.

  In `scenarios` the masked reset is read (reversed) before any valid step,
  where the carry is still the initial one, so a reset that took effect
  there would go unseen. Both drivers: the plain step loop (Cho's GRU, an
  unfused LSTM) and the fused kernel.
  """
  cell, params, ref = setup(name)
  xs = random_xs()
  carry0 = random_carry(ref, params, 11)
  mask, resets = np.arange(T) < 5, np.arange(T) == 5
  want_carry, want_ys = numpy_oracle.scan(ref, params, np.asarray(xs, np.float64),
                                          carry=carry0, mask=mask, resets=resets)
  for run_cell in (cell, jaxrnn.unfused(cell)):
    run = jax.jit(lambda p, x, c, run_cell=run_cell: jaxrnn.scan(
        run_cell, p, x, carry=c, mask=jnp.asarray(mask), resets=jnp.asarray(resets)))
    got_carry, got_ys = run(params, xs, from_dict(carry0, cell.initial_carry(params)))
    np.testing.assert_allclose(np.asarray(got_ys), want_ys, **TOL)
    assert_carry_close(got_carry, want_carry)
