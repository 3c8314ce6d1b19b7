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
_PARAMS = re.compile(r"^(.*?)\.params(?=$|[.\[])")   # a TrainState's params, its prefix


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
    io.save(path, {"leaves": leaves, "position": np.int64(position),
                   "structure": _text_array(str(jax.tree.structure(state))),
                   # The leaves' paths, so that a mismatch on restore can be named.
                   "paths": _text_array("\n".join(_leaf_paths(state)))})
    for old in self.positions()[:-self.keep]:
      self.path(old).unlink(missing_ok=True)
    return path

  def _position(self, position: Optional[int]) -> Optional[int]:
    """``position``, or the latest on disk when None (None if there is none)."""
    if position is not None:
      return position
    positions = self.positions()
    return positions[-1] if positions else None

  def restore(self, template: Any, position: Optional[int] = None
              ) -> tuple[Any, int]:
    """The latest checkpoint (or the one at ``position``) in ``template``'s structure.

    ``template`` is a state of the same structure (for example a fresh
    `jaxrnn.train.init_state`, or ``jax.ShapeDtypeStruct`` leaves with
    their shardings), which also gives optimizer states their
    classes and its leaves their devices (a replicated template, replicated
    leaves). Returns ``(state, position)``, or ``(template, 0)`` when there
    is no checkpoint yet, so a run can always start with ``restore``.
    """
    position = self._position(position)
    if position is None:
      return template, 0
    saved = io.load(self.path(position))
    structure = jax.tree.structure(template)
    template_leaves = jax.tree.leaves(template)
    paths = _leaf_paths(template)
    if (_text(saved["structure"]) != str(structure)
        or len(saved["leaves"]) != len(template_leaves)):
      raise ValueError(
          f"jaxrnn.train.Checkpoints.restore: {self.path(position)} holds a "
          f"state of another structure than the template: "
          f"{_difference(_saved_paths(saved), len(saved['leaves']), paths)}. "
          f"Fix: restore into a state built the "
          f"same way as the one saved (same model, optimizer and settings).")
    leaves = [_leaf("restore", path, got, want)
              for path, got, want in zip(paths, saved["leaves"], template_leaves)]
    return jax.tree.unflatten(structure, leaves), int(saved["position"])

  def restore_params(self, template: Any, position: Optional[int] = None
                     ) -> tuple[Any, int]:
    """The params alone of the latest checkpoint (or the one at ``position``),
    for a process that serves the model and has no optimizer.

    The checkpoint holds a `jaxrnn.train.TrainState`, at its root or inside
    (``fit``'s ``(train_state, carry)`` for TBPTT); ``template`` is its
    ``params`` (``model.init(key, input_size)``, or ``jax.ShapeDtypeStruct``
    leaves), which gives them their structure, classes and devices.
    Returns ``(params, position)``; raises where there is no checkpoint.

    >>> import tempfile, jax, jax.numpy as jnp, optax, jaxrnn
    >>> cell = jaxrnn.gru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> ckpts = Checkpoints(tempfile.mkdtemp())
    >>> _ = ckpts.save(jaxrnn.train.init_state(params, optax.adam(1e-3)), position=10)
    >>> restored, position = ckpts.restore_params(cell.init(jax.random.key(1), 3))
    >>> bool((restored.w_h == params.w_h).all()), position
    (True, 10)
    """
    where = "jaxrnn.train.Checkpoints.restore_params"
    position = self._position(position)
    if position is None:
      raise FileNotFoundError(f"{where}: {self.directory} holds no checkpoint. "
                              f"Fix: the directory the training run saved to.")
    saved = io.load(self.path(position))
    saved_paths = _saved_paths(saved)
    if saved_paths is None:
      raise ValueError(
          f"{where}: {self.path(position)} was written before checkpoints named "
          f"their leaves, so its params cannot be picked out. Fix: "
          f"restore(template) with the whole state saved (a TrainState), then "
          f"take its .params.")
    # The TrainState's params are the leaves whose paths are P.params...,
    # P "" for a TrainState saved alone, "[0]" for fit's (state, carry).
    by_prefix: dict[str, list] = {}
    for p, leaf in zip(saved_paths, saved["leaves"]):
      found = _PARAMS.match(p)
      if found:
        by_prefix.setdefault(found.group(1), []).append((p[found.end():], leaf))
    paths, template_leaves = _leaf_paths(template), jax.tree.leaves(template)
    matching = [prefix for prefix, inside in by_prefix.items()
                if [p for p, _ in inside] == paths]
    if not matching:
      if by_prefix:
        prefix, inside = next(iter(by_prefix.items()))
        found = [p for p, _ in inside]
        what = (f"params (at {prefix or 'the root'}.params) of another structure than "
                f"the template: {_difference(found, len(found), paths)}")
      else:
        more = " ..." if len(saved_paths) > 4 else ""
        what = f"no TrainState's .params; its leaves are {', '.join(saved_paths[:4])}{more}"
      raise ValueError(
          f"{where}: {self.path(position)} holds {what}. Fix: a template made by "
          f"the saved model's init (same cells, sizes and switches) for a "
          f"checkpoint of a TrainState, or restore() with the whole state saved "
          f"as template.")
    inside = by_prefix[matching[0]]
    leaves = [_leaf("restore_params", path, got, want)
              for (path, got), want in zip(inside, template_leaves)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves), int(saved["position"])


def _leaf(method: str, path: str, got: np.ndarray, want: Any) -> jax.Array:
  """The saved leaf ``got`` as the template's leaf ``want`` has it: the same
  shape and dtype (else a ValueError naming ``path``), on its devices."""
  want_dtype = getattr(want, "dtype", None) or np.asarray(want).dtype
  if got.shape != np.shape(want) or got.dtype != want_dtype:
    raise ValueError(
        f"jaxrnn.train.Checkpoints.{method}: leaf {path} is "
        f"{got.dtype}{list(got.shape)} in the file but "
        f"{want_dtype}{list(np.shape(want))} in the template. "
        f"Fix: build the template with the saved model's sizes and dtypes.")
  # On the template's devices: a replicated template (data-parallel
  # training) gets replicated leaves, not leaves on device 0.
  sharding = getattr(want, "sharding", None)   # an Array's or a ShapeDtypeStruct's
  return jax.numpy.asarray(got) if sharding is None else jax.device_put(got, sharding)


def _text_array(text: str) -> np.ndarray:
  return np.frombuffer(text.encode(), np.uint8)


def _text(array) -> str:
  return np.asarray(array).tobytes().decode()


def _leaf_paths(tree: Any) -> list[str]:
  """Each leaf's path in ``tree``, as ``jax.tree_util.keystr`` writes it."""
  return [jax.tree_util.keystr(path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _saved_paths(saved: dict) -> Optional[list[str]]:
  """The leaf paths a checkpoint file lists; None for a file written before
  paths were saved."""
  if "paths" not in saved:
    return None
  return _text(saved["paths"]).split("\n") if saved["leaves"] else []


def _difference(saved_paths: Optional[list[str]], n_saved: int, template_paths: list[str],
                most: int = 4) -> str:
  """The leaf paths only the file or only the template has, a few of each."""
  if saved_paths is None:
    return f"{n_saved} leaves in the file, {len(template_paths)} in the template"
  in_file, in_template = set(saved_paths), set(template_paths)
  parts = []
  for where, names in (("only in the file", [p for p in saved_paths if p not in in_template]),
                       ("only in the template",
                        [p for p in template_paths if p not in in_file])):
    if names:
      more = f" and {len(names) - most} more" if len(names) > most else ""
      parts.append(f"{where}: {', '.join(names[:most])}{more}")
  return "; ".join(parts) or "the same leaf paths in other containers"
