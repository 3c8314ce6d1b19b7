"""The model every task trains: a recurrent layer and a linear readout.

Lives here: `readout_model`, `ModelParams`, `param_count`,
`last_step_classification_loss`, `generate` (tokens) and `rollout` (real
values). Not here: the
cells and layers (`jaxrnn`), losses and training (`jaxrnn.train`).

.. math:: (c_T, h_{1..T}) = \\mathrm{layer}(x_{1..T}), \\qquad
          o_t = h_t W_{out} + b_{out}

The readout is the same for every cell, so a comparison between cells on a
task compares their recurrences only.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._cell import Cell, as_int, exportable, first_outside
from jaxrnn._layers import Seq, apply_batch, as_seq


@exportable
class ModelParams(NamedTuple):
  core: Any           # the recurrent layer's params
  w_out: jax.Array    # [H, O] readout weights
  b_out: jax.Array    # [O]    readout bias


class Model(NamedTuple):
  """``init(key, input_size) -> ModelParams``; ``apply(params, xs [T, I], *,
  carry=None, mask=None, resets=None, key=None) -> (carry, outputs [T,
  O])``; ``initial_carry(params)``; ``step(params, carry, x_t [I]) ->
  (carry, o_t [O])``, one step for decoding; ``apply_batch(params, xs [B,
  T, I], *, carry=None, mask=None, resets=None, key=None,
  seq_lengths=None, time_major=False) -> (carry, outputs [B, T, O])``,
  ``apply`` over a batch on the batched fast path (None in a Model built by
  hand). ``key`` runs the layer's dropout."""
  init: Callable[[jax.Array, int], ModelParams]
  apply: Callable[..., tuple[Any, jax.Array]]
  initial_carry: Callable[[ModelParams], Any]
  step: Callable[..., tuple[Any, jax.Array]]
  output_size: int
  apply_batch: Optional[Callable[..., tuple[Any, jax.Array]]] = None


def readout_model(layer: Union[Cell, Seq], output_size: int) -> Model:
  """A recurrent ``layer`` (a Cell or a Seq) with a linear readout per step.

  ``apply`` runs on one sequence (batch with `jax.vmap`) and returns the
  layer's final carry and the readout ``o_t`` at every step; a mask or an
  initial carry goes to the layer (for TBPTT pass the carry back in), and
  so does a ``key``, which runs its dropout (`jaxrnn.rnn`'s, `jaxrnn.stack`'s).
  ``apply_batch`` does the same for a batch ``[B, T, I]`` through
  `jaxrnn.apply_batch` (``resets``, ``seq_lengths`` and ``time_major`` as
  there), so the cells with batched kernels (the LSTM and its variants, the
  GRU, the simple RNN) train on them.
  ``step`` continues one step at a time from a carry. The
  readout starts at ``W_out ~ N(0, 1/H)``, ``b_out = 0``, in float32
  whatever the layer's ``param_dtype`` (bfloat16 outputs then give float32
  logits, as mixed precision keeps its losses). For token ids through an
  embedding, see `jaxrnn.tasks.language_model`.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> model = readout_model(jaxrnn.lstm(8), output_size=3)
  >>> params = model.init(jax.random.key(0), 2)
  >>> carry, outputs = model.apply(params, jnp.ones((5, 2)))
  >>> outputs.shape, param_count(params)
  ((5, 3), 379)
  >>> carry, o = model.step(params, carry, jnp.ones(2))   # decode one more step
  >>> o.shape
  (3,)
  >>> model.apply_batch(params, jnp.ones((4, 5, 2)))[1].shape
  (4, 5, 3)
  """
  seq = as_seq(layer, "jaxrnn.tasks.readout_model")
  H = seq.output_size

  def init(key, input_size):
    k_core, k_out = jax.random.split(key)
    core = seq.init(k_core, input_size)
    w_out = jax.random.normal(k_out, (H, output_size)) / jnp.sqrt(H)
    return ModelParams(core, w_out, jnp.zeros((output_size,)))

  def apply(params, xs, *, carry=None, mask=None, resets=None, key=None):
    # Only what was given: a Seq of one's own may take no key or resets.
    given = {k: v for k, v in (("key", key), ("resets", resets)) if v is not None}
    carry, hs = seq.apply(params.core, xs, carry=carry, mask=mask, **given)
    return carry, hs @ params.w_out + params.b_out

  def apply_batch_(params, xs, *, carry=None, mask=None, resets=None, key=None,
                   seq_lengths=None, time_major=False):
    carry, hs = apply_batch(seq, params.core, xs, carry=carry, mask=mask, resets=resets,
                            key=key, seq_lengths=seq_lengths, time_major=time_major)
    return carry, hs @ params.w_out + params.b_out

  def step(params, carry, x):
    carry, h = seq.step(params.core, carry, x)
    return carry, h @ params.w_out + params.b_out

  return Model(init=init, apply=apply,
               initial_carry=lambda params: seq.initial_carry(params.core),
               step=step, output_size=output_size, apply_batch=apply_batch_)


def check_top(where: str, top_k, top_p, V: int):
  """``top_k`` (an int in [1, V]) and ``top_p`` (a number in (0, 1]), or None."""
  if top_k is not None:
    k = as_int(top_k)
    if k is None or not 1 <= k <= V:
      raise ValueError(f"{where}: top_k={top_k!r}; expected an int in [1, {V}], the most "
                       f"likely tokens to draw among (static), or None for all.")
    top_k = k
  if top_p is not None:
    if isinstance(top_p, jax.core.Tracer) or not 0 < float(top_p) <= 1:
      raise ValueError(f"{where}: top_p={top_p!r}; expected a Python number in (0, 1], "
                       f"the probability mass to draw within (static), or None.")
    top_p = float(top_p)
  return top_k, top_p


def check_steps(where: str, steps, what: str) -> int:
  """``steps`` as an int >= 0; raises naming the value given."""
  n = as_int(steps)
  if n is None or n < 0:
    raise ValueError(f"{where}: steps is {steps!r}; expected an int >= 0, the number of "
                     f"{what} (static under jit).")
  return n


def check_takes_key(apply: Callable, name: str) -> None:
  """Raises a TypeError naming the fix when a hand-built Model's ``apply``
  (or ``apply_batch``) takes no ``key=`` and a keyed train step needs one."""
  try:
    signature = inspect.signature(apply, follow_wrapped=False)
  except (TypeError, ValueError):   # a builtin or C callable: let the call decide
    return
  try:
    signature.bind(None, None, key=None)
  except TypeError:
    raise TypeError(
        f"jaxrnn.tasks: the Model's {name}{signature} takes no key=, and the "
        f"train step was built with key= (for dropout), so the loss passes "
        f"one on. Fix: give apply (and apply_batch) a keyword key=None that "
        f"runs the layer's dropout, or build the step without key=.") from None


def param_count(params) -> int:
  """The number of scalars in a params pytree (None leaves count 0)."""
  return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))


def last_step_classification_loss(model: Model, *, batched: bool = False):
  """A per-example loss for `jaxrnn.train`: cross-entropy at the last step.

  ``loss_fn(params, (xs [T, I], label), key=None) -> (loss_sum, 1,
  {"correct": 0 or 1})``, for tasks that name a class after reading the
  whole sequence (recall, sequential digits); ``key`` runs the model's
  dropout (``make_train_step(..., key=...)`` passes one). With
  ``batched=True`` it takes the whole batch ``(xs [B, T, I], labels
  int[B])``, runs ``model.apply_batch`` and returns the same sums per
  example, for ``make_train_step(..., batched=True)``.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> model = readout_model(jaxrnn.gru(4), output_size=3)
  >>> loss_fn = last_step_classification_loss(model)
  >>> params = model.init(jax.random.key(0), 2)
  >>> total, count, metrics = loss_fn(params, (jnp.ones((5, 2)), 1))
  >>> float(count), sorted(metrics)
  (1.0, ['correct'])
  >>> batch_fn = last_step_classification_loss(model, batched=True)
  >>> totals, counts, _ = batch_fn(params, (jnp.ones((4, 5, 2)), jnp.ones(4, int)))
  >>> bool(jnp.allclose(totals[0], total)), counts.shape
  (True, (4,))
  """
  from jaxrnn import train   # the tasks do not need optax; only this loss does

  def from_logits(logits, label):
    total, count = train.last_step_cross_entropy(logits, label)
    return total, count, {"correct": (logits[-1].argmax() == label) * 1.0}

  def keyed(key, name):   # a Model built by hand may take no key
    if key is not None:
      check_takes_key(getattr(model, name), name)
    return {} if key is None else {"key": key}

  def loss_fn(params, example, key=None):
    xs, label = example
    return from_logits(model.apply(params, xs, **keyed(key, "apply"))[1], label)

  def run_batch(params, xs, key):
    if model.apply_batch is not None:
      return model.apply_batch(params, xs, **keyed(key, "apply_batch"))
    # A Model built by hand may have no apply_batch: vmap its apply instead.
    if key is None:
      return jax.vmap(lambda x: model.apply(params, x))(xs)
    keys = jax.random.split(key, xs.shape[0])     # as jaxrnn.apply_batch splits it
    return jax.vmap(lambda x, k: model.apply(params, x, **keyed(k, "apply")))(xs, keys)

  def batch_loss_fn(params, batch, key=None):
    xs, labels = batch
    return jax.vmap(from_logits)(run_batch(params, xs, key)[1], labels)
  return batch_loss_fn if batched else loss_fn


def generate(model: Model, params, prompt, steps: int, key=None, *,
             temperature: float = 1.0, inputs: Optional[Callable] = None,
             top_k: Optional[int] = None, top_p: Optional[float] = None) -> jax.Array:
  """``steps`` token ids with which a language model continues ``prompt``.

  The model returns logits over V tokens (its output size) and reads
  ``inputs(ids)``, by default one-hot tokens, ``jax.nn.one_hot(ids, V)`` (a
  character model: ``readout_model(layer, V)`` trained on them). A model
  that embeds the ids itself reads them as they are: a
  `jaxrnn.tasks.language_model` (``model.takes_ids``), or a `Model` built
  by hand whose ``apply`` and ``step`` take ``int[T]`` and ``int`` ids,
  which goes with ``inputs=lambda ids: ids``.
  ``model.apply`` reads the prompt (``int[P]``,
  P >= 1); then each step draws ``x ~ softmax(logits / temperature)`` and
  feeds it back through ``model.step``, in one `jax.lax.scan`.
  ``temperature=0`` takes the most likely token (no key needed); above 0 a
  ``key`` draws. ``top_k`` draws among the k most likely tokens only and
  ``top_p`` (nucleus sampling, Holtzman et al. 2020) among the fewest whose
  probabilities sum to ``p`` or more, both after the temperature, as
  Hugging Face's ``generate`` filters. Returns ``int32[steps]``; for a
  batch of prompts of one length, ``jax.vmap`` it with one key each. Under
  jit ``model``, ``steps``, ``top_k`` and ``top_p`` are static (closed
  over); ``temperature`` may be traced.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from jaxrnn.tasks import generate, readout_model
  >>> model = readout_model(jaxrnn.lstm(16), output_size=5)      # 5 tokens
  >>> params = model.init(jax.random.key(0), 5)
  >>> greedy = generate(model, params, jnp.array([1, 2, 3]), 4, temperature=0)
  >>> greedy.shape, greedy.dtype
  ((4,), dtype('int32'))
  >>> # the greedy tokens are those apply finds most likely, read back in
  >>> ids = jnp.concatenate([jnp.array([1, 2, 3]), greedy])
  >>> logits = model.apply(params, jax.nn.one_hot(ids, 5))[1]
  >>> bool((logits[2:-1].argmax(-1) == greedy).all())
  True
  """
  where = "jaxrnn.tasks.generate"
  prompt = jnp.asarray(prompt)
  if prompt.ndim != 1 or prompt.shape[0] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
    raise ValueError(
        f"{where}: prompt is {prompt.dtype}{list(prompt.shape)}; expected int[P] "
        f"with P >= 1, the token ids the continuation follows. Fix: "
        f"jnp.asarray(vocab.encode(text)); for a batch of prompts, jax.vmap.")
  steps = check_steps(where, steps, "tokens to generate")
  try:
    known = float(temperature)                  # None where it is traced
  except (TypeError, jax.errors.ConcretizationTypeError):
    known = None
  if known is not None and known < 0:
    raise ValueError(f"{where}: temperature={known}; expected 0 (greedy) or more.")
  if key is None and known != 0:
    raise ValueError(f"{where}: temperature={temperature} draws tokens and needs a "
                     f"key. Fix: pass key=jax.random.key(...), or temperature=0 "
                     f"for the most likely tokens.")
  V = model.output_size
  bad = first_outside(prompt, None, V)
  if bad is not None:
    raise ValueError(f"{where}: prompt holds {bad}; expected ids in [0, {V}), the "
                     f"model's output size. Fix: encode the prompt with the model's "
                     f"vocabulary.")
  one_hot = inputs is None and not getattr(model, "takes_ids", False)
  if inputs is None:
    inputs = (lambda ids: jax.nn.one_hot(ids, V)) if one_hot else (lambda ids: ids)
  try:
    carry, logits = model.apply(params, inputs(prompt))
  except (TypeError, IndexError) as e:
    if not (one_hot and "Indexer must have integer" in str(e)):
      raise
    raise TypeError(
        f"{where}: the model's apply indexed with the one-hot prompt generate "
        f"gives by default ({e}). Fix: a model that embeds ids itself takes "
        f"inputs=lambda ids: ids.") from e

  top_k, top_p = check_top(where, top_k, top_p, V)

  def filtered(logits):
    """The logits of the tokens top_k and top_p leave, -inf elsewhere."""
    if top_k is not None:
      kth = jax.lax.top_k(logits, top_k)[0][-1]
      logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:        # 1: every token, nothing to sort
      order = jnp.argsort(-logits)
      probs = jax.nn.softmax(logits[order])
      # a token stays if the ones more likely than it sum to under top_p
      keep = (jnp.cumsum(probs) - probs) < top_p
      logits = jnp.full_like(logits, -jnp.inf).at[order].set(
          jnp.where(keep, logits[order], -jnp.inf))
    return logits

  def choose(logits, step_key):
    if known == 0:
      return jnp.argmax(logits)
    if known is not None:
      return jax.random.categorical(step_key, filtered(logits / known))
    cold = temperature == 0                      # traced: either, chosen at run time
    drawn = jax.random.categorical(
        step_key, filtered(logits / jnp.where(cold, 1.0, temperature)))
    return jnp.where(cold, jnp.argmax(logits), drawn)

  def body(state, step_key):
    carry, logits = state
    token = choose(logits, step_key).astype(jnp.int32)
    carry, logits = model.step(params, carry, inputs(token))
    return (carry, logits), token

  keys = jax.random.split(jax.random.key(0) if key is None else key, steps)
  _, tokens = jax.lax.scan(body, (carry, logits[-1]), keys)
  return tokens


def rollout(model: Model, params, context, steps: int, *,
            feedback: Optional[Callable] = None) -> jax.Array:
  """``steps`` predictions, each fed back as the next input: a free-running forecast.

  ``model.apply`` reads ``context`` (``[P, I]``, the observed history, P >=
  1); its output at the last step, ``y_P``, predicts step P + 1. The next
  input is ``feedback(x_P, y_P)`` (by default ``y_P`` itself, the model
  predicting its next input: O must equal I; for a model trained on
  increments, ``feedback=lambda x, y: x + y``), fed through ``model.step``,
  and so on, in one `jax.lax.scan`. Returns ``[steps, O]``: row k
  predicts step P + 1 + k. For a batch of contexts of one length,
  ``jax.vmap`` it; under jit ``model``, ``steps`` and ``feedback`` are
  static (closed over). `generate` is its counterpart for tokens.

  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> from jaxrnn.tasks import readout_model, rollout
  >>> model = readout_model(jaxrnn.gru(16), output_size=3)     # predicts its next input
  >>> params = model.init(jax.random.key(0), 3)
  >>> context = jnp.ones((10, 3))
  >>> future = rollout(model, params, context, 5)
  >>> future.shape
  (5, 3)
  >>> # the same as apply over the context followed by the fed-back predictions
  >>> _, ys = model.apply(params, jnp.concatenate([context, future[:-1]]))
  >>> bool(jnp.allclose(ys[9:], future, atol=1e-5))
  True
  """
  where = "jaxrnn.tasks.rollout"
  context = jnp.asarray(context)
  if (context.ndim != 2 or context.shape[0] < 1
      or not jnp.issubdtype(context.dtype, jnp.floating)):
    raise ValueError(
        f"{where}: context is {context.dtype}{list(context.shape)}; expected float "
        f"[P, I] with P >= 1, the observed steps the forecast follows. Fix: "
        f"jnp.asarray(series, jnp.float32); for a batch of contexts, jax.vmap; "
        f"for token ids, generate.")
  steps = check_steps(where, steps, "steps to predict")
  I, O = context.shape[1], model.output_size
  if feedback is None:
    if O != I:
      raise ValueError(
          f"{where}: the model outputs {O} values per step and reads {I}, so its "
          f"outputs cannot be its next inputs (the default feedback). Fix: "
          f"feedback=lambda x, y: ... giving the next input [{I}] from the last "
          f"input x and the prediction y.")
    feedback = lambda x, y: y
  carry, ys = model.apply(params, context)

  def body(state, _):
    carry, x, y = state
    x = jnp.asarray(feedback(x, y)).astype(context.dtype)
    if x.shape != (I,):
      raise ValueError(f"{where}: feedback returned {x.shape}; expected the next input "
                       f"[{I}], as the context's rows.")
    carry, y_next = model.step(params, carry, x)
    return (carry, x, y_next.astype(y.dtype)), y

  _, predictions = jax.lax.scan(body, (carry, context[-1], ys[-1]), None, length=steps)
  return predictions
