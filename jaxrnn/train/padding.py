"""Sequences of different lengths as one padded batch and its mask.

Lives here: `pad_batch`. Not here: what reads the mask (the losses,
`jaxrnn.scan`'s ``mask=``, ``seq_lengths=``).

A jitted step compiles once per batch shape, so batches padded to their own
longest sequence compile once per length met. Rounding the padded length
up to a ``multiple`` bounds the shapes (TensorFlow's
``bucket_by_sequence_length`` and torchtext's ``BucketIterator`` group by
length for the same reason); the mask keeps the padding out of the loss.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from jaxrnn._cell import as_int


def pad_batch(sequences: Sequence, *, multiple: int = 1, length: Optional[int] = None,
              value=0) -> tuple[np.ndarray, np.ndarray]:
  """``(batch [B, T, ...], mask bool[B, T])``: ``sequences`` right-padded with ``value``.

  Each sequence is ``[T_b]`` (token ids) or ``[T_b, ...]`` (feature
  vectors), all with the same trailing axes and dtype. ``T`` is
  ``length`` if given, else the longest ``T_b`` rounded up to a multiple of
  ``multiple``. As PyTorch's ``pad_sequence(batch_first=True)`` and Keras'
  ``pad_sequences(padding="post")``, with the mask for ``mask=`` (its row
  sums are ``seq_lengths``).

  >>> batch, mask = pad_batch([[5, 6, 7], [8]], multiple=4)
  >>> batch.tolist(), mask.sum(1).tolist()
  ([[5, 6, 7, 0], [8, 0, 0, 0]], [3, 1])
  """
  where = "jaxrnn.train.pad_batch"
  arrays = [np.asarray(s) for s in sequences]
  if not arrays:
    raise ValueError(f"{where}: no sequences; expected at least one.")
  nonempty = [a for a in arrays if a.size] or arrays
  ranks = {a.shape[1:] for a in nonempty}
  if any(a.ndim < 1 for a in arrays) or len(ranks) > 1:
    shown = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays[:4])
    raise ValueError(
        f"{where}: sequences are {shown}{' ...' if len(arrays) > 4 else ''}; expected "
        f"[T_b] or [T_b, ...] arrays with the same trailing axes. Fix: np.asarray "
        f"each, one step per row.")
  # The dtype the nonempty ones share (an empty list reads as float64)
  dtype = np.result_type(*nonempty)
  step = as_int(multiple)
  if step is None or step < 1:
    raise ValueError(f"{where}: multiple={multiple!r}; expected an int >= 1.")
  longest = max(len(a) for a in arrays)
  T = -(-longest // step) * step if length is None else as_int(length)
  if T is None or T < longest:
    raise ValueError(
        f"{where}: length={length}, but a sequence has {longest} steps. Fix: "
        f"length={longest} or more, or cut the sequences first (a[:length]).")
  batch = np.full((len(arrays), T) + nonempty[0].shape[1:], value, dtype)
  mask = np.zeros((len(arrays), T), bool)
  for b, a in enumerate(arrays):
    if a.size:
      batch[b, :len(a)] = a
    mask[b, :len(a)] = True
  return batch, mask
