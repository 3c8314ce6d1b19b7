"""Is jaxrnn fast? Its LSTM, GRU and simple RNN timed beside every peer, on this machine.

Run ``python benchmarks/speed.py`` (about 6 minutes on 2 CPU cores) or
``--quick`` (seconds). Options: ``--shapes 32,128,256,256 1,512,128,128``
(B,T,I,H each), ``--dtype f32|bf16``, ``--sweep-t 16,64,256,1024,4096``
(how cost grows with T at ``--sweep-base B,I,H``), ``--cells lstm,gru``,
``--cpu-devices 2`` (every JAX row also run data-parallel over 2 CPU
devices), ``--unroll 8,16`` (jaxrnn's loops, ``unfused``'s too, also
unrolled 8 and 16 times), ``--sync-dispatch`` (JAX's CPU calls run on the
calling thread), ``--xla-options "KEY=VALUE ..."`` (every JAX row also
compiled with these XLA options, side by side), ``--repeats``, ``--out
results/speed.json`` (the PNG goes beside it).

Lives here: the timing harness, the equality check, the figures, the table,
the JSON and the plot. Not here: the peers and their weight mappings
(`benchmarks/peers.py`).

Method, per shape and cell:

* Same computation. jaxrnn's params (random biases included) are given to
  every peer, and each peer's outputs ``ys`` (forward) and input gradients
  ``dL/dxs`` (forward+backward) are checked against jaxrnn's before timing:
  max abs error <= 1e-4 (f32; gradients relative to their largest entry) or
  5e-2 (bf16, where jaxrnn keeps a float32 carry and the peers do not).
  On a GPU, float32 gets 1e-2: XLA's matmuls and cuDNN's RNNs (JAX's and
  torch's) multiply float32 in TF32 there by default (the largest error
  seen on an H200 was 2.3e-3; the JSON keeps every error). The table's
  "check" column says which passed.
* Forward: ``ys = f(params, xs [B, T, I])``. jaxrnn's is
  ``jax.jit(jax.vmap(lambda x: jaxrnn.scan(cell, params, x)))`` at the
  default unroll (1 on CPU, 8 on a GPU), the row every ratio is taken
  against; "jaxrnn unroll=4" passes ``unroll=4`` (``--unroll`` adds
  more) and "jaxrnn.unfused" runs ``jaxrnn.unfused(cell)`` at unroll=1
  (input matmul inside the step, no fused kernel: a plain ``lax.scan``),
  so a user sees which form suits the shape; torch runs under
  ``torch.no_grad()``. Forward+backward: the gradient of
  ``L = sum(ys)`` with respect to the params and the inputs
  (``jax.jit(jax.grad(L, argnums=(0, 1)))``; ``torch.autograd.grad``).
* Timing: every implementation is called once (the first call, compile
  included for JAX: lower + compile + run; the table's "compile s" is
  lower + compile alone, the JSON keeps both), once more to warm up, then all
  of them in turn, round-robin with the order rotated each round, for
  ``--repeats`` rounds (fewer for slow groups, never under 3, so that the
  default grid fits its time). Each call ends in ``block_until_ready`` (or
  a CUDA sync). A sample is one call; a call under 50 ms (``WARM_S``)
  comes after one untimed call, and one under 20 ms (``BURST_S``) is the
  mean of a burst of back-to-back calls lasting about 20 ms: a short call
  that follows idle time runs slower, torch's far more than JAX's
  (`benchmarks.timing`), and a training loop calls back to back.
  Reported: the median sample, with every sample and its plan in the JSON.
* Memory: JAX, ``compiled.memory_analysis()``: the temporary plus output
  buffers XLA allocates for one call (arguments excluded). torch on CPU:
  the peak of bytes allocated through torch's allocator during one call,
  from ``torch.profiler(profile_memory=True)`` at operator granularity
  (oneDNN's own scratch space is not seen); on CUDA,
  ``torch.cuda.max_memory_allocated`` over one call.
* FLOPs: ``2 B T (I + H) G H`` for the forward pass (G gate blocks: LSTM 4,
  GRU 3, RNN 1; element-wise work not counted), three times that for
  forward+backward. The "matmul" rows are the roofline: one
  ``[B T, I + H] @ [I + H, G H]`` matmul of the same FLOPs (forward), and
  the three matmuls of its backward pass added (forward+backward), in
  the run's dtype and accumulated in float32, as jaxrnn computes.
* Threads: JAX on CPU uses XLA's thread pool over every core it can see;
  torch gets ``torch.set_num_threads`` of the same count and runs in a
  process of its own with its default OpenMP settings
  (`benchmarks.torch_worker`), asked for one sample at a time in the same
  round-robin; its own clock times each sample. In one process torch's
  spinning threads and XLA's pool slow each other, and the cure used
  before (``OMP_WAIT_POLICY=PASSIVE``) made torch 1.6-19x slower than
  torch alone.
* ``--cpu-devices N`` splits the CPU into N JAX devices
  (``jax_num_cpu_devices``) and adds, beside every JAX row, the same program
  run data-parallel: the batch split over the N devices, the params
  replicated, ``jax.jit`` partitioning the unchanged program (as
  `jaxrnn.train.shard_batch` and `replicate` do for training). Such rows
  are named "... [N CPU devices]"; their memory is one device's share.
  Each device's loop then does 1/N of each step's small matmuls, and on 2
  cores the two loops run side by side, where one loop's small matmuls
  keep XLA's thread pool waking and sleeping.
* ``--xla-options "KEY=VALUE ..."`` (XLA_FLAGS' syntax, repeatable) adds,
  beside every JAX row, the same program compiled with those XLA options
  (``jax.jit(..., compiler_options=...)``, that program alone), named
  "... [xla KEY=VALUE ...]": an XLA option measured in the same run as
  the default instead of in a process of its own. An option XLA rejects
  fails its rows, not the run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from benchmarks import peers
from benchmarks.cli import positive, positive_list, shape_bthi
from benchmarks.peers import Absent, JaxProgram, TorchProgram
from benchmarks.timing import WARM_S, burst, sample_plan
from benchmarks.torch_worker import TorchAbsent, TorchWorker
import jaxrnn
from jaxrnn._cell import _row_major_transpose
from jaxrnn.train.parallel import data_mesh, replicate, shard_batch

DEFAULT_SHAPES = [(32, 128, 256, 256), (1, 512, 128, 128), (128, 64, 512, 512)]
DEFAULT_SWEEP = (16, 64, 256)   # a short sweep so the default plot has lines
DEFAULT_SWEEP_BASE = (16, 128, 128)
QUICK_SHAPES = [(2, 8, 4, 8)]
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
TOLERANCE = {"f32": 1e-4, "bf16": 5e-2}
TF32_TOLERANCE = 1e-2   # float32 on a GPU, where matmuls run in TF32 by default
PACKAGES = ["jax", "jaxlib", "flax", "equinox", "dm-haiku", "torch", "numpy"]


class Runner(NamedTuple):
  """One implementation in one mode, compiled and called once."""
  call: Callable[[int, bool], float]   # a sample (n, warm) (see `burst`): seconds per call
  first_call_s: float            # the first call, compile included
  output: np.ndarray             # ys (fwd) or dL/dxs (fwd_bwd), float32
  memory_bytes: Optional[int]
  memory_how: str
  process: str = "jax"           # "jax" (this process) or "torch" (the worker)
  compile_s: Optional[float] = None  # JAX: lower + compile, no run; torch: None


def timed(fn: Callable[[], Any]) -> Callable[[int, bool], float]:
  """``fn`` as a sample of ``n`` calls that returns seconds per call (`burst`)."""
  return lambda n, warm: burst(fn, n, warm)


# ------------------------------------------------------------------ runners

def block(tree):
  return jax.block_until_ready(tree)


def jax_runner(program: JaxProgram, xs, mode: str, measure_memory: bool,
               mesh: Optional[Mesh] = None,
               compiler_options: Optional[dict] = None) -> Runner:
  """``program`` jitted, on one device or (``mesh``) split along the batch,
  with XLA's default options or ``compiler_options``."""
  apply = program.apply
  params = program.params
  if mesh is not None:
    # jit partitions the unchanged program from its arguments' placement.
    params, xs = replicate(params, mesh), shard_batch(xs, mesh)
  if mode == "fwd":
    fn = apply
  else:
    def loss(p, x):
      return jnp.sum(apply(p, x).astype(jnp.float32))
    fn = jax.grad(loss, argnums=(0, 1))
  start = time.perf_counter()
  compiled = jax.jit(fn, compiler_options=compiler_options).lower(params, xs).compile()
  compile_s = time.perf_counter() - start
  out = block(compiled(params, xs))
  first = time.perf_counter() - start
  memory, how = None, "XLA temp+output buffers (compiled.memory_analysis)"
  if mesh is not None:
    how += ", one device's share"
  if measure_memory:
    try:
      m = compiled.memory_analysis()
      memory = int(m.temp_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - some backends do not report it
      how = "not reported by this backend"
  out = out if mode == "fwd" else out[1]
  return Runner(timed(lambda: block(compiled(params, xs))), first,
                np.asarray(out, np.float32), memory, how, compile_s=compile_s)


def torch_runner(worker: TorchWorker, program: TorchProgram, xs_np, mode: str,
                 measure_memory: bool) -> Runner:
  """A torch module's call, built, run once and timed in the worker process."""
  module = worker.request("module", program.kind, program.weights, program.shape,
                          program.dtype, program.device)
  key, first, out, memory, how = worker.request("runner", module, xs_np, mode,
                                                measure_memory)
  return Runner(lambda n, warm: worker.request("call", key, n, warm), first, out, memory,
                how, "torch")


class Matmul(NamedTuple):
  """The roofline: a matmul of the same FLOPs as the recurrence."""
  framework: str   # "xla", "torch" (CPU) or "torch cuda"


def matmul_runner(spec: Matmul, shape, gates: int, dtype: str, mode: str,
                  worker: Optional[TorchWorker]) -> Runner:
  B, T, I, H = shape
  rng = np.random.default_rng(0)
  a, w, g = (rng.standard_normal(s).astype(np.float32) for s in
             ((B * T, I + H), (I + H, gates * H), (B * T, gates * H)))
  if spec.framework == "xla":
    a, w, g = (jnp.asarray(v, DTYPES[dtype]) for v in (a, w, g))

    def mm(x, y):
      # As jaxrnn's matmuls: accumulated in float32. A bfloat16 product
      # with a bfloat16 result ran 3.6x slower on this CPU (no AMX).
      return jnp.matmul(x, y, preferred_element_type=jnp.float32)
    # XLA CPU runs a bfloat16 product with a transposed operand 1.7-2x
    # slower (4.3x on AMX), so in bfloat16 both transposed operands are
    # row-major copies, as jaxrnn's weight gradients take theirs (see
    # time_batch_matmul): 0.73-0.77x the time of w.T folded in (AMD EPYC).
    t = (lambda a: a.T) if dtype == "f32" else _row_major_transpose
    fn = (lambda a, w, g: mm(a, w)) if mode == "fwd" else (
        lambda a, w, g: (mm(a, w), mm(g, t(w)), mm(t(a), g)))
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(a, w, g).compile()
    compile_s = time.perf_counter() - start
    block(compiled(a, w, g))
    first = time.perf_counter() - start
    return Runner(timed(lambda: block(compiled(a, w, g))), first, np.zeros(()), None, "",
                  compile_s=compile_s)
  device = "cuda" if spec.framework == "torch cuda" else "cpu"
  key, first = worker.request("matmul", a, w, g, dtype, mode, device)
  return Runner(lambda n, warm: worker.request("call", key, n, warm), first, np.zeros(()),
                None, "", "torch")


# ------------------------------------------------------------------ one group

def make_params(kind: str, shape, seed: int = 0):
  """jaxrnn params in float32 NumPy, with random biases so mappings are checked.

  The GRU's ``b_hn`` stays zero: nnx.GRUCell has no such bias.
  """
  B, T, I, H = shape
  params = peers.KINDS[kind].make(H, jnp.float32).init(jax.random.key(seed), I)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  rng = np.random.default_rng(seed)
  return params._replace(b=(0.1 * rng.standard_normal(params.b.shape)).astype(np.float32))


def check(out: np.ndarray, ref: np.ndarray, mode: str, dtype: str) -> tuple[bool, float]:
  """Max abs error of ``out`` against jaxrnn's ``ref`` and whether it is in tolerance."""
  if out.shape != ref.shape:
    return False, float("inf")
  err = float(np.max(np.abs(out - ref))) if out.size else 0.0
  scale = 1.0 if mode == "fwd" else max(1.0, float(np.max(np.abs(ref))))
  return bool(err <= tolerance(dtype) * scale), err


def tolerance(dtype: str) -> float:
  on_gpu = jax.default_backend() == "gpu"
  return TF32_TOLERANCE if (dtype == "f32" and on_gpu) else TOLERANCE[dtype]


def flops(shape, gates: int) -> int:
  B, T, I, H = shape
  return 2 * B * T * (I + H) * gates * H


def run_group(kind: str, shape, args, worker: Optional[TorchWorker]) -> dict:
  """Times every implementation of one cell kind at one shape: the JSON group."""
  dtype = args.dtype
  B, T, I, H = shape
  gates = peers.KINDS[kind].gates
  params = make_params(kind, shape)
  xs_np = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
  xs = jnp.asarray(xs_np, DTYPES[dtype])
  # With --cpu-devices N, every JAX row, jaxrnn's and the peers' alike, also
  # runs data-parallel over N CPU devices, as a second row beside it.
  n = args.cpu_devices
  mesh = data_mesh(jax.devices("cpu")[:n]) if n > 1 and B % n == 0 else None
  rows, programs = [], []
  unrolled = peers.unrolled(args.unroll)      # asked for by name: --impls does not apply
  for peer in peers.PEERS + unrolled:
    if kind not in peer.kinds or not (peer in unrolled or selected(peer.name, args.impls)):
      continue
    row = {"impl": peer.name, "status": "ok", "reason": ""}
    rows.append(row)
    try:
      program = peer.build(kind, params, DTYPES[dtype], shape)
    except Absent as e:
      row.update(status="absent", reason=str(e))
      continue
    except Exception as e:  # noqa: BLE001 - a broken peer is a row, not a crash
      row.update(status="failed", reason=f"{type(e).__name__}: {e}")
      continue
    programs.append((row, program, None, None))
    if not isinstance(program, JaxProgram):
      continue
    # Twins of a JAX row: the same program data-parallel (--cpu-devices) and
    # compiled with each --xla-options set, each placement with each set.
    for placement in [None] + ([mesh] if mesh is not None else []):
      for options in [None] + args.xla_options:
        if placement is None and options is None:
          continue                      # the row itself
        label = " ".join(
            ([data_parallel_label(placement)] if placement is not None else []) +
            ([xla_options_label(options)] if options is not None else []))
        twin = {"impl": f"{peer.name} {label}", "status": "ok", "reason": ""}
        if placement is not None:
          twin["devices"] = placement.devices.size
        if options is not None:
          twin["xla_options"] = options
        rows.append(twin)
        programs.append((twin, program, placement, options))
  matmuls = [Matmul("xla")]
  if worker is not None:
    matmuls.append(Matmul("torch"))
    if worker.info["cuda"]:
      matmuls.append(Matmul("torch cuda"))
  for spec in matmuls:
    row = {"impl": f"matmul roofline ({spec.framework})", "status": "ok",
           "reason": "", "roofline": True}
    rows.append(row)
    programs.append((row, spec, None, None))

  for mode in ("fwd", "fwd_bwd"):
    live = []
    for row, program, placement, options in programs:
      if row["status"] != "ok":
        continue
      try:
        if isinstance(program, Matmul):
          runner = matmul_runner(program, shape, gates, dtype, mode, worker)
        elif isinstance(program, JaxProgram):
          runner = jax_runner(program, xs, mode, not args.no_memory, placement, options)
        else:
          runner = torch_runner(worker, program, xs_np if dtype == "f32" else
                                np.asarray(xs, np.float32), mode, not args.no_memory)
      except TorchAbsent as e:
        row.update(status="absent", reason=str(e))
        continue
      except Exception as e:  # noqa: BLE001
        if args.verbose:
          traceback.print_exc()
        row.update(status="failed", reason=f"{mode}: {type(e).__name__}: {e}")
        continue
      row[mode] = {"first_call_s": runner.first_call_s, "compile_s": runner.compile_s,
                   "memory_bytes": runner.memory_bytes,
                   "memory_how": runner.memory_how}
      live.append((row, runner))
    reference = next((r.output for row, r in live if row["impl"] == "jaxrnn"), None)
    for row, runner in live:
      if row.get("roofline"):
        continue
      if reference is None:
        ok, err = False, float("nan")
      else:
        ok, err = check(runner.output, reference, mode, dtype)
      row.setdefault("check", {})[mode] = {"ok": ok, "max_abs_err": err}
    time_round_robin(live, mode, args)
  if worker is not None:
    worker.request("reset")
  return {"kind": kind, "shape": dict(B=B, T=T, I=I, H=H), "dtype": dtype,
          "gates": gates, "flops": {"fwd": flops(shape, gates),
                                    "fwd_bwd": 3 * flops(shape, gates)},
          "rows": rows}


def data_parallel_label(mesh: Mesh) -> str:
  return f"[{mesh.devices.size} CPU devices]"


def xla_options_label(options: dict) -> str:
  return "[xla " + " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                            for k, v in options.items()) + "]"


def selected(name: str, impls: Optional[list[str]]) -> bool:
  return name == "jaxrnn" or not impls or any(s.lower() in name.lower() for s in impls)


# Idle time between a call in one process and a call in the other, so that
# threads still spin-waiting after one call do not run beside the next.
SWITCH_PAUSE_S = 0.01


def time_round_robin(live, mode: str, args) -> None:
  """Warm-up, then ``repeats`` rounds of one sample per runner, in rotating order.

  Each runner's sample plan (`benchmarks.timing.sample_plan`) comes from a
  warm call: a call timed after idle time is the slow one it corrects for.
  """
  if not live:
    return
  cold_s = [runner.call(1, False) for _, runner in live]
  call_s = [runner.call(1, True) if s < WARM_S else s for s, (_, runner) in zip(cold_s, live)]
  plans = [sample_plan(s) for s in call_s]
  switches = 2 * sum(runner.process != "jax" for _, runner in live)
  round_s = (sum(s * (n + warm) for s, (n, warm) in zip(call_s, plans))
             + switches * SWITCH_PAUSE_S)
  repeats = args.repeats
  if args.budget and round_s * repeats > args.budget:
    repeats = max(min(3, repeats), int(args.budget / round_s))
  times = [[] for _ in live]
  gc.collect()
  gc.disable()
  try:
    for r in range(repeats):
      order = list(range(len(live)))
      order = order[r % len(live):] + order[:r % len(live)]
      last = None
      for k in order:
        runner = live[k][1]
        if last is not None and runner.process != last:
          time.sleep(SWITCH_PAUSE_S)
        times[k].append(runner.call(*plans[k]))
        last = runner.process
  finally:
    gc.enable()
  for (row, _), ts, (n, warm) in zip(live, times, plans):
    row[mode].update(times_s=ts, median_s=statistics.median(ts), calls_per_sample=n,
                     warm_call=warm)


# ------------------------------------------------------------------ output

def fmt_ms(row, mode) -> str:
  m = row.get(mode, {}).get("median_s")
  return "" if m is None else f"{m * 1e3:.3g}"


def ratio(row, base, mode) -> str:
  a = row.get(mode, {}).get("median_s")
  b = base.get(mode, {}).get("median_s") if base else None
  return "" if a is None or not b else f"{a / b:.2f}"


def check_cell(row, dtype) -> str:
  if row.get("roofline"):
    return "n/a"
  c = row.get("check", {})
  if not c:
    return ""
  if all(v["ok"] for v in c.values()) and len(c) == 2:
    return "checked" if dtype == "f32" else "checked (bf16 tol)"
  return "MISMATCH " + ", ".join(f"{m} err {v['max_abs_err']:.1e}"
                                 for m, v in c.items() if not v["ok"])


def group_table(group: dict) -> str:
  s = group["shape"]
  dtype = group["dtype"]
  base = next((r for r in group["rows"] if r["impl"] == "jaxrnn"), None)
  f = group["flops"]
  title = (f"### {group['kind']}  B={s['B']} T={s['T']} I={s['I']} H={s['H']} "
           f"{dtype}  ({f['fwd'] / 1e9:.3g} GFLOP fwd, "
           f"{f['fwd_bwd'] / 1e9:.3g} fwd+bwd)")
  head = ("| implementation | fwd ms | fwd x jaxrnn | fwd+bwd ms | fwd+bwd x jaxrnn "
          "| compile s (fwd / fwd+bwd) | peak MiB (fwd+bwd) "
          "| GFLOP/s fwd+bwd | check |")
  lines = [title, "", head, "|" + "---|" * 9]
  roof = {r["impl"].split("(")[-1].rstrip(")"): r for r in group["rows"] if r.get("roofline")}
  for row in group["rows"]:
    if row["status"] != "ok":
      lines.append(f"| {row['impl']} | {row['status']}: {row['reason']} "
                   "| | | | | | | |")
      continue
    first = " / ".join("eager" if row[m].get("compile_s") is None
                       else f"{row[m]['compile_s']:.2f}"
                       for m in ("fwd", "fwd_bwd") if m in row)
    mem = row.get("fwd_bwd", {}).get("memory_bytes")
    med = row.get("fwd_bwd", {}).get("median_s")
    gflops = ""
    if med:
      rate = f["fwd_bwd"] / med / 1e9
      gflops = f"{rate:.3g}"
      ref = roof.get("torch cuda" if row["impl"].startswith("torch (cuda")
                     else "torch" if row["impl"].startswith("torch") else "xla")
      ref_med = ref and ref.get("fwd_bwd", {}).get("median_s")
      if ref_med and not row.get("roofline"):
        gflops += f" ({100 * ref_med / med:.0f}% of matmul)"
    lines.append(
        f"| {row['impl']} | {fmt_ms(row, 'fwd')} | {ratio(row, base, 'fwd')} "
        f"| {fmt_ms(row, 'fwd_bwd')} | {ratio(row, base, 'fwd_bwd')} | {first} "
        f"| {'' if mem is None else f'{mem / 2**20:.1f}'} | {gflops} "
        f"| {check_cell(row, dtype)} |")
  return "\n".join(lines)


def render(report: dict) -> str:
  m = report["meta"]
  out = [f"## jaxrnn speed vs peers ({m['backend']}, {m['device']}, {m['dtype']}; "
         f"{m.get('cpu', m['machine'])})",
         "",
         f"x jaxrnn = peer time / jaxrnn time (above 1: jaxrnn is faster). "
         f"Medians of interleaved repeats; JAX on {m['threads']['xla']} "
         f"threads, torch on {m['threads']['torch']}. Load average at start "
         f"{m['loadavg_start']}, at end {m['loadavg_end']}. malloc: "
         f"{m['malloc']['jax']}; in torch's worker: {m['malloc']['torch']}. "
         f"JAX's CPU dispatch: {m['dispatch']}."
         + (f" XLA's fastest square matmul here ([{m['peak_matmul']['n']}]^2, "
            f"{m['dtype']}): {m['peak_matmul']['gflops']} GFLOP/s."
            if "peak_matmul" in m else ""),
         ""]
  for group in report["groups"]:
    out += [group_table(group), ""]
  for status in ("absent", "failed"):
    if report[status]:
      out.append(f"{status.capitalize()}: " + "; ".join(
          f"{k} ({v})" for k, v in sorted(report[status].items())))
  return "\n".join(out)


def plot(report: dict, path: Path) -> None:
  """Median time against T, one line per implementation.

  One panel per cell kind, mode and (B, I, H) that was run at two or more T
  (a sweep); when there is no sweep, one panel per group.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series: dict = {}
  for g in report["groups"]:
    s = g["shape"]
    for mode in ("fwd", "fwd_bwd"):
      key = (list(peers.KINDS).index(g["kind"]), g["kind"], s["B"], s["I"], s["H"], mode)
      for row in g["rows"]:
        med = row.get(mode, {}).get("median_s")
        if med is not None:
          series.setdefault(key, {}).setdefault(row["impl"], []).append((s["T"], med))
  sweeps = [k for k, v in series.items()
            if len({t for points in v.values() for t, _ in points}) > 1]
  panels = sorted(sweeps or series)
  # A data-parallel twin ("name [N CPU devices]") is drawn dashed, in its
  # row's colour.
  base = lambda impl: impl.split(" [")[0]
  names = sorted({base(impl) for k in panels for impl in series[k]})
  colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
  cols = 2
  rows = max(1, (len(panels) + cols - 1) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for ax, key in zip(axes.flat, panels):
    _, kind, B, I, H, mode = key
    for impl, points in sorted(series[key].items()):
      points.sort()
      style = ":" if impl.startswith("matmul") else "--" if " [" in impl else "-"
      ax.plot([p[0] for p in points], [p[1] * 1e3 for p in points], style, marker="o",
              lw=2.5 if base(impl) == "jaxrnn" else 1.2, color=colors[base(impl)],
              label=impl)
    ax.set(xscale="log", yscale="log", xlabel="T (time steps)", ylabel="median ms",
           title=f"{kind} {'fwd+bwd' if mode == 'fwd_bwd' else 'fwd'}  "
                 f"B={B} I={I} H={H} {report['meta']['dtype']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"jaxrnn and peers on {report['meta']['backend']} "
               f"({report['meta']['machine']})", fontsize=10)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------ main

def parse_xla_options(text: str) -> dict:
  """``"KEY=VALUE ..."`` (XLA_FLAGS' syntax, the ``--`` optional) as the
  ``compiler_options`` of `jax.jit`, which takes booleans as ``bool``."""
  options = {}
  for item in text.split():
    key, eq, value = item.removeprefix("--").partition("=")
    if not key or not eq:
      raise argparse.ArgumentTypeError(
          f"--xla-options {text!r}: {item!r} is not KEY=VALUE; expected XLA options "
          f"separated by spaces, e.g. \"xla_cpu_prefer_vector_width=512\"")
    options[key] = {"true": True, "false": False}.get(value.lower(), value)
  if not options:
    raise argparse.ArgumentTypeError("--xla-options: expected at least one KEY=VALUE")
  return options


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true",
                 help="tiny shapes and 2 repeats: a smoke test in seconds (sets "
                      "--shapes, --sweep-t, --repeats and --budget itself)")
  p.add_argument("--shapes", nargs="+", type=shape_bthi,
                 help="B,T,I,H shapes (default: 32,128,256,256 1,512,128,128 "
                      "128,64,512,512)")
  p.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
  p.add_argument("--sweep-t", type=positive_list,
                 help="sequence lengths for a sweep at --sweep-base "
                      f"(default {','.join(map(str, DEFAULT_SWEEP))} on lstm)")
  p.add_argument("--sweep-base", type=positive_list, default=DEFAULT_SWEEP_BASE,
                 help="B,I,H of the sweep (default 16,128,128)")
  p.add_argument("--cells", type=lambda s: s.split(","),
                 help=f"cell kinds, from {','.join(peers.KINDS)} (default all)")
  p.add_argument("--impls", type=lambda s: s.split(","),
                 help="only peers whose name contains one of these (jaxrnn always runs)")
  p.add_argument("--unroll", type=positive_list, default=(),
                 help="also time jaxrnn's scan, scan_batch and unfused at these "
                      "unroll factors, e.g. 8,16 (rows 'jaxrnn unroll=N', "
                      "'jaxrnn.scan_batch unroll=N' and 'jaxrnn.unfused unroll=N', "
                      "whatever --impls says; "
                      "'jaxrnn unroll=4' is a row already)")
  p.add_argument("--repeats", type=positive, help="timed rounds per group (default 5)")
  p.add_argument("--budget", type=float,
                 help="seconds of timed rounds per group and mode; slow groups "
                      "get fewer repeats (never under 3, or --repeats if fewer); "
                      "0 = no cap (default 4)")
  p.add_argument("--threads", type=positive, help="torch threads (default: the cores JAX sees)")
  p.add_argument("--cpu-devices", type=positive, default=1,
                 help="split the CPU into this many JAX devices and run every JAX "
                      "row data-parallel over them (batches that divide)")
  p.add_argument("--sync-dispatch", action="store_true",
                 help="run each JAX CPU call on the calling thread "
                      "(jax_cpu_enable_async_dispatch=False), whose heap keeps "
                      "XLA's large temporary buffers; see benchmarks/SPEED.md, "
                      "\"The C allocator\"")
  p.add_argument("--xla-options", type=parse_xla_options, action="append", default=[],
                 metavar='"KEY=VALUE ..."',
                 help="also time every JAX row compiled with these XLA options "
                      "(jit's compiler_options; XLA_FLAGS' syntax, so "
                      "--xla-options=\"--KEY=VALUE\" works too), in rows "
                      "'... [xla KEY=VALUE ...]'; repeat for more sets")
  p.add_argument("--no-memory", action="store_true", help="skip the memory figures")
  p.add_argument("--out", type=Path, default=Path("results/speed.json"))
  p.add_argument("--plot", type=Path, help="PNG path (default: --out with .png)")
  p.add_argument("--verbose", action="store_true")
  args = p.parse_args(argv)
  bad = [c for c in args.cells or () if c not in peers.KINDS]
  if bad:
    p.error(f"--cells {','.join(bad)}: unknown; choose from {','.join(peers.KINDS)}")
  if len(args.sweep_base) != 3:
    p.error("--sweep-base: expected B,I,H, three integers")
  given = [f"--{name.replace('_', '-')}" for name in ("shapes", "sweep_t", "repeats", "budget")
           if getattr(args, name) is not None]
  if args.quick and given:
    p.error(f"--quick sets its own shapes, repeats and budget; drop {' '.join(given)} "
            f"or --quick")
  args.repeats = 5 if args.repeats is None else args.repeats
  args.budget = 4.0 if args.budget is None else args.budget
  return args


def plan(args) -> list[tuple[str, tuple]]:
  """The (cell kind, shape) groups to run, in order."""
  kinds = args.cells or list(peers.KINDS)
  if args.quick:
    args.repeats, args.budget = 2, 0
    # The smoke test checks plumbing, not speed: compile with fewer passes.
    jax.config.update("jax_disable_most_optimizations", True)
    return [(k, s) for s in QUICK_SHAPES for k in kinds]
  groups = [(k, s) for s in (args.shapes or DEFAULT_SHAPES) for k in kinds]
  B, I, H = args.sweep_base
  if args.sweep_t:
    sweep_kinds = kinds
    ts = args.sweep_t
  elif args.shapes is None:
    sweep_kinds, ts = [k for k in kinds if k == "lstm"], DEFAULT_SWEEP
  else:
    sweep_kinds, ts = [], ()
  for k in sweep_kinds:
    groups += [(k, (B, T, I, H)) for T in ts if (k, (B, T, I, H)) not in groups]
  return groups


def cpu_model() -> str:
  """The CPU's model name and the vector units that decide XLA's and torch's
  matmul speed, e.g. ``"AMD EPYC (avx512f, avx512_bf16; no amx)"``: the
  same benchmark ranks jaxrnn and torch differently on different CPUs."""
  try:
    info = Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines()
                            if line.startswith(key)), "")
  flags = field("flags").split()
  units = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
  amx = "" if "amx_bf16" in flags else "; no amx"
  return f"{field('model name') or platform.machine()} ({', '.join(units) or 'no avx2'}{amx})"


def peak_matmul(dtype: str, sizes=(1024, 2048), repeats: int = 7) -> dict:
  """XLA's fastest square matmul here, in GFLOP/s: the ceiling for any JAX
  program's matmuls, and so for the roofline rows and for jaxrnn.

  Medians of ``repeats`` calls at each size (inputs in ``dtype``, float32
  accumulation as everywhere here); the faster size is kept. Where a
  target asks for more than this (0.8x torch's time, for example, when
  torch already runs near it), no XLA program can meet it.
  """
  best = {}
  for n in sizes:
    a = jnp.ones((n, n), DTYPES[dtype])
    product = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    block(product(a, a))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      block(product(a, a))
      times.append(time.perf_counter() - start)
    best[n] = 2 * n ** 3 / statistics.median(times) / 1e9
  n = max(best, key=best.get)
  return {"gflops": round(best[n], 1), "n": n}


def versions() -> dict:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def start_torch(args) -> tuple[Optional[TorchWorker], dict]:
  """torch's worker process, if torch is installed and selected; and the threads."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = {"xla": cores, "torch": None}
  wanted = any(selected(peer.name, args.impls) for peer in peers.PEERS
               if peer.package == "torch")
  if importlib.util.find_spec("torch") is None or not wanted:
    return None, threads
  worker = TorchWorker(args.threads or cores)
  threads["torch"] = worker.info["threads"]
  return worker, threads


def configure_jax(args) -> None:
  """Applies ``--cpu-devices`` and ``--sync-dispatch``, which JAX reads once,
  when it starts its CPU client: they must be set before JAX first runs.

  ``--sync-dispatch`` runs JAX's CPU calls on the calling thread. XLA makes
  a call's temporary buffers as one block on the thread that runs the call.
  On XLA's own threads glibc serves a block over 64 MiB from a fresh
  mapping every call; on the main thread its heap keeps it (see
  `jaxrnn.tune_malloc`). JAX applies the option to computations on one
  device (its help says so), so the "[N CPU devices]" rows may not gain.
  """
  options = ([f"--cpu-devices {args.cpu_devices}"] if args.cpu_devices > 1 else []) + (
      ["--sync-dispatch"] if args.sync_dispatch else [])
  if not options:
    return
  try:                                  # no public way to ask whether JAX started
    from jax._src.xla_bridge import backends_are_initialized
  except ImportError:                   # moved in a later JAX: skip the check
    backends_are_initialized = lambda: False
  if backends_are_initialized():
    raise SystemExit(
        f"speed.py: {' and '.join(options)} must be set before JAX first runs, and "
        f"JAX ran already in this process. Fix: run the script in a process of "
        f"its own (python benchmarks/speed.py ...).")
  if args.sync_dispatch:
    jax.config.update("jax_cpu_enable_async_dispatch", False)
  if args.cpu_devices > 1:
    try:
      jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    except AttributeError:
      raise SystemExit(
          f"speed.py: --cpu-devices needs the jax_num_cpu_devices option, which JAX "
          f"{jax.__version__} lacks. Fix: pip install -U jax jaxlib.") from None


def dispatch_mode() -> str:
  """How JAX's CPU calls were dispatched in this run, for the table and the JSON."""
  if jax.config.read("jax_cpu_enable_async_dispatch"):
    return "asynchronous (XLA's threads)"
  return "synchronous (one-device calls on the calling thread)"


def malloc_settings(worker: Optional[TorchWorker]) -> dict:
  """What ``import jaxrnn`` did to glibc's malloc here and in torch's worker."""
  return {"jax": jaxrnn.malloc_tuning(),
          "torch": worker.info["malloc"] if worker is not None else None}


def warm_up_runtimes() -> None:
  """Starts each runtime once so that no first-call figure pays for it."""
  block(jax.jit(lambda x: x @ x)(jnp.ones((8, 8))))
  # The first scan and grad traced in a process pay one-time costs; pay
  # them here rather than in whichever implementation happens to run first.
  scan = lambda x: jax.lax.scan(lambda c, x: (jnp.tanh(c + x), c), 0.0, x)[1].sum()
  block(jax.jit(jax.grad(scan))(jnp.ones(4)))


def main(argv=None) -> dict:
  """Runs the benchmark; prints the table, writes the JSON and PNG; returns the report."""
  args = parse_args(argv)
  configure_jax(args)
  started = time.perf_counter()
  worker, threads = start_torch(args)
  loadavg_start = os.getloadavg() if hasattr(os, "getloadavg") else None
  warm_up_runtimes()
  peak = peak_matmul(args.dtype)
  groups = []
  try:
    for kind, shape in plan(args):
      t0 = time.perf_counter()
      groups.append(run_group(kind, shape, args, worker))
      print(f"{kind} {shape}: {time.perf_counter() - t0:.1f} s", file=sys.stderr,
            flush=True)
  finally:
    if worker is not None:
      worker.close()
  absent, failed = {}, {}
  for g in groups:
    for row in g["rows"]:
      if row["status"] != "ok":
        (absent if row["status"] == "absent" else failed).setdefault(
            row["impl"], row["reason"])
  device = jax.devices()[0]
  report = {
      "meta": {
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join([Path(sys.argv[0]).name] + list(argv if argv is not None
                                                               else sys.argv[1:])),
          "backend": jax.default_backend(),
          "device": getattr(device, "device_kind", str(device)),
          "machine": platform.processor() or platform.machine(),
          "cpu": cpu_model(),
          "cores": os.cpu_count(),
          "threads": threads,
          "cpu_devices": args.cpu_devices,
          "xla_options": args.xla_options,
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),   # torch's worker inherits it
          "malloc": malloc_settings(worker),
          "dispatch": dispatch_mode(),
          "dtype": args.dtype,
          "versions": versions(),
          "loadavg_start": [round(v, 2) for v in loadavg_start] if loadavg_start else None,
          "loadavg_end": [round(v, 2) for v in os.getloadavg()] if loadavg_start else None,
          "tolerance": tolerance(args.dtype),
          "peak_matmul": peak,
          "method": __doc__.split("Method, per shape and cell:")[1].strip(),
          "seconds": None,
      },
      "groups": groups,
      "absent": absent,
      "failed": failed,
  }
  report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
  print(render(report))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(report, indent=1, default=float))
  plot_path = args.plot or args.out.with_suffix(".png")
  plot(report, plot_path)
  print(f"\nwrote {args.out} and {plot_path} in {report['meta']['seconds']} s",
        file=sys.stderr)
  return report


if __name__ == "__main__":
  main()
