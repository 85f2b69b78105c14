"""Signs of life (issue 13 item 5, issue 14 item 5): with stderr not a terminal (a log file, a batch
job) ``train`` and ``compose`` say each long phase as a plain line when it starts and when it ends
with its duration, training steps as lines, and where ``preview.png`` is; ``-q`` silences all of it.

The loud runs are real subprocesses with stderr to a pipe; the quiet ones run in-process (CliRunner's
stderr is no terminal either), which keeps the file at two process start-ups.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--base", "tiny-sdxl", "--resolution", "64", "--steps", "2", "--sample-times", "1", "--preview-steps", "1"]


def _unzip(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "unziplora_cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def cat(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(path)
    return path


def _done(stderr: str, label: str) -> bool:
    return re.search(rf"^{re.escape(label)}: done in \d+\.\d s$", stderr, re.MULTILINE) is not None


def test_train_and_compose_say_what_they_do_when_stderr_is_a_pipe(cat: Path, tmp_path: Path):
    trained = _unzip("train", str(cat), "--subject", "cat", "--style", "sketch", *TRAIN)
    assert trained.returncode == 0, trained.stderr
    entry_id = trained.stdout.strip()
    err = trained.stderr
    for label in (
        "loading the base model tiny-sdxl",
        "encoding the prompts",
        "caching the latents of 1 image(s)",
        "rendering the preview (3 samples of 1 steps)",
        "saving the entry",
    ):
        assert f"\n{label}...\n" in f"\n{err}", label
        assert _done(err, label), label
    assert re.search(r"^training cat / sketch: step 2/2, loss \d+\.\d{4}, \d+\.\d\d s/step$", err, re.MULTILINE)
    preview = re.search(r"^preview: (.+)$", err, re.MULTILINE)
    assert preview is not None and Path(preview.group(1)).is_file()
    assert Path(preview.group(1)).name == "preview.png" and entry_id in preview.group(1)

    out = tmp_path / "out"
    composed = _unzip(
        "compose", "on a beach", "--content", entry_id, "--style", entry_id, "--steps", "1", "-o", str(out)
    )
    assert composed.returncode == 0, composed.stderr
    err = composed.stderr
    for label in (
        "loading the base model tiny-sdxl",
        f"loading the LoRAs of {entry_id}",
        "encoding the prompts",
        "folding the LoRAs into the base weights",
        "decoding the image",
    ):
        assert _done(err, label), label
    assert re.search(r"^sampling: step 1/1$", err, re.MULTILINE)


def test_quiet_train_and_compose_print_no_status(cli, cat: Path):
    trained = cli("train", str(cat), "--subject", "cat", "--style", "sketch", *TRAIN, "-q")
    assert trained.exit_code == 0, trained.stderr
    assert trained.stderr == ""
    entry_id = trained.stdout.strip()
    composed = cli("compose", "on a beach", "--content", entry_id, "--style", entry_id, "--steps", "1", "-q")
    assert composed.exit_code == 0, composed.stderr
    assert composed.stderr == ""
