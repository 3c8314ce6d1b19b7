r"""A language model over token ids: an embedding, a recurrent layer, a readout.

Lives here: `language_model` (the model as pure functions, with its TBPTT
loss and its held-out evaluation) and `LanguageModelParams`. Not here: the
layers (`jaxrnn`), `generate` and the one-hot `readout_model`
(`model.py`), the windows and the train step (`jaxrnn.train`).

The model of PyTorch's word-language-model example (Zaremba et al. 2014),
with weight tying as an option (Press & Wolf 2017, Inan et al. 2017):

.. math::

  x_t = \mathrm{drop}(E[w_t]), \qquad (c_T, h_{1..T}) = \mathrm{layer}(x_{1..T}),
  \qquad o_t = \mathrm{drop}(h_t) W_{out} + b_{out}

with ``W_out = E^T`` when tied (``[H, V]``, so H must equal E). Dropout
here is PyTorch's ``nn.Dropout``, a fresh mask per element, on the
embeddings and the layer's outputs; dropout between a stack's layers is the
stack's (``jaxrnn.stack(..., dropout=)``), and Keras' variational dropout
the layer's (``jaxrnn.rnn(cell, dropout=, recurrent_dropout=)``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Cell, check_size, exportable, first_outside
from jaxrnn._dropout import check_key, check_rate
from jaxrnn._layers import Seq, as_seq, run_batch
from jaxrnn._scan_batch import batch_major, reported_as


@exportable
class LanguageModelParams(NamedTuple):
  embed: jax.Array             # [V, E]
  core: Any                    # the recurrent layer's params
  w_out: Optional[jax.Array]   # [H, V]; None when tied (the readout is embed.T)
  b_out: jax.Array             # [V]


class LanguageModel(NamedTuple):
  """See `language_model`. ``apply``, ``apply_batch``, ``step`` and
  ``output_size`` are those of a `jaxrnn.tasks.Model` taking ids, so
  `jaxrnn.tasks.generate` continues a prompt with it."""
  init: Callable
  apply: Callable
  apply_batch: Callable
  initial_carry: Callable
  step: Callable
  output_size: int
  loss: Callable
  evaluate: Callable
  takes_ids: bool = True


def language_model(layer: Union[Cell, Seq], vocab_size: int, *,
                   embed_size: Optional[int] = None, tied: bool = False,
                   dropout: float = 0.0) -> LanguageModel:
  """Token ids in, next-token logits out, through ``layer`` (a Cell or a Seq).

  ``embed_size`` defaults to the layer's output size H; ``tied=True``
  reads the logits off the embedding (``W_out = E^T``, PyTorch's
  ``--tied``), so it needs ``embed_size == H`` (for another E, end the
  layer with ``jaxrnn.lstm(H, proj_size=E)``). ``dropout`` is applied
  where a key is passed (training), as PyTorch's ``nn.Dropout``.

  Functions (``ids`` are int token ids in ``[0, V)``):

  * ``init(key) -> LanguageModelParams``: embedding ``N(0, 1/E)``, the
    layer's own init, readout ``N(0, 1/H)`` and zero bias.
  * ``apply(params, ids int[T], *, carry=None, mask=None, resets=None,
    key=None) -> (carry, logits [T, V])``, one sequence; ``apply_batch``
    the same for ``ids [B, T]`` on the batched path (``seq_lengths``,
    ``time_major`` as in `jaxrnn.apply_batch`). ``apply`` splits its key
    in three, ``k_layer, k_embed, k_out = jax.random.split(key, 3)``, for
    the layer and the two masks; sequence b of ``apply_batch`` draws as
    ``apply`` does from ``jax.random.split(key, B)[b]``, so the two agree.
  * ``initial_carry(params, batch_size=None)``: the zero carry, with a
    leading ``batch_size`` axis when given (the carry TBPTT starts from).
  * ``step(params, carry, id) -> (carry, logits [V])``, for decoding;
    `jaxrnn.tasks.generate` (``inputs=`` not needed) samples with it.
  * ``loss(params, carry, batch, key=None) -> (nll_sum, count,
    {"accuracy": correct_sum}, carry)``: the batched TBPTT loss for
    ``jaxrnn.train.make_tbptt_step(model.loss, opt, batched=True)``, over
    a batch ``(inputs, targets)`` or ``(inputs, targets, mask)`` of
    ``[B, W]`` windows (`jaxrnn.train.windows`).
  * ``evaluate(params, stream int[N], batch_size=10, window=35) ->
    {"loss", "perplexity", "tokens"}``: the mean negative log-likelihood
    (nats) of every next token of a held-out stream, read as in training
    (``batch_size`` streams, window by window, the carry passed on; every
    one of the ``N - 1`` targets scored once, `windows(...,
    keep_tail=True)`), and ``exp`` of it; jitted, one compile per window
    layout.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> lm = language_model(jaxrnn.lstm(16), vocab_size=50, tied=True)
  >>> params = lm.init(jax.random.key(0))
  >>> params.embed.shape, params.w_out
  ((50, 16), None)
  >>> carry, logits = lm.apply(params, jnp.array([3, 1, 4, 1, 5]))
  >>> logits.shape
  (5, 50)
  >>> round(lm.evaluate(params, jnp.arange(200) % 50, batch_size=4, window=8)["perplexity"])
  50
  """
  where = "jaxrnn.tasks.language_model"
  seq = as_seq(layer, where)
  V = check_size(where, "vocab_size", vocab_size)
  H = seq.output_size
  E = H if embed_size is None else check_size(where, "embed_size", embed_size)
  rate = check_rate(where, "dropout", dropout)
  if tied and E != H:
    raise ValueError(
        f"{where}: tied=True reads the logits off the embedding, so the layer's "
        f"output size ({H}) must equal embed_size ({E}). Fix: embed_size={H}, or "
        f"end the layer with jaxrnn.lstm({H}, proj_size={E}).")

  def init(key):
    k_embed, k_core, k_out = jax.random.split(key, 3)
    return LanguageModelParams(
        embed=jax.random.normal(k_embed, (V, E)) / math.sqrt(E),
        core=seq.init(k_core, E),
        w_out=None if tied else jax.random.normal(k_out, (H, V)) / math.sqrt(H),
        b_out=jnp.zeros((V,)))

  def checked(ids, kept=None):
    """``ids`` as an int array, refused outside ``[0, V)`` where known and
    ``kept`` (the mask's True steps, where known: padding may hold -100)."""
    if not isinstance(ids, jax.core.Tracer):
      ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise TypeError(
          f"{where}: ids are {ids.dtype}{list(ids.shape)}; expected int token ids "
          f"in [0, {V}). Fix: pass the ids (of one-hot rows: jnp.argmax(x, -1)).")
    bad = first_outside(ids, kept if np.shape(kept) == np.shape(ids) else None, V)
    if bad is not None:
      raise ValueError(
          f"{where}: ids hold {bad}; expected ids in [0, {V}), this model's "
          f"vocab_size. Fix: map unknown tokens to one of their own (<unk>), or a "
          f"larger vocab_size.")

  def embed(params, ids, kept=None):
    checked(ids, kept)
    return jnp.asarray(params.embed)[jnp.asarray(ids)]

  def lengths_mask(ids, seq_lengths, time_major):
    """The mask ``seq_lengths`` stands for, where both are known."""
    if seq_lengths is None or any(isinstance(a, jax.core.Tracer) for a in (ids, seq_lengths)):
      return None
    T = np.shape(ids)[0 if time_major else 1]
    mask = np.arange(T)[None, :] < np.asarray(seq_lengths)[:, None]
    return mask.T if time_major else mask

  def readout(params, hs):
    w = jnp.asarray(params.embed).T if tied else params.w_out
    return hs @ w + params.b_out

  def drop(key, x):
    if key is None or rate == 0.0:
      return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

  def keys_of(key):
    """``(layer, embedding, output)`` keys, three independent streams."""
    return (None,) * 3 if key is None else tuple(jax.random.split(key, 3))

  def apply(params, ids, *, carry=None, mask=None, resets=None, key=None):
    k_layer, k_in, k_out = keys_of(check_key(where, key))
    given = {k: v for k, v in (("key", k_layer), ("resets", resets)) if v is not None}
    xs = drop(k_in, embed(params, ids, mask))
    carry, hs = seq.apply(params.core, xs, carry=carry, mask=mask, **given)
    return carry, readout(params, drop(k_out, hs))

  def apply_batch_(params, ids, *, carry=None, mask=None, resets=None, key=None,
                   seq_lengths=None, time_major=False):
    kept = mask if seq_lengths is None else lengths_mask(ids, seq_lengths, time_major)
    xs, mask, resets = batch_major(where, embed(params, ids, kept), mask, resets,
                                   seq_lengths, time_major, "model.apply", rank=3)
    key = check_key(where, key)
    if key is None:
      keys = (None,) * 3
    else:         # sequence b draws as apply does from split(key, B)[b]
      keys = jax.vmap(lambda k: jnp.stack(keys_of(k)), out_axes=1)(
          jax.random.split(key, xs.shape[0]))
    k_layer, k_in, k_out = keys
    per_sequence = lambda k, x: x if k is None else jax.vmap(drop)(k, x)
    with reported_as("tasks.language_model(...).apply_batch", time_major):
      carry, hs = run_batch(seq, params.core, per_sequence(k_in, xs), carry=carry,
                            mask=mask, resets=resets, keys=k_layer)
    logits = readout(params, per_sequence(k_out, hs))
    return carry, jnp.swapaxes(logits, 0, 1) if time_major else logits

  def initial_carry(params, batch_size=None):
    carry = seq.initial_carry(params.core)
    if batch_size is None:
      return carry
    B = check_size(where, "batch_size", batch_size)
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape), carry)

  def step(params, carry, token):
    carry, h = seq.step(params.core, carry, embed(params, token))
    return carry, readout(params, h)

  def loss(params, carry, batch, key=None):
    from jaxrnn.train import accuracy, cross_entropy   # optax only where training
    inputs, targets, *mask = batch
    mask = mask[0] if mask else None
    if jnp.ndim(inputs) != 2:
      raise ValueError(
          f"{where}: loss got inputs of shape {jnp.shape(inputs)}; it takes the whole "
          f"batch of windows, ids [B, W]. Fix: make_tbptt_step(model.loss, opt, "
          f"batched=True), or make_train_step(..., batched=True).")
    carry, logits = apply_batch_(params, inputs, carry=carry, mask=mask, key=key)
    total, count = cross_entropy(logits, targets, mask)
    correct, _ = accuracy(logits, targets, mask)
    return total, count, {"accuracy": correct}, carry

  @jax.jit
  def stream_nll(params, inputs, targets, mask):     # [K, B, W] each
    def body(carry, window):
      total, _, _, carry = loss(params, carry, window)
      return carry, total
    _, totals = jax.lax.scan(body, initial_carry(params, inputs.shape[1]),
                             (inputs, targets, mask))
    return totals.sum()

  def evaluate(params, stream, batch_size=10, window=35):
    from jaxrnn.train import windows
    checked(stream)
    inputs, targets, mask = windows(np.asarray(stream), batch_size, window, keep_tail=True)
    count = int(mask.sum())
    nll = float(stream_nll(params, inputs, targets, mask)) / count
    return {"loss": nll, "perplexity": math.exp(nll), "tokens": count}

  return LanguageModel(init=init, apply=apply, apply_batch=apply_batch_,
                       initial_carry=initial_carry, step=step, output_size=V,
                       loss=loss, evaluate=evaluate)
