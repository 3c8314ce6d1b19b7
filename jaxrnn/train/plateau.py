r"""The learning rate cut when an evaluated metric stops improving.

Lives here: `reduce_lr_on_plateau` (the optax transformation that scales
the updates), `PlateauState` and `plateau_step` (the rule, run on each
evaluation). Not here: the loop that evaluates (`loop.py`, whose
``reduce_lr_on=`` runs `plateau_step`).

Keras' ``ReduceLROnPlateau(monitor="val_loss")`` and PyTorch's
``scheduler.step(val_loss)`` watch a validation metric, measured now and
then outside the train step. `optax.contrib.reduce_on_plateau` instead
watches the value the train step passes it, the training loss, every step.
Here the transformation only multiplies the updates by a scale held in its
state; `plateau_step` moves that scale on an evaluated value, with
PyTorch's rule (lower is better; ``mode="max"`` negates):

.. math::

  \text{better} &= v < b - \text{threshold} \cdot |b|, \qquad
      b \leftarrow v \text{ and } n \leftarrow 0 \text{ if better, else }
      n \leftarrow n + 1 \\
  n &\leftarrow 0 \text{ while a cooldown runs (it counts down)} \\
  \text{if } n > \text{patience}: \quad s &\leftarrow \max(s \cdot
      \text{factor}, \text{min\_scale}), \; n \leftarrow 0, \;
      \text{cooldown restarts}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrnn._cell import as_int, exportable


@exportable
class PlateauState(NamedTuple):
  """The scale and the rule's counters, with its settings (float32 scalars,
  so the state is all arrays and checkpoints with the rest)."""
  scale: jax.Array           # multiplies every update
  best: jax.Array            # best value seen, sign-adjusted (lower is better)
  bad_count: jax.Array       # evaluations since the best, outside cooldowns
  cooldown_count: jax.Array  # evaluations left in the cooldown
  factor: jax.Array
  patience: jax.Array
  threshold: jax.Array
  cooldown: jax.Array
  min_scale: jax.Array
  sign: jax.Array            # 1 for mode="min", -1 for "max"


def reduce_lr_on_plateau(factor: float = 0.1, patience: int = 10, *, mode: str = "min",
                         threshold: float = 1e-4, cooldown: int = 0,
                         min_scale: float = 0.0) -> optax.GradientTransformation:
  """Scales the updates by a factor each time an evaluated metric plateaus.

  Put it last in the chain, where the scale multiplies the learning rate
  (as PyTorch's scheduler changes ``lr``), and name the metric to
  `jaxrnn.train.fit` (``reduce_lr_on="loss"``, a key of ``evaluate``'s
  metrics), which runs `plateau_step` after each evaluation; in a loop of
  your own, call `plateau_step` yourself. The settings are PyTorch's
  ``ReduceLROnPlateau``'s (``threshold`` relative, a value improving on the
  best by more than ``threshold * |best|``, which for a negative metric is
  sign-safe where PyTorch's ``best * (1 - threshold)`` is not; ``min_scale``
  is ``min_lr`` over the initial rate); ``patience`` counts evaluations
  without improvement before a cut, so ``patience=0`` cuts at the first
  (PyTorch's word-language-model example divides the rate by 4 so:
  ``factor=0.25, patience=0``). Keras counts one more: its ``patience=p``
  is ``patience=p - 1`` here, and its ``min_delta`` is absolute.

  >>> import jax.numpy as jnp, optax
  >>> opt = optax.chain(optax.sgd(1.0), reduce_lr_on_plateau(0.5, patience=0))
  >>> state = opt.init(jnp.zeros(2))
  >>> for loss in [3.0, 2.0, 2.5, 2.4]:     # no better than 2.0 twice: two cuts
  ...   state = plateau_step(state, loss)
  >>> opt.update(jnp.ones(2), state)[0]
  Array([-0.25, -0.25], dtype=float32)
  """
  where = "jaxrnn.train.reduce_lr_on_plateau"
  if mode not in ("min", "max"):
    raise ValueError(f"{where}: mode={mode!r}; expected 'min' (a loss) or 'max' (an accuracy).")
  checks = [("factor", factor, 0 < factor < 1, "a number in (0, 1), what the scale is multiplied by"),
            ("patience", patience, _count(patience), "an int >= 0, evaluations without improvement"),
            ("threshold", threshold, threshold >= 0, "a number >= 0, the relative improvement that counts"),
            ("cooldown", cooldown, _count(cooldown), "an int >= 0, evaluations to wait after a cut"),
            ("min_scale", min_scale, 0 <= min_scale <= 1, "a number in [0, 1], the lowest scale")]
  for name, value, ok, expected in checks:
    if isinstance(value, bool) or not ok:
      raise ValueError(f"{where}: {name}={value!r}; expected {expected}.")
  settings = [factor, patience, threshold, cooldown, min_scale, 1.0 if mode == "min" else -1.0]

  def init(params):
    del params
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return PlateauState(f32(1.0), f32(jnp.inf), f32(0), f32(0), *map(f32, settings))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(init, update)


def _count(value) -> bool:
  n = as_int(value)
  return n is not None and n >= 0


def _advance(s: PlateauState, value) -> PlateauState:
  v = s.sign * jnp.asarray(value, jnp.float32)
  # best starts at +inf, where best - threshold * |best| would be nan
  better = (v < s.best - s.threshold * jnp.abs(s.best)) | (jnp.isinf(s.best) & (v < s.best))
  bad = jnp.where(better, 0.0, s.bad_count + 1)
  in_cooldown = s.cooldown_count > 0
  bad = jnp.where(in_cooldown, 0.0, bad)
  cooldown_count = jnp.where(in_cooldown, s.cooldown_count - 1, 0.0)
  cut = bad > s.patience
  return s._replace(
      scale=jnp.where(cut, jnp.maximum(s.scale * s.factor, s.min_scale), s.scale),
      best=jnp.where(better, v, s.best),
      bad_count=jnp.where(cut, 0.0, bad),
      cooldown_count=jnp.where(cut, s.cooldown, cooldown_count))


def plateau_step(state: Any, value) -> Any:
  """``state`` with every `PlateauState` in it moved on by the evaluated
  ``value`` (PyTorch's ``scheduler.step(val_loss)``). ``state`` is any
  pytree holding one: an optax state, a `TrainState`, ``fit``'s state.
  Each new leaf keeps its old one's sharding, so a replicated state stays
  replicated."""
  def advance(node):
    if not isinstance(node, PlateauState):
      return node
    new = _advance(node, value)
    # traced (plateau_step under jit or vmap), a leaf has no sharding to keep
    keep = lambda a, old: (jax.device_put(a, old.sharding) if isinstance(old, jax.Array)
                           and not isinstance(old, jax.core.Tracer) else a)
    return jax.tree.map(keep, new, node)
  return jax.tree.map(advance, state, is_leaf=lambda x: isinstance(x, PlateauState))


def plateau_scales(state: Any) -> list[float]:
  """The scales of the `PlateauState` nodes in ``state``, in tree order (the
  rate in use is the optimizer's times it; ``fit`` records it as
  ``"lr_scale"``)."""
  found = [node for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, PlateauState))
           if isinstance(node, PlateauState)]
  return [float(jnp.mean(node.scale)) for node in found]
