"""Saving params to a file and loading them back exactly.

Lives here: `save` and `load` for any pytree of arrays built from tuples,
lists, dicts, NamedTuples (``LSTMParams``, ...) and None. Not here: whole
training checkpoints with optimizer state and step counters (they are
pytrees too, so `save` takes them, but scheduling and retention belong to
the training code), conversion to other libraries (`jaxrnn.interop`).

The format is Flax's msgpack serialization (`flax.serialization`): one
file, arrays stored as their raw bytes with dtype and shape (bfloat16
included), read without executing code (unlike pickle), and the format of
Flax's own checkpoints, so it is kept working by Flax. Safetensors would
need a flat namespace of keys and string-only metadata to hold the same
structure; Orbax writes directories and brings an async machinery a small
params file does not need.

The pytree's structure is stored next to the arrays, so `load` needs no
template: a NamedTuple is written as its class's qualified name and field
names and comes back as the same class, a None field as None, a tuple as a
tuple. Only classes `load` knows are rebuilt (jaxrnn's own, those of
`jaxrnn.train`, `jaxrnn.tasks` and `jaxrnn.seq2seq` included, optax's public
optimizer states, so a whole `jaxrnn.train.TrainState` loads, and those
passed as ``namedtuples=``; one error names every other class a file holds):
a file names classes but never makes Python import one.

Writes are atomic: the bytes go to a temporary file in the same directory,
are flushed and fsynced, and ``os.replace`` puts the file in place, so a
crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterable

import jax
import numpy as np

FORMAT = "jaxrnn.params"
VERSION = 1


def qualified_name(cls: type) -> str:
  return f"{cls.__module__}.{cls.__qualname__}"


def is_namedtuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), "_fields")


def encode(node: Any, path: str) -> Any:
  """``node`` as msgpack-ready dicts, lists and NumPy arrays, tagged by type."""
  if node is None:
    return {"t": "none"}
  if isinstance(node, str):          # np.str_ and str enums too, stored as str
    try:
      node.encode("utf-8")
    except UnicodeEncodeError as e:
      raise TypeError(f"jaxrnn.io.save: {path} is a str that is not valid UTF-8 "
                      f"({e.reason}); expected text the file can hold.") from None
    return {"t": "str", "v": str.__str__(node)}     # the text, not an enum's name
  for base in (bool, int, float):    # bool first: it is an int; IntEnums as ints
    if isinstance(node, base) and not isinstance(node, np.generic):
      return {"t": base.__name__, "v": base(node)}
  if is_namedtuple(node):
    return {"t": "namedtuple", "class": qualified_name(type(node)),
            "fields": list(node._fields),
            "v": [encode(v, f"{path}.{k}") for k, v in zip(node._fields, node)]}
  if isinstance(node, (tuple, list)):
    return {"t": type(node).__name__,
            "v": [encode(v, f"{path}[{i}]") for i, v in enumerate(node)]}
  if isinstance(node, dict):
    for k in node:
      if not isinstance(k, (str, int)) or isinstance(k, bool):
        raise TypeError(f"jaxrnn.io.save: {path} has key {k!r} of type "
                        f"{type(k).__name__}; dict keys must be str or int.")
    return {"t": "dict", "k": list(node),
            "v": [encode(v, f"{path}[{k!r}]") for k, v in node.items()]}
  if isinstance(node, (np.ndarray, np.generic, jax.Array)):
    if jax.dtypes.issubdtype(node.dtype, jax.dtypes.prng_key):
      raise TypeError(f"jaxrnn.io.save: {path} is a typed PRNG key array; "
                      f"save jax.random.key_data(key) and rebuild it with "
                      f"jax.random.wrap_key_data.")
    if node.dtype.kind in "OUS":
      raise TypeError(f"jaxrnn.io.save: {path} has dtype {node.dtype}; "
                      f"expected a numeric array.")
    # np.ascontiguousarray would turn a 0-d array into 1-d; np.array keeps it.
    return {"t": "array", "v": np.array(node, order="C", copy=True)}
  raise TypeError(
      f"jaxrnn.io.save: {path} is a {type(node).__name__}; expected arrays, "
      f"Python numbers and strings in tuples, lists, dicts, NamedTuples or "
      f"None (a params pytree, with its settings). "
      f"Fix: convert it to an array, or leave it out of the saved tree.")


def known_namedtuples(extra: Iterable[type]) -> dict[str, type]:
  """jaxrnn's public NamedTuples (the package's, `jaxrnn.train`'s,
  `jaxrnn.tasks`' and `jaxrnn.seq2seq`'s), optax's public optimizer states
  and ``extra``, by qualified name."""
  import jaxrnn  # the package imports this module's siblings, not this one
  import jaxrnn.seq2seq
  import jaxrnn.tasks
  import jaxrnn.train
  import optax   # its public optimizer states: a TrainState's opt_state
  found = [v for module in (jaxrnn, jaxrnn.train, jaxrnn.tasks, jaxrnn.seq2seq, optax)
           for v in vars(module).values()
           if isinstance(v, type) and issubclass(v, tuple) and hasattr(v, "_fields")]
  extra = list(extra)
  for cls in extra:
    if not (isinstance(cls, type) and issubclass(cls, tuple)
            and hasattr(cls, "_fields")):
      raise TypeError(f"jaxrnn.io.load: namedtuples must hold NamedTuple "
                      f"classes; got {cls!r}.")
  return {qualified_name(c): c for c in found + extra}


def unknown_namedtuples(node: Any, path: str, classes: dict[str, type]) -> list:
  """``(class name, path)`` of the first place each NamedTuple class of the
  encoded tree that ``classes`` lacks sits, so one error can name them all."""
  tag = node.get("t") if isinstance(node, dict) else None
  found, children = [], []
  if tag in ("tuple", "list"):
    children = [(v, f"{path}[{i}]") for i, v in enumerate(node["v"])]
  elif tag == "dict":
    children = [(v, f"{path}[{k!r}]") for k, v in zip(node["k"], node["v"])]
  elif tag == "namedtuple":
    if node["class"] not in classes:
      found.append((node["class"], path))
    children = [(v, f"{path}.{k}") for k, v in zip(node["fields"], node["v"])]
  for child, child_path in children:
    found += [f for f in unknown_namedtuples(child, child_path, classes)
              if f[0] not in {name for name, _ in found}]
  return found


def decode(node: Any, path: str, classes: dict[str, type]) -> Any:
  tag = node.get("t") if isinstance(node, dict) else None
  if tag == "none":
    return None
  if tag in ("bool", "int", "float", "str"):
    return {"bool": bool, "int": int, "float": float, "str": str}[tag](node["v"])
  if tag == "array":
    return np.asarray(node["v"])  # a 0-d array comes back from msgpack as a scalar
  if tag in ("tuple", "list"):
    items = [decode(v, f"{path}[{i}]", classes) for i, v in enumerate(node["v"])]
    return tuple(items) if tag == "tuple" else items
  if tag == "dict":
    return {k: decode(v, f"{path}[{k!r}]", classes)
            for k, v in zip(node["k"], node["v"])}
  if tag == "namedtuple":
    name, fields = node["class"], tuple(node["fields"])
    cls = classes[name]             # `load` checked that it knows every class
    # A class that since gained fields with defaults (Seq2SeqParams's
    # tgt_embed) still reads older files: the new fields take their defaults.
    added = cls._fields[len(fields):]
    if cls._fields[:len(fields)] != fields or not set(added) <= set(cls._field_defaults):
      raise ValueError(f"jaxrnn.io.load: {path} is a {name} saved with fields "
                       f"{fields}; the class now has {cls._fields}.")
    return cls(*(decode(v, f"{path}.{k}", classes)
                 for k, v in zip(fields, node["v"])))
  raise ValueError(f"jaxrnn.io.load: {path} has an unknown entry {tag!r}; the "
                   f"file is damaged or from a newer jaxrnn.")


def save(path: str | os.PathLike, tree: Any) -> None:
  """Writes a params pytree to ``path``, atomically.

  ``tree`` holds NumPy or jax arrays (any dtype, bfloat16 included), Python
  bools, ints, floats and strings, in tuples, lists, dicts (str or int
  keys), NamedTuples and None, so the settings that rebuild a model (a
  dict of sizes and names, a `jaxrnn.tasks.Vocab`) go in the same file as
  its params. Arrays are copied to the host and stored bit for bit. The
  file is written to a temporary file in the same directory, fsynced, and
  moved over ``path`` with ``os.replace``; the directory is then fsynced
  so the rename survives a crash.

  Raises:
    TypeError: naming the path in the tree of a leaf that is not an array
      (or a typed PRNG key: save ``jax.random.key_data(key)``).
    FileNotFoundError: when ``path``'s directory does not exist, or ``path``
      is a directory.

  >>> import os, tempfile, jax, jaxrnn, jaxrnn.io
  >>> params = jaxrnn.lstm(4).init(jax.random.key(0), 3)
  >>> path = os.path.join(tempfile.mkdtemp(), "params.msgpack")
  >>> jaxrnn.io.save(path, params)
  >>> restored = jaxrnn.io.load(path)
  >>> type(restored).__name__, restored.p_i, bool((restored.w_x == params.w_x).all())
  ('LSTMParams', None, True)
  """
  from flax import serialization  # only file IO needs Flax
  data = serialization.msgpack_serialize(
      {"format": FORMAT, "version": VERSION, "tree": encode(tree, "tree")})
  write_atomic(os.fspath(path), data)


def write_atomic(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path) or not os.path.isdir(directory):
    what = "is a directory" if os.path.isdir(path) else f"is in {directory}, which does not exist"
    raise FileNotFoundError(
        f"jaxrnn.io.save: {path} {what}. Fix: a file path in an existing "
        f"directory (os.makedirs(directory, exist_ok=True) first).")
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp makes the file 0600; give it the mode open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  with contextlib.suppress(OSError):  # not every OS can open a directory
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)


def load(path: str | os.PathLike, *, namedtuples: Iterable[type] = ()) -> Any:
  """Reads a pytree written by `save`: same structure, dtypes and bits.

  Tuples, lists, dicts (in their order), None and NamedTuples come back as
  they were saved; arrays come back as NumPy arrays (so float64 stays
  float64 whatever ``jax_enable_x64`` says; ``jax.device_put`` moves them).
  NamedTuples are rebuilt from jaxrnn's public classes, optax's optimizer
  states and ``namedtuples``.

  Raises:
    ValueError: when the file is not a jaxrnn params file, or names a
      NamedTuple class not known here (pass it in ``namedtuples``) or with
      other fields than the class has now.
    FileNotFoundError: when ``path`` does not exist.

  >>> import os, tempfile, jax.numpy as jnp, jaxrnn.io
  >>> path = os.path.join(tempfile.mkdtemp(), "t.msgpack")
  >>> jaxrnn.io.save(path, {"w": jnp.ones(2, jnp.bfloat16), "layers": (None, [1.5])})
  >>> t = jaxrnn.io.load(path)
  >>> t["w"].dtype, t["layers"]
  (dtype(bfloat16), (None, [1.5]))
  """
  from flax import serialization
  with open(path, "rb") as f:
    data = f.read()
  try:
    state = serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001 - msgpack raises several types
    raise ValueError(f"jaxrnn.io.load: {os.fspath(path)!r} is not a msgpack "
                     f"file ({type(e).__name__}: {e}); was it written by "
                     f"jaxrnn.io.save?") from e
  if not isinstance(state, dict) or state.get("format") != FORMAT:
    raise ValueError(f"jaxrnn.io.load: {os.fspath(path)!r} is msgpack but not "
                     f"a jaxrnn params file (no format {FORMAT!r}); was it "
                     f"written by jaxrnn.io.save?")
  if state.get("version") != VERSION:
    raise ValueError(f"jaxrnn.io.load: {os.fspath(path)!r} has format version "
                     f"{state.get('version')!r}; this jaxrnn reads {VERSION}. "
                     f"Fix: upgrade jaxrnn.")
  classes = known_namedtuples(namedtuples)
  unknown = unknown_namedtuples(state["tree"], "tree", classes)
  if unknown:
    raise ValueError(
        f"jaxrnn.io.load: the file holds NamedTuples this load does not know: "
        f"{', '.join(f'{name} (at {path})' for name, path in unknown)}. Fix: "
        f"pass the classes, load(path, namedtuples=["
        f"{', '.join(name.rsplit('.', 1)[-1] for name, _ in unknown)}]).")
  return decode(state["tree"], "tree", classes)
