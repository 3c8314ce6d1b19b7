"""``import jaxrnn`` keeps large freed blocks in glibc's heap (jaxrnn._malloc).

Each check runs in a fresh interpreter, since the tuning is process-wide and
happens once, at import. The measured quantity is what the tuning is for:
page faults when a large block is freed and allocated again, as XLA's CPU
runtime does with each call's temporary buffers.
"""

import json
import os
import subprocess
import sys

import pytest

import jaxrnn
from jaxrnn._malloc import THRESHOLD, _glibc, _tune

pytestmark = pytest.mark.skipif(not _glibc(), reason="the tuning is for glibc's malloc")

# Allocates, touches and frees a block five times after a first round, and
# reports the minor page faults per round: 48 MiB (above glibc's largest
# adaptive mmap threshold, 32 MiB) from the main thread and from another
# thread, and 128 MiB (above a secondary arena's 64 MiB heaps) from another
# thread, as XLA's CPU runtime allocates its temporary buffers.
PROBE = """
import ctypes, json, resource, threading
import jaxrnn
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def faults_per_round(size):
  def round_trip():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
  round_trip()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    round_trip()
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
result = {"status": jaxrnn.malloc_tuning(), "main": faults_per_round(48 << 20)}
def on_a_thread():
  result.update(thread=faults_per_round(48 << 20), large=faults_per_round(128 << 20))
worker = threading.Thread(target=on_a_thread)
worker.start()
worker.join()
print(json.dumps(result))
"""


def probe(**env) -> dict:
  environ = {k: v for k, v in os.environ.items()
             if k not in ("JAXRNN_TUNE_MALLOC", "MALLOC_MMAP_THRESHOLD_",
                          "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
                          "GLIBC_TUNABLES")}
  proc = subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env},
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_keeps_large_freed_blocks_mapped():
  tuned, default = probe(), probe(JAXRNN_TUNE_MALLOC="0")
  one_arena = probe(JAXRNN_TUNE_MALLOC="one_arena")
  if tuned["status"].startswith("malloc untouched: this glibc refuses"):
    pytest.skip(f"an older glibc: {tuned['status']}")
  assert tuned["status"] == "glibc mmap and trim thresholds 1024 MiB"
  assert one_arena["status"] == "glibc mmap and trim thresholds 1024 MiB, one arena"
  assert default["status"] == "malloc untouched: JAXRNN_TUNE_MALLOC=0"
  # 48 MiB is 12,288 pages of 4 KiB and 128 MiB 32,768: untuned, each round
  # maps the block afresh and faults on its pages; tuned, the heap keeps it,
  # except a block over 64 MiB on a thread's own arena, which only one
  # arena keeps.
  for where in ("main", "thread"):
    assert tuned[where] < 200, (where, tuned)
    assert default[where] > 10 * max(tuned[where], 1), (where, tuned, default)
  assert tuned["large"] > 10_000, tuned
  assert one_arena["large"] < 200, one_arena


@pytest.mark.parametrize("env, says", [
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "the environment sets MALLOC_TRIM_THRESHOLD_"),
    ({"MALLOC_ARENA_MAX": "4"}, "the environment sets MALLOC_ARENA_MAX"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"},
     "the environment sets GLIBC_TUNABLES"),
    ({"JAXRNN_TUNE_MALLOC": "off"}, "JAXRNN_TUNE_MALLOC=off"),
    ({"JAXRNN_TUNE_MALLOC": "one_arena", "MALLOC_ARENA_MAX": "2"},
     "the environment sets MALLOC_ARENA_MAX"),
])
def test_the_users_own_malloc_settings_win(env, says):
  # These checks come before any mallopt call, so they run in this process.
  assert _tune(env, THRESHOLD) == "malloc untouched: " + says


def test_a_threshold_mallopt_cannot_take_is_refused():
  with pytest.raises(ValueError, match=r"threshold=2147483648; expected a positive number"):
    jaxrnn.tune_malloc({}, threshold=1 << 31)
