"""PyTorch in a process of its own, timed call by call for `speed.py`.

Lives here: `TorchWorker` (the parent's handle) and `serve` (the child's
loop), which build torch's modules and roofline matmuls, run their first
calls and time samples of calls on request (`benchmarks.timing`). Not
here: the round-robin timing, the checks and the tables (`speed.py`), the
weight mappings (`peers.py`).

Why a second process: torch's OpenMP threads spin-wait between parallel
regions, and that is how torch's CPU RNNs run fast (one region per step).
In one process beside XLA's thread pool the two slow each other; the
earlier cure, ``OMP_WAIT_POLICY=PASSIVE``, made torch itself 1.6x slower
at B = 32 and 15-19x slower at B = 1 than torch alone (LSTM fwd+bwd on 2
cores: 136 vs 83 ms, 157 vs 8.2 ms). Here torch keeps its defaults, the
parent asks for one sample at a time in the same round-robin as the JAX
implementations, and each side is idle while the other runs.

The protocol is pickled ``(op, args)`` requests on the child's stdin and
``(status, value)`` answers on its stdout; status is "ok", "absent" (the
value says why the row cannot run here) or "error".
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import burst

ROOT = Path(__file__).resolve().parent.parent
TORCH_MODULES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class TorchAbsent(Exception):
  """The worker cannot run a row here (no CUDA device, say)."""


class TorchWorker:
  """The parent's handle: ``request(op, *args)`` returns the child's answer."""

  def __init__(self, threads: int):
    # stdout carries the protocol; the child's own prints go to stderr.
    # torch's profiler (the memory column) logs two lines per use at
    # kineto's top level; 6 is above it. Your own KINETO_LOG_LEVEL wins.
    env = {"KINETO_LOG_LEVEL": "6", **os.environ}
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.torch_worker"], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    self.info = self.request("setup", threads)

  def request(self, op: str, *args) -> Any:
    pickle.dump((op, args), self.proc.stdin)
    self.proc.stdin.flush()
    status, value = pickle.load(self.proc.stdout)
    if status == "absent":
      raise TorchAbsent(value)
    if status == "error":
      raise RuntimeError(f"torch worker, {op}: {value}")
    return value

  def close(self) -> None:
    if self.proc.poll() is not None:
      return
    try:
      self.request("close")
      self.proc.wait(timeout=30)
    except (OSError, ValueError, EOFError, RuntimeError, subprocess.TimeoutExpired):
      self.proc.kill()   # a worker that broke or hangs must not outlive the run
      self.proc.wait()


# ------------------------------------------------------------------ the child

class _State:
  def __init__(self):
    self.modules: dict[int, Any] = {}
    self.calls: dict[int, Any] = {}


def _tune_malloc() -> str:
  """The C allocator settings of the parent's JAX side (``import jaxrnn``
  sets glibc's malloc there; see jaxrnn._malloc), so that the two sides
  differ in their kernels, not in their allocators. The module is loaded
  from its file: ``import jaxrnn`` would bring JAX into torch's process."""
  spec = importlib.util.spec_from_file_location("_jaxrnn_malloc",
                                                ROOT / "jaxrnn" / "_malloc.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.tune_malloc()


def _setup(state, threads):
  import torch
  malloc = _tune_malloc()
  torch.set_num_threads(threads)
  # Start the runtime so that no first-call figure pays for it.
  torch.ones(8, 8) @ torch.ones(8, 8)
  torch.nn.LSTM(2, 2)(torch.ones(1, 1, 2))
  return {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
          "version": torch.__version__, "malloc": malloc}


def _module(state, kind, weights, shape, dtype, device):
  """A ``batch_first`` torch RNN holding ``weights`` (a torch state dict in NumPy)."""
  import torch
  if device == "cuda" and not torch.cuda.is_available():
    raise TorchAbsent("no CUDA device")
  module = getattr(torch.nn, TORCH_MODULES[kind])(shape[2], shape[3], batch_first=True)
  module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                          for k, v in weights.items()})
  tdtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
  key = len(state.modules)
  state.modules[key] = (module.to(device=device, dtype=tdtype), device)
  return key


def _sync(device):
  import torch
  return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _runner(state, module_key, xs_np, mode, measure_memory):
  """Registers one call of a module; returns ``(key, first_s, output, memory, how)``."""
  import torch
  module, device = state.modules[module_key]
  dtype = next(module.parameters()).dtype
  sync = _sync(device)
  weights = list(module.parameters())
  x = torch.from_numpy(np.asarray(xs_np, np.float32)).to(device=device, dtype=dtype)
  x.requires_grad_(mode == "fwd_bwd")

  def call():
    if mode == "fwd":
      with torch.no_grad():
        out = module(x)[0]
    else:
      ys = module(x)[0]
      out = torch.autograd.grad(ys.float().sum(), weights + [x])[-1]
    sync()
    return out

  start = time.perf_counter()
  out = call()
  first = time.perf_counter() - start
  memory, how = None, ""
  if measure_memory:
    call()
    memory, how = _memory(call, device)
  key = len(state.calls)
  state.calls[key] = call
  return key, first, out.detach().float().cpu().numpy(), memory, how


def _memory(call, device):
  """Peak bytes torch allocates during one call (see `speed.py`'s docstring)."""
  import torch
  if device == "cuda":
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    return (int(torch.cuda.max_memory_allocated() - base),
            "torch.cuda.max_memory_allocated over one call")
  from torch.profiler import ProfilerActivity, profile
  with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    call()
  steps = sorted((e.time_range.start, e.self_cpu_memory_usage)
                 for e in prof.events() if e.self_cpu_memory_usage)
  live = peak = 0
  for _, delta in steps:
    live += delta
    peak = max(peak, live)
  return int(peak), "torch CPU allocator peak over one call (torch.profiler, per op)"


def _matmul(state, a, w, g, dtype, mode, device):
  """Registers the roofline's matmuls; returns ``(key, first_s)``."""
  import torch
  if device == "cuda" and not torch.cuda.is_available():
    raise TorchAbsent("no CUDA device")
  tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
  sync = _sync(device)
  a, w, g = (torch.from_numpy(v).to(device=device, dtype=tdtype) for v in (a, w, g))
  products = (lambda: a @ w) if mode == "fwd" else (lambda: (a @ w, g @ w.T, a.T @ g))
  call = lambda: (products(), sync())
  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  key = len(state.calls)
  state.calls[key] = call
  return key, first


def _reset(state):
  """Drops every module and call: a group of rows is done."""
  state.modules.clear()
  state.calls.clear()


def _call(state, key, n=1, warm=False):
  """Seconds per call of a sample of ``n`` calls (`benchmarks.timing.burst`),
  measured here so that the pipe is not counted."""
  return burst(state.calls[key], n, warm)


OPS = {"setup": _setup, "module": _module, "runner": _runner, "matmul": _matmul,
       "call": _call, "reset": _reset}


def serve(requests, answers) -> None:
  """The child's loop: one answer per request until "close" or end of input."""
  state = _State()
  while True:
    try:
      op, args = pickle.load(requests)
    except EOFError:
      return
    if op == "close":
      pickle.dump(("ok", None), answers)
      answers.flush()
      return
    try:
      answer = ("ok", OPS[op](state, *args))
    except TorchAbsent as e:
      answer = ("absent", str(e))
    except Exception as e:  # noqa: BLE001 - the parent reports it as a failed row
      answer = ("error", f"{type(e).__name__}: {e}")
    pickle.dump(answer, answers)
    answers.flush()


if __name__ == "__main__":
  answers = sys.stdout.buffer
  sys.stdout = sys.stderr     # stray prints must not corrupt the protocol
  serve(sys.stdin.buffer, answers)
