"""Flax params, both ways, and Flax modules that run jaxrnn layers.

Lives here: `from_linen`/`to_linen` (linen ``LSTMCell``,
``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell`` variables),
`from_nnx`/`to_nnx` (the NNX cells of the same names), and the wrappers
`Recurrent` (NNX) and `LinenRecurrent` (linen) that hold a jaxrnn Cell's or
Seq's params in Flax's state. Not here: PyTorch (`jaxrnn.interop.torch`),
files (`jaxrnn.io`).

The layouts (``kernel`` is ``[in, out]`` in Flax as in jaxrnn, so nothing is
transposed; gate blocks are concatenated in jaxrnn's order):

=====================  ===========================================  ====================================
Flax cell              params                                       jaxrnn
=====================  ===========================================  ====================================
linen LSTMCell,        ``i{i,f,g,o}.kernel``,                       ``LSTMParams``: ``w_x``, ``w_h``,
OptimizedLSTMCell      ``h{i,f,g,o}.kernel``, ``h{i,f,g,o}.bias``   ``b`` = the ``h*`` biases
linen GRUCell          ``i{r,z,n}.kernel/bias``, ``h{r,z,n}``       ``GRUParams``: ``b`` = the ``i*``
                       kernels, ``hn.bias``                         biases, ``b_hn`` = ``hn.bias``
linen SimpleCell       ``i.kernel/bias``, ``h.kernel``              ``RNNParams``
NNX LSTMCell           as linen, with ``if_`` for ``if``            ``LSTMParams``
NNX OptimizedLSTMCell  ``dense_i.kernel``, ``dense_h.kernel/bias``  ``LSTMParams``
NNX GRUCell            ``dense_i.kernel/bias``, ``dense_h.kernel``  ``GRUParams`` with ``b_hn`` = 0
NNX SimpleCell         ``dense_i.kernel/bias``, ``dense_h.kernel``  ``RNNParams``
=====================  ===========================================  ====================================

NNX's GRUCell has no recurrent bias inside ``r * (.)``, so it converts to
``b_hn = 0`` and only params with ``b_hn == 0`` convert back. Flax has no
LSTM projection, peepholes or GRU ``reset_after=False``: those raise. The
activations are not params: convert cells built with the defaults
(sigmoid gates, tanh; SimpleCell with ``residual=False``) or build the
jaxrnn cell with the same ones.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flax import linen as nn
from flax import nnx

from jaxrnn._cell import check_bool
from jaxrnn._cells.gru import GRUParams
from jaxrnn._cells.lstm import LSTMParams
from jaxrnn._cells.rnn import RNNParams
from jaxrnn._layers import Seq, apply_batch, as_seq
from jaxrnn._scan import _describe, same_layout
from jaxrnn._scan_batch import batch_major
from jaxrnn.interop import as_numpy

LINEN_KEYS = {
    "lstm": ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho"),
    "gru": ("ir", "iz", "in", "hr", "hz", "hn"),
    "rnn": ("i", "h"),
}
CELL_KIND = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm",
             "GRUCell": "gru", "SimpleCell": "rnn"}
PARAMS_KIND = {LSTMParams: "lstm", GRUParams: "gru", RNNParams: "rnn"}
GATES = {"lstm": "ifgo", "gru": "rzn"}


def cell_name(cell: Any, where: str) -> Optional[str]:
  """The Flax class name of ``cell`` (a name, class or instance), checked."""
  if cell is None:
    return None
  name = cell if isinstance(cell, str) else getattr(cell, "__name__",
                                                    type(cell).__name__)
  if name not in CELL_KIND:
    raise ValueError(f"{where}: cell={cell!r}; expected one of "
                     f"{sorted(CELL_KIND)} (a name, class or instance).")
  return name


class Reader:
  """Reads ``tree[a][b]...`` as a NumPy array with a checked shape."""

  def __init__(self, tree, root: str, where: str):
    self.tree, self.root, self.where = tree, root, where

  def __call__(self, *path, shape=None):
    node, name = self.tree, self.root
    for key in path:
      if not hasattr(node, "keys") or key not in node:
        have = sorted(node.keys()) if hasattr(node, "keys") else type(node).__name__
        raise ValueError(f"{self.where}: missing key {name}[{key!r}] (found "
                         f"{have}). Fix: pass the cell's own params.")
      node, name = node[key], f"{name}[{key!r}]"
    array = as_numpy(node, name, self.where)
    if shape is not None and array.shape != shape:
      raise ValueError(f"{self.where}: {name} has shape {array.shape}; "
                       f"expected {shape}.")
    return array


def unwrap_linen(variables: Any, where: str) -> dict:
  """The cell's own params from ``{"params": ...}``, also inside ``nn.RNN``."""
  if not hasattr(variables, "keys"):
    raise TypeError(f"{where}: variables is a {type(variables).__name__}; "
                    f"expected the dict from module.init(...), or its "
                    f"'params' entry.")
  if set(variables.keys()) == {"params"}:
    variables = variables["params"]
  if set(variables.keys()) == {"cell"}:  # nn.RNN(cell) keeps the cell's params here
    variables = variables["cell"]
  return variables


BIDIRECTIONAL_KEYS = {"forward_rnn", "backward_rnn"}    # nn.Bidirectional's submodules


def linen_kind(tree: dict, where: str) -> str:
  keys = set(tree.keys())
  for kind, names in LINEN_KEYS.items():
    if keys == set(names):
      return kind
  # A model's params: its submodules, each a dict of its own.
  nested = all(hasattr(tree[k], "keys") and not {"kernel", "bias"} & set(tree[k].keys())
               for k in keys)
  fix = (f" These look like a model's submodules ({sorted(keys)}). Fix: convert "
         f"each recurrent cell's own params, from_linen(variables['params'][name]), "
         f"and put them together as jaxrnn's layer holds them: a tuple in layer "
         f"order for jaxrnn.stack, (forward, backward) for jaxrnn.bidirectional "
         f"(an nn.Bidirectional converts whole)." if keys and nested else "")
  raise ValueError(
      f"{where}: params have keys {sorted(keys)}; expected those of a linen "
      f"LSTMCell/OptimizedLSTMCell {sorted(LINEN_KEYS['lstm'])}, GRUCell "
      f"{sorted(LINEN_KEYS['gru'])} or SimpleCell {sorted(LINEN_KEYS['rnn'])}.{fix}")


def check_kind(kind: str, name: Optional[str], what: str, where: str) -> None:
  if name is not None and CELL_KIND[name] != kind:
    raise ValueError(f"{where}: cell={name!r} but {what} are a {kind.upper()}'s"
                     f" ({[n for n, k in CELL_KIND.items() if k == kind]}).")


def to_jax(params):
  return jax.tree.map(jnp.asarray, params)


def from_linen(variables: Any, cell: Any = None):
  """jaxrnn params from a Flax linen cell's variables.

  ``variables`` is what ``cell.init(...)`` returned, its ``"params"``
  entry, or the variables of an ``nn.RNN(cell)`` (one more ``"cell"``
  level). The kind is read from the keys; ``cell`` (``"LSTMCell"``,
  ``"OptimizedLSTMCell"``, ``"GRUCell"``, ``"SimpleCell"``, or the class)
  checks it. Returns ``LSTMParams``, ``GRUParams`` (``reset_after=True``)
  or ``RNNParams`` in the params' dtype, the same bits. The variables of an
  ``nn.Bidirectional`` of two ``nn.RNN`` give the ``(forward, backward)``
  pair of ``jaxrnn.bidirectional(cell, cell)``, which computes what it
  computes with its default concatenation.

  Raises:
    ValueError: naming the key, for a missing key, unknown keys, a shape
      that disagrees with the others, or a ``cell`` of another kind.

  >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
  >>> from jaxrnn.interop.flax import from_linen
  >>> flax_cell = nn.GRUCell(features=4)
  >>> v = flax_cell.init(jax.random.key(0), jnp.zeros(4), jnp.zeros(3))
  >>> p = from_linen(v, "GRUCell")
  >>> h, y = jaxrnn.gru(4).step(p, jnp.zeros(4), jnp.ones(3) @ p.w_x + p.b)
  >>> bool(jnp.allclose(h, flax_cell.apply(v, jnp.zeros(4), jnp.ones(3))[0], atol=1e-6))
  True
  """
  where = "jaxrnn.interop.flax.from_linen"
  name = cell_name(cell, where)
  tree = unwrap_linen(variables, where)
  if set(tree.keys()) == BIDIRECTIONAL_KEYS:
    return tuple(from_linen(tree[k], cell) for k in ("forward_rnn", "backward_rnn"))
  kind = linen_kind(tree, where)
  check_kind(kind, name, "the params", where)
  read = Reader(tree, "params", where)
  first = "i" if kind == "rnn" else "i" + GATES[kind][0]
  kernel = read(first, "kernel")
  if kernel.ndim != 2:
    raise ValueError(f"{where}: params[{first!r}]['kernel'] has shape "
                     f"{kernel.shape}; expected [input_size, hidden_size].")
  I, H = kernel.shape
  wi = lambda g: read(g, "kernel", shape=(I, H))
  wh = lambda g: read(g, "kernel", shape=(H, H))
  bias = lambda g: read(g, "bias", shape=(H,))
  if kind == "rnn":
    return to_jax(RNNParams(w_x=wi("i"), w_h=wh("h"), b=bias("i")))
  gates = GATES[kind]
  cat = lambda f, side: np.concatenate([f(side + g) for g in gates], axis=-1)
  if kind == "lstm":
    return to_jax(LSTMParams(w_x=cat(wi, "i"), w_h=cat(wh, "h"),
                             b=cat(bias, "h")))
  return to_jax(GRUParams(w_x=cat(wi, "i"), w_h=cat(wh, "h"),
                          b=cat(bias, "i"), b_hn=bias("hn")))


def plain_cell(params: Any, where: str) -> tuple[str, int, dict]:
  """Kind, H and NumPy fields of params Flax can hold; raises otherwise."""
  kind = PARAMS_KIND.get(type(params))
  if kind is None:
    raise ValueError(f"{where}: params is a {type(params).__name__}; expected "
                     f"one cell's LSTMParams, GRUParams or RNNParams. A Flax "
                     f"cell is one layer in one direction: convert the layers "
                     f"of a stack or bidirectional one by one.")
  fields = {k: (None if v is None else np.asarray(v))
            for k, v in params._asdict().items()}
  if kind == "lstm":
    for field in ("p_i", "p_f", "p_o", "w_gates", "w_proj"):
      if fields[field] is not None:
        raise ValueError(
            f"{where}: params.{field} is set (peepholes, full gate "
            f"recurrence or a projection); Flax's LSTM cells have none. "
            f"Fix: convert a plain jaxrnn.lstm(hidden_size).")
  if fields["b"] is None:   # use_bias=False: Flax's cells have biases; zeros compute the same
    fields["b"] = np.zeros(fields["w_x"].shape[1:], fields["w_x"].dtype)
    if kind == "gru":
      fields["b_hn"] = np.zeros(fields["w_h"].shape[:1], fields["w_h"].dtype)
  if kind == "gru" and fields["b_hn"] is None:
    raise ValueError(f"{where}: a GRU with reset_after=False (b_hn is None); "
                     f"Flax's GRUCell applies the reset gate after the "
                     f"matmul. Fix: use jaxrnn.gru(H, reset_after=True).")
  H = fields["w_h"].shape[0]
  blocks = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
  if fields["w_h"].shape[1] != blocks * H:
    raise ValueError(
        f"{where}: params.w_h has shape {fields['w_h'].shape}, "
        f"{fields['w_h'].shape[1] // H} gate blocks of size {H}; Flax's "
        f"{kind.upper()} has {blocks}. A jaxrnn LSTM without one of its "
        f"gates (CIFG, NIG, NFG, NOG) has no Flax equivalent.")
  return kind, H, fields


def split(a: np.ndarray, n: int) -> list[np.ndarray]:
  return np.split(a, n, axis=-1)


def to_linen(params: Any, cell: Any = None) -> dict:
  """Flax linen variables ``{"params": ...}`` from one jaxrnn cell's params.

  ``LSTMParams`` give the variables of ``LSTMCell`` and of
  ``OptimizedLSTMCell`` (they share names), ``GRUParams`` those of
  ``GRUCell``, ``RNNParams`` those of ``SimpleCell``; ``cell`` checks the
  kind. `from_linen` of the result gives back the same bits; params without
  biases (cells built with ``use_bias=False``) go out with zero biases,
  which compute the same, and come back with them (a GRU without biases is
  Flax's, ``reset_after=True``: `jaxrnn.gru` builds no other). Put them
  under ``{"params": {"cell": ...}}`` for an ``nn.RNN(cell)``.

  Raises:
    ValueError: for params Flax cannot hold (peepholes, a projection, a
      missing gate, full gate recurrence, GRU ``reset_after=False``) or a
      ``cell`` of another kind.

  >>> import jax, jaxrnn
  >>> from jaxrnn.interop.flax import to_linen
  >>> v = to_linen(jaxrnn.simple_rnn(4).init(jax.random.key(0), 3), "SimpleCell")
  >>> jax.tree.map(lambda a: a.shape, v)
  {'params': {'h': {'kernel': (4, 4)}, 'i': {'bias': (4,), 'kernel': (3, 4)}}}
  """
  where = "jaxrnn.interop.flax.to_linen"
  name = cell_name(cell, where)
  kind, H, f = plain_cell(params, where)
  check_kind(kind, name, "the params", where)
  if kind == "rnn":
    out = {"i": {"kernel": f["w_x"], "bias": f["b"]}, "h": {"kernel": f["w_h"]}}
  else:
    gates = GATES[kind]
    n = len(gates)
    out = {}
    for g, wx, wh, b in zip(gates, split(f["w_x"], n), split(f["w_h"], n),
                            split(f["b"], n)):
      if kind == "lstm":
        out["i" + g] = {"kernel": wx}
        out["h" + g] = {"kernel": wh, "bias": b}
      else:
        out["i" + g] = {"kernel": wx, "bias": b}
        out["h" + g] = {"kernel": wh}
    if kind == "gru":
      out["hn"]["bias"] = f["b_hn"]
  return {"params": to_jax(out)}


# ---------------------------------------------------------------- NNX cells


def nnx_pure(source: Any, where: str) -> tuple[Optional[str], dict]:
  """(class name or None, the pure dict of params) of an NNX cell or state."""
  if isinstance(source, nnx.Module):
    name = type(source).__name__
    if name not in CELL_KIND:
      raise ValueError(f"{where}: got an nnx.{name}; expected an NNX "
                       f"{' / '.join(CELL_KIND)}.")
    return name, nnx.to_pure_dict(nnx.state(source, nnx.Param))
  if isinstance(source, nnx.State):
    return None, nnx.to_pure_dict(source)
  if hasattr(source, "keys"):
    return None, source
  raise TypeError(f"{where}: got a {type(source).__name__}; expected an NNX "
                  f"cell, its nnx.state(cell, nnx.Param), or that state's "
                  f"to_pure_dict().")


def nnx_layout(tree: dict, where: str) -> str:
  """The NNX class whose params ``tree`` holds."""
  keys = set(tree.keys())
  if keys == {"ii", "if_", "ig", "io", "hi", "hf", "hg", "ho"}:
    return "LSTMCell"
  if keys == {"dense_i", "dense_h"}:
    read = Reader(tree, "state", where)
    blocks = read("dense_h", "kernel").shape[-1] // max(
        read("dense_h", "kernel").shape[0], 1)
    name = {4: "OptimizedLSTMCell", 3: "GRUCell", 1: "SimpleCell"}.get(blocks)
    if name is not None:
      return name
  raise ValueError(
      f"{where}: params have keys {sorted(keys)}; expected those of an NNX "
      f"LSTMCell (ii, if_, ig, io, hi, hf, hg, ho) or of an "
      f"OptimizedLSTMCell, GRUCell or SimpleCell (dense_i, dense_h with "
      f"dense_h.kernel [H, 4H], [H, 3H] or [H, H]).")


def from_nnx(source: Any):
  """jaxrnn params from a Flax NNX ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or ``SimpleCell``.

  ``source`` is the module, its ``nnx.state(module, nnx.Param)`` or that
  state's ``to_pure_dict()``; the layout is read from the keys. NNX's
  GRUCell has no recurrent bias in its candidate, so its ``b_hn`` is zero.

  Raises:
    ValueError: naming the key, for a missing key, unknown keys or a shape
      that disagrees with the others.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from flax import nnx
  >>> from jaxrnn.interop.flax import from_nnx
  >>> flax_cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
  >>> p = from_nnx(flax_cell)
  >>> (c, h), _ = flax_cell((jnp.zeros(4), jnp.zeros(4)), jnp.ones(3))
  >>> carry, _ = jaxrnn.lstm(4).step(p, jaxrnn.lstm(4).initial_carry(p), jnp.ones(3) @ p.w_x + p.b)
  >>> bool(jnp.allclose(carry.h, h, atol=1e-6))
  True
  """
  where = "jaxrnn.interop.flax.from_nnx"
  name, tree = nnx_pure(source, where)
  layout = nnx_layout(tree, where)
  if name is not None and name != layout:
    raise ValueError(f"{where}: an nnx.{name} whose params look like an "
                     f"{layout}'s.")
  read = Reader(tree, "state", where)
  if layout == "LSTMCell":
    I, H = read("ii", "kernel").shape
    # NNX spells the input side's forget gate "if_" ("if" is a keyword).
    cat = lambda names, what, shape: np.concatenate(
        [read(n, what, shape=shape) for n in names], axis=-1)
    return to_jax(LSTMParams(w_x=cat(("ii", "if_", "ig", "io"), "kernel", (I, H)),
                             w_h=cat(("hi", "hf", "hg", "ho"), "kernel", (H, H)),
                             b=cat(("hi", "hf", "hg", "ho"), "bias", (H,))))
  H = read("dense_h", "kernel").shape[0]
  G = read("dense_h", "kernel").shape[1]
  I = read("dense_i", "kernel").shape[0]
  w_x = read("dense_i", "kernel", shape=(I, G))
  w_h = read("dense_h", "kernel", shape=(H, G))
  if layout == "OptimizedLSTMCell":
    expect_keys(tree, where, dense_i={"kernel"}, dense_h={"kernel", "bias"})
    return to_jax(LSTMParams(w_x=w_x, w_h=w_h,
                             b=read("dense_h", "bias", shape=(G,))))
  expect_keys(tree, where, dense_i={"kernel", "bias"}, dense_h={"kernel"})
  b = read("dense_i", "bias", shape=(G,))
  if layout == "GRUCell":
    return to_jax(GRUParams(w_x=w_x, w_h=w_h, b=b, b_hn=np.zeros((H,), b.dtype)))
  return to_jax(RNNParams(w_x=w_x, w_h=w_h, b=b))


def expect_keys(tree: dict, where: str, **expected) -> None:
  for layer, keys in expected.items():
    got = set(tree[layer].keys())
    if got != keys:
      raise ValueError(f"{where}: state[{layer!r}] has keys {sorted(got)}; "
                       f"expected {sorted(keys)}.")


def nnx_tree(params: Any, layout: str, where: str) -> dict:
  """The pure params dict of NNX cell ``layout`` holding jaxrnn ``params``."""
  kind, H, f = plain_cell(params, where)
  check_kind(kind, layout, "the params", where)
  if layout == "LSTMCell":
    out = {}
    for g, name, wx, wh, b in zip("ifgo", ("i", "f_", "g", "o"), split(f["w_x"], 4),
                                  split(f["w_h"], 4), split(f["b"], 4)):
      out["i" + name] = {"kernel": wx}
      out["h" + g] = {"kernel": wh, "bias": b}
    return out
  if layout == "OptimizedLSTMCell":
    return {"dense_i": {"kernel": f["w_x"]},
            "dense_h": {"kernel": f["w_h"], "bias": f["b"]}}
  if layout == "GRUCell" and np.any(f["b_hn"] != 0):
    raise ValueError(
        f"{where}: params.b_hn is nonzero, but NNX's GRUCell has no "
        f"recurrent bias inside r * (U_n h + b_hn). Fix: use Flax linen's "
        f"GRUCell (to_linen), or train with b_hn fixed at zero.")
  return {"dense_i": {"kernel": f["w_x"], "bias": f["b"]},
          "dense_h": {"kernel": f["w_h"]}}


def to_nnx(params: Any, module: Any):
  """Writes one jaxrnn cell's params into a Flax NNX cell; returns the cell.

  ``module`` is an NNX ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``
  (needs ``b_hn == 0``) or ``SimpleCell`` of the same sizes; its params are
  replaced in place, in the dtype of ``params``. `from_nnx` of the module
  gives back the same bits.

  Raises:
    ValueError: for params of another kind or size, params the cell cannot
      hold (see `to_linen`), or a nonzero ``b_hn`` for a GRUCell.

  >>> import jax, jaxrnn
  >>> from flax import nnx
  >>> from jaxrnn.interop.flax import from_nnx, to_nnx
  >>> p = jaxrnn.lstm(4).init(jax.random.key(0), 3)
  >>> m = to_nnx(p, nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
  >>> bool((from_nnx(m).b == p.b).all())
  True
  """
  where = "jaxrnn.interop.flax.to_nnx"
  layout, current = nnx_pure(module, where)
  if layout is None:
    raise TypeError(f"{where}: module is a {type(module).__name__}; expected "
                    f"the NNX cell itself (its params are updated in place).")
  new = nnx_tree(params, layout, where)
  have = jax.tree.map(np.shape, current)
  want = jax.tree.map(np.shape, new)
  if have != want:
    raise ValueError(f"{where}: the nnx.{layout} has param shapes {have}; the "
                     f"converted params have {want}. Fix: build the cell with "
                     f"in_features={np.shape(params.w_x)[0]}, hidden_features="
                     f"{np.shape(params.w_h)[0]}.")
  state = nnx.state(module, nnx.Param)
  nnx.replace_by_pure_dict(state, to_jax(new))
  nnx.update(module, state)
  return module


# ---------------------------------------------------------------- wrappers


def is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def run(layer: Seq, params, xs, mask, carry, key, seq_lengths, time_major):
  """``layer.apply`` on ``[T, I]``; on ``[B, T, I]`` (``[T, B, I]`` when
  ``time_major``) `jaxrnn.apply_batch`. ``seq_lengths`` is an int for one
  sequence, ``int[B]`` for a batch.

  A batch goes through `jaxrnn.apply_batch` for the batched kernels of
  `jaxrnn.scan_batch`: the LSTM's and GRU's training steps through
  `LinenRecurrent` at B = 32, T = 64 and B = 16, T = 128 (H = 128) took
  0.69-0.74x the time of ``jax.vmap(layer.apply)`` (2 CPU cores, one
  device, interleaved medians, 2026-12-04), with the same numbers, dropout
  included (sequence b draws from ``jax.random.split(key, B)[b]``). Forward
  mode (`jax.jvp`, `jax.jacfwd`) runs the per-example path in the kernel's
  place, as `jaxrnn.scan_batch` says.
  """
  xs = jnp.asarray(xs)
  if xs.ndim == 2:
    if seq_lengths is not None:   # checked as a batch of one; its mask
      if np.ndim(seq_lengths) != 0:
        raise ValueError(
            f"jaxrnn.interop.flax: seq_lengths has shape {np.shape(seq_lengths)} "
            f"but xs {xs.shape} is one sequence [T, I]; expected an int, its "
            f"number of valid steps. Fix: pass an int, or a batch xs [B, T, I] "
            f"with seq_lengths int[B].")
      one = lambda a: None if a is None else jnp.asarray(a)[None]
      mask = batch_major("jaxrnn.interop.flax", xs[None], one(mask), None,
                         one(seq_lengths), False, "[T, I]")[1][0]
    return layer.apply(params, xs, carry=carry, mask=mask, key=key)
  if xs.ndim != 3:
    raise ValueError(f"jaxrnn.interop.flax: xs has shape {xs.shape}; expected "
                     f"[T, I] or [B, T, I] ([T, B, I] with time_major=True).")
  return apply_batch(layer, params, xs, carry=carry, mask=mask, key=key,
                     seq_lengths=seq_lengths, time_major=time_major)


def outputs(result, return_carry, default: bool, where: str):
  """``(carry, ys)``, or ``ys`` alone where ``return_carry`` (the call's, else
  the module's ``default``) is False, as Flax's ``nn.RNN`` returns them."""
  if return_carry is None:
    return_carry = default
  return result if check_bool(where, "return_carry", return_carry) else result[1]


def draws_random_bits(layer: Seq, params, input_size: int) -> bool:
  """Does ``layer.apply`` draw random bits from a key (its dropout)? Read
  from its jaxpr: splitting a key draws nothing, a dropout mask does."""
  xs = jax.ShapeDtypeStruct((1, input_size), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda p, x, k: layer.apply(p, x, key=k))(
      params, xs, jax.random.key(0))
  return "random_bits" in primitive_names(jaxpr.jaxpr)


def primitive_names(jaxpr) -> set[str]:
  """The primitives of ``jaxpr`` and of every jaxpr inside its equations."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)            # a ClosedJaxpr's own jaxpr
        if hasattr(sub, "eqns"):
          names |= primitive_names(sub)
  return names


class Recurrent(nnx.Module):
  """A jaxrnn Cell or Seq as a Flax NNX module; its params are ``nnx.Param``.

  ``Recurrent(layer, input_size, rngs=...)`` calls ``layer.init`` with a
  key from ``rngs.params()`` and keeps every leaf as an ``nnx.Param`` in
  the same pytree (a NamedTuple per cell, tuples for stacks), so
  ``nnx.state``, ``nnx.Optimizer``, ``nnx.jit`` and ``nnx.grad`` see them.
  ``module(xs, *, mask=None, carry=None, key=None, deterministic=None,
  seq_lengths=None, time_major=None, return_carry=None) -> (carry, ys)``
  runs ``layer.apply`` on ``xs [T, I]``, or `jaxrnn.apply_batch` on
  ``[B, T, I]`` (mask
  ``[B, T]``, carry batched; the batched kernels, forward mode running the
  per-example path in their place; with dropout, sequence b draws from ``jax.random.split(key,
  B)[b]`` what ``layer.apply`` draws from a key). As in
  Flax's ``nn.RNN``, ``seq_lengths`` (``int[B]``; an int for one sequence)
  counts each sequence's steps before its end padding, in place of a mask,
  and ``time_major`` (the constructor's, or the call's, which wins) takes
  and returns ``[T, B, ...]`` (a mask ``[T, B]``; the carry stays batch
  first). ``return_carry=False`` (the constructor's, or the call's, which
  wins) returns ``ys`` alone, as ``nn.RNN``'s default does, for
  ``nnx.Sequential``; the default, True, returns ``(carry, ys)``. Unlike
  ``nn.RNN``, outputs at padded steps are zero and a reversed layer returns
  them in input order (``nn.RNN``'s ``keep_order=True``, not an argument
  here), and an LSTM's carry is
  jaxrnn's ``LSTMCarry(h, c)``: Flax's ``(c, h)`` goes in as
  ``jaxrnn.LSTMCarry(h=h, c=c)``. The
  layer's dropout (a stack's between layers, or ``rnn``'s) runs as
  ``nnx.Dropout`` does: on unless ``deterministic`` (the constructor's, or
  the call's, which wins), so ``model.eval()`` and ``nnx.view(model,
  deterministic=True)`` switch it off and ``model.train()`` on; its key
  comes from the ``"dropout"`` stream of ``rngs`` (``"default"`` when there
  is none), or from the call's ``key``; a layer without dropout needs
  neither (``rngs=nnx.Rngs(params=0)``, as for ``nnx.LSTMCell``).
  ``module.params_tree()`` gives the plain jaxrnn params, and
  ``module.set_params(params)`` puts converted ones (`from_nnx`,
  `from_linen`, ``from_torch``) in place.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from flax import nnx
  >>> from jaxrnn.interop.flax import Recurrent
  >>> model = Recurrent(jaxrnn.gru(4), 3, rngs=nnx.Rngs(0))
  >>> carry, ys = model(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2]))
  >>> ys.shape, type(model.params).__name__
  ((2, 5, 4), 'GRUParams')
  >>> jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  {'params': {'b': (12,), 'b_hn': (4,), 'w_h': (4, 12), 'w_x': (3, 12)}}

  Train it like any NNX module: ``nnx.Optimizer(model, optax.adam(1e-3),
  wrt=nnx.Param)`` and ``nnx.value_and_grad``.
  """

  def __init__(self, layer: Any, input_size: int, *, deterministic: bool = False,
               time_major: bool = False, return_carry: bool = True, rngs: nnx.Rngs):
    self.layer = nnx.static(as_seq(layer, "jaxrnn.interop.flax.Recurrent"))
    params = self.layer.init(rngs.params(), input_size)
    self.params = nnx.data(jax.tree.map(nnx.Param, params))
    self.deterministic = deterministic
    self.time_major = time_major
    self.return_carry = check_bool("jaxrnn.interop.flax.Recurrent", "return_carry",
                                   return_carry)
    # As nnx.Dropout keeps its stream. Without one (nnx.Rngs(params=0)) a
    # layer that drops nothing needs none, as nnx.LSTMCell needs none.
    has_stream = "dropout" in rngs or "default" in rngs
    self.rngs = rngs["dropout"].fork() if has_stream else nnx.data(None)
    # Only a layer that drops draws a key, as nnx.Dropout(0.0) draws none: a
    # draw advances the stream's count, state that jax.grad and jax.jacfwd
    # of a module call would see change (Flax's TraceContextError).
    self.draws = draws_random_bits(self.layer, params, input_size)

  def set_view(self, deterministic: Optional[bool] = None):
    """What ``nnx.view(model, deterministic=...)`` sets, as on ``nnx.Dropout``."""
    if deterministic is not None:
      self.deterministic = deterministic

  def params_tree(self):
    """The jaxrnn params as plain arrays."""
    return jax.tree.map(lambda v: v[...], self.params, is_leaf=is_variable)

  def set_params(self, params) -> None:
    """Puts ``params`` (jaxrnn's pytree, as `from_linen`, `from_nnx` or
    ``jaxrnn.interop.torch.from_torch`` return it) in the module's
    ``nnx.Param`` leaves, in place and in ``params``' dtypes; their
    structure and shapes must be the layer's, as ``params_tree()`` shows.

    >>> import jax, jaxrnn
    >>> from flax import nnx
    >>> model = Recurrent(jaxrnn.lstm(4), 3, rngs=nnx.Rngs(0))
    >>> model.set_params(jaxrnn.lstm(4).init(jax.random.key(1), 3))
    >>> model.params.w_h.shape
    (4, 16)
    """
    mine = self.params_tree()
    if not same_layout(params, mine, dtypes=False):     # params keep their own dtypes
      raise ValueError(
          f"jaxrnn.interop.flax.Recurrent.set_params: params are "
          f"{_describe(params)}; expected {_describe(mine)}, this layer's. Fix: "
          f"convert params of the same cell, sizes and layers, in the same "
          f"containers (tuples for stacks and directions).")
    jax.tree.map(lambda v, a: v.set_value(jnp.asarray(a)), self.params, params,
                 is_leaf=is_variable)

  def __call__(self, xs, *, mask=None, carry=None, key=None, deterministic=None,
               seq_lengths=None, time_major=None, return_carry=None):
    if self.deterministic if deterministic is None else deterministic:
      key = None
    elif key is None and self.rngs is not None and self.draws:
      key = self.rngs()
    elif key is None and self.draws:
      raise ValueError(
          "jaxrnn.interop.flax.Recurrent: the layer runs dropout, deterministic "
          "is False, and there is no key: its rngs had no 'dropout' (or "
          "'default') stream. Fix: build it with rngs=nnx.Rngs(params=..., "
          "dropout=...), pass key=, or switch dropout off with "
          "deterministic=True (model.eval()).")
    time_major = self.time_major if time_major is None else time_major
    return outputs(run(self.layer, self.params_tree(), xs, mask, carry, key, seq_lengths,
                       time_major), return_carry, self.return_carry,
                   "jaxrnn.interop.flax.Recurrent")


class LinenRecurrent(nn.Module):
  """A jaxrnn Cell or Seq as a Flax linen module; params under ``"layer"``.

  ``LinenRecurrent(layer)``'s ``init`` calls ``layer.init`` with the
  ``"params"`` rng and the input size of the first call; the jaxrnn params
  pytree sits in ``variables["params"]["layer"]``. Called as
  ``module.apply(variables, xs, mask=None, carry=None, key=None,
  deterministic=None, seq_lengths=None, time_major=None, return_carry=None)``
  with ``xs`` ``[T, I]`` or ``[B, T, I]`` (through `jaxrnn.apply_batch`, as
  in `Recurrent`, ``seq_lengths`` and ``time_major`` too); returns
  ``(carry, ys)``, or ``ys`` alone where ``return_carry`` (the call's,
  else the attribute's, True by default) is False, as in ``nn.RNN`` (for
  ``nn.Sequential``). The layer's dropout (a stack's between layers, or
  ``rnn``'s) runs as ``nn.Dropout`` does, when ``deterministic`` (the
  call's, else the attribute's) is False: with the ``"dropout"`` rng
  (``rngs={"dropout": key}``), or the call's ``key``. When neither is set,
  a call given a ``key`` or a ``"dropout"`` rng runs dropout and one
  without does not (where ``nn.Dropout`` would raise).

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from jaxrnn.interop.flax import LinenRecurrent
  >>> model = LinenRecurrent(jaxrnn.gru(4))
  >>> variables = model.init(jax.random.key(0), jnp.ones((2, 5, 3)))
  >>> type(variables["params"]["layer"]).__name__
  'GRUParams'
  >>> model.apply(variables, jnp.ones((2, 5, 3)))[1].shape
  (2, 5, 4)
  """

  layer: Any
  deterministic: Optional[bool] = None
  time_major: bool = False
  return_carry: bool = True

  def __post_init__(self):
    # Before Flax adopts a Flax cell given here as a submodule, whose
    # params would then collide with "layer".
    as_seq(self.layer, "jaxrnn.interop.flax.LinenRecurrent")
    super().__post_init__()

  @nn.compact
  def __call__(self, xs, mask=None, carry=None, key=None, deterministic=None,
               seq_lengths=None, time_major=None, return_carry=None):
    layer = as_seq(self.layer)
    if self.has_variable("params", "layer"):
      # Read as they are: self.param would compare them with an init for
      # this xs and raise Flax's ScopeParamShapeError, where jaxrnn's own
      # check names the input size the params were made for.
      params = self.get_variable("params", "layer")
    else:
      params = self.param("layer", lambda k: layer.init(k, jnp.shape(xs)[-1]))
    time_major = self.time_major if time_major is None else time_major
    # Neither set: a key or a "dropout" rng asks for dropout (Flax's
    # nn.Dropout would raise; skipping it silently would hide the mistake).
    deterministic = next((d for d in (deterministic, self.deterministic) if d is not None),
                         key is None and not self.has_rng("dropout"))
    if deterministic:
      key = None
    elif key is None:
      key = self.make_rng("dropout")
    return outputs(run(layer, params, xs, mask, carry, key, seq_lengths, time_major),
                   return_carry, self.return_carry, "jaxrnn.interop.flax.LinenRecurrent")
