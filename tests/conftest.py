"""Settings for the whole test suite.

On a GPU, JAX multiplies float32 matrices in TF32 by default (10-bit
mantissas), and the tests compare against NumPy and float64 references at
1e-5; they check the maths, not TF32, so there they run every float32
matmul at full precision. On a CPU (CI) nothing changes.
"""

import jax

if jax.default_backend() == "gpu":
  jax.config.update("jax_default_matmul_precision", "highest")
