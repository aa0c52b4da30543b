"""Bad input to the benchmark scripts: one ``error:`` line naming the argument, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("script", "args", "names"), [
    ("sketch_cost.py", ["--models", "nope"], ["--models", "unknown model 'nope'"]),
    ("sketch_cost.py", ["--models", "convnet:abc"], ["--models", "width after ':' must be an integer"]),
    ("sketch_cost.py", ["--images", "0"], ["--images", "integer >= 1"]),
    ("sketch_cost.py", ["--threads", "x"], ["--threads", "integer >= 1"]),
    ("decoder_prior.py", ["--no-default", "--default-from", "rows.jsonl"], ["--default-from", "--no-default"]),
    ("recipe_calibration.py", ["--cases", "nope", "--out", "rows.jsonl"], ["--cases", "unknown case(s) ['nope']"]),
    ("recipe_calibration.py", ["--recipes", "paper,best", "--out", "rows.jsonl"], ["--recipes", "'best'"]),
    ("recipe_calibration.py", ["--stand-ins", "0", "--out", "rows.jsonl"], ["--stand-ins", "integer >= 1"]),
    ("recipe_calibration.py", ["--summary", "--out", "rows.jsonl"], ["--out", "no rows to summarise"]),
    ("recipe_calibration.py", ["--summary", "--calibrated", "1", "--out", "rows.jsonl"],
     ["--calibrated", "--calibrated-out"]),
    ("recipe_calibration.py", ["--deleted-from", "earlier.jsonl", "--out", "rows.jsonl"],
     ["--deleted-from", "earlier.jsonl", "no such file"]),
    ("recipe_calibration.py", ["--stand-ins-by", "retained", "--stand-ins", "32", "--out", "rows.jsonl"],
     ["--stand-ins 32", "at most 31"]),
])
def test_bad_input_gives_one_error_line_and_exit_2(tmp_path: Path, script: str, args: list[str],
                                                   names: list[str]) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and all(name in error[0] for name in names), done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
