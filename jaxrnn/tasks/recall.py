"""Long-delay recall: name, at the end, the symbol seen at the start.

Lives here: `recall`, the generator. Not here: models and training.

Colah's example of a long-term dependency: "I grew up in France ... I speak
fluent *French*". The answer depends on the first step of the sequence
only; everything after it is irrelevant. Each example is ``T + 1`` one-hot
steps:

* step 0: the symbol ``s``, one of ``num_symbols`` (the country);
* steps 1..T: distractors, drawn uniformly from ``num_distractors`` other
  symbols (the rest of the story);

and the target, read at the last step, is ``s``. Guessing scores accuracy
``1 / num_symbols`` and cross-entropy ``log(num_symbols)``. Inputs have
``num_symbols + num_distractors`` channels (symbols first).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def recall(key: jax.Array, batch_size: int, length: int, *,
           num_symbols: int = 8, num_distractors: int = 8
           ) -> tuple[jax.Array, jax.Array]:
  """A batch of the recall task: ``(xs [B, T+1, S+D], y int32[B])``.

  ``xs[:, 0]`` is the one-hot of the answer ``y`` in ``[0, S)``;
  ``xs[:, 1:]`` are one-hots of distractors in ``[S, S+D)``. The delay
  ``length`` = T is the number of distractor steps between the symbol and
  the question. A pure function of ``key``.

  Args:
    key: a PRNG key.
    batch_size: B.
    length: T >= 0, the number of distractor steps.
    num_symbols: S, the number of answers (classes).
    num_distractors: D.

  >>> import jax
  >>> xs, y = recall(jax.random.key(0), batch_size=3, length=5)
  >>> xs.shape, y.shape
  ((3, 6, 16), (3,))
  >>> bool((xs[:, 0].argmax(-1) == y).all())    # the answer is the first symbol
  True
  >>> bool((xs[:, 1:].argmax(-1) >= 8).all())   # later steps are distractors
  True
  """
  if length < 0 or num_symbols < 2 or num_distractors < 1:
    raise ValueError(
        f"jaxrnn.tasks.recall: length={length}, num_symbols={num_symbols}, "
        f"num_distractors={num_distractors}; expected length >= 0, "
        f"num_symbols >= 2 and num_distractors >= 1.")
  k_symbol, k_noise = jax.random.split(key)
  y = jax.random.randint(k_symbol, (batch_size,), 0, num_symbols)
  noise = jax.random.randint(k_noise, (batch_size, length), num_symbols,
                             num_symbols + num_distractors)
  tokens = jnp.concatenate([y[:, None], noise], axis=1)
  return jax.nn.one_hot(tokens, num_symbols + num_distractors), y
