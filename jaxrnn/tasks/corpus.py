"""A character corpus that needs no download, and its encoding.

Lives here: `reference_text` (the corpus), `Vocab` (characters <-> ids),
`split_tokens` (train/valid/test). Not here: the layout for truncated
backpropagation through time (`jaxrnn.train.windows`), the model and the
training loop (`benchmarks/char_lm.py`, `jaxrnn.train`).

The corpus is the Python language reference as every CPython installation
ships it: ``pydoc_data.topics``, the text ``help()`` shows (79 topics, about
465,000 characters of English prose and grammar in CPython 3.11; PSF
licence). Topics are joined in sorted order, so the text is fixed for a
given Python version.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def reference_text() -> str:
  """The Python language reference shipped in the standard library.

  >>> text = reference_text()
  >>> len(text) > 100_000, text.count("statement") > 100
  (True, True)
  """
  from pydoc_data.topics import topics
  return "\n\n".join(topics[name] for name in sorted(topics))


class Vocab(NamedTuple):
  """Characters and their ids: ``chars[i]`` has id ``i``.

  >>> vocab = Vocab.from_text("hello world")
  >>> vocab.chars, len(vocab)
  (' dehlorw', 8)
  >>> ids = vocab.encode("hello")
  >>> ids.tolist(), vocab.decode(ids)
  ([3, 2, 4, 4, 5], 'hello')
  """

  chars: str

  @classmethod
  def from_text(cls, text: str) -> "Vocab":
    """The sorted set of characters in ``text`` (a str)."""
    if not isinstance(text, str):
      raise TypeError(
          f"jaxrnn.tasks.Vocab.from_text: text is a {type(text).__name__}; expected "
          f"a str, whose characters become the tokens. Fix: for a vocabulary of "
          f"words, words = sorted(set(tokens)); ids = {{w: i for i, w in "
          f"enumerate(words)}}, with '<unk>' among them for unseen words.")
    return cls("".join(sorted(set(text))))

  def __len__(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """``int32[len(text)]`` ids; raises on a character not in the vocabulary."""
    index = {c: i for i, c in enumerate(self.chars)}
    try:
      return np.fromiter((index[c] for c in text), np.int32, len(text))
    except KeyError as e:
      raise ValueError(
          f"jaxrnn.tasks.Vocab.encode: character {e.args[0]!r} is not in the "
          f"vocabulary of {len(self)} characters. Fix: build the vocabulary "
          f"from a text that contains it (Vocab.from_text).") from None

  def decode(self, ids) -> str:
    """The text of a sequence of ids; raises on an id outside ``[0, len(self))``."""
    ids = np.asarray(ids).reshape(-1)
    bad = ids[(ids < 0) | (ids >= len(self))]
    if bad.size:
      raise ValueError(
          f"jaxrnn.tasks.Vocab.decode: id {int(bad[0])} is outside this "
          f"vocabulary's 0..{len(self) - 1}. Fix: decode ids this vocabulary "
          f"made (a model's output size must be len(vocab)).")
    return "".join(self.chars[int(i)] for i in ids)


def split_tokens(tokens: np.ndarray, valid_fraction: float = 0.05,
                 test_fraction: float = 0.05
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Contiguous ``(train, valid, test)`` pieces of a token stream, in order.

  >>> train, valid, test = split_tokens(np.arange(100), 0.1, 0.2)
  >>> len(train), int(valid[0]), int(test[0])
  (70, 70, 80)
  """
  if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
    raise ValueError(
        f"jaxrnn.tasks.split_tokens: valid_fraction={valid_fraction} and "
        f"test_fraction={test_fraction}; each must be 0 or more and together "
        f"under 1, so that the pieces do not overlap and some text is left "
        f"to train on.")
  n = len(tokens)
  n_valid, n_test = int(n * valid_fraction), int(n * test_fraction)
  n_train = n - n_valid - n_test
  return (tokens[:n_train], tokens[n_train:n_train + n_valid],
          tokens[n_train + n_valid:])
