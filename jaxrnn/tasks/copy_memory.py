"""The copy memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

Lives here: `copy_memory`, the generator, and `copy_memory_baseline`, the
cross-entropy of the memoryless strategy. Not here: models and training.

Alphabet ``{0, ..., 9}``: 1..8 are data, 0 is blank, 9 is the delimiter.
An input of ``T + 20`` steps is ten data symbols, ``T - 1`` blanks, the
delimiter, and ten blanks; the target is ``T + 10`` blanks and then the
ten data symbols. The model must output blanks while it waits and then
copy the ten symbols in order, T steps after it saw them::

  input   a b c d e f g h i j 0 0 ... 0 9 0 0 0 0 0 0 0 0 0 0
  target  0 0 0 0 0 0 0 0 0 0 0 0 ... 0 0 a b c d e f g h i j

Predicting blanks, then a uniform guess over the 8 data symbols for the
last ten steps, scores a mean cross-entropy per step of
``10 log(8) / (T + 20)``: the baseline a model must beat.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

COPY_VOCAB = 10   # 0 blank, 1..8 data, 9 delimiter
COPY_SYMBOLS = 10  # how many symbols are copied


def copy_memory(key: jax.Array, batch_size: int, length: int
                ) -> tuple[jax.Array, jax.Array]:
  """A batch of the copy task: ``(xs [B, T+20, 10], ys int32[B, T+20])``.

  ``xs`` is the one-hot input; ``ys`` the target symbol at every step
  (cross-entropy over all steps). ``length`` = T >= 1 is the delay between
  the last data symbol and the delimiter plus one, as in Arjovsky et al.

  >>> import jax
  >>> xs, ys = copy_memory(jax.random.key(0), batch_size=2, length=5)
  >>> xs.shape, ys.shape
  ((2, 25, 10), (2, 25))
  >>> tokens = xs.argmax(-1)
  >>> bool((ys[:, -10:] == tokens[:, :10]).all()), int(tokens[0, 14])
  (True, 9)
  """
  if length < 1:
    raise ValueError(f"jaxrnn.tasks.copy_memory: length={length}; expected "
                     f"a delay T >= 1.")
  data = jax.random.randint(key, (batch_size, COPY_SYMBOLS), 1, 9)
  blanks = lambda n: jnp.zeros((batch_size, n), data.dtype)
  delimiter = jnp.full((batch_size, 1), COPY_VOCAB - 1, data.dtype)
  tokens = jnp.concatenate(
      [data, blanks(length - 1), delimiter, blanks(COPY_SYMBOLS)], axis=1)
  ys = jnp.concatenate([blanks(length + COPY_SYMBOLS), data], axis=1)
  return jax.nn.one_hot(tokens, COPY_VOCAB), ys


def copy_memory_baseline(length: int) -> float:
  """``10 log(8) / (T + 20)``: mean cross-entropy per step with no memory.

  >>> round(copy_memory_baseline(100), 4)
  0.1733
  """
  return COPY_SYMBOLS * math.log(8) / (length + 2 * COPY_SYMBOLS)
