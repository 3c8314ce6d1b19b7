"""Large freed buffers kept in the process heap, so XLA's CPU calls reuse them.

Lives here: `tune_malloc`, which ``import jaxrnn`` runs once, and
`malloc_tuning`, which says what it did. Not here: anything about JAX.

Why: XLA's CPU runtime allocates each call's temporary buffers as one block
and frees it when the call returns (a training step of the LSTM at B = 32,
T = 128, H = 256: 56 MiB; at B = 128, T = 64, H = 512: 227 MiB). glibc's
malloc serves a block above its mmap threshold, which adapts upwards to
at most 32 MiB, with a fresh ``mmap``, so the kernel maps and zero-fills
every page of it again on each call: about 15,000 page faults per call at
B = 32. Raising the mmap threshold keeps such blocks in the heap, and
raising the trim threshold with it stops glibc from handing the freed top
of the heap back to the kernel. Measured (2 CPU cores, AMD EPYC, one CPU
device, medians of 20 calls, forward+backward): that LSTM step from 70 to
57 ms, with 830 page faults per call instead of 15,000; the GRU's from
52-56 to 39 ms; shapes whose buffers stay under 32 MiB (B = 1: 3.5 MiB)
do not change. PyTorch's CPU tuning guide makes the same point by
recommending jemalloc or tcmalloc, and torch's own backward gains as much
from this setting (``benchmarks/speed.py`` gives its worker the same).

The price: up to a gigabyte of freed memory stays with the process instead
of going back to the kernel, as with those allocators. Opt out with
``JAXRNN_TUNE_MALLOC=0`` in the environment; glibc's own
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a
``glibc.malloc`` entry in ``GLIBC_TUNABLES`` also leave it alone (your
setting wins).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30      # 1 GiB: above any temporary block of the benchmarks' shapes

_status = "not tuned yet"


def tune_malloc(environ: Mapping[str, str] = os.environ,
                threshold: int = THRESHOLD) -> str:
  """Raises glibc's mmap and trim thresholds to ``threshold`` bytes; says what it did.

  Does nothing, and says why, when ``JAXRNN_TUNE_MALLOC=0``, when the
  environment already sets glibc's malloc thresholds, or when the C library
  is not glibc. Setting them disables glibc's own adaptation of both
  thresholds, for the whole process. ``import jaxrnn`` calls it; what it
  said is `malloc_tuning`.
  """
  global _status
  _status = _tune(environ, threshold)
  return _status


def malloc_tuning() -> str:
  """What ``import jaxrnn`` did to the C allocator, in words.

  >>> import jaxrnn
  >>> jaxrnn.malloc_tuning().startswith(("glibc", "not glibc"))
  True
  """
  return _status


def _tune(environ: Mapping[str, str], threshold: int) -> str:
  if environ.get("JAXRNN_TUNE_MALLOC", "1") == "0":
    return "glibc defaults (JAXRNN_TUNE_MALLOC=0)"
  own = [name for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
         if name in environ]
  if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
    own.append("GLIBC_TUNABLES")
  if own:
    return f"glibc defaults (the environment sets {', '.join(own)})"
  if not _glibc():
    return f"not glibc ({platform.system()}): untouched"
  mallopt = ctypes.CDLL(None).mallopt
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  if not (mallopt(M_MMAP_THRESHOLD, threshold) and mallopt(M_TRIM_THRESHOLD, threshold)):
    return "glibc defaults (mallopt refused the thresholds)"
  return f"glibc mmap and trim thresholds {threshold >> 20} MiB"


def _glibc() -> bool:
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (AttributeError, ValueError, OSError):   # no confstr, or not glibc
    return False
