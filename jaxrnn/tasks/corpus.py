"""A character corpus that needs no download, its encoding, and TBPTT streams.

Lives here: `reference_text` (the corpus), `Vocab` (characters <-> ids),
`split_tokens` (train/valid/test), `streams` and `windows` (the layout for
truncated backpropagation through time). Not here: the model and the
training loop (`benchmarks/char_lm.py`, `jaxrnn.train`).

The corpus is the Python language reference as every CPython installation
ships it: ``pydoc_data.topics``, the text ``help()`` shows (79 topics, about
465,000 characters of English prose and grammar in CPython 3.11; PSF
licence). Topics are joined in sorted order, so the text is fixed for a
given Python version.

TBPTT layout (Zaremba et al. 2014): the token stream is cut into B parallel
streams ``[B, N]``; training reads consecutive windows of W steps from all
streams at once, and the carry at the end of window k is the initial carry
of window k+1 (with the gradient stopped between windows).
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
    """The sorted set of characters in ``text``."""
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
    """The text of a sequence of ids."""
    return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def split_tokens(tokens: np.ndarray, valid_fraction: float = 0.05,
                 test_fraction: float = 0.05
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Contiguous ``(train, valid, test)`` pieces of a token stream, in order.

  >>> train, valid, test = split_tokens(np.arange(100), 0.1, 0.2)
  >>> len(train), int(valid[0]), int(test[0])
  (70, 70, 80)
  """
  n = len(tokens)
  n_valid, n_test = int(n * valid_fraction), int(n * test_fraction)
  n_train = n - n_valid - n_test
  return (tokens[:n_train], tokens[n_train:n_train + n_valid],
          tokens[n_train + n_valid:])


def streams(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """``[B, N]``: the tokens cut into B contiguous streams (the tail dropped).

  Stream b is ``tokens[b N : (b+1) N]`` with ``N = len(tokens) // B``.

  >>> streams(np.arange(10), 3).tolist()
  [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
  """
  n = len(tokens) // batch_size
  if n < 2:
    raise ValueError(
        f"jaxrnn.tasks.streams: {len(tokens)} tokens cannot make {batch_size} "
        f"streams of at least 2 tokens. Fix: use a smaller batch_size.")
  return np.asarray(tokens[:n * batch_size]).reshape(batch_size, n)


def windows(stream: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
  """``(inputs, targets)``, each ``[K, B, W]``: consecutive TBPTT windows.

  Window k reads ``stream[:, kW : (k+1)W]`` and predicts the next token,
  ``stream[:, kW+1 : (k+1)W+1]``; ``K = (N - 1) // W`` (the tail dropped).
  Window k+1 continues where window k stopped, so the carry passes on.

  >>> inputs, targets = windows(np.arange(14).reshape(2, 7), 3)
  >>> inputs.shape, inputs[1, 0].tolist(), targets[1, 0].tolist()
  ((2, 2, 3), [3, 4, 5], [4, 5, 6])
  """
  B, N = stream.shape
  K = (N - 1) // window
  if K < 1:
    raise ValueError(f"jaxrnn.tasks.windows: streams of {N} tokens hold no "
                     f"window of {window} steps (plus one target). Fix: a "
                     f"smaller window or fewer streams.")
  cut = lambda a: a[:, :K * window].reshape(B, K, window).transpose(1, 0, 2)
  return cut(stream), cut(stream[:, 1:])
