r"""Sequence to sequence: a bidirectional encoder and a decoder, with or without attention.

Lives here: `seq2seq` (the model as pure functions: ``init``, ``loss`` for
`jaxrnn.train.make_train_step`, ``teacher_forced``, ``greedy`` and ``beam``
decoding) and `Seq2SeqParams`.
Not here: the attention itself (`jaxrnn._cells.attention`), the training
loop (`jaxrnn.train`), tasks (``benchmarks/attention_task.py``).

Tokens: 0 is padding, 1 is BOS (the decoder's first input); the rest are
data, one of which may be chosen as the end token (``end_token=``), after
which decoding emits padding. One example is ``(src int[S], src_mask
bool[S], tgt int[T], tgt_mask bool[T])``, both sides right-padded.

.. math::

  m &= \mathrm{BiGRU}(E[src])                 && [S, 2H] \text{ encoder states} \\
  s_0 &= \tanh(W_b [\overrightarrow{h}_{last}; \overleftarrow{h}_{first}])
                                              && \text{bridge} \\
  y_t &= \mathrm{decoder}(s_{t-1}, E'[tgt_{t-1}]) && \text{teacher forcing; } E' = E
                                              \text{ unless target\_vocab\_size} \\
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

import operator
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import as_int, check_size, exportable, first_outside, project_one
from jaxrnn._cells.attention import attention as make_attention
from jaxrnn._cells.attention import attention_decoder
from jaxrnn._cells.gru import gru
from jaxrnn._layers import bidirectional
from jaxrnn._scan import scan
from jaxrnn.train.losses import accuracy, cross_entropy

PAD, BOS = 0, 1


@exportable
class Seq2SeqParams(NamedTuple):
  embed: jax.Array     # [V, E], the source's (and the target's, unless tgt_embed)
  encoder: Any         # bidirectional GRU params
  bridge: jax.Array    # [2H, H]
  decoder: Any         # GRU or attention-decoder params
  w_out: jax.Array     # [H, V_tgt]
  b_out: jax.Array     # [V_tgt]
  tgt_embed: Optional[jax.Array] = None   # [V_tgt, E] with target_vocab_size=


class Hypotheses(NamedTuple):
  """Beam search's K hypotheses: ``tokens int[K, steps]``, ``weights
  [K, steps, S]``, ``log_prob [K]``."""
  tokens: jax.Array
  weights: jax.Array
  log_prob: jax.Array


def take(hypotheses: Hypotheses, index: jax.Array) -> Hypotheses:
  return jax.tree.map(lambda a: a[index], hypotheses)


def check_end_token(end_token, vocab_size: int) -> int:
  """The end token as an int, or -1 (matches no token) for None."""
  if end_token is None:
    return -1
  token = as_int(end_token)
  if token is not None and 2 <= token < vocab_size:
    return token
  raise ValueError(
      f"jaxrnn.seq2seq: end_token={end_token!r}; expected a data token, an int "
      f"in [2, {vocab_size}) (0 is PAD, 1 is BOS). Fix: pick one of the "
      f"vocabulary's tokens as the end, and put it after every target.")


def check_length_penalty(value) -> float:
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
        f"jaxrnn.seq2seq: beam's length_penalty is traced ({value}); expected a "
        f"Python number >= 0, static under jit. Fix: close over it, or mark it "
        f"static: jax.jit(model.beam, static_argnames=('length_penalty', 'width')).")
  try:
    alpha = float(value)
  except TypeError:
    alpha = float("nan")
  if alpha >= 0:
    return alpha
  raise ValueError(
      f"jaxrnn.seq2seq: beam's length_penalty={value!r}; expected a number >= 0 "
      f"(0 ranks finished hypotheses by log probability, GNMT used 0.6-0.7).")


def check_tokens(name: str, ids, mask, vocab_size: int, setting: str) -> None:
  """Refuses token ids outside ``[0, V)`` at the positions ``mask`` keeps,
  where they are known (not traced): indexing would clamp or wrap them into
  a plausible wrong answer. Padding may hold anything (-100, say)."""
  if any(isinstance(a, jax.core.Tracer) for a in (ids, mask)):
    return
  ids = np.asarray(ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"jaxrnn.seq2seq: {name} is {ids.dtype}{list(ids.shape)}; expected "
                     f"int token ids. Fix: jnp.asarray(ids, jnp.int32).")
  bad = first_outside(ids, mask if np.shape(mask) == ids.shape else None, vocab_size)
  if bad is not None:
    raise ValueError(
        f"jaxrnn.seq2seq: {name} holds token {bad}; expected ids in "
        f"[0, {vocab_size}), this model's {setting}={vocab_size} (0 is PAD, "
        f"1 is BOS). Fix: map unknown words to a token of their own, or build the "
        f"model with a larger {setting}.")


def check_vocab_size(name: str, size) -> int:
  n = check_size("jaxrnn.seq2seq", name, size)
  if n < 3:
    raise ValueError(f"jaxrnn.seq2seq: {name}={size}; expected 3 or more: 0 is PAD and "
                     f"1 is BOS, so the data needs tokens from 2 on.")
  return n


def check_steps(steps) -> int:
  try:
    steps = operator.index(steps)
  except TypeError:
    raise TypeError(f"jaxrnn.seq2seq: steps is {steps!r}; expected an int >= 0, the "
                    f"number of tokens to decode, static under jit (close over it).") from None
  if steps < 0:
    raise ValueError(f"jaxrnn.seq2seq: steps={steps}; expected an int >= 0.")
  return steps


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
            attention: Optional[str] = "general", embed_size: int = 16,
            end_token: Optional[int] = None,
            target_vocab_size: Optional[int] = None) -> Seq2Seq:
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
  * ``greedy(params, src, src_mask, steps, min_length=0) -> (tokens
    int[steps], weights [steps, S])``: argmax decoding with `jax.lax.scan`
    (weights are zeros without attention).
  * ``beam(params, src, src_mask, steps, width=4, length_penalty=0.6,
    n_best=None, min_length=0) -> (tokens int[steps], log_prob, weights
    [steps, S])``:
    beam search keeping the ``width`` most probable prefixes, returning the
    best hypothesis with its log probability (with ``n_best=n <= width``,
    the n best, best first: ``int[n, steps]``, ``[n]``, ``[n, steps, S]``;
    where the search holds fewer, the rest are padding with log probability
    -inf).
    Without an end token every hypothesis has ``steps`` tokens and the best
    is the most probable: ``width=1`` is greedy decoding and ``width >=
    V**(steps-1)`` exhaustive search. With one, see below.
  * ``sample(params, src, src_mask, steps, key, temperature=1.0,
    min_length=0) -> (tokens int[steps], weights [steps, S])``: each token drawn from
    ``softmax(log_p / temperature)`` and fed back, as ``greedy`` feeds back
    the argmax.

  Decoding picks among all V tokens, PAD and BOS included (a trained model
  gives them no mass where it has seen none). Without attention the
  weights are all zero. The decoders are jitted once per model (``steps``,
  ``min_length``, ``width``, ``length_penalty`` and ``n_best`` static), so calls outside
  `jax.jit` with the same settings reuse one program; they also run under
  `jax.jit` and `jax.vmap` (a batch of sources). Token ids outside ``[0,
  V)`` are refused where they are known (not traced). The log probability
  of a given target is ``-loss(params, (src, src_mask, tgt, tgt_mask))[0]``.
  Only the source's padding depends on ``src_length``: params trained at
  one length serve a model built for another.

  Source and target share one vocabulary of ``vocab_size`` tokens and one
  embedding, unless ``target_vocab_size`` is given (a translation between two
  vocabularies, PyTorch's tutorial's ``input_lang.n_words`` and
  ``output_lang.n_words``, Keras's ``num_encoder_tokens`` and
  ``num_decoder_tokens``): ``vocab_size`` is then the source's, and the
  target's tokens get an embedding of their own (``params.tgt_embed``). V
  below is the target's vocabulary; in both, 0 is PAD and 1 is BOS.

  ``end_token`` (a data token, ``2 <= end_token < V``; put it at the end of
  every target when training): decoding stops at it, in the sense that
  every later token is PAD and its weights zero (the shapes stay
  ``[steps]``, so a batch vmaps; the output's length is the number of
  tokens up to and including the end token). ``beam`` then keeps, as
  Flax's WMT decoder does, the ``width`` best unfinished prefixes and the
  ``width`` best finished hypotheses apart: each step it takes the
  ``2 * width`` best continuations, of which at most ``width`` end, so
  ``width`` prefixes always go on. A finished hypothesis of ``n`` tokens
  (the end token counted) scores ``log p / ((5 + n) / 6) ** length_penalty``
  (Wu et al. 2016, GNMT), since the raw log probability favours stopping
  early (``length_penalty=0`` compares it). ``min_length`` (fairseq's
  ``--min-len``) rules the end token out for the first ``min_length``
  steps, in all three decoders. At the end the finished
  hypotheses and the unfinished ones, scored so at ``n = steps``, compete
  (as Hugging Face's ``generate`` finalises; Flax's decoder returns a
  finished one whenever there is one, however improbable): an output
  without the end token ran out of steps. ``log_prob`` is always the raw
  log probability.

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

  With an end token, what follows it is padding:

  >>> model = seq2seq(8, 16, src_length=5, end_token=7)
  >>> params = model.init(jax.random.key(0))
  >>> tokens, _ = model.greedy(params, src, mask, 12)
  >>> ends = jnp.flatnonzero(tokens == 7)
  >>> bool(ends.size == 0 or (tokens[ends[0] + 1:] == PAD).all())
  True

  From a source vocabulary of 8 to a target vocabulary of 5:

  >>> model = seq2seq(8, 16, src_length=5, target_vocab_size=5)
  >>> params = model.init(jax.random.key(0))
  >>> params.embed.shape, params.tgt_embed.shape, params.w_out.shape
  ((8, 16), (5, 16), (16, 5))
  >>> tgt, tgt_mask = jnp.array([4, 2, 3]), jnp.ones(3, bool)
  >>> model.teacher_forced(params, src, mask, tgt, tgt_mask)[0].shape
  (3, 5)
  """
  H, S, E = hidden_size, src_length, embed_size
  separate = target_vocab_size is not None    # a target embedding of its own
  V_src = check_vocab_size("vocab_size", vocab_size)
  V = check_vocab_size("target_vocab_size", target_vocab_size) if separate else V_src
  end = check_end_token(end_token, V)
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
    table = lambda k, n: jax.random.normal(k, (n, E)) / E**0.5
    return Seq2SeqParams(
        embed=table(ke, V_src),
        encoder=encoder.init(kn, E),
        bridge=lecun(kb, (2 * H, H)),
        decoder=decoder.init(kd, E),
        w_out=lecun(ko, (H, V)),
        b_out=jnp.zeros((V,)),
        tgt_embed=table(jax.random.fold_in(ke, 1), V) if separate else None)

  def embed(params, ids):    # the source's; params.embed may be NumPy (jaxrnn.io.load)
    return jnp.asarray(params.embed)[ids]

  def embed_tgt(params, ids):
    if not separate:
      return embed(params, ids)
    if getattr(params, "tgt_embed", None) is None:
      raise ValueError(
          f"jaxrnn.seq2seq: params.tgt_embed is None; this model was built with "
          f"target_vocab_size={V}, so the target has an embedding of its own. "
          f"Fix: params from this model's init, or a model built without "
          f"target_vocab_size for params that share one embedding.")
    return jnp.asarray(params.tgt_embed)[ids]

  def encode(params, src, src_mask):
    src, src_mask = checked(src, src_mask)
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
    (fw, bw), memory = encoder.apply(params.encoder, embed(params, src), mask=src_mask)
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
    check_tokens("tgt", tgt, tgt_mask, V, "target_vocab_size" if separate else "vocab_size")
    tgt = jnp.asarray(tgt)
    # [BOS, tgt_0 .. tgt_{T-2}], also right for T = 0 and 1
    inputs = jnp.concatenate([jnp.array([BOS], tgt.dtype), tgt])[:tgt.shape[0]]
    _, ys = scan(decoder, params.decoder, embed_tgt(params, inputs),
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
    x = embed_tgt(params, token)
    carry, y = decoder.step(params.decoder, carry, project_one(decoder, params.decoder, x))
    weights = y[1] if isinstance(y, tuple) else jnp.zeros((S,))
    return carry, jax.nn.log_softmax(logits_of(params, y)), weights

  def too_soon(log_p, t, min_length):
    """``log_p`` with the end token ruled out before step ``min_length``."""
    return jnp.where((t < min_length) & (jnp.arange(V) == end), -jnp.inf, log_p)

  def decode(params, src, src_mask, steps, min_length, choose, keys):
    """Feeds back ``choose(log_p, key)`` for ``steps`` steps, PAD after the end token."""
    def body(state, inputs):
      key, t = inputs
      carry, token, ended = state
      carry, log_p, weights = decode_step(params, carry, token)
      log_p = too_soon(log_p, t, min_length)
      token = jnp.where(ended, PAD, choose(log_p, key).astype(jnp.int32))
      weights = jnp.where(ended, jnp.zeros_like(weights), weights)
      ended = ended | (token == end)      # never, without an end token (end = -1)
      return (carry, token, ended), (token, weights)

    state = (start(params, src, src_mask), jnp.int32(BOS), jnp.bool_(False))
    _, (tokens, weights) = jax.lax.scan(body, state, (keys, jnp.arange(steps)))
    return tokens, weights

  def greedy_(params, src, src_mask, steps, min_length):
    return decode(params, src, src_mask, steps, min_length,
                  lambda log_p, _: jnp.argmax(log_p), None)

  def sample_(params, src, src_mask, steps, min_length, key, temperature):
    draw = lambda log_p, k: jax.random.categorical(k, log_p / temperature)
    return decode(params, src, src_mask, steps, min_length, draw,
                  jax.random.split(key, steps))

  def beam_(params, src, src_mask, steps, min_length, K, alpha, n_best):
    # K copies of the start carry; only beam 0 is live at first (the others
    # score -inf), so the first expansion does not pick K copies of one token.
    carries = jax.tree.map(lambda a: jnp.broadcast_to(a, (K,) + a.shape),
                           start(params, src, src_mask))
    live = Hypotheses(tokens=jnp.zeros((K, steps), jnp.int32),
                      weights=jnp.zeros((K, steps, S)),
                      log_prob=jnp.full((K,), -jnp.inf).at[0].set(0.0))
    done = live._replace(log_prob=jnp.full((K,), -jnp.inf))   # finished, best first
    done_score = jnp.full((K,), -jnp.inf)
    penalty = lambda n: ((5.0 + n) / 6.0) ** alpha            # GNMT's, n tokens

    def body(state, t):
      carries, live, done, done_score = state
      last = jnp.where(t == 0, BOS, live.tokens[:, jnp.maximum(t - 1, 0)])
      carries, log_p, w = jax.vmap(decode_step, (None, 0, 0))(params, carries, last)
      log_p = too_soon(log_p, t, min_length)
      total = (live.log_prob[:, None] + log_p).reshape(-1)          # [K * V]
      # 2K continuations: each prefix ends in at most one, so K go on.
      log_prob, flat = jax.lax.top_k(total, min(2 * K, K * V))
      parent, token = flat // V, (flat % V).astype(jnp.int32)
      grown = Hypotheses(tokens=live.tokens[parent].at[:, t].set(token),
                         weights=live.weights[parent].at[:, t].set(w[parent]),
                         log_prob=log_prob)
      ends = token == end
      # A prefix that ended goes on no further: -inf, also where top_k must
      # fill the live beam with it (fewer than K others finite).
      going_score = jnp.where(ends, -jnp.inf, log_prob)
      _, going = jax.lax.top_k(going_score, K)
      live = take(grown._replace(log_prob=going_score), going)
      carries = jax.tree.map(lambda a: a[parent[going]], carries)
      score = jnp.where(ends, log_prob / penalty(t + 1), -jnp.inf)
      done_score, best = jax.lax.top_k(jnp.concatenate([done_score, score]), K)
      done = take(jax.tree.map(lambda a, b: jnp.concatenate([a, b]), done, grown), best)
      return (carries, live, done, done_score), None

    if steps:      # none: no tokens, probability 1 (scan would trace a read of token -1)
      (_, live, done, done_score), _ = jax.lax.scan(
          body, (carries, live, done, done_score), jnp.arange(steps))
    # The finished hypotheses and the live ones at `steps` tokens compete
    # (as Hugging Face's generate finalises), scored alike; 0 is the best.
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), done, live)
    scores = jnp.concatenate([done_score, live.log_prob / penalty(steps)])
    score, order = jax.lax.top_k(scores, n_best or 1)
    best = take(both, order)
    # Fewer real hypotheses than n_best (a short search): the rest are
    # -inf rows, given as padding with no weights.
    real = score > -jnp.inf
    best = best._replace(tokens=jnp.where(real[:, None], best.tokens, PAD),
                         weights=jnp.where(real[:, None, None], best.weights, 0.0))
    if n_best is None:
      best = jax.tree.map(lambda a: a[0], best)
    return best.tokens, best.log_prob, best.weights

  # Jitted once per model, so repeated calls outside jit reuse one program.
  greedy_jit = jax.jit(greedy_, static_argnames=("steps", "min_length"))
  sample_jit = jax.jit(sample_, static_argnames=("steps", "min_length"))
  beam_jit = jax.jit(beam_, static_argnames=("steps", "min_length", "K", "alpha", "n_best"))

  def greedy(params, src, src_mask, steps, min_length=0):
    return greedy_jit(params, *checked(src, src_mask), check_steps(steps),
                      check_min_length(min_length))

  def sample(params, src, src_mask, steps, key, temperature=1.0, min_length=0):
    try:
      known = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
      known = 1.0                                  # traced: the caller's to keep above 0
    if not known > 0:
      raise ValueError(f"jaxrnn.seq2seq: sample's temperature={temperature}; expected "
                       f"a number above 0 (greedy decodes the most likely tokens).")
    return sample_jit(params, *checked(src, src_mask), check_steps(steps),
                      check_min_length(min_length), key, temperature)

  def beam(params, src, src_mask, steps, width=4, length_penalty=0.6, n_best=None,
           min_length=0):
    K = check_size("jaxrnn.seq2seq: beam", "width", width)   # 1 is greedy decoding
    alpha = check_length_penalty(length_penalty)   # static: a Python number
    if n_best is not None and not 1 <= check_size("jaxrnn.seq2seq: beam", "n_best",
                                                  n_best) <= K:
      raise ValueError(f"jaxrnn.seq2seq: beam's n_best={n_best}; expected at most "
                       f"width={K}, the hypotheses the search keeps. Fix: width >= n_best.")
    return beam_jit(params, *checked(src, src_mask), check_steps(steps),
                    check_min_length(min_length), K, alpha, n_best)

  def check_min_length(min_length):
    """``min_length`` (steps before the end token may come) as an int."""
    n = as_int(min_length)
    if n is None or n < 0:
      raise ValueError(f"jaxrnn.seq2seq: min_length={min_length!r}; expected an int >= 0, "
                       f"the tokens an output has before its end token (static).")
    if n and end < 0:
      raise ValueError(f"jaxrnn.seq2seq: min_length={n} without an end token; every "
                       f"output already has steps tokens. Fix: build the model with "
                       f"end_token=..., or drop min_length.")
    return n

  def checked(src, src_mask):
    """The source checked where it is known (encode, and the decoders before their jit)."""
    if src_mask is None:
      raise ValueError(f"jaxrnn.seq2seq: src_mask is None; expected bool[{S}], True at "
                       f"the source's tokens. Fix: src_mask=src != jaxrnn.seq2seq.PAD.")
    check_tokens("src", src, src_mask, V_src, "vocab_size")
    return jnp.asarray(src), jnp.asarray(src_mask)

  return Seq2Seq(init=init, encode=encode, loss=loss, teacher_forced=teacher_forced,
                 greedy=greedy, beam=beam, sample=sample)
