"""Settings for the whole test suite.

On a GPU, JAX multiplies float32 matrices in TF32 by default (10-bit
mantissas), and the tests compare against NumPy and float64 references at
1e-5; they check the maths, not TF32, so there they run every float32
matmul at full precision. On a CPU (CI) nothing changes.

Compiling is most of the suite's time, and many tests compile the same
programs (a cell's vmapped reference, its kernel at the same shapes), so
each process of the run keeps JAX's persistent compilation cache, in a
directory made for this run and removed after it, so every run starts
cold (on 2 cores it took the kernel tests 0.91x the time). An identical
program gets its executable back, so nothing tested changes. The scripts
the tests start do not use it: ``compile_time.py`` measures compiling.

For the same reason the test processes compile with most of XLA's
optimizations off (``jax_disable_most_optimizations``): the suite took
0.79x the time on 2 cores (445 s against 562 s), and the tests check the
maths, which XLA's optimizations keep up to float rounding. The scripts
the tests start (the benchmarks' smoke runs, which compare every
implementation against jaxrnn) and every user run compile optimized.
"""

import os
import shutil
import tempfile

import jax

CACHE_VARIABLE = "JAXRNN_TEST_COMPILATION_CACHE"   # not a name JAX reads

if jax.default_backend() == "gpu":
  jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
  jax.config.update("jax_disable_most_optimizations", True)
  if CACHE_VARIABLE not in os.environ:     # the first process (xdist's controller)
    os.environ[CACHE_VARIABLE] = tempfile.mkdtemp(prefix="jaxrnn-tests-jax-cache-")
    config.add_cleanup(lambda: shutil.rmtree(os.environ.pop(CACHE_VARIABLE),
                                             ignore_errors=True))
  # One directory per process: JAX writes an entry in place, so a process
  # reading another's entry mid-write would warn and compile again.
  worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
  cache = os.path.join(os.environ[CACHE_VARIABLE], worker)
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
