"""A finished training is never lost, and runs are swept, locked and refused with one line.

Ctrl-C at the moments after the last optimizer step is simulated with the trainer's test hook
(``UNZIPLORA_TEST_TRAIN_HOOK``) where a real signal would be racy; Ctrl-C during the last step is
a real SIGINT sent to this process from the step callback.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TRAIN = [
    "--subject",
    "owl",
    "--style",
    "ink",
    "--steps",
    "2",
    "--base",
    "tiny-sdxl",  # no --resolution: the base's native size (64 px for tiny-sdxl)
    "--preview-steps",
    "1",
    "--sample-times",
    "1",
]
RESUME = "resume with: unzip train --resume "


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "owl.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(path)
    return path


def entries(registry: Path) -> list[Path]:
    folder = registry / "entries"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def run_dirs(registry: Path) -> list[Path]:
    folder = registry / "runs"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_ctrl_c_in_the_final_preview_keeps_the_entry_without_preview(cli, isolated_env, image, monkeypatch) -> None:
    monkeypatch.setenv("UNZIPLORA_TEST_TRAIN_HOOK", "preview")
    result = cli("train", str(image), *TRAIN, "-q")
    assert result.exit_code == 0, result.stderr
    (entry,) = entries(isolated_env)
    assert result.stdout.strip() == entry.name
    assert "warning: Ctrl-C during the preview: preview stopped; saving the entry without it." in result.stderr
    assert (entry / "content.safetensors").is_file() and not (entry / "preview.png").exists()
    assert run_dirs(isolated_env) == []


def test_ctrl_c_during_the_last_step_skips_the_preview_not_the_entry(cli, isolated_env, image, monkeypatch) -> None:
    from unziplora_cli.progress import TrainProgress

    real = TrainProgress.step

    def step(self, report):  # a real Ctrl-C while the last step runs (the handler only sets a flag)
        if report.step == report.total:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, report)

    monkeypatch.setattr(TrainProgress, "step", step)
    result = cli("train", str(image), *TRAIN, "-q")
    assert result.exit_code == 0, result.stderr
    (entry,) = entries(isolated_env)
    assert "warning: Ctrl-C during the last step: saving the entry without a preview." in result.stderr
    assert not (entry / "preview.png").exists()


@pytest.mark.parametrize("point", ["trained", "saving"])
def test_ctrl_c_after_the_last_step_leaves_a_run_that_resumes_to_preview_and_save(
    cli, isolated_env, image, monkeypatch, point
) -> None:
    monkeypatch.setenv("UNZIPLORA_TEST_TRAIN_HOOK", point)
    result = cli("train", str(image), *TRAIN, "-q")
    assert result.exit_code == 130, result.stderr
    assert entries(isolated_env) == []
    assert "interrupted after the last step (2)" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(RESUME)
    run_id = last.removeprefix(RESUME)
    (run,) = run_dirs(isolated_env)
    assert run.name == run_id and (run / "checkpoint.json").is_file()
    assert json.loads((run / "run.json").read_text())["checkpoint_step"] == 2

    monkeypatch.delenv("UNZIPLORA_TEST_TRAIN_HOOK")
    from unziplora.train import loop

    monkeypatch.setattr(loop, "diffusion_loss", lambda *a, **k: pytest.fail("the resume trained a step again"))
    resumed = cli("train", "--resume", run_id, "-q")
    assert resumed.exit_code == 0, resumed.stderr
    (entry,) = entries(isolated_env)
    record = json.loads((entry / "entry.json").read_text())
    assert (entry / "preview.png").is_file()
    assert record["figures"]["run_id"] == run_id and math.isfinite(record["figures"]["final_loss"])
    assert run_dirs(isolated_env) == [] and not (isolated_env / "runs" / f"{run_id}.lock").exists()


def _leave_run(cli, image, monkeypatch, point: str) -> str:
    monkeypatch.setenv("UNZIPLORA_TEST_TRAIN_HOOK", point)
    result = cli("train", str(image), *TRAIN, "-q")
    monkeypatch.delenv("UNZIPLORA_TEST_TRAIN_HOOK")
    assert result.exit_code == 130, result.stderr
    return result.stderr.strip().splitlines()[-1].removeprefix(RESUME)


def test_run_in_use_is_refused_and_committed_run_is_not_resumed_twice(cli, isolated_env, image, monkeypatch) -> None:
    from unziplora.train.run import Run, open_run

    run_id = _leave_run(cli, image, monkeypatch, "saving")
    holder = open_run(isolated_env, run_id)
    assert holder.acquire()  # as a process still training it would
    try:
        result = cli("train", "--resume", run_id)
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: run {run_id} is in use by another unzip process (still training or being resumed); wait for it to finish"
        )
    finally:
        holder.release()

    # The entry commits but the process dies before the run folder is removed.
    with monkeypatch.context() as patch:
        patch.setattr(Run, "remove", lambda self: self.release())
        assert cli("train", "--resume", run_id, "-q").exit_code == 0
    (entry,) = entries(isolated_env)
    again = cli("train", "--resume", run_id)
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: run {run_id} already became entry {entry.name}; nothing to resume (remove the run with 'unzip rm --run {run_id}')"
    )
    removed = cli("rm", "--run", run_id)
    assert removed.exit_code == 0, removed.stderr
    assert f"Discarded run {run_id}." in removed.stderr
    assert run_dirs(isolated_env) == [] and entries(isolated_env) == [entry]


def test_dead_runs_are_swept_by_the_next_training_unless_resumable(cli, isolated_env, image, monkeypatch) -> None:
    keep = _leave_run(cli, image, monkeypatch, "trained")
    runs = isolated_env / "runs"
    (runs / "owl-ink-run-dead").mkdir()  # killed before any checkpoint
    (runs / "owl-ink-run-dead" / "run.json").write_text(
        '{"prompts": {}, "config": {"steps": 9}, "sources": [], "inputs": []}'
    )
    (runs / "owl-ink-run-bare").mkdir()  # killed before its inputs were recorded

    result = cli("train", "--resume", "owl-ink-run-bare")  # no run.json: not even listed
    assert result.exit_code == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: no resumable run matches 'owl-ink-run-bare' (see 'unzip list --runs')."
    )
    dead = cli("train", "--resume", "owl-ink-run-dead")
    assert dead.exit_code == 1
    assert dead.stderr.strip().splitlines()[-1] == (
        "error: run owl-ink-run-dead was interrupted before its inputs were recorded; "
        "nothing to resume: remove it with 'unzip rm --run owl-ink-run-dead' and train again"
    )
    assert "Traceback" not in result.stderr + dead.stderr

    assert cli("train", str(image), *TRAIN, "-q").exit_code == 0
    assert [p.name for p in run_dirs(isolated_env)] == [keep]  # the checkpointed run stays resumable
    listed = cli("list", "--runs", "-q")
    assert listed.stdout.split() == [keep]


def test_out_of_range_seed_is_refused_before_start_up(cli, image, monkeypatch) -> None:
    from unziplora.train import trainer

    monkeypatch.setattr(trainer, "load_pipeline", lambda *a, **k: pytest.fail("the base was loaded"))
    for seed in (str(2**64), "-1"):
        result = cli("train", str(image), *TRAIN, "--seed", seed)
        assert result.exit_code == 2, result.stderr  # a usage mistake
        assert (
            result.stderr.strip().splitlines()[-1]
            == f"error: --seed must be an integer from 0 to {2**32 - 1}, got {seed}"
        )


def test_a_prompt_over_77_tokens_is_warned_and_recorded_as_used(cli, isolated_env, image) -> None:
    from unziplora.base_model import load_pipeline, parse_base
    from unziplora.prompts import MAX_PROMPT_TOKENS

    long_prompt = "A monadikos owl " + " ".join(f"word{i}" for i in range(80)) + " in ink style"
    result = cli("train", str(image), *TRAIN, "--prompt", long_prompt, "-q")
    assert result.exit_code == 0, result.stderr
    assert (
        "warning: the combined prompt is longer than 77 CLIP tokens; training uses (and records) only its start: "
        in result.stderr
    )
    (entry,) = entries(isolated_env)
    record = json.loads((entry / "entry.json").read_text())
    assert record["settings"]["resolution"] == 64 and "--resolution 64" in record["command"]  # tiny-sdxl's native size
    used = record["prompts"]["combined"]
    assert long_prompt.startswith(used) and len(used) < len(long_prompt)
    tokenizer = load_pipeline(parse_base("tiny-sdxl")).tokenizer
    following = long_prompt.split()[len(used.split())]
    assert len(tokenizer.tokenize(used)) + 2 <= MAX_PROMPT_TOKENS < len(tokenizer.tokenize(f"{used} {following}")) + 2


def test_out_of_range_seed_and_resolution_are_refused_before_torch_is_imported(image) -> None:
    import subprocess
    import sys

    # --resolution 65536 used to load the base and train until the kernel killed it (exit 137).
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom unziplora_cli.app import build_app\n"
        f"for extra in (['--seed', '{2**64}'], ['--resolution', '65536']):\n"
        f"    r = CliRunner().invoke(build_app('unzip'), ['train', {str(image)!r}, '--subject', 'owl', '--style', 'ink', "
        "'--base', 'tiny-sdxl', *extra])\n"
        "    assert r.exit_code == 2, r.output\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
