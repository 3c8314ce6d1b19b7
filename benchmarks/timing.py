"""How one timed sample is taken, the same way in the JAX process and in torch's worker.

Why bursts: a call that follows idle time runs slower than the same call in
a loop, because the threads that run it have gone to sleep and the cores
they wake on have slowed. In `benchmarks/speed.py`'s round-robin every call
follows idle time (the other implementations' calls, and a pause when the
process changes). On 2 cores of an AMD EPYC (two runs each of
``python benchmarks/idle_penalty.py --framework torch`` and ``--framework
jax``) torch's LSTM forward at B=1, T=512, H=128 took 2.2-2.4 ms back to
back, 2.6-4.9 ms after 10 ms idle and 13.7 ms after 50 ms; jaxrnn's took
2.3-2.9, 3.1-3.3 and 3.3-3.5 ms. At B=32, H=256 (70-100 ms calls) idle
time changed neither (0.96-1.02x). A training or inference loop calls back
to back, so short calls are timed as a burst, after one untimed call that
wakes the threads.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def burst(fn: Callable[[], Any], n: int) -> float:
  """Seconds per call of ``fn`` over ``n`` back-to-back calls, after an untimed one if n > 1.

  >>> burst(lambda: None, 3) >= 0
  True
  """
  if n > 1:
    fn()
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - start) / n
