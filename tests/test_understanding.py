"""Looking inside cells and comparing variants: `benchmarks/inside_lstm.py`
and `benchmarks/variant_study.py` run end to end in their --quick modes and
write their figures and JSON; the search for feature-tracking cells finds
the cells planted in synthetic data.

No score is asserted for the quick runs (a few steps decide nothing).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.inside_lstm import correlated_cells, text_features  # noqa: E402
from benchmarks.variant_study import GREFF_FINDINGS, VARIANTS  # noqa: E402


def run(script, *args):
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_variant_study_quick(tmp_path):
  # Every variant on one task (compiling 11 train steps is most of the time);
  # the char task's path is run by the next test.
  stdout = run("variant_study.py", "--quick", "--quiet", "--tasks", "digits",
               "--out", str(tmp_path))
  report = json.loads((tmp_path / "variant_study.json").read_text())
  seeds = report["settings"]["seeds"]
  assert seeds >= 2
  for task in ("digits",):
    records = {r["variant"]: r for r in report["records"] if r["task"] == task}
    assert list(records) == list(VARIANTS)   # every variant, in Greff's order
    for r in records.values():
      assert len(r["scores"]) == seeds and r["params"] > 0
    # The table has a row for every variant of every task.
    block = stdout.split(f"{task}: ")[1].split("\n\n")[0]
    rows = [line.split()[0] for line in block.splitlines()[2:]]
    assert rows == list(VARIANTS)
    assert set(report["verdicts"][task]) == set(VARIANTS) - {"vanilla"}
  # One fewer gate block, one fewer weight block: NIG, NFG, NOG, CIFG have
  # 3/4 of NP's gate weights; vanilla adds 3 peephole vectors to NP.
  params = {r["variant"]: r["params"] for r in report["records"]
            if r["task"] == "digits"}
  H = report["settings"]["hidden"]["digits"]
  assert params["vanilla"] == params["NP"] + 3 * H
  assert params["NIG"] == params["NFG"] == params["NOG"] == params["CIFG"]
  assert params["RNN"] < params["GRU"] < params["NP"] < params["FGR"]
  assert {row["variant"] for row in report["greff"]} == {
      v for v, _, _ in GREFF_FINDINGS}
  assert "Greff et al. (2015) findings" in stdout and "wall time" in stdout
  assert (tmp_path / "variant_study.png").stat().st_size > 10_000


def test_variant_study_char_task_quick(tmp_path):
  stdout = run("variant_study.py", "--quick", "--quiet", "--tasks", "char",
               "--variants", "vanilla,NFG", "--out", str(tmp_path))
  report = json.loads((tmp_path / "variant_study.json").read_text())
  scores = {r["variant"]: r["scores"] for r in report["records"]}
  assert list(scores) == ["vanilla", "NFG"]
  uniform = report["records"][0]["chance"]
  for s in scores.values():   # bits per character, finite, below uniform
    assert len(s) == report["settings"]["seeds"]
    assert all(0 < x < uniform for x in s)
  assert "char: test bits/char" in stdout
  assert (tmp_path / "variant_study.png").stat().st_size > 10_000


def test_inside_lstm_quick(tmp_path):
  stdout = run("inside_lstm.py", "--quick", "--quiet", "--out", str(tmp_path))
  report = json.loads((tmp_path / "inside_lstm.json").read_text())
  assert 0 < report["heldout_bpc"] < report["uniform_bpc"]
  assert set(report["correlations"]) == set(text_features("x"))
  for cells in report["correlations"].values():
    assert all(-1 <= r <= 1 for _, r in cells)
  assert len(report["figures"]) == 1 + len(report["correlations"])
  for name in report["figures"]:
    assert (tmp_path / name).stat().st_size > 10_000
  assert "most correlated" in stdout


def test_correlated_cells_finds_planted_cells():
  rng = np.random.default_rng(0)
  T, H = 500, 20
  feature = (rng.random(T) < 0.3).astype(np.float32)
  column = np.arange(T) % 40.0
  acts = rng.normal(size=(T, H))
  acts[:, 7] = np.tanh(2 * feature - 1) + 0.3 * rng.normal(size=T)   # tracks it
  acts[:, 3] = -0.5 * feature + 0.3 * rng.normal(size=T)             # inverted
  acts[:, 12] = 0.05 * column + 0.1 * rng.normal(size=T)
  found = correlated_cells(acts, {"flag": feature, "column": column}, top=2)
  (u1, r1), (u2, r2) = found["flag"]
  assert (u1, u2) == (7, 3) and r1 > 0.8 and r2 < -0.5
  assert found["column"][0][0] == 12 and found["column"][0][1] > 0.95
  # Unplanted cells correlate only by chance.
  assert abs(found["column"][1][1]) < 0.2


def test_correlated_cells_constant_unit_and_bad_shape():
  acts = np.stack([np.ones(10), np.arange(10.0)], axis=1)
  found = correlated_cells(acts, {"t": np.arange(10.0)}, top=2)
  assert found["t"] == [(1, 1.0), (0, 0.0)]
  with pytest.raises(ValueError, match="one value per step"):
    correlated_cells(acts, {"t": np.arange(9.0)})


def test_text_features_on_known_text():
  text = 'x = f("a (b)", [1,\n    2])\n'
  f = text_features(text)
  quotes = "".join("q" if v else "." for v in f["inside quotes"])
  brackets = "".join("b" if v else "." for v in f["inside brackets"])
  assert quotes == "." * 6 + "q" * 6 + "." * 15       # the closing quote is out
  assert brackets == "." * 5 + "b" * 20 + "." * 2     # nested, across the line
  assert f["position in line"][text.index("\n") + 1] == 0
  assert f["position in line"][text.index("2")] == 4
  indent = "".join("i" if v else "." for v in f["indentation"])
  assert indent == "." * 19 + "i" * 4 + "." * 4


def test_inside_lstm_doctests():
  import doctest
  import benchmarks.inside_lstm
  result = doctest.testmod(benchmarks.inside_lstm)
  assert result.attempted >= 5 and result.failed == 0
