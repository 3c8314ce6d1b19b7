"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4).

Lives here: `adding`, the generator, and the figures that judge a model on
it (`ADDING_BASELINE_MSE`, `ADDING_SOLVED_MSE`). Not here: models and
training (`jaxrnn.tasks.model`, `jaxrnn.train`).

Each example is a sequence of T pairs ``x_t = (v_t, m_t)``: ``v_t`` is drawn
uniformly from [0, 1] and the marker ``m_t`` is 1 at exactly two steps, one
in each half of the sequence (the layout of Le et al. 2015 and Arjovsky et
al. 2016), 0 elsewhere. The target is the sum of the two marked values:

.. math:: y = \\sum_t m_t v_t, \\qquad 0 \\le y \\le 2

The answer is read at the last step, so the first marked value must be kept
for at least T/2 steps through T/2 distractors: the longer T, the longer the
dependency. Always predicting 1.0 (the mean of y) scores the variance of a
sum of two U(0, 1) draws, ``2/12 = 0.167``; a model that scores an MSE
under 0.01 has solved the task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(u1 + u2) for u ~ U(0, 1): the constant predictor 1.0
ADDING_SOLVED_MSE = 0.01         # the usual threshold (Le et al. 2015: "solved")


def adding(key: jax.Array, batch_size: int, length: int
           ) -> tuple[jax.Array, jax.Array]:
  """A batch of the adding problem: ``(xs [B, T, 2], y [B])``.

  ``xs[..., 0]`` holds the values ``v_t ~ U(0, 1)``, ``xs[..., 1]`` the
  markers: one 1 at a step drawn uniformly from ``[0, T//2)`` and one at a
  step drawn from ``[T//2, T)``. ``y = sum_t v_t m_t``. A pure function of
  ``key``; ``batch_size`` and ``length`` are static under `jax.jit`.

  Args:
    key: a PRNG key.
    batch_size: B.
    length: T, at least 2.

  >>> import jax
  >>> xs, y = adding(jax.random.key(0), batch_size=4, length=10)
  >>> xs.shape, y.shape
  ((4, 10, 2), (4,))
  >>> xs[..., 1].sum(axis=1).tolist()           # exactly two markers each
  [2.0, 2.0, 2.0, 2.0]
  >>> bool(jnp.allclose(y, (xs[..., 0] * xs[..., 1]).sum(axis=1)))
  True
  """
  if length < 2:
    raise ValueError(f"jaxrnn.tasks.adding: length={length}; the two markers "
                     f"go in different halves, so length must be at least 2.")
  k_values, k_first, k_second = jax.random.split(key, 3)
  half = length // 2
  values = jax.random.uniform(k_values, (batch_size, length))
  first = jax.random.randint(k_first, (batch_size,), 0, half)
  second = jax.random.randint(k_second, (batch_size,), half, length)
  steps = jnp.arange(length)
  markers = ((steps == first[:, None]) | (steps == second[:, None])
             ).astype(values.dtype)
  xs = jnp.stack([values, markers], axis=-1)
  return xs, (values * markers).sum(axis=1)
