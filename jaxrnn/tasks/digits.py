"""Sequential digits: 8x8 handwritten digits read one pixel per step.

Lives here: `sequential_digits`, which loads scikit-learn's ``load_digits``
(1797 images of 8x8 pixels, shipped with scikit-learn: no download) as
sequences of 64 steps, split into train and test sets. Not here: models
and training.

The small cousin of pixel-by-pixel MNIST (Le et al. 2015): the class is
read at the last step, and strokes in the top rows are 50 steps away.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

DIGITS_LENGTH = 64   # 8 x 8 pixels, row by row
DIGITS_CLASSES = 10


class Split(NamedTuple):
  xs: np.ndarray   # float32[N, 64, 1], pixels scaled to [0, 1]
  y: np.ndarray    # int32[N], the digit


def sequential_digits(key: jax.Array, test_fraction: float = 0.2
                      ) -> tuple[Split, Split]:
  """``(train, test)``: the digits as ``[N, 64, 1]`` pixel sequences.

  Pixels (0..16 in scikit-learn) are divided by 16 and read row by row.
  The examples are shuffled by ``key`` before the split, so the split is a
  pure function of the key.

  Args:
    key: a PRNG key for the shuffle.
    test_fraction: the share of the 1797 images held out.

  >>> import jax
  >>> train, test = sequential_digits(jax.random.key(0))
  >>> train.xs.shape, test.xs.shape, sorted(set(train.y.tolist()))
  ((1438, 64, 1), (359, 64, 1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"jaxrnn.tasks.sequential_digits: test_fraction="
                     f"{test_fraction}; expected a fraction in (0, 1).")
  try:
    from sklearn.datasets import load_digits
  except ImportError as e:  # an optional dependency
    raise ImportError(
        "jaxrnn.tasks.sequential_digits needs scikit-learn, which ships the "
        "digits. Fix: pip install 'jaxrnn[train]'.") from e
  digits = load_digits()
  xs = (digits.images.reshape(-1, DIGITS_LENGTH, 1) / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.asarray(jax.random.permutation(key, len(y)))
  n_test = int(round(test_fraction * len(y)))
  test, train = order[:n_test], order[n_test:]
  return Split(xs[train], y[train]), Split(xs[test], y[test])
