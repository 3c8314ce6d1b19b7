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

from jaxrnn._malloc import _glibc

pytestmark = pytest.mark.skipif(not _glibc(), reason="the tuning is for glibc's malloc")

# Allocates, touches and frees a 64 MiB block (above glibc's largest adaptive
# mmap threshold, 32 MiB) five times after a first round, and reports the
# minor page faults per round.
PROBE = """
import ctypes, json, resource
import jaxrnn
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def round_trip():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  round_trip()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"status": jaxrnn.malloc_tuning(), "faults": faults}))
"""


def probe(**env) -> dict:
  environ = {k: v for k, v in os.environ.items()
             if k not in ("JAXRNN_TUNE_MALLOC", "MALLOC_MMAP_THRESHOLD_",
                          "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
  proc = subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env},
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_keeps_large_freed_blocks_mapped():
  tuned, default = probe(), probe(JAXRNN_TUNE_MALLOC="0")
  assert tuned["status"] == "glibc mmap and trim thresholds 1024 MiB"
  assert default["status"] == "glibc defaults (JAXRNN_TUNE_MALLOC=0)"
  # A 64 MiB block is 16,384 pages of 4 KiB: untuned, each round maps the
  # block afresh and faults on its pages; tuned, the heap keeps it.
  assert tuned["faults"] < 200, tuned
  assert default["faults"] > 10 * max(tuned["faults"], 1), (tuned, default)


def test_the_users_own_malloc_settings_win():
  assert probe(MALLOC_TRIM_THRESHOLD_="131072")["status"] == (
      "glibc defaults (the environment sets MALLOC_TRIM_THRESHOLD_)")
  assert probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")["status"] == (
      "glibc defaults (the environment sets GLIBC_TUNABLES)")
