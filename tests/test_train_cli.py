"""`unzip train` on the tiny base: the entry it makes, determinism, resume, --each, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VENV_BIN = Path(sys.executable).parent
# Rank 4, not the default 64: the tiny base's layers are 32-320 wide, so rank 64 mostly costs time
# (a third of each run); nothing asserted here depends on the rank.
TINY = ["--base", "tiny-sdxl", "--resolution", "64", "--preview-steps", "1", "--rank", "4"]


def make_image(path: Path, seed: int = 0, size: tuple[int, int] = (96, 80)) -> Path:
    pixels = (np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8")
    Image.fromarray(pixels).save(path)
    return path


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def entry_dir(registry: Path, entry_id: str) -> Path:
    return registry / "entries" / entry_id


def test_train_makes_a_loadable_entry_with_the_block_pattern(cli, isolated_env: Path, tmp_path: Path) -> None:
    import torch

    from unziplora.base_model import load_pipeline, parse_base
    from unziplora.method import block_class

    image = make_image(tmp_path / "cat.png")
    result = cli(
        "train", str(image), "--subject", "cat", "--style", "sketch", "--steps", "8", "--sample-times", "1", *TINY
    )
    assert result.exit_code == 0, result.stderr
    entry_id = result.stdout.strip()
    assert entry_id.startswith("cat-sketch-") and "\n" not in entry_id
    assert "tiny-sdxl is a toy base" in result.stderr
    folder = entry_dir(isolated_env, entry_id)
    names = {p.name for p in folder.iterdir()}
    assert {
        "entry.json",
        "content.safetensors",
        "style.safetensors",
        "masks.safetensors",
        "source.png",
        "preview.png",
    } <= names
    record = json.loads((folder / "entry.json").read_text())
    assert record["prompts"] == {
        "combined": "A monadikos cat in sketch style",
        "content": "A monadikos cat",
        "style": "A cat in sketch style",
    }
    assert record["settings"]["steps"] == 8 and record["figures"]["steps"] == 8
    assert record["command"].startswith("unzip train ") and "--subject cat" in record["command"]

    # Masks follow ALGORITHM.md 5.3 with exactly floor(out * 0.1) columns for the sparse branch.
    masks = tensors(folder / "masks.safetensors")
    modules = sorted({k.rsplit(".", 1)[0] for k in masks})
    assert len(modules) == 176
    for module in modules:
        content, style = masks[f"{module}.mask_content"], masks[f"{module}.mask_style"]
        k = content.numel() // 10
        kind = block_class(module)
        if kind == "both":
            assert int(content.sum()) == k and int(style.sum()) == k, module
            assert not bool((content & style).any()), module
        elif kind == "content_sparse":
            assert int(content.sum()) == k and bool(style.all()), module
        else:
            assert int(style.sum()) == k and bool(content.all()), module

    # Both LoRAs load into a plain diffusers pipeline (one, as two adapters), every projection injected.
    pipe = load_pipeline(parse_base("tiny-sdxl"))
    before = {n: p.clone() for n, p in pipe.unet.state_dict().items()}
    for part in ("content", "style"):
        pipe.load_lora_weights(str(folder), weight_name=f"{part}.safetensors", adapter_name=part)
        injected = [
            n for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and part in getattr(m, "lora_A", {})
        ]
        assert len(injected) == 176
        assert all(torch.equal(before[n], p) for n, p in pipe.unet.state_dict().items() if n in before)


def test_same_seed_same_result_and_seed_changes_it(cli, isolated_env: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "fox.png", seed=3)
    args = [
        "train",
        str(image),
        "--subject",
        "fox",
        "--style",
        "chalk art",
        "--steps",
        "4",
        "--save-precision",
        "fp32",
        *TINY,
        "-q",
    ]
    first = cli(*args).stdout.strip()
    second = cli(*args).stdout.strip()
    other = cli(*args, "--seed", "7").stdout.strip()
    a, b, c = (tensors(entry_dir(isolated_env, i) / "content.safetensors") for i in (first, second, other))
    assert all(bool((a[k] == b[k]).all()) for k in a)
    assert any(not bool((a[k] == c[k]).all()) for k in a)


def test_interrupted_then_resumed_equals_uninterrupted(cli, isolated_env: Path, tmp_path: Path, monkeypatch) -> None:
    """A real Ctrl-C (SIGINT to this process) in the middle of a run, after a selection round and a
    checkpoint, then ``--resume``: the entry equals the one an uninterrupted run makes.

    In-process: the interruption is a real signal at a known step (7 of 12, selection rounds every 4
    steps: after the round at 4 and the checkpoint at 6, before the round at 8), so no subprocess
    start-up is paid and the moment is not a race with a polling loop.
    """
    import torch

    from unziplora_cli.progress import TrainProgress

    image = make_image(tmp_path / "owl.png", seed=5)
    args = [
        "train",
        str(image),
        "--subject",
        "owl",
        "--style",
        "ink",
        "--steps",
        "12",
        "--sample-times",
        "3",
        "--save-precision",
        "fp32",
        *TINY,
        "-q",
    ]
    reference = cli(*args).stdout.strip()
    second = tmp_path / "reg2"
    real_step = TrainProgress.step

    def step(self, report):  # the handler only sets a flag; the loop stops at the step's end
        if report.step == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, report)

    monkeypatch.setattr(TrainProgress, "step", step)
    interrupted = cli(*args, "--checkpoint-every", "2", "--registry", str(second))
    monkeypatch.setattr(TrainProgress, "step", real_step)
    assert interrupted.exit_code == 130, interrupted.stderr
    assert interrupted.stdout == ""
    assert not list((second / "entries").glob("*"))  # no entry from an unfinished run
    run_id = interrupted.stderr.strip().splitlines()[-1].removeprefix("resume with: unzip train --resume ")
    assert (second / "runs" / run_id / "run.json").is_file()
    run_json = (second / "runs" / run_id / "run.json").read_bytes()
    changed = cli("train", "--resume", run_id, "--registry", str(second), "--steps", "60", "--rank", "8")
    assert (changed.exit_code, changed.stdout) == (2, "")  # flags that would change the run are refused
    assert changed.stderr == (
        f"error: --resume finishes run {run_id} with the settings it started with; --steps, --rank would change "
        f"them: drop them, or discard the run with 'unzip rm --run {run_id}' and train again.\n"
    )
    assert (second / "runs" / run_id / "run.json").read_bytes() == run_json
    # Its own values are accepted, and when checkpoints are written may change: the result is the same.
    resumed = cli(
        "train", "--resume", run_id, "--registry", str(second), "--steps", "12", "--checkpoint-every", "5", "-q"
    )
    assert resumed.exit_code == 0, resumed.stderr
    assert not (second / "runs" / run_id).exists()
    ref_dir, new_dir = entry_dir(isolated_env, reference), entry_dir(second, resumed.stdout.strip())
    for name in ("content.safetensors", "style.safetensors", "masks.safetensors"):
        a, b = tensors(ref_dir / name), tensors(new_dir / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), (name, key)


def test_each_trains_one_entry_per_image_with_one_base_load(
    cli, isolated_env: Path, tmp_path: Path, monkeypatch
) -> None:
    from unziplora.train import trainer

    loads = []
    real = trainer.load_pipeline
    monkeypatch.setattr(trainer, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["a_dog_in_watercolor_style.png", "b.png"]):  # two: more than one entry, one load
        make_image(folder / name, seed=i)
    (folder / "notes.txt").write_text("not an image")
    result = cli("train", str(folder), "--each", "--subject", "dog", "--style", "watercolor", "--steps", "2", *TINY)
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2 and len(set(ids)) == 2
    assert loads == [1]
    assert "skipping notes.txt: not an image file" in result.stderr
    sources = [json.loads((entry_dir(isolated_env, i) / "entry.json").read_text())["sources"][0]["name"] for i in ids]
    assert sorted(sources) == ["a_dog_in_watercolor_style.png", "b.png"]


@pytest.mark.slow
def test_torchrun_shares_images_across_processes(isolated_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(4):
        make_image(folder / f"img{i}.png", seed=10 + i)
    cmd = [
        str(VENV_BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(VENV_BIN / "unziplora"),
        "train",
        str(folder),
        "--each",
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--steps",
        "2",
        *TINY,
        "-q",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    ids = result.stdout.split()
    assert len(ids) == 4 and len(set(ids)) == 4
    records = [json.loads((entry_dir(isolated_env, i) / "entry.json").read_text()) for i in ids]
    by_process = sorted(r["figures"]["process_index"] for r in records)
    assert by_process == [0, 0, 1, 1]
    assert {r["figures"]["num_processes"] for r in records} == {2}
    assert len(list((isolated_env / "entries").iterdir())) == 4
