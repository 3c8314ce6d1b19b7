"""Gradients through `jaxrnn.scan` equal finite differences, for every cell.

`jax.test_util.check_grads` in float64 compares reverse mode (and forward
mode) against central differences in random directions, w.r.t. params and
inputs, with a mask and a reset, for every variant of `numpy_oracle.VARIANTS`.
Built-in cells differentiate through a hand-written JVP (`jaxrnn.fused_cell`),
so this is the check that its rule is the derivative of its loop.

float64 is switched on per test with the `jax.enable_x64` context manager,
so it does not leak into other test files.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from numpy_oracle import VARIANTS, library_cell

H, I, T = 2, 3, 4


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def random_params(cell, seed):
  """float64 params with init's structure and every leaf random, none zero."""
  shapes = jax.eval_shape(lambda key: cell.init(key, I), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype),
                      shapes)


# Every other variant runs in reverse, so both directions are differentiated
# in each family at no extra cost.
CASES = [(name, k % 2 == 1) for k, name in enumerate(VARIANTS)]
# Forward mode costs another compile per variant, and `test_fused.py` already
# holds every cell's forward mode to the plain loop's: here, one per family
# and the LSTMs with the most parts.
FORWARD_MODE = ("rnn_relu", "lstmp", "peephole_cifg_fgr", "nig_fgr_proj_noaf",
                "gru", "gru_reset_before")


@pytest.mark.parametrize("name, reverse", CASES,
                         ids=[f"{n}-{'reverse' if r else 'forward'}" for n, r in CASES])
def test_grads_match_finite_differences(name, reverse):
  cell = library_cell(name, H, param_dtype=jnp.float64)
  params = random_params(cell, 0)
  assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
  xs = jnp.asarray(np.random.default_rng(1).normal(size=(T, I)))
  mask = jnp.arange(T) < 3
  resets = jnp.arange(T) == 1
  # Reversed, the valid part runs t = 2, 1, 0 with a reset before t = 1.

  @jax.jit
  def f(params, xs):
    carry, ys = jaxrnn.scan(cell, params, xs, mask=mask, resets=resets,
                            reverse=reverse)
    return carry, ys

  modes = ("fwd", "rev") if name in FORWARD_MODE else ("rev",)
  check_grads(f, (params, xs), order=1, modes=modes)


def test_check_grads_catches_a_wrong_derivative():
  """The check is sharp enough to fail a cell whose JVP rule is off."""
  cell = library_cell("lstm", H, param_dtype=jnp.float64)
  params = random_params(cell, 0)
  xs = jnp.asarray(np.random.default_rng(1).normal(size=(T, I)))

  @jax.custom_jvp
  def leaky_tanh(z):
    return jnp.tanh(z)

  # The derivative of tanh is 1 - tanh^2; 1.1 - tanh^2 is a small slip.
  leaky_tanh.defjvp(lambda p, t: (jnp.tanh(p[0]), (1.1 - jnp.tanh(p[0]) ** 2) * t[0]))
  wrong = jaxrnn.lstm(H, input_activation=leaky_tanh, param_dtype=jnp.float64)
  with pytest.raises(AssertionError):
    check_grads(jax.jit(lambda p, x: jaxrnn.scan(wrong, p, x)[1]), (params, xs),
                order=1, modes=("rev",))
  # The same check passes with the true derivative.
  check_grads(jax.jit(lambda p, x: jaxrnn.scan(cell, p, x)[1]), (params, xs),
              order=1, modes=("rev",))

