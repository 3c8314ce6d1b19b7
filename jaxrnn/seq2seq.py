r"""Sequence to sequence: a bidirectional encoder and a decoder, with or without attention.

Lives here: `seq2seq` (the model as pure functions: ``init``, ``loss`` for
`jaxrnn.train.make_train_step`, ``teacher_forced``, ``greedy`` and ``beam``
decoding) and `Seq2SeqParams`.
Not here: the attention itself (`jaxrnn._cells.attention`), the training
loop (`jaxrnn.train`), tasks (``benchmarks/attention_task.py``).

Tokens: 0 is padding, 1 is BOS (the decoder's first input); the rest are
data. One example is ``(src int[S], src_mask bool[S], tgt int[T],
tgt_mask bool[T])``, both sides right-padded.

.. math::

  m &= \mathrm{BiGRU}(E[src])                 && [S, 2H] \text{ encoder states} \\
  s_0 &= \tanh(W_b [\overrightarrow{h}_{last}; \overleftarrow{h}_{first}])
                                              && \text{bridge} \\
  y_t &= \mathrm{decoder}(s_{t-1}, E[tgt_{t-1}])  && \text{teacher forcing} \\
  p(tgt_t) &= \mathrm{softmax}(W_o y_t + b_o)

With ``attention=None`` the decoder is a GRU that sees the source only
through ``s_0`` (Sutskever et al. 2014, Cho et al. 2014); otherwise it is
`attention_decoder` over ``m``, the Luong et al. (2015) form with the
context fed back (Bahdanau et al. 2014 introduced the idea). For the
``dot`` and ``scaled_dot`` scores, which need the query size H to equal the
memory size, the two directions of ``m`` are summed (``[S, H]``) instead of
concatenated.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._cell import check_size, exportable, project_one
from jaxrnn._cells.attention import attention as make_attention
from jaxrnn._cells.attention import attention_decoder
from jaxrnn._cells.gru import gru
from jaxrnn._layers import bidirectional
from jaxrnn._scan import scan
from jaxrnn.train.losses import accuracy, cross_entropy

PAD, BOS = 0, 1


@exportable
class Seq2SeqParams(NamedTuple):
  embed: jax.Array     # [V, E]
  encoder: Any         # bidirectional GRU params
  bridge: jax.Array    # [2H, H]
  decoder: Any         # GRU or attention-decoder params
  w_out: jax.Array     # [H, V]
  b_out: jax.Array     # [V]


class Seq2Seq(NamedTuple):
  """The model's pure functions; see `seq2seq`."""
  init: Callable
  encode: Callable
  loss: Callable
  teacher_forced: Callable
  greedy: Callable
  beam: Callable
  sample: Optional[Callable] = None


def seq2seq(vocab_size: int, hidden_size: int, src_length: int, *,
            attention: Optional[str] = "general", embed_size: int = 16) -> Seq2Seq:
  """A bidirectional-GRU encoder and a GRU decoder, attentional unless ``attention=None``.

  Functions (one example each; batch with `jax.vmap` or
  `jaxrnn.train.make_train_step`):

  * ``init(key) -> Seq2SeqParams``.
  * ``encode(params, src int[S], src_mask bool[S]) -> (memory [S, D], s_0 [H])``
    (D = 2H, or H for the dot scores).
  * ``teacher_forced(params, src, src_mask, tgt int[T], tgt_mask bool[T]) ->
    (logits [T, V], weights [T, S])``: decoder inputs ``[BOS, tgt_0 ..
    tgt_{T-2}]``; the weights show how a given target aligns to the source.
  * ``loss(params, (src, src_mask, tgt, tgt_mask)) -> (nll_sum, count,
    {"accuracy": correct_sum})``: teacher forcing, the `jaxrnn.train` loss
    convention.
  * ``greedy(params, src, src_mask, steps) -> (tokens int[steps], weights
    [steps, S])``: argmax decoding with `jax.lax.scan` (weights are zeros
    without attention).
  * ``beam(params, src, src_mask, steps, width) -> (tokens int[steps],
    log_prob, weights [steps, S])``: beam search keeping the ``width`` most
    probable prefixes and returning the most probable one with its log
    probability. There is no end token: every hypothesis has ``steps``
    tokens, so no length penalty is needed. ``width=1`` is greedy decoding;
    ``width >= V**(steps-1)`` is exhaustive search.
  * ``sample(params, src, src_mask, steps, key, temperature=1.0) ->
    (tokens int[steps], weights [steps, S])``: each token drawn from
    ``softmax(log_p / temperature)`` and fed back, as ``greedy`` feeds back
    the argmax.

  Decoding picks among all V tokens, PAD and BOS included (a trained model
  gives them no mass where it has seen none). Without attention the
  weights are all zero.

  >>> import jax, jax.numpy as jnp
  >>> model = seq2seq(8, 16, src_length=5)
  >>> params = model.init(jax.random.key(0))
  >>> src, mask = jnp.array([2, 3, 4, 0, 0]), jnp.arange(5) < 3
  >>> nll, count, metrics = model.loss(params, (src, mask, src, mask))
  >>> float(count)
  3.0
  >>> tokens, weights = model.greedy(params, src, mask, 4)
  >>> tokens.shape, weights.shape, bool(weights[:, 3:].max() == 0)
  ((4,), (4, 5), True)
  >>> best, log_prob, _ = model.beam(params, src, mask, 4, width=3)
  >>> best.shape, bool(log_prob <= 0)
  ((4,), True)
  """
  V, H, S, E = vocab_size, hidden_size, src_length, embed_size
  summed = attention in ("dot", "scaled_dot")     # query and memory both H wide
  encoder = bidirectional(gru(H), gru(H), merge="sum" if summed else "concat")
  if attention is None:
    decoder = gru(H)
  else:
    decoder = attention_decoder(gru(H), make_attention(attention), S,
                                H if summed else 2 * H)

  def init(key):
    ke, kn, kb, kd, ko = jax.random.split(key, 5)
    lecun = jax.nn.initializers.lecun_normal()
    return Seq2SeqParams(
        embed=jax.random.normal(ke, (V, E)) / E**0.5,
        encoder=encoder.init(kn, E),
        bridge=lecun(kb, (2 * H, H)),
        decoder=decoder.init(kd, E),
        w_out=lecun(ko, (H, V)),
        b_out=jnp.zeros((V,)))

  def encode(params, src, src_mask):
    if src.shape != (S,) or src_mask.shape != (S,):
      batched = src.ndim == 2 and src.shape[1] == S
      fix = ("its functions take one example; for a batch, jax.vmap them (or "
             "use jaxrnn.train.make_train_step)" if batched else
             f"pad the source to {S} tokens with a mask, or build the model "
             f"with src_length={src.shape[0] if src.ndim else '?'}")
      raise ValueError(
          f"jaxrnn.seq2seq: src is {src.shape} and src_mask {src_mask.shape}; "
          f"this model was built for src_length={S}, so both must be ({S},). "
          f"Fix: {fix}.")
    (fw, bw), memory = encoder.apply(params.encoder, params.embed[src], mask=src_mask)
    s0 = jnp.tanh(jnp.concatenate([fw, bw]) @ params.bridge)
    return memory, s0

  def start(params, src, src_mask):
    memory, s0 = encode(params, src, src_mask)
    if attention is None:
      return s0
    return decoder.decoder_carry(params.decoder, memory, src_mask, cell_carry=s0)

  def logits_of(params, y):
    h = y[0] if isinstance(y, tuple) else y
    return h @ params.w_out + params.b_out

  def teacher_forced(params, src, src_mask, tgt, tgt_mask):
    # [BOS, tgt_0 .. tgt_{T-2}], also right for T = 0 and 1
    inputs = jnp.concatenate([jnp.array([BOS], tgt.dtype), tgt])[:tgt.shape[0]]
    _, ys = scan(decoder, params.decoder, params.embed[inputs],
                 carry=start(params, src, src_mask), mask=tgt_mask)
    weights = ys[1] if isinstance(ys, tuple) else jnp.zeros((tgt.shape[0], S))
    return logits_of(params, ys), weights

  def loss(params, example):
    src, src_mask, tgt, tgt_mask = example
    logits, _ = teacher_forced(params, src, src_mask, tgt, tgt_mask)
    nll, count = cross_entropy(logits, tgt, tgt_mask)
    correct, _ = accuracy(logits, tgt, tgt_mask)
    return nll, count, {"accuracy": correct}

  def decode_step(params, carry, token):
    """One decoder step on the previous token: ``(carry, log p [V], weights [S])``."""
    x = params.embed[token]
    carry, y = decoder.step(params.decoder, carry, project_one(decoder, params.decoder, x))
    weights = y[1] if isinstance(y, tuple) else jnp.zeros((S,))
    return carry, jax.nn.log_softmax(logits_of(params, y)), weights

  def decode(params, src, src_mask, steps, choose, keys):
    """Feeds back ``choose(log_p, key)`` for ``steps`` steps."""
    def body(state, key):
      carry, token = state
      carry, log_p, weights = decode_step(params, carry, token)
      token = choose(log_p, key).astype(jnp.int32)
      return (carry, token), (token, weights)

    state = (start(params, src, src_mask), jnp.int32(BOS))
    _, (tokens, weights) = jax.lax.scan(body, state, keys, length=steps)
    return tokens, weights

  def greedy(params, src, src_mask, steps):
    return decode(params, src, src_mask, steps, lambda log_p, _: jnp.argmax(log_p), None)

  def sample(params, src, src_mask, steps, key, temperature=1.0):
    try:
      known = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
      known = 1.0                                  # traced: the caller's to keep above 0
    if not known > 0:
      raise ValueError(f"jaxrnn.seq2seq: sample's temperature={temperature}; expected "
                       f"a number above 0 (greedy decodes the most likely tokens).")
    draw = lambda log_p, k: jax.random.categorical(k, log_p / temperature)
    return decode(params, src, src_mask, steps, draw, jax.random.split(key, steps))

  def beam(params, src, src_mask, steps, width=4):
    K = check_size("jaxrnn.seq2seq: beam", "width", width)   # 1 is greedy decoding
    # K copies of the start carry; only beam 0 is live at first (the others
    # score -inf), so the first expansion does not pick K copies of one token.
    carries = jax.tree.map(lambda a: jnp.broadcast_to(a, (K,) + a.shape),
                           start(params, src, src_mask))
    scores = jnp.full((K,), -jnp.inf).at[0].set(0.0)
    tokens = jnp.zeros((K, steps), jnp.int32)
    weights = jnp.zeros((K, steps, S))
    if steps == 0:     # no tokens, probability 1 (scan would trace a read of token -1)
      return tokens[0], jnp.zeros((), scores.dtype), weights[0]

    def body(state, t):
      carries, scores, tokens, weights = state
      last = jnp.where(t == 0, BOS, tokens[:, jnp.maximum(t - 1, 0)])
      carries, log_p, w = jax.vmap(decode_step, (None, 0, 0))(params, carries, last)
      total = (scores[:, None] + log_p).reshape(-1)          # [K * V]
      scores, flat = jax.lax.top_k(total, K)
      parent, token = flat // V, (flat % V).astype(jnp.int32)
      pick = lambda a: a[parent]
      carries = jax.tree.map(pick, carries)
      tokens = pick(tokens).at[:, t].set(token)
      weights = pick(weights).at[:, t].set(pick(w))
      return (carries, scores, tokens, weights), None

    (_, scores, tokens, weights), _ = jax.lax.scan(
        body, (carries, scores, tokens, weights), jnp.arange(steps))
    return tokens[0], scores[0], weights[0]             # top_k sorts: 0 is best

  return Seq2Seq(init=init, encode=encode, loss=loss, teacher_forced=teacher_forced,
                 greedy=greedy, beam=beam, sample=sample)
