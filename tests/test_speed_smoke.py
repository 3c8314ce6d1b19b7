"""Smoke test of `benchmarks/speed.py --quick`: the table, JSON and PNG appear,
every implementation that ran computed what jaxrnn computes, and peers that
are not installed are reported as absent rather than dropped.

No timing is asserted: speed is the script's business, not the test suite's.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:
  import fcntl
except ImportError:           # Windows
  fcntl = None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxrnn  # noqa: E402
from benchmarks import peers  # noqa: E402

IMPORT_NAMES = {"flax": "flax", "equinox": "equinox", "dm-haiku": "haiku",
                "torch": "torch"}


@contextlib.contextmanager
def exclusive(lock_path: Path):
  """Holds an exclusive lock on ``lock_path`` while the block runs."""
  with open(lock_path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  """One ``speed.py --quick`` run (about 45 s on 2 cores) for the whole session.

  pytest-xdist spreads this module's tests over its workers, and each would
  run the script for itself; the first one runs it in the workers' shared
  temporary directory, under a lock, and the others read what it wrote
  (where there is no ``fcntl``, each worker runs its own).
  """
  shared = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ and fcntl is not None:
    shared = shared.parent
  run = shared / "speed_quick_run"
  out = run / "speed.json"
  run.mkdir(exist_ok=True)
  lock = exclusive(shared / "speed_quick_run.lock") if fcntl else contextlib.nullcontext()
  with lock:
    if not (run / "returncode").exists():
      proc = subprocess.run(
          [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick",
           "--unroll", "2", "--out", str(out)],
          cwd=ROOT, capture_output=True, text=True, timeout=300)
      (run / "stdout").write_text(proc.stdout)
      (run / "stderr").write_text(proc.stderr)
      (run / "returncode").write_text(str(proc.returncode))
  stdout, stderr = (run / "stdout").read_text(), (run / "stderr").read_text()
  assert (run / "returncode").read_text() == "0", stderr[-3000:]
  return stdout, json.loads(out.read_text()), out.with_suffix(".png"), stderr


def test_every_row_that_ran_is_checked(quick_run):
  stdout, report, _, _ = quick_run
  kinds = {g["kind"] for g in report["groups"]}
  assert kinds == set(peers.KINDS)
  assert f"; {report['meta']['cpu']})" in stdout    # rankings differ by CPU
  # float32 is checked to 1e-4, on a GPU (TF32 matmuls by default) to 1e-2
  assert report["meta"]["tolerance"] == (1e-4 if report["meta"]["backend"] == "cpu" else 1e-2)
  # torch's worker runs with the allocator settings `import jaxrnn` made here
  malloc = report["meta"]["malloc"]
  assert malloc["jax"] == jaxrnn.malloc_tuning()
  if importlib.util.find_spec("torch") is not None:
    assert malloc["torch"] == malloc["jax"]
  assert f"malloc: {malloc['jax']}" in stdout
  assert report["meta"]["dispatch"] == "asynchronous (XLA's threads)"   # JAX's default
  ran = bursts = samples = 0
  for group in report["groups"]:
    rows = {r["impl"]: r for r in group["rows"]}
    assert rows["jaxrnn"]["status"] == "ok", rows["jaxrnn"]
    for row in group["rows"]:
      assert row["status"] in ("ok", "absent"), row   # "failed" is a bug
      if row["status"] != "ok":
        continue
      for mode in ("fwd", "fwd_bwd"):
        assert row[mode]["median_s"] > 0
        assert len(row[mode]["times_s"]) == 2
        assert row[mode]["calls_per_sample"] >= 1
        # the quick shapes' calls take well under BURST_S: samples are bursts
        # (a call slowed past it by a busy host may still be timed alone)
        bursts += row[mode]["calls_per_sample"] > 1
        samples += 1
      if not row.get("roofline"):
        ran += 1
        assert row["check"]["fwd"]["ok"] and row["check"]["fwd_bwd"]["ok"], row
        assert row["check"]["fwd"]["max_abs_err"] <= report["meta"]["tolerance"]
  # jaxrnn's 5 kinds x 1 shape at least, whatever else is installed.
  assert ran >= len(peers.KINDS)
  assert bursts >= samples / 2
  table_rows = [l for l in stdout.splitlines() if l.startswith("| ")
                and not l.startswith("| implementation")]
  for line in table_rows:
    assert "| checked |" in line or "| n/a |" in line or "absent:" in line, line


def test_unroll_adds_jaxrnn_rows(quick_run):
  _, report, _, _ = quick_run
  for group in report["groups"]:
    rows = {r["impl"]: r for r in group["rows"]}
    assert rows["jaxrnn unroll=2"]["status"] == "ok"          # every kind
    assert rows["jaxrnn.scan_batch unroll=2"]["status"] == "ok"   # every kind has a kernel
    assert ("jaxrnn.unfused unroll=2" in rows) == (group["kind"] in ("lstm", "gru", "rnn"))


def test_unrolled_rows_run_their_unroll():
  import jax
  import jax.numpy as jnp
  from jaxprs import equations
  B, T, I, H = shape = (2, 8, 3, 4)
  params = peers.KINDS["lstm"].make(H, jnp.float32).init(jax.random.key(0), I)
  xs = jnp.ones((B, T, I))
  rows = peers.unrolled((2, 3))
  assert {"jaxrnn unroll=3", "jaxrnn.scan_batch unroll=3", "jaxrnn.unfused unroll=3"} <= {
      peer.name for peer in rows}
  for peer in rows:
    program = peer.build("lstm", params, jnp.float32, shape)
    jaxpr = jax.make_jaxpr(program.apply)(program.params, xs)
    unrolls = {e.params["unroll"] for e in equations(jaxpr) if e.primitive.name == "scan"}
    assert unrolls == {int(peer.name[-1])}, (peer.name, unrolls)


def test_torch_starts_when_any_torch_row_is_asked_for(monkeypatch):
  from benchmarks import speed
  started = []

  class Worker:
    def __init__(self, threads):
      started.append(threads)
      self.info = {"threads": threads}
  monkeypatch.setattr(speed, "TorchWorker", Worker)
  monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name: object())
  for impls, wanted in ((None, True), (["torch (cuda"], True), (["torch"], True),
                        (["unroll="], False), (["flax"], False)):
    started.clear()
    args = speed.parse_args([] if impls is None else ["--impls", ",".join(impls)])
    worker, _ = speed.start_torch(args)
    assert (worker is not None) == wanted == bool(started), impls


def test_absent_peers_are_listed(quick_run):
  stdout, report, _, _ = quick_run
  for peer in peers.PEERS:
    if peer.package not in IMPORT_NAMES:
      continue
    installed = importlib.util.find_spec(IMPORT_NAMES[peer.package]) is not None
    rows = [r for g in report["groups"] for r in g["rows"] if r["impl"] == peer.name]
    assert rows, f"{peer.name} was dropped from the report"
    if not installed:
      assert all(r["status"] == "absent" and "not installed" in r["reason"]
                 for r in rows), rows
      assert peer.name in report["absent"]
      assert f"| {peer.name} | absent: not installed" in stdout
  # Here there is no GPU, so the cuDNN rows must say so rather than vanish.
  if report["meta"]["backend"] == "cpu":
    assert "jax.experimental.rnn (cuDNN)" in report["absent"]
    assert "| jax.experimental.rnn (cuDNN) | absent:" in stdout
    assert "jaxrnn.scan_batch cuDNN" in report["absent"]
    assert "| jaxrnn.scan_batch cuDNN | absent: the default backend is cpu" in stdout


def test_json_and_png_are_written(quick_run):
  stdout, report, png, _ = quick_run
  assert "x jaxrnn = peer time / jaxrnn time" in stdout
  assert report["meta"]["threads"]["xla"] >= 1
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_profiler_logs_stay_out_of_the_output(quick_run):
  # torch's profiler, which measures its memory column, printed two
  # "USDT: ... profiler_start/stop" lines per use (four per torch row)
  # before the worker set KINETO_LOG_LEVEL.
  stdout, _, _, stderr = quick_run
  if importlib.util.find_spec("torch") is None:
    pytest.fail("torch is part of the [test] extra; install it to run this test")
  assert "USDT" not in stdout + stderr


def test_torch_worker_answers_and_reports_what_it_cannot_run():
  if importlib.util.find_spec("torch") is None:
    pytest.fail("torch is part of the [test] extra; install it to run this test")
  from benchmarks.torch_worker import TorchAbsent, TorchWorker
  worker = TorchWorker(threads=1)
  try:
    assert worker.info["threads"] == 1
    weights = {"weight_ih_l0": np.ones((8, 3), np.float32),
               "weight_hh_l0": np.ones((8, 2), np.float32),
               "bias_ih_l0": np.zeros(8, np.float32), "bias_hh_l0": np.zeros(8, np.float32)}
    module = worker.request("module", "lstm", weights, (1, 4, 3, 2), "f32", "cpu")
    xs = np.zeros((1, 4, 3), np.float32)
    key, first, out, _, _ = worker.request("runner", module, xs, "fwd", False)
    # Zero inputs and biases: every gate is 1/2 and the outputs follow
    # c_t = (c_{t-1} + tanh 0) / 2 = 0, so h_t = 0.
    np.testing.assert_allclose(out, np.zeros((1, 4, 2)), atol=1e-7)
    assert first > 0 and worker.request("call", key) > 0
    assert worker.request("call", key, 5, True) > 0     # a burst of 5 calls
    if not worker.info["cuda"]:
      with pytest.raises(TorchAbsent, match="no CUDA device"):
        worker.request("module", "lstm", weights, (1, 4, 3, 2), "f32", "cuda")
    with pytest.raises(RuntimeError, match="torch worker, no_such_op"):
      worker.request("no_such_op")
  finally:
    worker.close()
  assert worker.proc.returncode == 0


def test_a_sample_is_a_burst_of_calls_after_an_untimed_one():
  from benchmarks.timing import BURST_S, WARM_S, burst, sample_plan
  calls = []
  assert burst(lambda: calls.append(1), 1, warm=False) >= 0 and len(calls) == 1
  assert burst(lambda: calls.append(1), 4, warm=True) >= 0 and len(calls) == 1 + 5
  assert sample_plan(BURST_S / 10) == (10, True)
  assert sample_plan(BURST_S) == (1, True)
  assert sample_plan(WARM_S) == (1, False)
  per_call = burst(lambda: time.sleep(0.01), 5, warm=True)   # per call, not per burst
  assert 0.009 < per_call < 0.02


def test_torch_worker_times_a_sample_as_speed_asks():
  from benchmarks import torch_worker

  class State:
    calls = {0: lambda: counted.append(1)}
  counted = []
  assert torch_worker._call(State, 0, 5, True) >= 0 and len(counted) == 6
  assert torch_worker._call(State, 0) >= 0 and len(counted) == 7     # default: one call


def test_round_robin_plans_samples_from_warm_calls_and_keeps_its_budget():
  from argparse import Namespace
  from benchmarks import speed

  class Fake:
    """A runner whose calls take ``warm_s``, or ``cold_s`` when not warmed."""
    def __init__(self, warm_s, cold_s, process="jax"):
      self.warm_s, self.cold_s, self.process, self.asked = warm_s, cold_s, process, []

    def call(self, n, warm):
      self.asked.append((n, warm))
      return self.warm_s if warm else self.cold_s

  short = Fake(0.002, 0.02, "torch")       # 2 ms back to back, 20 ms after idle
  long = Fake(0.5, 0.5)
  rows = [{"fwd": {}}, {"fwd": {}}]
  speed.time_round_robin([(rows[0], short), (rows[1], long)], "fwd",
                         Namespace(repeats=5, budget=0))
  # the short call's plan comes from its warm probe (2 ms: 10 calls), not its cold one
  assert short.asked[:2] == [(1, False), (1, True)] and long.asked[:1] == [(1, False)]
  assert short.asked[2:] == [(10, True)] * 5 and long.asked[1:] == [(1, False)] * 5
  assert rows[0]["fwd"]["calls_per_sample"] == 10 and rows[0]["fwd"]["warm_call"]
  assert rows[0]["fwd"]["median_s"] == 0.002 and rows[1]["fwd"]["times_s"] == [0.5] * 5
  # A 2 s budget over a round of about 0.55 s: 3 rounds, never more than --repeats.
  rows = [{"fwd": {}}, {"fwd": {}}]
  speed.time_round_robin([(rows[0], Fake(0.002, 0.002)), (rows[1], Fake(0.5, 0.5))], "fwd",
                         Namespace(repeats=5, budget=2.0))
  assert len(rows[0]["fwd"]["times_s"]) == 3
  speed.time_round_robin([(rows[0], Fake(0.5, 0.5))], "fwd", Namespace(repeats=2, budget=0.1))
  assert len(rows[0]["fwd"]["times_s"]) == 2


def test_cpu_devices_and_xla_options_add_twins_of_every_jax_row(tmp_path):
  out = tmp_path / "speed.json"
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--cells", "lstm",
       "--impls", "scan_batch,equinox", "--cpu-devices", "2", "--no-memory",
       "--xla-options=--xla_cpu_prefer_vector_width=512",     # XLA_FLAGS' dashes
       "--xla-options", "xla_no_such_option=1", "--out", str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["meta"]["cpu_devices"] == 2
  assert report["meta"]["xla_options"] == [{"xla_cpu_prefer_vector_width": "512"},
                                           {"xla_no_such_option": "1"}]
  rows = {r["impl"]: r for r in report["groups"][0]["rows"]}
  single = [name for name, r in rows.items()
            if r["status"] == "ok" and not r.get("roofline") and "[" not in name
            and not name.startswith("torch")]
  assert {"jaxrnn", "jaxrnn.scan_batch"} <= set(single)
  # Every JAX row that ran has its twins, each computing the same numbers:
  # data-parallel, with the XLA option, and both.
  dp, xla = "[2 CPU devices]", "[xla xla_cpu_prefer_vector_width=512]"
  for name in single:
    for twin in (f"{name} {dp}", f"{name} {xla}", f"{name} {dp} {xla}"):
      row = rows[twin]
      assert row["check"]["fwd"]["ok"] and row["check"]["fwd_bwd"]["ok"], twin
      assert row.get("devices") == (2 if dp in twin else None), twin
      assert row.get("xla_options") == (
          {"xla_cpu_prefer_vector_width": "512"} if xla in twin else None), twin
    # An option XLA rejects reaches XLA and fails its rows, not the run.
    for twin in (f"{name} [xla xla_no_such_option=1]",
                 f"{name} {dp} [xla xla_no_such_option=1]"):
      assert rows[twin]["status"] == "failed", twin
      assert "xla_no_such_option" in rows[twin]["reason"], twin


def test_xla_options_parse_as_xla_flags_and_reject_what_is_not_one():
  from benchmarks import speed
  assert speed.parse_xla_options("--xla_a=true xla_b=FUSION,WHILE xla_c=512") == {
      "xla_a": True, "xla_b": "FUSION,WHILE", "xla_c": "512"}
  for bad in ("xla_a", " ", "=1"):
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
      speed.parse_xla_options(bad)


def test_sync_dispatch_is_set_and_reported(tmp_path):
  out = tmp_path / "speed.json"
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--cells", "rnn",
       "--impls", "none", "--no-memory", "--sync-dispatch", "--out", str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  mode = "synchronous (one-device calls on the calling thread)"
  assert json.loads(out.read_text())["meta"]["dispatch"] == mode
  assert f"JAX's CPU dispatch: {mode}." in proc.stdout


def test_sync_dispatch_after_jax_ran_says_how_to_fix():
  import jax
  from benchmarks import speed
  jax.block_until_ready(jax.numpy.ones(2) + 1)       # JAX's CPU client now exists
  with pytest.raises(SystemExit, match="must be set before JAX first runs"):
    speed.main(["--quick", "--sync-dispatch", "--cells", "rnn", "--impls", "none"])
  assert jax.config.read("jax_cpu_enable_async_dispatch")     # left as it was
