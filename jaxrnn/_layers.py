"""Sequence layers: `Seq`, and `rnn`, `bidirectional`, `stack` that build them.

Lives here: whole-sequence layers, their batched form and their one-step
path for decoding. Not here: the time loops themselves (`_scan.py`,
`_scan_batch.py`), the cells (`_cells/`).

Stacking happens at the sequence level, so time stays inside each layer and
every layer hoists its own input projection out of its loop. Every layer
runs on one sequence (``apply``) or on a batch (``apply_batch``); the batched
form reaches `jaxrnn.scan_batch` and its kernels, which `jax.vmap` of
``apply`` cannot.
"""

from __future__ import annotations

import inspect
import warnings
from functools import partial
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, Params, is_flax, not_a_cell, project_one
from jaxrnn._dropout import (check_key, check_rate, mask_inputs, recurrent_size,
                             variational_masks)
from jaxrnn._scan import (RESTORED_WITHOUT_TEMPLATE, check_carry, check_cell,
                          check_checkpoint_every, check_params,
                          check_params_of_any_input, named, scan, torch_free, within)
from jaxrnn._scan_batch import batch_major, reported_as, scan_batch


class Seq(NamedTuple):
  """A layer over a whole sequence, as pure functions.

  Fields:
    init: ``(key, input_size) -> params``.
    apply: ``(params, xs [T, I], *, carry=None, mask=None, resets=None,
      key=None) -> (carry, ys [T, O])``. ``mask`` and ``resets`` are
      ``bool[T]`` as in `jaxrnn.scan`; ``key`` switches on dropout where a
      layer has it (None means inference).
    initial_carry: ``(params) -> carry``.
    step: ``(params, carry, x_t [I]) -> (carry, y_t [O])``, one step for
      decoding token by token. Layers that need the future (`bidirectional`,
      ``rnn(..., reverse=True)``) have one that raises, saying so; a
      hand-written Seq may have None.
    output_size: O.
    apply_batch: ``(params, xs [B, T, I], *, carry=None, mask=None,
      resets=None, keys=None) -> (carry, ys [B, T, O])``, ``apply`` over a
      batch: the carry has a leading B, ``mask`` and ``resets`` are
      ``bool[B, T]``, and ``keys`` (``[B]``, passed only when dropout is
      on) are the sequences' keys, each what ``apply`` would get as
      ``key``; `jaxrnn.apply_batch` draws them from its caller's one key
      with ``jax.random.split(key, B)``. The layers built here run
      `jaxrnn.scan_batch` (the batched kernels of the LSTM and its
      variants, the GRU and the simple RNN); None (a Seq written by hand)
      means ``jax.vmap(apply)``, which `apply_batch` falls back to. A
      ``_replace`` of ``apply`` keeps the old ``apply_batch``: replace both,
      or set it to None.
    reverse: True when the layer reads the sequence from its end
      (``rnn(..., reverse=True)``, or a stack of such layers), None for a
      stack whose layers run both ways, False otherwise. `bidirectional`
      reads it to run its backward layer from the end whatever it is given.
  """

  init: Callable[[Array, int], Params]
  apply: Callable[..., tuple[Carry, Array]]
  initial_carry: Callable[[Params], Carry]
  step: Optional[Callable[[Params, Carry, Array], tuple[Carry, Array]]]
  output_size: int
  apply_batch: Optional[Callable[..., tuple[Carry, Array]]] = None
  reverse: Optional[bool] = False


def apply_batch(layer: "Layer", params: Params, xs: Array, *, carry=None, mask=None,
                resets=None, key=None, seq_lengths=None,
                time_major: bool = False) -> tuple[Carry, Array]:
  """Runs ``layer`` over a batch ``xs [B, T, I]``: ``(carry, ys [B, T, O])``.

  The result of ``jax.vmap(layer.apply)`` with ``carry`` (leading axis B),
  ``mask`` and ``resets`` (``bool[B, T]``) batched, or None.
  ``seq_lengths`` (``int[B]``, sequences padded at their end, as Flax's
  ``nn.RNN`` takes them) stands for the mask ``jnp.arange(T) <
  seq_lengths[:, None]``; ``time_major=True`` takes ``xs [T, B, I]`` and
  flags ``[T, B]`` and returns ``ys [T, B, O]`` (PyTorch's
  ``batch_first=False``), the carry still batch first. As in
  `jaxrnn.scan_batch`, padded outputs are zero and reversed layers keep
  input order (Flax's ``keep_order=True``). Layers built by
  `rnn`, `stack` and `bidirectional` run their ``apply_batch``, which reaches
  the batched kernels of `jaxrnn.scan_batch` (for training, the faster
  path on CPU); a hand-written Seq without one is vmapped.
  With a ``key`` (dropout), sequence b gets ``jax.random.split(key, B)[b]``,
  and every layer inside (``rnn``'s masks, a stack's dropout between
  layers, either direction of a bidirectional layer) draws from it what
  ``apply`` draws from its key: the result is ``jax.vmap(layer.apply)``
  over those keys, dropped units included.
  Forward mode (`jax.jvp`, `jax.jacfwd`) runs the per-example path where
  a kernel would run, as `jaxrnn.scan_batch` does.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> net = jaxrnn.stack(jaxrnn.lstm(8), jaxrnn.gru(8))
  >>> params = net.init(jax.random.key(0), 3)
  >>> xs = jnp.ones((4, 5, 3))
  >>> carry, ys = jaxrnn.apply_batch(net, params, xs)
  >>> same = jax.vmap(lambda x: net.apply(params, x))(xs)[1]
  >>> ys.shape, bool(jnp.allclose(ys, same, atol=1e-5))
  ((4, 5, 8), True)
  """
  seq = as_seq(layer, "jaxrnn.apply_batch")
  carry = torch_free(carry)
  xs, mask, resets = batch_major("jaxrnn.apply_batch", xs, mask, resets,
                                 seq_lengths, time_major, "layer.apply")
  key = check_key("jaxrnn.apply_batch", key)
  keys = None if key is None else jax.random.split(key, xs.shape[0])
  with reported_as("apply_batch", time_major):
    carry, ys = run_batch(seq, params, xs, carry=carry, mask=mask, resets=resets, keys=keys)
  return carry, jnp.swapaxes(ys, 0, 1) if time_major else ys


def run_batch(seq: "Seq", params: Params, xs: Array, *, carry, mask, resets, keys):
  """``seq`` over a batch, sequence b with ``keys[b]`` (or None): its
  ``apply_batch``, or ``jax.vmap(seq.apply)`` for a Seq without one."""
  if seq.apply_batch is not None:
    extra = {} if keys is None else {"keys": keys}
    if keys is not None and not takes_keys(seq.apply_batch):
      raise TypeError(
          "jaxrnn.apply_batch: this Seq's apply_batch takes no keys=, the "
          "sequences' keys [B] that dropout draws from (Seq.apply_batch "
          "took one key= until 2026-12-05). Fix: take keys=None and give "
          "sequence b keys[b], as apply gets its key; or set apply_batch to "
          "None to run jax.vmap(apply).")
    return seq.apply_batch(params, xs, carry=carry, mask=mask, resets=resets, **extra)
  axis = lambda a: None if a is None else 0

  def one(x, c, m, r, k):
    return seq.apply(params, x, carry=c, mask=m, resets=r, key=k)
  return jax.vmap(one, in_axes=(0, axis(carry), axis(mask), axis(resets), axis(keys)))(
      xs, carry, mask, resets, keys)


def takes_keys(fn: Callable) -> bool:
  """Does ``fn`` take a ``keys=`` argument (or ``**kwargs``)?"""
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):       # no signature to read: let the call say
    return True
  return any(p.name == "keys" or p.kind is p.VAR_KEYWORD for p in parameters)


def split_keys(key: Array, n: int, batched: bool) -> Array:
  """``n`` keys from ``key``; ``batched``, from each sequence's key ``[B]``
  apiece, as ``[n, B]``: entry ``[k, b]`` is what ``apply`` makes from ``key[b]``."""
  if batched:
    return jax.vmap(lambda k: jax.random.split(k, n), out_axes=1)(key)
  return jax.random.split(key, n)


Layer = Union[Cell, Seq]


def check_one_sequence(where: str, xs) -> None:
  """A layer's ``apply`` takes one sequence; a batch gets the two ways to run it."""
  shape = jnp.shape(xs)
  if len(shape) == 3:
    raise ValueError(
        f"{where}: xs has shape {shape}; apply takes one sequence [T, I]. "
        f"Fix: jaxrnn.apply_batch(layer, params, xs) runs the {shape[0]} "
        f"sequences (on the batched kernels, faster to train), as does "
        f"jax.vmap(lambda x: layer.apply(params, x))(xs).")


def rnn(cell: Cell, *, reverse: bool = False, unroll: int | bool | None = None,
        dropout: float = 0.0, recurrent_dropout: float = 0.0,
        checkpoint_every: Optional[int] = None) -> Seq:
  """A `Seq` that runs ``cell`` over the sequence with `jaxrnn.scan`
  (`jaxrnn.scan_batch` in `apply_batch`); ``unroll`` and
  ``checkpoint_every`` (rematerialised chunks, for long sequences) as there.

  ``dropout`` and ``recurrent_dropout`` are Keras' variational dropout
  (Gal & Ghahramani 2016; `jaxrnn._dropout`): called with a ``key``, each
  sequence draws one mask over its input features and one over
  ``h_{t-1}``, shared by the gates and kept for all its steps, and
  ``z_t = W (m_x x_t) + R (m_h h_{t-1}) + b`` (tf.keras' ``implementation=2``;
  Keras 3.8 and later draw a mask per gate when ``recurrent_dropout`` is
  set). Without a key they do nothing. ``recurrent_dropout`` needs params
  with the recurrent weights as ``w_h [P, G]`` (`jaxrnn.simple_rnn`,
  `jaxrnn.lstm`, `jaxrnn.gru`; peepholes and ``full_gate_recurrence``'s
  ``w_gates`` are not masked; in a cell of your own, ``h_{t-1}`` is masked
  where it meets ``w_h`` alone, so mask it in the step where it meets
  another recurrent matrix).

  In ``apply_batch`` each sequence's masks come from
  ``jax.random.split(key, B)``, so it equals ``jax.vmap(apply)`` over those
  keys. The batched kernels (the LSTM, its variants, the simple RNN, the
  GRU) apply the recurrent mask in their loops
  (`jaxrnn.scan_batch`'s ``recurrent_mask``): a training step at B = 32,
  T = 128, H = 256 with ``recurrent_dropout=0.2`` took 0.97-1.02x the
  LSTM's time without dropout, 0.98-1.23x the GRU's and 0.87-1.14x the
  peephole, CIFG and projected LSTMs' and the simple RNN's (``python
  benchmarks/batched_kernels.py --dropout [--cpu-devices 2]``, 2 CPU
  cores), where each sequence with its own scaled ``w_h`` under
  ``jax.vmap`` took 1.5-4.1x. A cell without such a kernel (a GRU with
  an activation of your own, your own cell unless it is
  an additive `jaxrnn.fused_cell` reading ``w_h``) runs that
  ``jax.vmap(apply)`` (``B`` copies of ``w_h`` and of its gradient in
  memory). cuDNN has no recurrent mask: an ``lstm(H, use_cudnn="auto")``
  cell runs jaxrnn's kernel then, and ``use_cudnn=True`` raises.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> layer = jaxrnn.rnn(jaxrnn.gru(8))
  >>> params = layer.init(jax.random.key(0), 3)
  >>> carry, ys = layer.apply(params, jnp.ones((5, 3)))
  >>> carry, y = layer.step(params, layer.initial_carry(params), jnp.ones(3))
  >>> ys.shape, y.shape
  ((5, 8), (8,))
  """
  check_cell("rnn", cell)
  check_checkpoint_every("rnn", checkpoint_every)
  dropout = check_rate("jaxrnn.rnn", "dropout", dropout)
  recurrent_dropout = check_rate("jaxrnn.rnn", "recurrent_dropout", recurrent_dropout)

  def masks(params, input_size, key):
    size = recurrent_size("jaxrnn.rnn", params) if recurrent_dropout else 0
    return variational_masks(key, input_size, size, dropout, recurrent_dropout)

  def apply(params, xs, *, carry=None, mask=None, resets=None, key=None):
    check_one_sequence("jaxrnn.rnn(...).apply", xs)
    m_h = None
    if check_key("jaxrnn.rnn(...).apply", key) is not None and (dropout or recurrent_dropout):
      xs = jnp.asarray(xs)
      m_x, m_h = masks(params, xs.shape[-1], key)
      xs = mask_inputs(xs, m_x)
    return scan(cell, params, xs, carry=carry, mask=mask, resets=resets,
                reverse=reverse, unroll=unroll, recurrent_mask=m_h,
                checkpoint_every=checkpoint_every)

  def apply_batch_(params, xs, *, carry=None, mask=None, resets=None, keys=None):
    m_h = None
    if keys is not None and (dropout or recurrent_dropout):
      xs = jnp.asarray(xs)
      m_x, m_h = jax.vmap(lambda k: masks(params, xs.shape[-1], k))(keys)
      xs = mask_inputs(xs, m_x)
    return scan_batch(cell, params, xs, carry=carry, mask=mask, resets=resets,
                      reverse=reverse, unroll=unroll, recurrent_mask=m_h,
                      checkpoint_every=checkpoint_every)

  def step(params, carry, x):
    if reverse:
      raise ValueError(
          "jaxrnn.rnn(..., reverse=True).step: a reversed layer reads the "
          "sequence from its end, so it cannot decode one step at a time. "
          "Fix: use apply on the whole sequence.")
    check_step(cell, params, carry, x)
    return cell.step(params, carry, project_one(cell, params, x))

  def initial_carry(params):
    if getattr(cell, "decoder_carry", None) is not None:
      raise ValueError(
          "jaxrnn.rnn(...).initial_carry: the cell is an attention decoder, "
          "whose carry holds the memory it attends over; this one would attend "
          "over nothing. Fix: carry = cell.decoder_carry(params, memory, mask), "
          "then layer.step(params, carry, x) or layer.apply(params, xs, carry=carry).")
    check_params_of_any_input("rnn(...).initial_carry", cell, params)
    return cell.initial_carry(params)

  def init(*args, **kwargs):
    params = cell.init(*args, **kwargs)
    recurrent_size("jaxrnn.rnn", params)   # refused here, not at the first keyed step
    return params

  return Seq(init=init if recurrent_dropout else cell.init, apply=apply,
             initial_carry=initial_carry, step=step, output_size=cell.output_size,
             apply_batch=apply_batch_, reverse=reverse)


def check_step(cell: Cell, params: Params, carry: Carry, x) -> None:
  """Raises at trace time unless ``x`` is one step's input ``[I]`` for
  ``params`` and ``carry`` is shaped as ``cell.initial_carry(params)``:
  unchecked, a batch of inputs or a carry leaf of size 1 would broadcast."""
  where = "rnn(...).step"
  if jnp.ndim(x) != 1:
    raise ValueError(
        f"{named(where)}: x has shape {tuple(jnp.shape(x))}; expected one "
        f"step's input [I], a vector. Fix: for a batch, jax.vmap(layer.step, "
        f"in_axes=(None, 0, 0))(params, carries, xs); for a whole sequence, "
        f"layer.apply.")
  check_params(where, cell, params, jnp.shape(x))
  check_carry(carry, cell.initial_carry(params), where)


def as_seq(layer: Layer, where: str = "jaxrnn") -> Seq:
  """A Cell becomes ``rnn(cell)``; a Seq stays as it is; anything else is
  refused, naming the likely mistake."""
  if isinstance(layer, Cell):
    return rnn(layer)
  # A Seq, or a layer of one's own with the fields the layers read.
  if all(hasattr(layer, f) for f in ("init", "apply", "output_size")) and not is_flax(layer):
    return layer
  what, fix = not_a_cell(layer)
  raise TypeError(f"{where}: got {what}; expected a jaxrnn Cell or Seq "
                  f"(jaxrnn.lstm(H), jaxrnn.rnn(cell), jaxrnn.stack(...), ...). "
                  f"Fix: {fix}.")



def run_from_the_end(layer: Layer) -> Seq:
  """``layer`` reading the sequence from its end: the backward direction.

  A Cell ``c`` becomes ``rnn(c, reverse=True)``, and a Seq that already
  runs that way stays as it is. Any other Seq (a stack, your own) runs over
  the sequence flipped in time, with its mask and resets, and its outputs
  are flipped back: a masked step freezes the carry wherever it sits, so
  this is ``reverse=True``'s result for any padding.
  """
  if isinstance(layer, Cell):
    return rnn(layer, reverse=True)
  layer = as_seq(layer, "jaxrnn.bidirectional")
  if layer.reverse:
    return layer
  if layer.reverse is None:
    raise ValueError(
        "jaxrnn.bidirectional: the backward layer is a stack whose layers run "
        "in both directions, so it has no one direction to reverse. Fix: "
        "build it from one-way layers (cells, or rnn(c)): bidirectional runs "
        "it from the sequence's end.")

  def flipped(apply, time_axis, params, xs, carry, mask, resets, key_args):
    flip = lambda a: None if a is None else jnp.flip(jnp.asarray(a), time_axis)
    carry, ys = apply(params, flip(xs), carry=carry, mask=flip(mask),
                      resets=flip(resets), **key_args)
    return carry, flip(ys)

  def apply(params, xs, *, carry=None, mask=None, resets=None, key=None):
    return flipped(layer.apply, 0, params, xs, carry, mask, resets, {"key": key})

  def apply_batch_(params, xs, *, carry=None, mask=None, resets=None, keys=None):
    return flipped(partial(run_batch, layer), 1, params, xs, carry, mask, resets,
                   {"keys": keys})

  def step(params, carry, x):
    raise ValueError(
        "jaxrnn.bidirectional: its backward layer reads the sequence from its "
        "end, so it cannot decode one step at a time. Fix: use apply on the "
        "whole sequence.")

  return Seq(init=layer.init, apply=apply, initial_carry=layer.initial_carry,
             step=step, output_size=layer.output_size, apply_batch=apply_batch_,
             reverse=True)


def concat(fw: Array, bw: Array) -> Array:
  return jnp.concatenate([fw, bw], axis=-1)


def sum_(fw: Array, bw: Array) -> Array:
  return fw + bw


def ave(fw: Array, bw: Array) -> Array:
  return (fw + bw) / 2


def mul(fw: Array, bw: Array) -> Array:
  return fw * bw


MERGES = {"concat": concat, "sum": sum_, "ave": ave, "mul": mul}   # Keras' merge_mode names


def bidirectional(
    forward: Layer,
    backward: Optional[Layer] = None,
    *,
    merge: Union[str, Callable[[Array, Array], Array]] = "concat",
) -> Seq:
  """Runs ``forward`` over the sequence and ``backward`` over it reversed.

  ``ys[t] = merge(forward_ys[t], backward_ys[t])``, where the backward layer
  has read ``xs[T-1], ..., xs[t]``. Under a mask the backward layer starts
  at each sequence's last valid step, wherever the padding is (see
  `jaxrnn.scan`). Params and carry are pairs ``(forward, backward)``.

  Args:
    forward, backward: Cells or Seqs. The backward one always runs from the
      sequence's end, as Flax's ``nn.Bidirectional`` runs its backward RNN:
      a Cell ``c`` as ``rnn(c, reverse=True)``, a Seq made with
      ``reverse=True`` as it is, any other Seq over the sequence flipped in
      time, so ``bidirectional(stack(a, b), stack(c, d))`` is two deep
      directions. Without ``backward``, ``forward`` runs both ways with
      params of its own in each (Keras' ``Bidirectional(layer)``).
    merge: ``"concat"`` (output size O_f + O_b), ``"sum"``, ``"ave"``,
      ``"mul"`` (Keras' ``merge_mode``s; these three need O_f = O_b), or a
      function ``(fw [T, O_f], bw [T, O_b]) -> [T, O]``.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> layer = jaxrnn.bidirectional(jaxrnn.lstm(4), jaxrnn.lstm(4))
  >>> params = layer.init(jax.random.key(0), 3)
  >>> (fw_carry, bw_carry), ys = layer.apply(params, jnp.ones((7, 3)))
  >>> ys.shape
  (7, 8)
  """
  if isinstance(backward, str):
    raise TypeError(
        f"jaxrnn.bidirectional: backward={backward!r}; expected a Cell or a Seq. "
        f"merge is keyword-only. Fix: jaxrnn.bidirectional(layer, merge={backward!r}).")
  fw = as_seq(forward, "jaxrnn.bidirectional")
  if backward is None and getattr(fw, "reverse", False):
    # Both directions would then read the sequence from its end.
    raise ValueError(
        "jaxrnn.bidirectional: the one layer given already runs from the "
        "sequence's end (reverse=True), so it cannot be the forward direction "
        "as well. Fix: pass the layer that runs forward, or both layers: "
        "bidirectional(forward, backward).")
  bw = run_from_the_end(forward if backward is None else backward)
  if isinstance(merge, str):
    if merge not in MERGES:
      raise ValueError(
          f"jaxrnn.bidirectional: merge={merge!r}; expected 'concat', 'sum', "
          f"'ave', 'mul' or a function (fw [T, O_f], bw [T, O_b]) -> ys [T, O]. "
          f"Fix: pass one of those, e.g. merge=lambda fw, bw: jnp.maximum(fw, bw).")
    merge_fn = MERGES[merge]
  elif callable(merge):
    merge_fn = merge
  else:
    raise TypeError(
        f"jaxrnn.bidirectional: merge is a {type(merge).__name__}; expected "
        f"'concat', 'sum', 'ave', 'mul' or a function (fw [T, O_f], bw [T, O_b]) "
        f"-> ys [T, O].")
  if merge in ("sum", "ave", "mul") and fw.output_size != bw.output_size:
    raise ValueError(
        f"jaxrnn.bidirectional: merge={merge!r} combines the two directions' "
        f"outputs element by element, but the forward layer puts out "
        f"{fw.output_size} features and the backward one {bw.output_size}. "
        f"Fix: give both layers the same output size, or use merge='concat'.")
  out = jax.eval_shape(merge_fn, jax.ShapeDtypeStruct((1, fw.output_size), jnp.float32),
                       jax.ShapeDtypeStruct((1, bw.output_size), jnp.float32))
  if not hasattr(out, "shape"):
    raise TypeError(
        f"jaxrnn.bidirectional: merge returned a {type(out).__name__}; expected one "
        f"array ys [T, O] from (fw [T, {fw.output_size}], bw [T, {bw.output_size}]). "
        f"Fix: for the two directions apart (Keras' merge_mode=None), keep "
        f"merge='concat' and split: ys[..., :{fw.output_size}], ys[..., {fw.output_size}:].")

  def init(key, input_size):
    k_fw, k_bw = jax.random.split(key)
    return (fw.init(k_fw, input_size), bw.init(k_bw, input_size))

  def check_pair(name, value, made):
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields") and len(value) == 2:
      return value
    got = (f"{type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list))
           else f"{jnp.result_type(value).name}{list(jnp.shape(value))}"
           if hasattr(value, "shape") else type(value).__name__)
    torch = (" PyTorch's (h0, c0) of a bidirectional module convert with "
             "jaxrnn.interop.torch.carry_from_torch(h0, c0, num_layers=..., "
             "bidirectional=True)." if name == "carry" else
             " PyTorch params: jaxrnn.interop.torch.from_torch of the "
             "bidirectional module.")
    if name == "params" and isinstance(value, dict):
      torch += " " + RESTORED_WITHOUT_TEMPLATE
    raise ValueError(
        f"jaxrnn.bidirectional: {name} is {got}; expected a pair (forward, "
        f"backward), as {made}: one {name} per direction. Fix: pass that "
        f"pair.{torch}")

  def initial_carry(params):
    params = check_pair("params", params, "this layer's init(key, input_size) made them")
    return (fw.initial_carry(params[0]), bw.initial_carry(params[1]))

  def run(batched, merge, params, xs, carry, mask, resets, key):
    params = check_pair("params", params, "this layer's init(key, input_size) made them")
    carry_fw, carry_bw = (None, None) if carry is None else check_pair(
        "carry", carry, "initial_carry(params) or apply made it")
    k_fw, k_bw = (None, None) if key is None else split_keys(key, 2, batched)
    bw_resets = None
    if resets is not None:
      # An episode starting at t+1 ends one at t: read backward, the carry
      # restarts before t.
      resets = jnp.asarray(resets)
      bw_resets = jnp.concatenate([resets[..., 1:], jnp.zeros_like(resets[..., :1])],
                                  axis=-1)
    directions = []
    for name, seq, p, c, r, k in (("forward", fw, params[0], carry_fw, resets, k_fw),
                                  ("backward", bw, params[1], carry_bw, bw_resets, k_bw)):
      with within(f"the bidirectional layer's {name} direction"):
        if batched:
          directions.append(run_batch(seq, p, xs, carry=c, mask=mask, resets=r, keys=k))
        else:
          directions.append(seq.apply(p, xs, carry=c, mask=mask, resets=r, key=k))
    (carry_fw, ys_fw), (carry_bw, ys_bw) = directions
    return (carry_fw, carry_bw), merge(ys_fw, ys_bw)

  def apply(params, xs, *, carry=None, mask=None, resets=None, key=None):
    check_one_sequence("jaxrnn.bidirectional(...).apply", xs)
    key = check_key("jaxrnn.bidirectional(...).apply", key)
    return run(False, merge_fn, params, xs, carry, mask, resets, key)

  def apply_batch_(params, xs, *, carry=None, mask=None, resets=None, keys=None):
    # merge is written for one sequence [T, O]; vmap keeps a custom one valid.
    return run(True, jax.vmap(merge_fn), params, xs, carry, mask, resets, keys)

  def step(params, carry, x):
    raise ValueError(
        "jaxrnn.bidirectional(...).step: the backward direction reads the "
        "sequence from its end, so a bidirectional layer (or a stack that holds "
        "one) cannot decode one step at a time. Fix: use apply on the whole "
        "sequence; to decode token by token, build the decoder from one-way "
        "layers.")

  return Seq(init=init, apply=apply, initial_carry=initial_carry, step=step,
             output_size=out.shape[-1], apply_batch=apply_batch_)


def stack(*layers: Layer, residual: bool = False, dropout: float = 0.0) -> Seq:
  """Layers applied one after another, each over the whole sequence.

  ``ys = layer_n(... layer_1(xs))``; with ``residual=True`` every layer after
  the first adds its input to its output (Wu et al. 2016); with
  ``dropout=p`` the outputs of every layer but the last are dropped with
  probability p (PyTorch's ``nn.LSTM(dropout=p)``), only when ``apply``
  gets a ``key``. Params and carry are tuples, one entry per layer.

  ``step`` runs one time step through all layers (no dropout), for
  decoding one token at a time with the carry in and out.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> net = jaxrnn.stack(jaxrnn.lstm(8), jaxrnn.lstm(8), jaxrnn.gru(8),
  ...                    residual=True, dropout=0.1)
  >>> params = net.init(jax.random.key(0), 3)
  >>> carry, ys = net.apply(params, jnp.ones((5, 3)), key=jax.random.key(1))
  >>> len(carry), ys.shape
  (3, (5, 8))
  """
  if not layers:
    raise ValueError("jaxrnn.stack: needs at least one layer.")
  dropout = check_rate("jaxrnn.stack", "dropout", dropout)
  if dropout and len(layers) == 1:   # as torch warns for nn.LSTM(num_layers=1, dropout=p)
    warnings.warn(f"jaxrnn.stack: dropout={dropout} acts between layers, and one "
                  f"layer has none: nothing is dropped. Fix: jaxrnn.rnn(cell, "
                  f"dropout=...) drops a layer's inputs.", stacklevel=2)
  seqs = tuple(as_seq(layer, "jaxrnn.stack") for layer in layers)

  def init(key, input_size):
    sizes = [input_size] + [s.output_size for s in seqs]
    if residual:
      for k in range(1, len(seqs)):
        if sizes[k] != sizes[k + 1]:
          raise ValueError(
              f"jaxrnn.stack(residual=True): layer {k} takes size {sizes[k]} "
              f"and returns {sizes[k + 1]}; a residual connection adds them, "
              f"so they must be equal. Fix: give every layer after the first "
              f"the same output size, or residual=False.")
    keys = jax.random.split(key, len(seqs))
    return tuple(s.init(k, n) for s, k, n in zip(seqs, keys, sizes))

  def initial_carry(params):
    check_params(params)
    return tuple(s.initial_carry(p) for s, p in zip(seqs, params))

  def check_params(params):
    if not isinstance(params, tuple) or len(params) != len(seqs):
      raise ValueError(
          f"jaxrnn.stack: params must be a tuple of {len(seqs)} layer params "
          f"as made by init; got {type(params).__name__}"
          f"{f' of length {len(params)}' if isinstance(params, tuple) else ''}."
          f" Fix: pass the params this stack's init(key, input_size) "
          f"returned, one entry per layer."
          f"{' ' + RESTORED_WITHOUT_TEMPLATE if isinstance(params, dict) else ''}")

  def check_carry_count(carry):
    if not isinstance(carry, (tuple, list)) or len(carry) != len(seqs):
      raise ValueError(
          f"jaxrnn.stack: carry must be a tuple of {len(seqs)} layer carries; "
          f"got {type(carry).__name__}"
          f"{f' of length {len(carry)}' if isinstance(carry, (tuple, list)) else ''}."
          f" Fix: start from initial_carry(params) or the carry that apply "
          f"or step returned.")

  def run(batched, params, xs, carry, mask, resets, key):
    check_params(params)
    if carry is not None:
      check_carry_count(carry)
    carries = (None,) * len(seqs) if carry is None else carry
    keys = (None,) * len(seqs) if key is None else split_keys(key, len(seqs), batched)
    new_carries = []
    for k, (s, p, c, layer_key) in enumerate(zip(seqs, params, carries, keys)):
      layer_key, drop_key = ((None, None) if layer_key is None
                             else split_keys(layer_key, 2, batched))
      with within(f"layer {k} of the stack, counted from 0"):
        if batched:
          c, ys = run_batch(s, p, xs, carry=c, mask=mask, resets=resets, keys=layer_key)
        else:
          c, ys = s.apply(p, xs, carry=c, mask=mask, resets=resets, key=layer_key)
      if residual and k > 0:
        ys = ys + xs
        if mask is not None:  # keep padded outputs at zero
          ys = jnp.where(jnp.asarray(mask)[..., None], ys, jnp.zeros_like(ys))
      if dropout and drop_key is not None and k < len(seqs) - 1:
        # Batched, each sequence draws its [T, O] mask from its own key.
        shape = ys.shape[1:] if batched else ys.shape
        draw = lambda one_key: jax.random.bernoulli(one_key, 1.0 - dropout, shape)
        keep = jax.vmap(draw)(drop_key) if batched else draw(drop_key)
        ys = jnp.where(keep, ys / (1.0 - dropout), 0.0)
      new_carries.append(c)
      xs = ys
    return tuple(new_carries), xs

  def apply(params, xs, *, carry=None, mask=None, resets=None, key=None):
    check_one_sequence("jaxrnn.stack(...).apply", xs)
    key = check_key("jaxrnn.stack(...).apply", key)
    return run(False, params, xs, carry, mask, resets, key)

  def apply_batch_(params, xs, *, carry=None, mask=None, resets=None, keys=None):
    return run(True, params, xs, carry, mask, resets, keys)

  def step(params, carry, x):
    check_params(params)
    check_carry_count(carry)
    new_carries = []
    for k, (s, p, c) in enumerate(zip(seqs, params, carry)):
      with within(f"layer {k} of the stack, counted from 0"):
        c, y = s.step(p, c, x)
      if residual and k > 0:
        y = y + x
      new_carries.append(c)
      x = y
    return tuple(new_carries), x

  # A hand-written layer without a step leaves the stack without one.
  directions = {s.reverse for s in seqs}
  return Seq(init=init, apply=apply, initial_carry=initial_carry,
             step=step if all(s.step is not None for s in seqs) else None,
             output_size=seqs[-1].output_size, apply_batch=apply_batch_,
             reverse=directions.pop() if len(directions) == 1 else None)
