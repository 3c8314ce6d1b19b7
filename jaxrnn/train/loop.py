"""`fit`: the training loop, with a progress bar, evaluation and checkpoints.

Lives here: `fit`. Not here: the step it runs (`step.py`, `tbptt.py`).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Iterable, Optional

import jax
from tqdm.auto import tqdm


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
) -> tuple[Any, list[dict]]:
  """Runs ``state, metrics = train_step(state, batch)`` for up to ``steps`` batches.

  Shows a tqdm progress bar with the running loss (``quiet=True`` hides it,
  for tests). ``stop(history)`` ends training early when it returns True.
  ``evaluate(state)`` runs every ``eval_every`` steps, its metrics going into
  that step's history entry under ``"eval"``. With ``checkpoints`` (a
  `jaxrnn.train.Checkpoints`), the state and the number of batches consumed
  are saved every ``checkpoint_every`` steps and at the end, so a killed run
  resumes where it stopped: ``state, start = checkpoints.restore(state)``,
  then ``fit`` on the batches from ``start`` on, with ``start=start`` and
  ``steps`` counted from there (the steps still to run, not the total that
  Keras' ``initial_epoch`` goes with). A TBPTT step holds its carry in the
  state (`make_tbptt_step`).

  Returns the final state and the history: one dict of host-side floats
  per step. Batches that run out before ``steps`` end training with a
  warning, as Keras' ``fit`` warns (for epochs over a list, pass
  ``itertools.chain.from_iterable(itertools.repeat(batches, epochs))``).

  >>> import jax.numpy as jnp
  >>> step = lambda s, b: (s + b, {"loss": s + b})
  >>> state, history = fit(step, 0.0, [1.0] * 5, steps=3, quiet=True)
  >>> state, [h["loss"] for h in history]
  (3.0, [1.0, 2.0, 3.0])
  """
  _check_step(train_step)
  history: list[dict] = []
  progress = tqdm(total=steps, desc=desc, disable=quiet, leave=False)
  done = 0
  for batch in batches:
    if done >= steps:
      break
    state, metrics = train_step(state, batch)
    done += 1
    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if evaluate is not None and eval_every and done % eval_every == 0:
      record["eval"] = {k: float(v) for k, v in jax.device_get(evaluate(state)).items()}
    history.append(record)
    progress.update(1)
    progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}")
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
  return state, history


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
        f"and returns the carry. Fix: hold the carry in the state, e.g. "
        f"step = lambda s, batch: (lambda t, c, m: ((t, c), m))(*tbptt(*s, batch)) "
        f"and state (train_state, carry); a checkpoint then holds the carry too.") from None
