"""Argument types the scripts share, so a bad size is an argparse error, not a traceback.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = parser.add_argument("--steps", type=positive)
>>> parser.parse_args(["--steps", "3"]).steps
3
"""

from __future__ import annotations

import argparse
from typing import Callable


def at_least(minimum: int) -> Callable[[str], int]:
  """An argparse ``type``: an int of ``minimum`` or more.

  >>> at_least(2)("5")
  5
  """
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"expected {minimum} or more, got {value}")
    return value
  return parse


positive = at_least(1)


def positive_list(text: str) -> tuple[int, ...]:
  """An argparse ``type``: comma-separated positive ints, ``"10,25"``.

  >>> positive_list("10,25")
  (10, 25)
  """
  return tuple(positive(part) for part in text.split(","))


def positive_floats(text: str) -> tuple[float, ...]:
  """An argparse ``type``: comma-separated positive numbers, ``"1e-2,1e-3"``.

  >>> positive_floats("1e-2,1e-3")
  (0.01, 0.001)
  """
  values = []
  for part in text.split(","):
    try:
      value = float(part)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a number, got {part!r}") from None
    if not value > 0:
      raise argparse.ArgumentTypeError(f"expected a positive number, got {part!r}")
    values.append(value)
  return tuple(values)


def shape_bthi(text: str) -> tuple[int, int, int, int]:
  """An argparse ``type``: a shape ``B,T,I,H`` of positive ints.

  >>> shape_bthi("32,128,256,256")
  (32, 128, 256, 256)
  """
  shape = positive_list(text)
  if len(shape) != 4:
    raise argparse.ArgumentTypeError(f"expected B,T,I,H (4 ints), got {text!r}")
  return shape


if __name__ == "__main__":
  # Run on its own by mistake: say what it is and what to run instead.
  raise SystemExit(f"{__doc__.splitlines()[0]}\nA module imported by every script in benchmarks/, "
                   "not a script: run one of those (each takes --help).")
