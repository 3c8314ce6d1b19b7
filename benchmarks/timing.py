"""How one timed sample is taken, the same way in the JAX process and in torch's worker.

Why: a call that follows idle time runs slower than the same call in a
loop, because the threads that run it have gone to sleep and the cores
they wake on have slowed. In `benchmarks/speed.py`'s round-robin every call
follows idle time (the other implementations' calls, and a pause when the
process changes). On 2 cores of an AMD EPYC (two runs each of
``python benchmarks/idle_penalty.py --framework torch`` and ``--framework
jax``) torch's LSTM forward at B=1, T=512, H=128 took 2.2-2.4 ms back to
back, 2.6-4.9 ms after 10 ms idle and 13.7 ms after 50 ms; jaxrnn's took
2.3-2.9, 3.1-3.3 and 3.3-3.5 ms. The penalty shrinks as calls grow: at
B=16, T=256, H=128 torch's 8 ms forward took 1.64x as long after 50 ms
idle and its 24 ms training step 1.08x (jaxrnn's 1.11x and 1.02x), and at
B=32, H=256 (70-100 ms calls) idle time changed neither (0.96-1.02x). A
training or inference loop calls back to back, so a call shorter than
``WARM_S`` is timed after one untimed call that wakes the threads, and one
shorter than ``BURST_S`` as the mean of a burst of back-to-back calls
lasting about ``BURST_S``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

BURST_S = 0.02
WARM_S = 0.05


def sample_plan(call_s: float) -> tuple[int, bool]:
  """``(n, warm)`` for a call that takes ``call_s`` seconds back to back:
  ``n`` timed calls per sample, after an untimed one if ``warm``.

  >>> sample_plan(0.002), sample_plan(0.03), sample_plan(0.08)
  ((10, True), (1, True), (1, False))
  """
  return max(1, math.ceil(BURST_S / max(call_s, 1e-6))), call_s < WARM_S


def burst(fn: Callable[[], Any], n: int, warm: bool) -> float:
  """Seconds per call of ``fn`` over ``n`` back-to-back calls, after an untimed one if ``warm``.

  >>> burst(lambda: None, 3, warm=True) >= 0
  True
  """
  if warm:
    fn()
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - start) / n


if __name__ == "__main__":
  # Run on its own by mistake: say what it is and what to run instead.
  raise SystemExit(f"{__doc__.splitlines()[0]}\nA module imported by benchmarks/speed.py and benchmarks/torch_worker.py, "
                   "not a script: run one of those (each takes --help).")
