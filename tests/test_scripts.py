"""Smoke tests of the task scripts: `benchmarks/long_term_dependency.py
--smoke` and `benchmarks/char_lm.py --smoke` run, print their tables and
write their JSON and PNGs; `benchmarks/batched_kernels.py --quick` prints
its table; `benchmarks/peers.py` lists the peers, and the modules the
scripts import say so when run.

No score is asserted for the long-term dependency grid (a few dozen steps
decide nothing); the tests check that the script runs end to end, that
every (cell, T) cell of the table is filled, and that the figures exist.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args):
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_long_term_dependency_smoke(tmp_path):
  # Two cells keep the test short; the grid code is the same for four.
  stdout = run("long_term_dependency.py", "--smoke", "--quiet",
               "--cells", "rnn,lstm", "--out", str(tmp_path))
  report = json.loads((tmp_path / "long_term_dependency.json").read_text())
  cells = report["settings"]["cells"]
  lengths = report["settings"]["lengths"]
  assert list(cells) == ["rnn", "lstm"]
  for task in ("adding", "recall"):
    assert f"{task}: held-out" in stdout and f"{task}: memory reach" in stdout
    done = {(r["cell"], r["length"]) for r in report["records"]
            if r["task"] == task}
    assert done == {(c, t) for c in cells for t in lengths[task]}
  lrs = report["settings"]["lr"]
  assert len(lrs) == 2
  for r in report["records"]:
    assert r["steps"] >= 1 and len(r["losses"]) == r["steps"]
    assert r["params"] > 0 and r["score"] == r["score"]   # not NaN
    # Each rate in turn until one solves the validation set; the try with
    # the best validation score is the record, its score the test set's.
    tries = r["tries"]
    assert [t["lr"] for t in tries] == lrs[:len(tries)]
    last = tries[-1]["valid_score"]
    assert len(tries) == len(lrs) or (last < 0.01 if r["task"] == "adding" else last >= 0.99)
    sign = -1 if r["task"] == "adding" else 1
    assert r["valid_score"] == max(t["valid_score"] * sign for t in tries) * sign
    chosen = [t for t in tries if t["lr"] == r["lr"]]
    assert len(chosen) == 1 and chosen[0]["score"] == r["score"]
    assert chosen[0]["steps"] == r["steps"]
    assert 0 < r["reach_init"] < 1e3 and 0 < r["reach_trained"] < 1e3   # |d h_T / d x_s|
  # The LSTM has 4x the tanh RNN's recurrent parameters at the same H.
  params = {r["cell"]: r["params"] for r in report["records"]
            if r["task"] == "adding"}
  H, I = 16, 2   # the --smoke preset's hidden size; adding has 2 inputs
  assert params["rnn"] == H * (I + H) + H + H + 1
  assert params["lstm"] == 4 * (H * (I + H) + H) + H + 1
  for png in ("long_term_dependency.png", "long_term_dependency_curves.png"):
    assert (tmp_path / png).stat().st_size > 10_000
  assert "tanh RNN" in stdout and "LSTM" in stdout and "wall time" in stdout


def test_char_lm_smoke(tmp_path):
  stdout = run("char_lm.py", "--smoke", "--quiet", "--out", str(tmp_path))
  report = json.loads((tmp_path / "char_lm.json").read_text())
  # Bits per character on held-out text: finite, and below a uniform guess
  # over the vocabulary after even a few steps.
  assert 0 < report["test_bpc"] < report["uniform_bpc"]
  assert len(report["sample"]) == report["settings"]["sample_length"]
  assert "bits per character" in stdout
  assert (tmp_path / "char_lm.png").stat().st_size > 10_000


def test_batched_kernels_quick():
  stdout = run("batched_kernels.py", "--quick", "--cells", "lstm,rnn")   # with gradients
  assert ("forward+backward ms, medians of 3 interleaved rounds; B,T,I,H = (4, 8, 8, 8)"
          in stdout)
  rows = [line.split() for line in stdout.splitlines()[1:]]
  assert [r[0] for r in rows] == ["lstm", "rnn"]
  for r in rows:
    assert r[1:8:3] == ["batched", "per-example", "unfused"] and r[3] == "(1.00x)"
  assert rows[0][-3] == "hand"


def test_batched_kernels_precision_and_dropout_forms():
  stdout = run("batched_kernels.py", "--quick", "--precision", "--cells", "gru")
  row = stdout.splitlines()[1].split()
  assert row[0] == "gru" and row[1:8:3] == ["float32", "bf16-params", "dtype=bf16"]
  stdout = run("batched_kernels.py", "--quick", "--dropout", "--cells", "lstm")
  row = stdout.splitlines()[1].split()
  assert row[1:8:3] == ["no-dropout", "dropout=0.2", "recurrent_dropout=0.2"]


def test_compile_time_quick():
  stdout = run("compile_time.py", "--quick", "--cells", "rnn")
  assert "medians of 2 alternating rounds; B,T,I,H = (2, 4, 4, 4)" in stdout
  rows = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| rnn |")]
  names = [r[1] for r in rows]
  assert {"jaxrnn", "jaxrnn.unfused", "jaxrnn.scan_batch"} <= set(names)
  assert not any(n.startswith("torch") for n in names)       # JAX programs only
  for r in rows:
    lower, compile_, total = map(float, r[2:5])
    assert lower > 0 and compile_ > 0 and total >= max(lower, compile_)
  assert dict(zip(names, (r[5] for r in rows)))["jaxrnn.scan_batch"] == "1.00 |"


def test_idle_penalty_runs_for_both_frameworks():
  for framework in ("jax", "torch"):
    stdout = run("idle_penalty.py", "--framework", framework, "--shape", "1,4,2,2",
                 "--mode", "fwd_bwd", "--calls", "2")
    assert f"{framework} LSTM fwd_bwd, B,T,I,H = (1, 4, 2, 2)" in stdout
    medians = [float(line.split("median")[1].split()[0]) for line in stdout.splitlines()
               if "idle: median" in line]
    assert len(medians) == 4 and all(m > 0 for m in medians)


def test_read_ahead_prints_both_loops_and_their_ratio():
  stdout = run("read_ahead.py", "--shapes", "1,6,3,4;2,6,3,4", "--cells", "gru,cho_gru,lstm",
               "--calls", "2")
  rows = [line for line in stdout.splitlines() if "ratio" in line]
  assert len(rows) == 6 and all("read ahead" in r and "in the step" in r for r in rows)
  assert sum("(built read ahead)" in r for r in rows) == 4        # the GRUs' four


BAD_OPTIONS = [   # each refused by argparse before any work, naming the option
    ("variant_study.py", ["--seeds", "1"], "--seeds: expected 2 or more"),
    ("long_term_dependency.py", ["--batch", "0"], "--batch: expected 1 or more"),
    ("long_term_dependency.py", ["--lengths", "10,abc"], "--lengths: expected an int"),
    ("long_term_dependency.py", ["--lr", "1e-2,0"], "--lr: expected a positive number"),
    ("long_term_dependency.py", ["--lr", ",".join(["1e-3"] * 9)], "--lr: at most 8 rates"),
    ("attention_task.py", ["--min-len", "5", "--max-len", "3"], "--min-len 5 is above --max-len 3"),
    ("char_lm.py", ["--smoke", "--prompt", ""], "--prompt '': it is empty"),
    ("compile_time.py", ["--cells", "foo"], "--cells: unknown ['foo']"),
    ("batched_kernels.py", ["--shape", "3,6,4,8", "--cpu-devices", "2"], "does not split"),
    ("speed.py", ["--quick", "--shapes", "2,4,4,4"], "--quick sets its own shapes"),
    ("read_ahead.py", ["--cells", "foo"], "--cells: unknown ['foo']"),
    ("inside_lstm.py", ["--params", "a", "--save-params", "b"], "not allowed with argument"),
]


def test_bad_options_are_argparse_errors():
  for script, args, says in BAD_OPTIONS:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (script, proc.stderr[-2000:])
    assert says in proc.stderr, (script, proc.stderr[-500:])


def test_peers_lists_what_can_run_and_modules_say_they_are_not_scripts():
  listing = run("peers.py")
  assert "jaxrnn.scan_batch" in listing and "ready" in listing
  assert "torch (cpu)" in listing
  for module in ("cli.py", "timing.py", "plots.py"):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / module), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a script: run one of those" in proc.stderr, module
