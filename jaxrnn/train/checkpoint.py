"""Checkpoints of a whole training run, written atomically, restored exactly.

Lives here: `Checkpoints`. A checkpoint holds the train state (params,
optimizer state, step) and the data position (how many batches were
consumed), in one file per save written through `jaxrnn.io` (Flax's msgpack
format: raw array bytes, no code run on load), each write to a temporary
file, fsynced and renamed into place, so a crash leaves whole checkpoints
only. Not here: params-only files (`jaxrnn.io`).

Why not Orbax: its directory layout and asynchronous machinery fit sharded
multi-host models; a recurrent model's state is small and one atomic file
per checkpoint is simpler to trust.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from jaxrnn import io

PATTERN = re.compile(r"checkpoint_(\d{9})\.msgpack$")


class Checkpoints:
  """The checkpoints of one run in ``directory``, keeping the latest ``keep``.

  >>> import tempfile, jax.numpy as jnp
  >>> ckpts = Checkpoints(tempfile.mkdtemp(), keep=2)
  >>> state = {"w": jnp.arange(3.0), "step": jnp.int32(7)}
  >>> _ = ckpts.save(state, position=7)
  >>> restored, position = ckpts.restore(state)
  >>> restored["w"].tolist(), position
  ([0.0, 1.0, 2.0], 7)
  """

  def __init__(self, directory: str | os.PathLike, keep: int = 3):
    if keep < 1:
      raise ValueError(f"jaxrnn.train.Checkpoints: keep={keep}; expected at least 1.")
    self.directory = Path(directory)
    self.keep = keep

  def positions(self) -> list[int]:
    """Data positions of the checkpoints on disk, oldest first."""
    if not self.directory.is_dir():
      return []
    found = (PATTERN.match(p.name) for p in self.directory.iterdir())
    return sorted(int(m.group(1)) for m in found if m)

  def path(self, position: int) -> Path:
    return self.directory / f"checkpoint_{position:09d}.msgpack"

  def save(self, state: Any, position: int) -> Path:
    """Writes ``state`` (any pytree) and ``position`` atomically; prunes old ones.

    Raises:
      ValueError: when the directory holds a checkpoint past ``position``
        (another run's, or a later point of this one): pruning by position
        would delete this save, and a resume would take the other one.
    """
    later = [p for p in self.positions() if p > position]
    if later:
      raise ValueError(
          f"jaxrnn.train.Checkpoints.save: {self.directory} holds checkpoints "
          f"at positions {later}, past this save's {position}: another run's, "
          f"or a later point of this one. Saved, this one would be pruned and "
          f"a resume would take the other. Fix: a directory of its own for "
          f"this run, resume from the latest (restore, then go on), or move "
          f"those files away.")
    self.directory.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(leaf) for leaf in jax.device_get(jax.tree.leaves(state))]
    path = self.path(position)
    structure = np.frombuffer(str(jax.tree.structure(state)).encode(), np.uint8)
    io.save(path, {"leaves": leaves, "position": np.int64(position),
                   "structure": structure})
    for old in self.positions()[:-self.keep]:
      self.path(old).unlink(missing_ok=True)
    return path

  def restore(self, template: Any, position: Optional[int] = None
              ) -> tuple[Any, int]:
    """The latest checkpoint (or the one at ``position``) in ``template``'s structure.

    ``template`` is a state of the same structure (for example a fresh
    `jaxrnn.train.init_state`), which also gives optimizer states their
    classes. Returns ``(state, position)``, or ``(template, 0)`` when there
    is no checkpoint yet, so a run can always start with ``restore``.
    """
    positions = self.positions()
    if position is None:
      if not positions:
        return template, 0
      position = positions[-1]
    saved = io.load(self.path(position))
    saved["structure"] = np.asarray(saved["structure"]).tobytes().decode()
    structure = jax.tree.structure(template)
    template_leaves = jax.tree.leaves(template)
    if saved["structure"] != str(structure) or len(saved["leaves"]) != len(template_leaves):
      raise ValueError(
          f"jaxrnn.train.Checkpoints.restore: {self.path(position)} holds a "
          f"state of structure {saved['structure']}; the template is "
          f"{structure}. Fix: restore into a state built the same way as the "
          f"one saved (same model, optimizer and settings).")
    leaves = []
    for i, (got, want) in enumerate(zip(saved["leaves"], template_leaves)):
      if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype:
        raise ValueError(
            f"jaxrnn.train.Checkpoints.restore: leaf {i} is "
            f"{got.dtype}{list(got.shape)} in the file but "
            f"{np.asarray(want).dtype}{list(np.shape(want))} in the template. "
            f"Fix: build the template with the saved model's sizes and dtypes.")
      leaves.append(jax.numpy.asarray(got))
    return jax.tree.unflatten(structure, leaves), int(saved["position"])
