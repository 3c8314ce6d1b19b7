"""PyTorch ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` params (and their cells'), both ways.

Lives here: `from_torch` (a torch module or state dict -> jaxrnn params),
`to_torch` (jaxrnn params -> a state dict of NumPy arrays), `layer` (the
jaxrnn Seq that computes what a torch module computes), and
`carry_from_torch`/`carry_to_torch` (torch's ``h_0, c_0`` and ``h_n, c_n``
<-> that layer's carry), `init_like_torch` and `with_torch_biases` (to
start and train as torch does). Not here:
Flax (`jaxrnn.interop.flax`), files (`jaxrnn.io`). PyTorch itself is never
imported: state dicts are read with NumPy, so a dict of NumPy arrays works
as well as the tensors of ``module.state_dict()``.

The layouts, with ``G`` gate blocks (LSTM 4: i, f, g, o; GRU 3: r, z, n;
RNN 1), hidden size H, projection size P (LSTM ``proj_size``, else P = H)
and ``s`` = ``""`` or ``"_reverse"``:

================================  ==============================================
torch key (layer k)               jaxrnn field
================================  ==============================================
``weight_ih_l{k}{s}`` [G H, I]    ``w_x`` [I, G H] (transposed)
``weight_hh_l{k}{s}`` [G H, P]    ``w_h`` [P, G H] (transposed)
``bias_ih_l{k}{s}`` [G H]         ``b`` [G H] = ``bias_ih + bias_hh``
``bias_hh_l{k}{s}`` [G H]         GRU: r, z parts fold into ``b``; the n part
                                  is ``b_hn`` [H] (it sits inside ``r * (.)``)
``weight_hr_l{k}{s}`` [P, H]      ``w_proj`` [H, P] (transposed)
================================  ==============================================

Gate orders agree (PyTorch's LSTM is i, f, g, o and its GRU r, z, n), so no
block is permuted. ``to_torch`` puts the whole folded bias into ``bias_ih``
and zeros into ``bias_hh`` (GRU: ``b_hn`` in its n part), so jaxrnn ->
torch -> jaxrnn returns the same bits (float32 params; narrower ones come
back as float32, the same values). torch -> jaxrnn -> torch returns the
same function but not the same split of the two biases: jaxrnn keeps one
(so a torch optimizer's two bias steps are `with_torch_biases`'s business).

Structure: one layer in one direction is the cell's params
(``LSTMParams``, ``GRUParams``, ``RNNParams``); a bidirectional layer is
the pair ``(forward, backward)`` of `jaxrnn.bidirectional`; several layers
are the tuple of `jaxrnn.stack`. `layer` builds the matching model.

A ``bias=False`` module converts to params without biases (``b`` and
``b_hn`` None), the params of cells built with ``use_bias=False``, which
`layer` builds; `to_torch` leaves the bias keys out for them.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cells.gru import GRUParams, gru
from jaxrnn._cells.lstm import LSTMCarry, LSTMParams, lstm
from jaxrnn._cells.rnn import RNNParams, simple_rnn
from jaxrnn._layers import bidirectional as bidirectional_layer
from jaxrnn._layers import rnn, stack
from jaxrnn.interop import as_numpy

GATE_BLOCKS = {"lstm": 4, "gru": 3, "rnn": 1}
PARAMS_KIND = {LSTMParams: "lstm", GRUParams: "gru", RNNParams: "rnn"}
# torch's nn.RNNBase.mode -> (kind, nonlinearity)
MODES = {"LSTM": ("lstm", None), "GRU": ("gru", None),
         "RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu")}


def fold(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``a + b``, but ``a`` itself where ``b`` is zero.

  Adding an exact zero changes nothing but the sign of a zero (-0.0 + 0.0
  = +0.0); skipping it keeps jaxrnn -> torch -> jaxrnn bit-exact.
  """
  return np.where(b == 0, a, a + b)


def read_kind(kind: Any, where: str) -> str:
  if not isinstance(kind, str) or kind.lower() not in GATE_BLOCKS:
    raise ValueError(f"{where}: kind={kind!r}; expected 'lstm', 'gru' or "
                     f"'rnn' (torch.nn.LSTM, nn.GRU, nn.RNN).")
  return kind.lower()


# torch's one-step cells: their class name -> kind. Their state dict is one
# layer's without the "_l0" suffix (weight_ih, weight_hh, bias_ih, bias_hh).
CELL_MODULES = {"LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn"}
CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def cell_module_kind(module: Any) -> Optional[str]:
  """``"lstm"``, ``"gru"`` or ``"rnn"`` for a torch ``nn.LSTMCell``,
  ``nn.GRUCell`` or ``nn.RNNCell`` (or a subclass), else None."""
  if not hasattr(module, "state_dict"):
    return None
  return next((CELL_MODULES[c.__name__] for c in type(module).__mro__
               if c.__name__ in CELL_MODULES), None)


def is_cell_module(module: Any) -> bool:
  return cell_module_kind(module) is not None


def cell_config(module: Any) -> dict:
  """`torch_cell`'s settings for a torch cell module."""
  return dict(kind=cell_module_kind(module), hidden_size=module.hidden_size,
              nonlinearity=getattr(module, "nonlinearity", "tanh"), bias=bool(module.bias))


def module_config(module: Any) -> dict:
  """The settings of a torch ``nn.LSTM``/``nn.GRU``/``nn.RNN`` that matter here."""
  mode = getattr(module, "mode", None)
  if mode not in MODES:
    raise ValueError(
        f"jaxrnn.interop.torch: got a {type(module).__name__} with mode "
        f"{mode!r}; expected a torch.nn.LSTM, nn.GRU or nn.RNN (modes "
        f"{sorted(MODES)}) or their cells (nn.LSTMCell, nn.GRUCell, "
        f"nn.RNNCell). Fix: pass one of those.")
  kind, nonlinearity = MODES[mode]
  return dict(kind=kind, hidden_size=module.hidden_size,
              num_layers=module.num_layers,
              bidirectional=bool(module.bidirectional),
              proj_size=getattr(module, "proj_size", 0) or None,
              nonlinearity=nonlinearity or "tanh",
              dropout=float(module.dropout), bias=bool(module.bias))


def layer(kind: Any, hidden_size: Optional[int] = None, *, num_layers: int = 1,
          bidirectional: bool = False, proj_size: Optional[int] = None,
          nonlinearity: str = "tanh", dropout: float = 0.0, bias: bool = True,
          batch_first: bool = True):
  """The jaxrnn layer (a `Seq`) that computes what the torch module computes.

  ``layer(torch_module)`` reads every setting from the module (and warns
  that a ``batch_first=False`` module's data needs ``time_major=True``,
  below); otherwise they mirror ``torch.nn.LSTM``'s arguments. A torch
  cell, ``nn.LSTMCell``, ``nn.GRUCell`` or ``nn.RNNCell``, gives the jaxrnn
  `Cell` itself: one call of the torch cell, ``cell(x, (h, c))``, is
  ``jaxrnn.rnn(cell).step(params, carry, x)`` (``cell.step`` alone takes
  the projected input, ``cell.project(params, x[None])[0]``). One layer in one direction is
  ``jaxrnn.rnn(cell)`` (its params are the cell's; ``jaxrnn.lstm(H)`` and
  the others give the `Cell` itself); a bidirectional layer is
  ``jaxrnn.bidirectional(cell, cell)``; several layers are
  ``jaxrnn.stack(..., dropout=dropout)``. Each has ``init``, ``apply``
  (one sequence), ``step`` and ``apply_batch``. Its params have the
  structure `from_torch` returns. jaxrnn's layout is fixed whatever the module's
  ``batch_first``: ``apply`` takes one sequence ``[T, I]`` and
  `jaxrnn.apply_batch` a batch ``[B, T, I]`` (torch's ``batch_first=True``,
  which this function takes too), so data laid out for a
  ``batch_first=False`` module, ``[T, B, I]``, goes in with
  ``jaxrnn.apply_batch(net, params, xs, time_major=True)``: passed without
  it, its time and batch axes would be read the other way round, without an
  error when they fit. ``batch_first=False`` given here is refused, saying
  so. A packed sequence's lengths go in as ``seq_lengths``. Its ``init``
  draws as torch initialises the module (`init_like_torch`), not as
  jaxrnn's cells do (orthogonal recurrent weights, forget bias 1).

  >>> import jax, jaxrnn.interop.torch as jt
  >>> net = jt.layer("lstm", 8, num_layers=2, bidirectional=True)
  >>> params = net.init(jax.random.key(0), 3)
  >>> sorted(jt.to_torch(params, bidirectional=True))[:2]
  ['bias_hh_l0', 'bias_hh_l0_reverse']
  >>> net.output_size
  16
  """
  where = "jaxrnn.interop.torch.layer"
  if isinstance(kind, Mapping):
    raise TypeError(
        f"{where}: got a state dict; a state dict holds the weights, not the "
        f"settings. Fix: pass the module itself, or the settings: "
        f"layer(kind, hidden_size, num_layers=..., bidirectional=...).")
  if is_cell_module(kind):
    return with_torch_init(torch_cell(**cell_config(kind)))
  if not isinstance(kind, str):
    config = module_config(kind)
    if not getattr(kind, "batch_first", True):
      warnings.warn(
          f"{where}: the module has batch_first=False, so its data is laid "
          f"out [T, B, I]; jaxrnn.apply_batch takes [B, T, I] unless told "
          f"time_major=True. Fix: jaxrnn.apply_batch(net, params, xs, "
          f"time_major=True) for that data (where you already pass it, there "
          f"is nothing to do).", stacklevel=2)
    return layer(**config)
  kind = read_kind(kind, where)
  if not isinstance(hidden_size, int) or hidden_size <= 0:
    raise ValueError(f"{where}: hidden_size={hidden_size!r}; expected a "
                     f"positive int.")
  if proj_size and kind != "lstm":
    raise ValueError(f"{where}: proj_size={proj_size} is an LSTM option; "
                     f"kind={kind!r} has none. Fix: proj_size=None.")
  if batch_first is not True:
    raise ValueError(
        f"{where}: batch_first={batch_first!r}; jaxrnn's layout is fixed, "
        f"batch first: apply takes one sequence [T, I] and jaxrnn.apply_batch "
        f"a batch [B, T, I]. Fix: drop batch_first, and pass time-major data "
        f"[T, B, I] as jaxrnn.apply_batch(net, params, xs, time_major=True).")
  if nonlinearity not in ("tanh", "relu"):
    raise ValueError(f"{where}: nonlinearity={nonlinearity!r}; expected "
                     f"'tanh' or 'relu' as in torch.nn.RNN.")
  if nonlinearity != "tanh" and kind != "rnn":
    raise ValueError(f"{where}: nonlinearity={nonlinearity!r} is an nn.RNN "
                     f"option; kind={kind!r} has none.")
  cell = torch_cell(kind, hidden_size, proj_size, nonlinearity, bias)
  one = bidirectional_layer(cell, cell) if bidirectional else rnn(cell)
  if num_layers == 1:
    if dropout:   # as torch warns: its dropout sits between layers
      warnings.warn(f"{where}: dropout={dropout} acts between layers, and "
                    f"num_layers=1 has none: no dropout runs, as in torch.",
                    stacklevel=2)
    return with_torch_init(one)
  return with_torch_init(stack(*([one] * num_layers), dropout=dropout))


def with_torch_init(model):
  """``model`` (a Cell or Seq) with its ``init`` drawing as torch's."""
  return model._replace(init=lambda key, input_size: init_like_torch(
      key, model.init(key, input_size)))


def init_like_torch(key: jax.Array, params: Any) -> Any:
  """Params of the same structure, drawn as torch initialises ``nn.LSTM``,
  ``nn.GRU`` and ``nn.RNN``: every weight and bias ``U(-k, k)`` with
  ``k = 1 / sqrt(H)``, so a bias `from_torch` merges, ``bias_ih +
  bias_hh``, is the sum of two such draws. Leaves other than cells'
  params are kept; cells torch has no equivalent of (peepholes, a missing
  gate, full gate recurrence, Cho's GRU) are refused.

  >>> import jax, jaxrnn, jaxrnn.interop.torch as jt
  >>> params = jt.init_like_torch(jax.random.key(0), jaxrnn.gru(16).init(jax.random.key(1), 3))
  >>> bool(abs(params.w_h).max() <= 0.25), bool(abs(params.b).max() <= 0.5)
  (True, True)
  """
  cells, tree = jax.tree.flatten(params, is_leaf=is_cell)

  def draw(p, key):
    if not is_cell(p):
      return p
    problem = torch_shape_problem(p)
    if problem:
      raise ValueError(f"jaxrnn.interop.torch.init_like_torch: {problem}; torch "
                       f"has no such module, so no initialisation to copy.")
    k = 1.0 / np.sqrt(p.w_h.shape[-1] // GATE_BLOCKS[PARAMS_KIND[type(p)]])
    fields = {name: value for name, value in p._asdict().items() if value is not None}
    *field_keys, twin_key = jax.random.split(key, len(fields) + 1)
    new = {name: jax.random.uniform(k_, value.shape, value.dtype, -k, k)
           for (name, value), k_ in zip(fields.items(), field_keys)}
    n = merged_width(p)
    if n:                    # torch's second bias, bias_hh, folded in
      b = new["b"]
      new["b"] = b.at[..., :n].add(
          jax.random.uniform(twin_key, b.shape[:-1] + (n,), b.dtype, -k, k))
    return p._replace(**new)

  keys = jax.random.split(key, len(cells))
  return jax.tree.unflatten(tree, [draw(p, k) for p, k in zip(cells, keys)])


def torch_shape_problem(p: Any) -> Optional[str]:
  """What in a cell's params no torch module holds, from their shapes, or None."""
  kind = PARAMS_KIND[type(p)]
  G = GATE_BLOCKS[kind]
  if kind == "lstm":
    extra = [f for f in ("p_i", "p_f", "p_o", "w_gates") if getattr(p, f) is not None]
    if extra:
      return f"the LSTM params have {extra[0]} (peepholes or full gate recurrence)"
  if kind == "gru" and p.b is not None and p.b_hn is None:
    return "the GRU params are Cho et al.'s (reset_after=False)"
  H = p.w_h.shape[-1] // G
  state = p.w_proj.shape[-2] if kind == "lstm" and p.w_proj is not None else p.w_h.shape[-2]
  if H * G != p.w_h.shape[-1] or state != H:
    return (f"the {kind.upper()} params' w_h is {list(p.w_h.shape)}, not {G} gate "
            f"blocks of the hidden size (a missing gate)")
  return None


def torch_cell(kind: str, hidden_size: int, proj_size: Optional[int] = None,
               nonlinearity: str = "tanh", bias: bool = True):
  """The jaxrnn `Cell` of one torch layer (or torch cell) of that ``kind``."""
  if kind == "lstm":
    # forget_bias only shapes init; converted params carry their own bias.
    return lstm(hidden_size, proj_size=proj_size or None, use_bias=bias)
  if kind == "gru":
    return gru(hidden_size, use_bias=bias)
  return simple_rnn(hidden_size, nonlinearity, use_bias=bias)   # "tanh" or "relu", jax.nn's


def carry_from_torch(h0: Any, c0: Any = None, *, num_layers: int = 1,
                     bidirectional: bool = False):
  """The carry of `layer`'s model from torch's initial states ``h_0, c_0``.

  ``h0`` is ``[L * D, B, P]`` (or ``[L * D, P]`` for one sequence) and, for
  an LSTM, ``c0`` is ``[L * D, B, H]``, as ``module(x, (h0, c0))`` takes
  them (entry ``l * D + d`` is layer l, direction d). The carry has the
  structure of `layer`'s: a cell's carry (``LSTMCarry(h, c)``, or ``h``), a
  ``(forward, backward)`` pair, or a tuple of those per layer; batched, pass
  it to `jaxrnn.apply_batch`.

  >>> import numpy as np, jaxrnn.interop.torch as jt
  >>> carry = jt.carry_from_torch(np.zeros((4, 8, 5)), np.ones((4, 8, 5)),
  ...                             num_layers=2, bidirectional=True)
  >>> len(carry), len(carry[0]), carry[0][1].c.shape
  (2, 2, (8, 5))
  """
  where = "jaxrnn.interop.torch.carry_from_torch"
  # A torch tensor (a learned initial state requires grad) is detached
  # first; anything else stays as jax reads it, a tracer under jit too.
  array = lambda x, name: jnp.asarray(as_numpy(x, name, where) if hasattr(x, "detach") else x)
  h0 = array(h0, "h0")
  c0 = None if c0 is None else array(c0, "c0")
  D = 2 if bidirectional else 1
  if h0.ndim not in (2, 3) or h0.shape[0] != num_layers * D:
    raise ValueError(
        f"{where}: h0 has shape {h0.shape}; expected [num_layers * directions, "
        f"B, H] = [{num_layers * D}, B, H] (or [{num_layers * D}, H] for one "
        f"sequence), as torch takes it. Fix: pass num_layers= and "
        f"bidirectional= as the module has them.")
  if c0 is not None and jnp.shape(c0)[:-1] != h0.shape[:-1]:
    raise ValueError(f"{where}: c0 has shape {jnp.shape(c0)} and h0 {h0.shape}; "
                     f"they differ only in the last axis (H and P).")
  state = lambda k: h0[k] if c0 is None else LSTMCarry(h0[k], jnp.asarray(c0)[k])
  layers = [(state(D * l), state(D * l + 1)) if bidirectional else state(l)
            for l in range(num_layers)]
  return layers[0] if num_layers == 1 else tuple(layers)


def carry_to_torch(carry: Any):
  """torch's final states from a carry of `layer`'s model: ``(h_n, c_n)``
  for an LSTM, else ``h_n``; ``[L * D, B, P]`` (``c_n`` ``[L * D, B, H]``).

  Under a mask the carry holds each sequence's last valid state, as
  ``h_n`` does for a packed sequence.

  >>> import numpy as np, jaxrnn.interop.torch as jt
  >>> h0 = np.arange(12.0).reshape(2, 3, 2)
  >>> bool((jt.carry_to_torch(jt.carry_from_torch(h0, num_layers=2)) == h0).all())
  True
  """
  # Depth first, a stack's layers and then each layer's (forward, backward),
  # is torch's order: entry l * D + d.
  states = jax.tree.leaves(carry, is_leaf=lambda x: isinstance(x, LSTMCarry))
  if states and all(isinstance(c, LSTMCarry) for c in states):
    return jnp.stack([c.h for c in states]), jnp.stack([c.c for c in states])
  if any(isinstance(c, LSTMCarry) for c in states) or len({jnp.shape(c) for c in states}) > 1:
    raise ValueError(
        f"jaxrnn.interop.torch.carry_to_torch: carry holds "
        f"{[type(c).__name__ if isinstance(c, LSTMCarry) else list(jnp.shape(c)) for c in states]}"
        f"; expected the carry of one torch module's layers: all LSTMCarry "
        f"(nn.LSTM) or all arrays of one shape (nn.GRU, nn.RNN). Fix: convert "
        f"the carry of each torch module's layers apart (a stack's carry is a "
        f"tuple, one entry per layer).")
  return jnp.stack(states)


def from_torch(source: Any, kind: Optional[str] = None, *, prefix: str = ""):
  """jaxrnn params from a torch ``nn.LSTM``/``nn.GRU``/``nn.RNN`` or its state dict.

  ``source`` is the module itself (everything is read from it) or a
  mapping from torch's keys to arrays (tensors, NumPy or jax arrays), with
  ``kind`` = ``"lstm"``, ``"gru"`` or ``"rnn"``. A torch cell
  (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``) or its state dict
  (keys ``weight_ih``, ``weight_hh``, ...) gives one cell's params. The number of layers,
  bidirectional, ``proj_size`` and ``bias`` are read from the keys, and
  every shape is checked. ``prefix`` selects one module's keys in a larger
  model's state dict (``prefix="encoder."``).

  Returns the params of `layer` (same dtypes as the source): a cell's
  params for one layer in one direction, ``(forward, backward)`` for a
  bidirectional layer, a tuple of those for several layers. Biases:
  ``b = bias_ih + bias_hh`` (GRU: the n part of ``bias_hh`` becomes
  ``b_hn``); ``bias=False`` gives None for both, as ``use_bias=False``
  cells have. Leaves are jax arrays (so float64
  becomes float32 unless ``jax_enable_x64`` is on, as with any jax array;
  a warning says so).

  Raises:
    ValueError: naming the key, for a missing or unexpected key, a wrong
      shape or an unknown kind.

  >>> import numpy as np, jaxrnn.interop.torch as jt
  >>> H, I = 4, 3
  >>> one = lambda *shape: np.ones(shape, np.float32)      # float64 would warn
  >>> sd = {"weight_ih_l0": one(4 * H, I), "weight_hh_l0": one(4 * H, H),
  ...       "bias_ih_l0": one(4 * H), "bias_hh_l0": one(4 * H)}
  >>> p = jt.from_torch(sd, "lstm")
  >>> p.w_x.shape, p.w_h.shape, p.b[:2].tolist()
  ((3, 16), (4, 16), [2.0, 2.0])
  """
  where = "jaxrnn.interop.torch.from_torch"
  if is_cell_module(source):
    config = cell_config(source)
    if kind is not None and read_kind(kind, where) != config["kind"]:
      raise ValueError(f"{where}: kind={kind!r} but the module is a "
                       f"{type(source).__name__} ({config['kind']}). Fix: "
                       f"leave kind out when passing a module.")
    return from_torch(source.state_dict(), config["kind"])
  if hasattr(source, "state_dict") and hasattr(source, "mode"):
    config = module_config(source)
    if kind is not None and read_kind(kind, where) != config["kind"]:
      raise ValueError(f"{where}: kind={kind!r} but the module is a "
                       f"{type(source).__name__} ({config['kind']}). Fix: "
                       f"leave kind out when passing a module.")
    kind, state = config["kind"], source.state_dict()
  elif isinstance(source, Mapping):
    if kind is None:
      raise ValueError(f"{where}: a state dict needs kind='lstm', 'gru' or "
                       f"'rnn' (the keys are the same for all three).")
    kind, state = read_kind(kind, where), source
  else:
    raise TypeError(f"{where}: source is a {type(source).__name__}; expected "
                    f"a torch nn.LSTM/nn.GRU/nn.RNN (or a cell, nn.LSTMCell/"
                    f"nn.GRUCell/nn.RNNCell) or a mapping from its "
                    f"state_dict() keys to arrays.")
  state = {k[len(prefix):]: v for k, v in state.items()
           if isinstance(k, str) and k.startswith(prefix)}
  one_cell = "weight_ih" in state and "weight_ih_l0" not in state   # a torch cell's keys
  if one_cell:   # read as one layer's; messages name the keys as given
    state = {f"{k}_l0" if k in CELL_KEYS else k: v for k, v in state.items()}

  def key_name(key: str) -> str:
    return prefix + (key[:-len("_l0")] if one_cell and key.endswith("_l0") else key)

  get = lambda key: as_numpy(state[key], f"state_dict[{key_name(key)!r}]", where)
  G = GATE_BLOCKS[kind]

  if "weight_hh_l0" not in state or "weight_ih_l0" not in state:
    # A larger model's state dict: its recurrent modules' prefixes.
    found = sorted({k[:-len("weight_hh_l0")] for k in source
                    if isinstance(k, str) and k.endswith("weight_hh_l0")}
                   ) if isinstance(source, Mapping) else []
    hint = (f" (this one has prefix={found[0]!r}{' and others' if found[1:] else ''})"
            if found and prefix != found[0] else "")
    raise ValueError(f"{where}: missing key {key_name('weight_hh_l0')!r} or "
                     f"{key_name('weight_ih_l0')!r}; keys under prefix "
                     f"{prefix!r} are {sorted(state)}. Fix: pass the "
                     f"module's state_dict() (and prefix= for a submodule{hint}).")
  w_hh0 = get("weight_hh_l0")
  if w_hh0.ndim != 2 or w_hh0.shape[0] % G:
    raise ValueError(
        f"{where}: state_dict[{key_name('weight_hh_l0')!r}] has shape "
        f"{w_hh0.shape}; kind={kind!r} expects [{G} * hidden_size, "
        f"hidden_size or proj_size]. Fix: check kind (LSTM 4 gate blocks, "
        f"GRU 3, RNN 1).")
  H = w_hh0.shape[0] // G
  I = get("weight_ih_l0").shape[-1]
  proj = "weight_hr_l0" in state
  if proj and kind != "lstm":
    raise ValueError(f"{where}: key {key_name('weight_hr_l0')!r} is an LSTM "
                     f"projection (proj_size) but kind={kind!r}.")
  P = get("weight_hr_l0").shape[0] if proj else H
  has_bias = "bias_ih_l0" in state
  two = "weight_ih_l0_reverse" in state
  L = 0
  while f"weight_ih_l{L}" in state:
    L += 1

  expected = {}  # key -> shape, in torch's order
  for k in range(L):
    in_size = I if k == 0 else P * (2 if two else 1)
    for s in (("", "_reverse") if two else ("",)):
      expected[f"weight_ih_l{k}{s}"] = (G * H, in_size)
      expected[f"weight_hh_l{k}{s}"] = (G * H, P)
      if has_bias:
        expected[f"bias_ih_l{k}{s}"] = (G * H,)
        expected[f"bias_hh_l{k}{s}"] = (G * H,)
      if proj:
        expected[f"weight_hr_l{k}{s}"] = (P, H)
  setting = (f"kind={kind!r}, hidden_size={H}, input_size={I}, num_layers={L}"
             f", bidirectional={two}, bias={has_bias}"
             + (f", proj_size={P}" if proj else ""))
  extra = sorted(set(state) - set(expected))
  if extra:
    raise ValueError(f"{where}: unexpected key {key_name(extra[0])!r} for a "
                     f"module with {setting} (read from the other keys). "
                     f"Fix: check kind and prefix, or drop the key.")
  arrays = {}
  for key, shape in expected.items():
    if key not in state:
      raise ValueError(f"{where}: missing key {key_name(key)!r}, expected "
                       f"with shape {shape} for a module with {setting}.")
    arrays[key] = get(key)
    if arrays[key].shape != shape:
      raise ValueError(f"{where}: state_dict[{key_name(key)!r}] has shape "
                       f"{arrays[key].shape}; expected {shape} for a module "
                       f"with {setting} (read from {key_name('weight_ih_l0')} and "
                       f"{key_name('weight_hh_l0')}). Fix: check kind, and that all keys "
                       f"come from one module.")

  def one(suffix):
    w_ih, w_hh = arrays["weight_ih" + suffix], arrays["weight_hh" + suffix]
    b_ih, b_hh = arrays.get("bias_ih" + suffix), arrays.get("bias_hh" + suffix)
    w_x, w_h = w_ih.T, w_hh.T
    b = b_hn = None                                   # bias=False
    if has_bias and kind == "gru":
      b = np.concatenate([fold(b_ih[:2 * H], b_hh[:2 * H]), b_ih[2 * H:]])
      b_hn = b_hh[2 * H:]
    elif has_bias:
      b = fold(b_ih, b_hh)
    if kind == "lstm":
      w_hr = arrays.get("weight_hr" + suffix)
      p = LSTMParams(w_x=w_x, w_h=w_h, b=b, w_proj=None if w_hr is None else w_hr.T)
    elif kind == "gru":
      p = GRUParams(w_x=w_x, w_h=w_h, b=b, b_hn=b_hn)
    else:
      p = RNNParams(w_x=w_x, w_h=w_h, b=b)
    return jax.tree.map(jnp.asarray, p)

  if not jax.config.jax_enable_x64 and any(a.dtype == np.float64 for a in arrays.values()):
    warnings.warn(
        f"{where}: the params are float64 and jax_enable_x64 is off, so they "
        f"become float32 (to_torch gives float32 back). Fix: "
        f"jax.config.update('jax_enable_x64', True) first to keep float64, "
        f"or convert a float32 module to silence this.", stacklevel=2)
  layers = tuple((one(f"_l{k}"), one(f"_l{k}_reverse")) if two else one(f"_l{k}")
                 for k in range(L))
  return layers[0] if L == 1 else layers


def to_torch(params: Any, *, bidirectional: Optional[bool] = None,
             bias: Optional[bool] = None, prefix: str = "",
             cell: bool = False) -> dict[str, np.ndarray]:
  """A torch state dict of NumPy arrays from jaxrnn params.

  ``params`` has the structure `from_torch` returns: a cell's params
  (``LSTMParams``, ``GRUParams``, ``RNNParams``) or a tuple of them, one
  per layer; for a bidirectional module a ``(forward, backward)`` pair or
  a tuple of pairs. A pair of cell params is also two layers of a
  one-way module: ``bidirectional=None`` (the default) tells them apart by
  their sizes (each layer takes what the one before puts out; both
  directions take the same input) and raises when both fit (input size
  equal to hidden size); pass ``bidirectional=`` then. The whole bias goes
  into ``bias_ih`` and ``bias_hh`` is zero (GRU: its n part is ``b_hn``).
  With ``bias=False`` (a module built with ``bias=False``) the bias keys
  are left out and the biases must be None or zero; ``bias=True`` writes
  zeros for params without biases; None, the default, is False when no
  layer has biases (cells built with ``use_bias=False``), else True. (A
  GRU without biases is torch's, ``reset_after=True``: `jaxrnn.gru` builds
  no other.) Params do not record activations: those of a cell built with
  other ones (``gate_activation``, the GRU's ``activation``, an LSTM's
  ``input_activation`` or ``output_activation``) go out as torch's sigmoid
  and tanh cell, which computes something else. Keys come in torch's order,
  with ``prefix`` in front; with ``cell=True`` one cell's params go out
  under the keys of torch's ``nn.LSTMCell``, ``nn.GRUCell`` or
  ``nn.RNNCell`` (``weight_ih``, without ``_l0``). Load with
  ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``
  (bfloat16 and float16 params come out as float32, exactly, as
  ``torch.from_numpy`` refuses ``ml_dtypes.bfloat16``; ``load_state_dict``
  copies them into the module's own dtype).

  Raises:
    ValueError: for params torch cannot hold (peepholes, a missing gate,
      ``full_gate_recurrence``, GRU ``reset_after=False``), nonzero biases
      with ``bias=False``, a structure unlike the above or layers whose
      sizes do not chain, naming the field and layer; for a pair that fits
      both layouts when ``bidirectional`` is None.

  >>> import jax, jaxrnn, jaxrnn.interop.torch as jt
  >>> params = jaxrnn.gru(4).init(jax.random.key(0), 3)
  >>> {k: v.shape for k, v in jt.to_torch(params).items()}
  {'weight_ih_l0': (12, 3), 'weight_hh_l0': (12, 4), 'bias_ih_l0': (12,), 'bias_hh_l0': (12,)}
  """
  where = "jaxrnn.interop.torch.to_torch"
  if cell:
    if not is_cell(params):
      raise ValueError(f"{where}: cell=True but params are {type(params).__name__}"
                       f"; expected one cell's params (LSTMParams, GRUParams, "
                       f"RNNParams), as torch's cells hold one layer in one "
                       f"direction. Fix: cell=False for a module's layers.")
    if getattr(params, "w_proj", None) is not None:
      raise ValueError(f"{where}: cell=True but params.w_proj is set; torch's "
                       f"nn.LSTMCell has no projection (proj_size is nn.LSTM's). "
                       f"Fix: cell=False, for an nn.LSTM with proj_size.")
    sd = to_torch(params, bidirectional=False, bias=bias, prefix=prefix)
    return {k[:-len("_l0")]: v for k, v in sd.items()}
  if bidirectional is None:
    fits = [b for b in (False, True) if layout_problem(params, b) is None]
    if len(fits) == 2:
      raise ValueError(
          f"{where}: params are a pair of cell params that fit both two "
          f"layers of a one-way module and one bidirectional layer (their "
          f"input size equals their output size: the hidden size, or "
          f"proj_size). Fix: say which, bidirectional=True or "
          f"bidirectional=False.")
    # Neither fits: explain the layout the structure suggests.
    bidirectional = fits[0] if fits else is_pair(params) or (
        isinstance(params, tuple) and bool(params) and all(is_pair(p) for p in params))
  problem = layout_problem(params, bidirectional)
  if problem is not None:
    raise ValueError(f"{where}: {problem}")
  layers = (params,) if (is_pair if bidirectional else is_cell)(params) else params
  kinds = {PARAMS_KIND[type(p)] for lay in layers
           for p in (lay if bidirectional else (lay,))}
  if len(kinds) != 1:
    raise ValueError(f"{where}: params mix cell kinds {sorted(kinds)}; a "
                     f"torch module has one kind in every layer.")
  kind = kinds.pop()
  if bias is None:
    bias = any(p.b is not None for p in jax.tree.leaves(layers, is_leaf=is_cell))
  out = {}
  for k, lay in enumerate(layers):
    for s, p in zip(("", "_reverse"), lay if bidirectional else (lay,)):
      out.update(export_cell(kind, p, f"l{k}{s}", bias, prefix, where))
  return out


def is_cell(p: Any) -> bool:
  return type(p) in PARAMS_KIND


def is_pair(p: Any) -> bool:
  """A ``(forward, backward)`` pair of cell params."""
  return (isinstance(p, tuple) and not is_cell(p) and len(p) == 2
          and all(is_cell(q) for q in p))


def layout_problem(params: Any, bidirectional: bool) -> Optional[str]:
  """Why ``params`` are not one torch module's layers (with ``bidirectional``), or None."""
  one_layer = is_pair(params) if bidirectional else is_cell(params)
  layers = (params,) if one_layer else params
  if not (isinstance(layers, tuple) and layers and all(
      (is_pair if bidirectional else is_cell)(p) for p in layers)):
    what = ("a (forward, backward) pair of cell params or a tuple of such "
            "pairs" if bidirectional else
            "cell params (LSTMParams, GRUParams, RNNParams) or a tuple of "
            "them, one per layer")
    return (f"params is a {type(params).__name__}; with bidirectional="
            f"{bidirectional} expected {what}, as made by jaxrnn.interop.torch."
            f"layer(...).init. Fix: set bidirectional= to match the params.")
  takes = None        # what layer k must take: what layer k - 1 puts out
  for k, lay in enumerate(layers):
    directions = lay if bidirectional else (lay,)
    ins = {p.w_x.shape[0] for p in directions}
    outs = {p.w_h.shape[0] for p in directions}   # H, or proj_size
    if len(ins) > 1 or len(outs) > 1:
      return (f"layer l{k}'s two directions take inputs of sizes {sorted(ins)} "
              f"and put out {sorted(outs)}; torch's directions share both. Fix: "
              f"pass the (forward, backward) params of one bidirectional layer.")
    if takes is not None and ins != {takes}:
      return (f"layer l{k} takes inputs of size {ins.pop()} but layer l{k - 1} "
              f"puts out {takes}{' (both directions)' if bidirectional else ''}, "
              f"so these are not one torch module's layers (bidirectional="
              f"{bidirectional}). Fix: pass the params of one module's layers "
              f"in order, with bidirectional= set to match them.")
    takes = outs.pop() * len(directions)
  return None


def export_cell(kind: str, p: Any, suffix: str, bias: bool, prefix: str,
                where: str) -> dict[str, np.ndarray]:
  """One layer and direction of `to_torch`."""
  name = f"layer {suffix}"
  np_ = lambda a: np.asarray(a)
  G = GATE_BLOCKS[kind]
  w_x, w_h = np_(p.w_x), np_(p.w_h)
  b = np.zeros((w_x.shape[1],), w_x.dtype) if p.b is None else np_(p.b)
  if kind == "lstm":
    for field in ("p_i", "p_f", "p_o", "w_gates"):
      if getattr(p, field) is not None:
        raise ValueError(
            f"{where}: {name} has params.{field} set (a peephole or "
            f"full-gate-recurrence LSTM); torch.nn.LSTM has neither. Fix: "
            f"convert a plain jaxrnn.lstm(hidden_size) or lstm(..., "
            f"proj_size=P).")
  if kind == "gru" and p.b_hn is None and p.b is not None:
    raise ValueError(f"{where}: {name} is a GRU with reset_after=False "
                     f"(b_hn is None); torch.nn.GRU applies the reset gate "
                     f"after the matmul. Fix: use jaxrnn.gru(H, "
                     f"reset_after=True).")
  H = (np_(p.w_proj).shape[0] if kind == "lstm" and p.w_proj is not None
       else w_h.shape[0])
  if w_x.shape[1] != G * H or w_h.shape[1] != G * H:
    raise ValueError(
        f"{where}: {name} has w_x {w_x.shape}, w_h {w_h.shape}: "
        f"{w_h.shape[1] // max(H, 1)} gate blocks of hidden size {H}; "
        f"torch's {kind.upper()} has {G} ({'i, f, g, o' if G == 4 else 'r, z, n' if G == 3 else 'one'}). "
        f"A jaxrnn LSTM without one of its gates (CIFG, NIG, NFG, NOG) "
        f"has no torch equivalent.")
  b_ih, b_hh = b, np.zeros_like(b)
  if kind == "gru":
    b_hn = np.zeros_like(b[:H]) if p.b_hn is None else np_(p.b_hn)   # None: no biases
    b_hh = np.concatenate([np.zeros_like(b[:2 * H]), b_hn])
  if not bias:
    nonzero = [n for n, v in (("b", b_ih), ("b_hn", b_hh)) if np.any(v != 0)]
    if nonzero:
      raise ValueError(
          f"{where}: {name} has nonzero params.{nonzero[0]} but bias=False; "
          f"a torch module built with bias=False has no bias to hold it. "
          f"Fix: export with bias=True (and build the module with bias="
          f"True), or zero the bias.")
  out = {f"weight_ih_{suffix}": w_x.T, f"weight_hh_{suffix}": w_h.T}
  if bias:
    out[f"bias_ih_{suffix}"] = b_ih
    out[f"bias_hh_{suffix}"] = b_hh
  if kind == "lstm" and p.w_proj is not None:
    out[f"weight_hr_{suffix}"] = np_(p.w_proj).T
  # Fresh, contiguous, writable arrays: torch.from_numpy wants all three,
  # and float32 for narrower floats (it refuses ml_dtypes' bfloat16).
  wide = lambda v: v.astype(np.float32) if v.dtype.itemsize < 4 else v
  return {prefix + k: np.array(wide(v), order="C", copy=True) for k, v in out.items()}


CELL_KEYS_ANY = {"w_x", "w_h", "b"}       # a cell's params held as a dict (NNX state)


class BiasPair(NamedTuple):
  """`with_torch_biases`' stand-in for a merged bias: ``b`` and its twin,
  torch's second bias (``b``'s merged part's shape). Both halves' key in a
  key path reads as ``b`` too (`BiasKey`), so that a mask or label
  function that looks at paths (``path[-1].name == "b"``) treats the twin
  as the bias it stands for."""
  b: Any
  twin: Any


class BiasKey(NamedTuple):
  """A `BiasPair` half's key: ``.name`` and ``.key`` are ``"b"``, as
  ``GetAttrKey`` and ``DictKey`` have them; ``half`` tells them apart."""
  half: int
  name: str = "b"
  key: str = "b"

  def __str__(self):
    return f"[b{'' if self.half == 0 else ' twin'}]"


jax.tree_util.register_pytree_with_keys(
    BiasPair,
    lambda pair: (((BiasKey(0), pair.b), (BiasKey(1), pair.twin)), None),
    lambda _, children: BiasPair(*children))


def is_cell_like(p: Any) -> bool:
  """Cell params: a ``LSTMParams``, ``GRUParams`` or ``RNNParams``, or a
  mapping with their keys (how ``nnx.state`` and a file restored without
  a template hold them)."""
  return is_cell(p) or (isinstance(p, Mapping) and CELL_KEYS_ANY <= set(p.keys()))


def merged_width(p: Any) -> int:
  """How much of the cell's ``b`` `from_torch` made from both torch biases,
  ``bias_ih + bias_hh``: all of it, but the GRU's r and z parts only (its n
  part is ``bias_ih`` alone; ``b_hn`` holds the other); 0 for no ``b``
  array (no biases, or one an outer ``optax.masked`` left out)."""
  b = p.get("b") if isinstance(p, Mapping) else p.b
  if getattr(b, "ndim", 0) < 1:           # None, a masked-out node, a scalar
    return 0
  gru = type(p) is GRUParams or (isinstance(p, Mapping) and "b_hn" in p)
  return 2 * (b.shape[-1] // 3) if gru else b.shape[-1]


def with_b(p: Any, b: Any) -> Any:
  """Cell params ``p`` with ``b`` in place of their bias, of ``p``'s own type."""
  if is_cell(p):
    return p._replace(b=b)
  children, tree = jax.tree_util.tree_flatten_with_path(p, is_leaf=lambda x: x is not p)
  name = lambda path: getattr(path[0], "key", getattr(path[0], "name", None))
  return jax.tree.unflatten(tree, [b if name(path) == "b" else child
                                   for path, child in children])


def with_torch_biases(opt: Any) -> Any:
  r"""An optax optimizer that moves `from_torch`'s merged biases as torch
  moves its two.

  `from_torch` keeps one bias ``b = bias_ih + bias_hh``: the same function
  and, since both enter the gates as a sum, the same gradient ``g`` as
  each of torch's. But a torch optimizer steps both, so their sum moves by
  both steps, clipping by the global norm counts ``g`` twice, and weight
  decay shrinks each. Fine-tuned with ``opt`` itself, a ported model's
  biases take about half torch's steps (Adam: exactly half), and its
  training drifts from torch's from the first update. This runs ``opt`` on
  the params with every merged bias ``b`` replaced by the pair ``(b, t)``,
  ``t`` its twin (gradient ``g``, value 0, so that decay of ``b`` counts
  each torch bias once), and adds the twin's update to ``b``:

  .. math::

    (\Delta p, (\Delta b, \Delta t)) = \mathrm{opt}((g_p, (g_b, g_b)), (p, (b, 0))), \qquad
    b \leftarrow b + \Delta b + \Delta t

  As ``b`` becomes a pair in place, masks and labels given as pytrees of
  the params (``optax.masked``, ``adamw(mask=...)``,
  ``optax.multi_transform``) still fit, as prefixes; a ``b`` that an outer
  ``optax.masked`` leaves out is left alone.

  It follows torch's updates exactly for optimizers linear in the
  gradients (SGD, with momentum, Nesterov or weight decay) and for
  elementwise ones without weight decay in the gradient (Adam, AdamW,
  RMSprop, Adagrad), with `optax.clip_by_global_norm` as
  ``clip_grad_norm_``; Adam with coupled weight decay
  (``torch.optim.Adam(weight_decay=...)``) depends on how torch split the
  sum, which `from_torch` does not keep. Every cell's params in the tree
  (``LSTMParams``, ``GRUParams``, ``RNNParams``, or a mapping with their
  keys as ``nnx.state`` holds them, wherever they sit in a larger model)
  are taken as ported: for cells jaxrnn initialised, use ``opt`` itself.

  >>> import jax, jax.numpy as jnp, optax, jaxrnn, jaxrnn.interop.torch as jt
  >>> params = jaxrnn.lstm(2).init(jax.random.key(0), 3)
  >>> grads = jax.tree.map(jnp.ones_like, params)
  >>> opt = jt.with_torch_biases(optax.sgd(0.1))
  >>> updates, _ = opt.update(grads, opt.init(params), params)
  >>> round(float(updates.w_x[0, 0]), 6), round(float(updates.b[0]), 6)   # b moves twice
  (-0.1, -0.2)
  """
  import optax       # the train extra; imported here so that conversions need only NumPy

  opt = optax.with_extra_args_support(opt)

  def expand(tree, twin):
    """Each merged bias ``b`` as the pair ``(b, twin(b's merged part))``."""
    def one(p):
      n = merged_width(p) if is_cell_like(p) else 0
      if not n:
        return p
      b = p.get("b") if isinstance(p, Mapping) else p.b
      return with_b(p, BiasPair(b, twin(b[..., :n])))
    return jax.tree.map(one, tree, is_leaf=is_cell_like)

  def collapse(updates):
    """Each pair's second update added to the first's merged part."""
    def one(p):
      b = p.get("b") if isinstance(p, Mapping) else getattr(p, "b", None)
      if not (is_cell_like(p) and isinstance(b, BiasPair)):
        return p
      u, twin = b
      pad = [(0, 0)] * (twin.ndim - 1) + [(0, u.shape[-1] - twin.shape[-1])]
      return with_b(p, u + jnp.pad(twin, pad))
    return jax.tree.map(one, updates, is_leaf=is_cell_like)

  def init(params):
    return opt.init(expand(params, jnp.zeros_like))

  def update(grads, state, params=None, **extra_args):
    params = None if params is None else expand(params, jnp.zeros_like)
    updates, state = opt.update(expand(grads, lambda g: g), state, params, **extra_args)
    return collapse(updates), state

  return optax.GradientTransformationExtraArgs(init, update)
