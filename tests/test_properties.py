"""Properties of masking, reversal, bidirectional runs and vmap, by hypothesis.

Shapes are fixed (B sequences of T steps) and the data varies: lengths,
masks, resets and inputs are drawn as values, so each jitted function
compiles once and serves every example. The references run one sequence at
a time, truncated or flipped, and compile once per length at most.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import jaxrnn

B, T, I, H = 3, 6, 3, 4
CELL = jaxrnn.lstm(H)
PLAIN_CELL = jaxrnn.gru(H, reset_after=False)   # no fused kernel: the plain loop
BIDIRECTIONAL = jaxrnn.bidirectional(CELL, PLAIN_CELL)

PROPERTY = settings(max_examples=20, deadline=None, derandomize=True)


def random_params(layer, seed):
  """Params of ``layer.init``'s shapes, every leaf random; drawn with NumPy."""
  shapes = jax.eval_shape(lambda key: layer.init(key, I), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


PARAMS = random_params(CELL, 0)
PLAIN_PARAMS = random_params(PLAIN_CELL, 1)
BIDIRECTIONAL_PARAMS = (PARAMS, PLAIN_PARAMS)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def inputs(seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, I)), jnp.float32)


def prefix_masks(lengths):
  return jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]


# Batched runs: one compile each.
MASKED = jax.jit(jax.vmap(
    lambda x, m: jaxrnn.scan(CELL, PARAMS, x, mask=m)))
MASKED_REVERSE = jax.jit(jax.vmap(
    lambda x, m: jaxrnn.scan(CELL, PARAMS, x, mask=m, reverse=True)))
BIDIRECTIONAL_MASKED = jax.jit(jax.vmap(
    lambda x, m: BIDIRECTIONAL.apply(BIDIRECTIONAL_PARAMS, x, mask=m)))
BATCHED_PLAIN = jax.jit(jax.vmap(
    lambda x, c, m, r: jaxrnn.scan(PLAIN_CELL, PLAIN_PARAMS, x, carry=c, mask=m, resets=r)))

# One sequence at a time: compiles once per length.
ONE = jax.jit(lambda x: jaxrnn.scan(CELL, PARAMS, x))
ONE_PLAIN = jax.jit(lambda x: jaxrnn.scan(PLAIN_CELL, PLAIN_PARAMS, x))
ONE_PLAIN_FULL = jax.jit(
    lambda x, c, m, r: jaxrnn.scan(PLAIN_CELL, PLAIN_PARAMS, x, carry=c, mask=m, resets=r))

LENGTHS = st.lists(st.integers(0, T), min_size=B, max_size=B)
SEEDS = st.integers(0, 2**16)


@PROPERTY
@given(lengths=LENGTHS, seed=SEEDS)
def test_masking_equals_running_the_truncated_sequence(lengths, seed):
  xs = inputs(seed)
  carry, ys = MASKED(xs, prefix_masks(lengths))
  for b, length in enumerate(lengths):
    want_carry, want_ys = ONE(xs[b, :length])
    assert_trees_close(jax.tree.map(lambda a: a[b], carry), want_carry)
    assert_trees_close(ys[b, :length], want_ys)
    assert (ys[b, length:] == 0.0).all()


@PROPERTY
@given(masks=st.lists(st.lists(st.booleans(), min_size=T, max_size=T),
                      min_size=B, max_size=B), seed=SEEDS)
def test_a_mask_with_holes_equals_running_only_the_valid_steps(masks, seed):
  xs, masks = inputs(seed), np.array(masks)
  carry, ys = MASKED(xs, jnp.asarray(masks))
  for b, mask in enumerate(masks):
    want_carry, want_ys = ONE(xs[b][mask])
    assert_trees_close(jax.tree.map(lambda a: a[b], carry), want_carry)
    assert_trees_close(ys[b][mask], want_ys)
    assert (ys[b][~mask] == 0.0).all()


@PROPERTY
@given(lengths=LENGTHS, seed=SEEDS)
def test_reverse_equals_flipping_the_valid_part(lengths, seed):
  xs = inputs(seed)
  carry, ys = MASKED_REVERSE(xs, prefix_masks(lengths))
  for b, length in enumerate(lengths):
    want_carry, want_ys = ONE(xs[b, :length][::-1])
    assert_trees_close(jax.tree.map(lambda a: a[b], carry), want_carry)
    assert_trees_close(ys[b, :length], want_ys[::-1])
    assert (ys[b, length:] == 0.0).all()


@PROPERTY
@given(lengths=LENGTHS, seed=SEEDS)
def test_bidirectional_equals_a_forward_and_a_flipped_run_merged(lengths, seed):
  xs = inputs(seed)
  (fw_carry, bw_carry), ys = BIDIRECTIONAL_MASKED(xs, prefix_masks(lengths))
  assert ys.shape == (B, T, 2 * H)
  for b, length in enumerate(lengths):
    want_fw_carry, fw = ONE(xs[b, :length])
    want_bw_carry, bw = ONE_PLAIN(xs[b, :length][::-1])
    assert_trees_close(ys[b, :length], jnp.concatenate([fw, bw[::-1]], axis=-1))
    assert (ys[b, length:] == 0.0).all()
    assert_trees_close(jax.tree.map(lambda a: a[b], fw_carry), want_fw_carry)
    assert_trees_close(bw_carry[b], want_bw_carry)


@PROPERTY
@given(flags=st.lists(st.lists(st.sampled_from("vrm"), min_size=T, max_size=T),
                      min_size=B, max_size=B), seed=SEEDS)
def test_vmap_of_scan_equals_a_python_loop_over_examples(flags, seed):
  # v: a valid step, r: a valid step that starts an episode, m: masked.
  flags = np.array(flags)
  masks, resets = jnp.asarray(flags != "m"), jnp.asarray(flags == "r")
  xs = inputs(seed)
  carries = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((B, H)),
                        jnp.float32)
  carry, ys = BATCHED_PLAIN(xs, carries, masks, resets)
  for b in range(B):
    want = ONE_PLAIN_FULL(xs[b], carries[b], masks[b], resets[b])
    assert_trees_close((carry[b], ys[b]), want)
