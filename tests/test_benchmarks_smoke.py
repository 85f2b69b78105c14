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


def test_step_rows_of_a_subset_of_sides() -> None:
    """``sides``: only the references asked for are built and timed (the full SDXL UNet at 256 px
    fits next to the floor but not next to the official-style side), one row each."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_train import step_rows, time_steps
    from benchmarks.sizes import size_spec

    spec = size_spec("tiny")
    times = time_steps(spec, "cpu", 1, sides=("ours", "floor"))
    assert times.seconds["official"] == [] and len(times.seconds["floor"]) == 1
    rows = step_rows(times, spec)
    assert [row.name for row in rows] == ["train step vs floor (tiny: 64 px, rank 4)"]
    assert rows[0].notes["peak_rss_mib"] > 0


def test_sdxl256_is_the_real_sdxl_unet_config_at_256_px() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.sizes import SDXL_UNET, size_spec

    spec = size_spec("sdxl256")
    assert spec.resolution == 256 and spec.rank == 64
    assert {k: v for k, v in spec.unet.items() if k != "sample_size"} == {
        k: v for k, v in SDXL_UNET.items() if k != "sample_size"
    }
    assert spec.unet["transformer_layers_per_block"] == (1, 2, 10)


def test_the_benchmark_sdxl_unet_is_the_shipped_sdxl_config() -> None:
    """Every value the benchmark's SDXL UNet sets is the one of the UNet config shipped for sdxl-random."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.sizes import SDXL_UNET

    shipped = json.loads((ROOT / "unziplora" / "sdxl_config" / "unet" / "config.json").read_text())
    for key, value in SDXL_UNET.items():
        assert shipped[key] == (list(value) if isinstance(value, tuple) else value), key
