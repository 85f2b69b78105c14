"""CI smoke run of the benchmark suite: it runs and reports sane rows, whatever the speed.

``python -m benchmarks --size tiny --quick --json`` in a subprocess; every row must carry
positive figures for both sides, the ratio ours / reference, a goal and the names of both
sides. No figure is compared with its goal here: speed belongs in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"cli", "lora", "train", "memory", "generate", "counted"}


@pytest.mark.slow
def test_benchmark_suite_runs_at_tiny_size(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), UNZIPLORA_HOME=str(tmp_path / "registry"))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", "tiny", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and rows
    assert {row["group"] for row in rows} == GROUPS
    for row in rows:
        assert row["name"] and row["ours_side"] and row["reference_side"] and row["goal"], row
        assert row["ratio_means"] == "ours / reference"
        for key in ("ours", "reference", "ratio"):
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert math.isclose(row["ratio"], row["ours"] / row["reference"], rel_tol=1e-9)
        assert row["met"] in (True, False, None)
        assert row["size"] == "tiny" and row["quick"] is True


def test_sdxl_size_is_refused_on_cpu_with_one_line() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", "sdxl", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "--size sdxl needs a CUDA GPU" in done.stderr
