"""Large freed buffers kept in the process heap, so XLA's CPU calls reuse them.

Lives here: `tune_malloc`, which ``import jaxrnn`` runs once, and
`malloc_tuning`, which says what it did. Not here: anything about JAX.

Why: XLA's CPU runtime allocates each call's temporary buffers as one block
and frees it when the call returns (a training step of the LSTM at B = 32,
T = 128, H = 256: 56 MiB; at B = 128, T = 64, H = 512: 227 MiB), on a
thread of its own. glibc's malloc serves a block above its mmap
threshold, which adapts upwards to at most 32 MiB, with a fresh ``mmap``,
so the kernel maps and zero-fills every page of it again on each call;
and a thread other than the main one allocates from a secondary arena,
whose heaps hold at most 64 MiB, so a larger block made there is mapped
afresh whatever the threshold. Raising the mmap threshold to 1 GiB keeps
the other blocks in the heap, and raising the trim threshold with it
stops glibc from handing the freed top of the heap back to the kernel.
Measured (2 CPU cores, AMD EPYC, one CPU device, medians of 20 calls,
forward+backward, separate processes alternated): the LSTM step at
B = 32 from 70 to 57 ms, 15,000 page faults per call to 830; the GRU's
from 52-56 to 39 ms. Shapes whose buffers stay under 32 MiB (B = 1:
3.5 MiB) do not change, nor does the long-term-dependency job
(``--quick``: 53-54 s, against 56-66 s untuned). PyTorch's CPU tuning guide makes the
same point by recommending jemalloc or tcmalloc, and torch gains as much
from this setting (``benchmarks/speed.py`` gives its worker the same).

At B = 128, H = 512 the 227 MiB block is made on one of XLA's threads,
so the thresholds alone change nothing there (58,500 page faults per
call either way). One arena for all threads (``M_ARENA_MAX = 1``) puts
it in the main heap: 349-419 to 292-328 ms, 5,900 page faults. But one
arena serialises the many small allocations of XLA's threads, and the
long-term-dependency job took 68-81 s instead of 53-66 s (``--quick``;
0.92-1.72x as long in three later rounds), so it is an option, not the
default: ``JAXRNN_TUNE_MALLOC=one_arena`` in the environment, or
``jaxrnn.tune_malloc(one_arena=True)`` before JAX first runs. The other
way to keep that block, outside this module:
``jax.config.update("jax_cpu_enable_async_dispatch", False)`` runs each
call on the calling thread, and called from the main thread the block
comes from the main heap (LSTM step 414-435 to 318-359 ms;
``benchmarks/SPEED.md``, "The C allocator", gives its cost).

The price: freed memory up to the thresholds stays with the process
instead of going back to the kernel, as with those allocators. Opt out
with ``JAXRNN_TUNE_MALLOC=0`` in the environment; glibc's own
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_ARENA_MAX`` or a ``glibc.malloc`` entry in ``GLIBC_TUNABLES``
also leave it alone (your setting wins). Nothing changes where the C
library is not glibc, where ``LD_PRELOAD`` puts another allocator in its
place, or where an older glibc refuses a threshold above 32 MiB.
"""

from __future__ import annotations

import os
import platform
from typing import Mapping

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
THRESHOLD = 1 << 30      # 1 GiB; mallopt takes a C int
OPT_OUT = ("0", "false", "no", "off")

_status = "not tuned yet"


def tune_malloc(environ: Mapping[str, str] = os.environ,
                threshold: int = THRESHOLD, one_arena: bool = False) -> str:
  """Raises glibc's mmap and trim thresholds to ``threshold`` bytes and says what it did.

  With ``one_arena``, every thread also allocates from the main heap
  (``M_ARENA_MAX = 1``): blocks above 64 MiB made on XLA's threads are then
  kept too (the LSTM at B = 128, H = 512 trains in 0.81-0.85x the time), but
  small programs can slow down (the long-term-dependency job took 0.92-1.72x
  as long, 1.25-1.3x in earlier runs), so it is not the default. Call it
  before JAX first runs, or set ``JAXRNN_TUNE_MALLOC=one_arena`` for
  ``import jaxrnn``.

  Leaves malloc alone, and says why, when ``JAXRNN_TUNE_MALLOC`` is ``0``
  (or ``false``, ``no``, ``off``), when the environment already sets
  glibc's malloc options, when the C library is not glibc or another
  allocator replaces its malloc (``LD_PRELOAD``), or when this glibc
  refuses the value. Setting the thresholds disables glibc's own
  adaptation of both, for the whole process. ``import jaxrnn`` calls it;
  what it said is `malloc_tuning`.
  """
  if not (isinstance(threshold, int) and 0 < threshold < 2**31):
    raise ValueError(
        f"jaxrnn.tune_malloc: threshold={threshold!r}; expected a positive "
        f"number of bytes below 2**31 (glibc's mallopt takes a C int). Fix: "
        f"pass, e.g., 1 << 30.")
  global _status
  try:
    _status = _tune(environ, threshold, one_arena)
  except (ImportError, OSError, AttributeError) as e:   # no ctypes, no symbol
    _status = f"malloc untouched: {type(e).__name__}: {e}"
  return _status


def malloc_tuning() -> str:
  """What ``import jaxrnn`` did to the C allocator, in words.

  >>> import jaxrnn
  >>> jaxrnn.malloc_tuning().startswith(("glibc mmap and trim", "malloc untouched"))
  True
  """
  return _status


def _tune(environ: Mapping[str, str], threshold: int, one_arena: bool = False) -> str:
  setting = environ.get("JAXRNN_TUNE_MALLOC", "1").strip().lower()
  if setting in OPT_OUT:
    return "malloc untouched: JAXRNN_TUNE_MALLOC=" + environ["JAXRNN_TUNE_MALLOC"]
  own = [name for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_ARENA_MAX") if name in environ]
  if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
    own.append("GLIBC_TUNABLES")
  if own:
    return f"malloc untouched: the environment sets {', '.join(own)}"
  if not _glibc():
    return f"malloc untouched: the C library is not glibc ({platform.system()})"
  import ctypes
  process, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6")
  address = lambda f: ctypes.cast(f, ctypes.c_void_p).value
  if address(process.malloc) != address(libc.malloc):
    return "malloc untouched: another allocator replaces glibc's malloc (LD_PRELOAD)"
  mallopt = libc.mallopt
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  if not (mallopt(M_MMAP_THRESHOLD, threshold) and mallopt(M_TRIM_THRESHOLD, threshold)):
    return "malloc untouched: this glibc refuses a threshold of that size"
  status = f"glibc mmap and trim thresholds {threshold >> 20} MiB"
  if (one_arena or setting == "one_arena") and mallopt(M_ARENA_MAX, 1):
    status += ", one arena"
  return status


def _glibc() -> bool:
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (AttributeError, ValueError, OSError):   # no confstr, or not glibc
    return False
