"""Data parallelism: the same train step on one device or many.

Lives here: `data_mesh`, `shard_batch`, `replicate`. The batch is split
along its leading axis over a one-axis mesh ``"data"``; params and
optimizer state are replicated. `jax.jit` then partitions the unchanged
train step (SPMD) and all-reduces the gradients, so 1 device and N devices
give the same loss up to float summation order. Not here: the step.

On a multi-core CPU, split the CPU into devices first, right after
``import jax`` (before any JAX operation)::

  jax.config.update("jax_num_cpu_devices", 2)

Each device then runs its half of the batch through the time loop, beside
the other: one loop's per-step matmuls are too small to keep XLA's thread
pool busy. On 2 CPU cores, `jaxrnn.scan_batch`'s LSTM and GRU train
1.3-1.6x faster this way (B = 16-32, T = 128-256; no gain at B = 128,
H = 512; ``benchmarks/speed.py --cpu-devices 2``). jaxrnn's kernels
(`jaxrnn.fused_cell`'s and the batched ones) compute every gradient after
the time loop, so it is all-reduced once per step. A scan differentiated
by JAX sums the weight gradients inside its backward loop and all-reduces
them at every time step: Flax, Equinox and Haiku cells, and jaxrnn cells
without a kernel, train 1.2-4.7x slower data-parallel than on one device.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis ``("data",)`` mesh over ``devices`` (all of them by default).

  >>> data_mesh().axis_names
  ('data',)
  """
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(devices, ("data",))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``batch`` split along its leading (batch) axis.

  The batch size must divide by the number of devices.
  """
  n = mesh.devices.size
  for leaf in jax.tree.leaves(batch):
    if leaf.shape[0] % n:
      raise ValueError(
          f"jaxrnn.train.shard_batch: a batch leaf has shape {leaf.shape}; "
          f"its leading axis must divide by the {n} devices of the mesh. "
          f"Fix: use a batch size that is a multiple of {n}.")
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  return jax.device_put(batch, sharding)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a full copy of ``tree`` (params, optimizer state) on every device."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
