"""Conversion of params between jaxrnn and other libraries.

Lives here: one submodule per peer, imported on its own so that jaxrnn never
imports the peer unless asked, and `as_numpy`, the array reader they share.
Not here: the cells themselves (`jaxrnn._cells`), saving params to a file
(`jaxrnn.io`).

* `jaxrnn.interop.torch`: ``nn.LSTM`` (``num_layers``, ``bidirectional``,
  ``proj_size``, ``bias=False``), ``nn.GRU`` and ``nn.RNN`` state dicts, and
  those of their cells (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``), both
  ways. PyTorch is not needed: state dicts come in as anything NumPy can
  read and go out as NumPy arrays.

  - ``from_torch(source, kind=None, *, prefix="") -> params``
  - ``to_torch(params, *, bidirectional=None, bias=None, prefix="",
    cell=False) -> dict``
  - ``layer(kind, hidden_size, *, num_layers=1, bidirectional=False,
    proj_size=None, nonlinearity="tanh", dropout=0.0, bias=True,
    batch_first=True) -> Seq``, or ``layer(module)`` (a torch cell gives a
    `Cell`); its ``init`` draws as torch's (``init_like_torch``)
  - ``with_torch_biases(opt)``: an optax optimizer that steps the merged
    biases as torch steps its two, to fine-tune a ported model as torch would

* `jaxrnn.interop.flax`: Flax linen and NNX ``LSTMCell``,
  ``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell`` params, both ways,
  and Flax modules that run any jaxrnn Cell or Seq inside a Flax model.

  - ``from_linen(variables, cell=None) -> params``
  - ``to_linen(params, cell=None) -> {"params": {...}}``
  - ``from_nnx(module_or_state) -> params``
  - ``to_nnx(params, module) -> module`` (updated in place)
  - ``Recurrent`` (NNX) and ``LinenRecurrent`` (linen) wrappers.

Every conversion is exact where the peer's arithmetic allows: jaxrnn ->
peer -> jaxrnn gives back the same bits.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def as_numpy(x: Any, name: str, where: str) -> np.ndarray:
  """Reads one array from a NumPy array, jax Array or torch Tensor.

  A torch Tensor is detached and moved to the CPU first; bfloat16 tensors,
  which ``Tensor.numpy()`` refuses, come back as ``ml_dtypes.bfloat16``
  with the same bits. ``name`` and ``where`` (the calling function) go into
  the error message.

  >>> as_numpy([1.0, 2.0], "w", "demo").dtype
  dtype('float64')
  """
  if isinstance(x, jax.core.Tracer):
    raise TypeError(
        f"{where}: {name} is traced (the conversion was called inside "
        f"jax.jit, grad or vmap); conversions read arrays with NumPy, so they "
        f"run outside JAX's transformations. Fix: convert once, before the "
        f"jitted step, and train the converted params (the to_ function of "
        f"the same module converts them back).")
  if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor, duck-typed
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      import ml_dtypes  # jax's own dependency
      import torch  # only reached when the caller passed a torch Tensor
      return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return x.numpy()
  try:
    out = np.asarray(x)
  except Exception as e:  # noqa: BLE001 - re-raised with the key named
    raise TypeError(f"{where}: {name} is a {type(x).__name__} that NumPy "
                    f"cannot read as an array ({e}). Fix: pass a NumPy "
                    f"array, a jax Array or a torch Tensor.") from e
  if out.dtype.kind in "OUSbMm":  # objects, strings, bools, datetimes
    raise TypeError(f"{where}: {name} has dtype {out.dtype}; expected a "
                    f"numeric array. Fix: pass the tensor itself.")
  return out
