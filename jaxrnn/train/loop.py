"""`fit`: the training loop, with a progress bar, evaluation and checkpoints.

Lives here: `fit`. Not here: the step it runs (`step.py`, `tbptt.py`).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxrnn._cell import as_int
from jaxrnn.train.plateau import plateau_scales, plateau_step


def fit(
    train_step: Callable,
    state: Any,
    batches: Iterable,
    steps: int,
    *,
    desc: str = "train",
    quiet: bool = False,
    stop: Optional[Callable[[list], bool]] = None,
    evaluate: Optional[Callable[[Any], dict]] = None,
    eval_every: int = 0,
    checkpoints: Optional[Any] = None,
    checkpoint_every: int = 0,
    start: int = 0,
    restore_best: Optional[str] = None,
    best_mode: str = "min",
    reduce_lr_on: Optional[str] = None,
) -> tuple[Any, list[dict]]:
  """Runs ``state, metrics = train_step(state, batch)`` for up to ``steps`` batches.

  Shows a tqdm progress bar with the running loss (``quiet=True`` hides it,
  for tests). ``stop(history)`` ends training early when it returns True.
  ``evaluate(state)`` runs every ``eval_every`` steps (required with it),
  its metrics going into that step's history entry under ``"eval"``. The
  step donates its state, so an ``evaluate`` that keeps the params must
  copy them (``jax.tree.map(jnp.copy, state.params)``); ``restore_best``
  does that for you: with ``restore_best="loss"`` (a key of ``evaluate``'s
  metrics) the state returned is the one at the evaluation where that
  metric was lowest (``best_mode="max"``: highest), as Keras'
  ``EarlyStopping(restore_best_weights=True)`` gives (pair it with
  ``stop=early_stopping("loss", patience)`` for the early stopping itself); checkpoints still save the state
  as trained, to resume from. ``reduce_lr_on="loss"`` (a key of
  ``evaluate``'s metrics) cuts the learning rate when that metric stops
  improving, as Keras' ``ReduceLROnPlateau(monitor="val_loss")``: the
  optimizer's chain ends in `jaxrnn.train.reduce_lr_on_plateau`, whose
  scale `jaxrnn.train.plateau_step` moves after each evaluation (the
  history's entry gets it as ``"lr_scale"``). With ``checkpoints`` (a
  `jaxrnn.train.Checkpoints`), the state and the number of batches consumed
  are saved every ``checkpoint_every`` steps and at the end, so a killed run
  resumes where it stopped: ``state, start = checkpoints.restore(state)``,
  then ``fit`` on the batches from ``start`` on, with ``start=start`` and
  ``steps`` counted from there (the steps still to run, not the total that
  Keras' ``initial_epoch`` goes with). A TBPTT step holds its carry in the
  state (`make_tbptt_step`).

  Returns the final state and the history: one dict of host-side floats
  per step (a metric with more than one value, such as the losses of a
  `jax.vmap`-ed ensemble step, as a list; the progress bar shows the
  mean). Batches that run out before ``steps`` end training with a
  warning, as Keras' ``fit`` warns (for epochs over a list, pass
  ``itertools.chain.from_iterable(itertools.repeat(batches, epochs))``).

  >>> import jax.numpy as jnp
  >>> step = lambda s, b: (s + b, {"loss": s + b})
  >>> state, history = fit(step, 0.0, [1.0] * 5, steps=3, quiet=True)
  >>> state, [h["loss"] for h in history]
  (3.0, [1.0, 2.0, 3.0])
  """
  _check_step(train_step)
  if evaluate is not None and not eval_every:
    raise ValueError(
        "jaxrnn.train.fit: evaluate is given but eval_every=0, so it would never "
        "run. Fix: eval_every=N evaluates every N steps (the history's entry for "
        "those steps holds the metrics under 'eval').")
  if restore_best is not None and evaluate is None:
    raise ValueError(
        f"jaxrnn.train.fit: restore_best={restore_best!r} keeps the state where "
        f"evaluate's metric {restore_best!r} was best, but no evaluate is given. "
        f"Fix: pass evaluate=... and eval_every=N.")
  if best_mode not in ("min", "max"):
    raise ValueError(f"jaxrnn.train.fit: best_mode={best_mode!r}; expected 'min' or 'max'.")
  _check_plateau(state, reduce_lr_on, evaluate)
  best_state, best_value = None, None
  history: list[dict] = []
  progress = tqdm(total=steps, desc=desc, disable=quiet, leave=False)
  done = 0
  for batch in batches:
    if done >= steps:
      break
    state, metrics = train_step(state, batch)
    done += 1
    record = host_values(metrics)
    if evaluate is not None and eval_every and done % eval_every == 0:
      record["eval"] = host_values(evaluate(state))
      if reduce_lr_on is not None:   # first, so a best state kept below has seen it
        state = plateau_step(state, _metric(record["eval"], "reduce_lr_on", reduce_lr_on))
        scales = plateau_scales(state)
        record["lr_scale"] = scales[0] if len(scales) == 1 else scales
      if restore_best is not None:
        value = _metric(record["eval"], "restore_best", restore_best)
        if best_value is None or (value < best_value if best_mode == "min" else value > best_value):
          # a copy: the next step donates (deletes) the state's buffers
          best_state, best_value = jax.tree.map(_copy, state), value
    history.append(record)
    progress.update(1)
    progress.set_postfix(loss=f"{np.mean(record.get('loss', float('nan'))):.4g}")
    if checkpoints is not None and checkpoint_every and done % checkpoint_every == 0:
      checkpoints.save(state, position=start + done)
    if stop is not None and stop(history):
      break
  else:
    if done < steps:
      warnings.warn(
          f"jaxrnn.train.fit: the batches ran out after {done} of steps={steps}; "
          f"training stopped there. Fix: batches that last {steps} steps (epochs "
          f"over a list: itertools.chain.from_iterable(itertools.repeat(batches, "
          f"epochs))), or steps={done}.", stacklevel=2)
  progress.close()
  if checkpoints is not None:
    checkpoints.save(state, position=start + done)
  return (state if best_state is None else best_state), history


def early_stopping(metric: str = "loss", patience: int = 5, *, mode: str = "min",
                   min_delta: float = 0.0) -> Callable[[list], bool]:
  """A ``stop`` for `fit`: True once ``evaluate``'s ``metric`` has not
  improved (by more than ``min_delta``) for ``patience`` evaluations, as
  Keras' ``EarlyStopping(monitor="val_loss", patience=...)``; pair it with
  ``restore_best=metric`` for its ``restore_best_weights=True``.

  >>> history = [{"eval": {"loss": v}} for v in (3.0, 2.0, 2.5, 2.1)]
  >>> early_stopping("loss", patience=2)(history), early_stopping("loss", 3)(history)
  (True, False)
  """
  if mode not in ("min", "max"):
    raise ValueError(f"jaxrnn.train.early_stopping: mode={mode!r}; expected 'min' or 'max'.")
  n = as_int(patience)
  if n is None or n < 1:
    raise ValueError(f"jaxrnn.train.early_stopping: patience={patience!r}; expected an "
                     f"int >= 1, the evaluations without improvement that stop training.")
  sign = 1.0 if mode == "min" else -1.0

  def stop(history: list) -> bool:
    values = [sign * _metric(h["eval"], "early_stopping", metric) for h in history
              if "eval" in h]
    if len(values) <= n:
      return False
    best_before = min(values[:-n])
    return not any(v < best_before - min_delta for v in values[-n:])
  return stop


def host_values(metrics: dict) -> dict:
  """Metrics as host values: a float, or a list where there are several."""
  out = {}
  for k, v in jax.device_get(metrics).items():
    v = np.asarray(v)
    out[k] = float(v) if v.size == 1 else v.tolist()
  return out


def _metric(metrics: dict, setting: str, name: str) -> float:
  if name not in metrics:
    raise ValueError(f"jaxrnn.train.fit: {setting}={name!r}, but evaluate returned "
                     f"{sorted(metrics)}. Fix: name one of those.")
  return float(np.mean(metrics[name]))


def _check_plateau(state, reduce_lr_on, evaluate) -> None:
  """``reduce_lr_on`` and a `reduce_lr_on_plateau` in the state go together."""
  scales = plateau_scales(state)
  if reduce_lr_on is None:
    # with evaluations but no reduce_lr_on, the cut was forgotten (without
    # them, the caller may run plateau_step between fits)
    if scales and evaluate is not None:
      warnings.warn(
          f"jaxrnn.train.fit: the optimizer holds reduce_lr_on_plateau, but "
          f"reduce_lr_on is None, so its scale stays at {scales[0]:g}. Fix: "
          f"reduce_lr_on='loss' (a key of evaluate's metrics) with evaluate=... "
          f"and eval_every=N.", stacklevel=3)
    return
  if evaluate is None:
    raise ValueError(
        f"jaxrnn.train.fit: reduce_lr_on={reduce_lr_on!r} watches evaluate's metric "
        f"{reduce_lr_on!r}, but no evaluate is given. Fix: pass evaluate=... and "
        f"eval_every=N.")
  if not scales:
    raise ValueError(
        f"jaxrnn.train.fit: reduce_lr_on={reduce_lr_on!r}, but the state's optimizer "
        f"holds no jaxrnn.train.reduce_lr_on_plateau to cut the rate with. Fix: end "
        f"the chain with it, optax.chain(train.optimizer(1e-3), "
        f"train.reduce_lr_on_plateau(factor=0.1, patience=10)), and init the state "
        f"with that chain.")


def _copy(leaf):
  return jnp.copy(leaf) if isinstance(leaf, jax.Array) else leaf


def _check_step(train_step: Callable) -> None:
  """Refuses a step that cannot be called as ``train_step(state, batch)``,
  a TBPTT step above all, whose Python error would name neither."""
  try:
    signature = inspect.signature(train_step)
  except (TypeError, ValueError):   # a builtin or C callable: let the call decide
    return
  try:
    signature.bind(None, None)
  except TypeError:
    raise TypeError(
        f"jaxrnn.train.fit: train_step{signature} cannot be called as "
        f"train_step(state, batch). A TBPTT step (make_tbptt_step) also takes "
        f"and returns the carry. Fix: hold the carry in the state, "
        f"step = train.carry_in_state(tbptt) with state (train_state, carry); "
        f"a checkpoint then holds the carry too.") from None
