"""Generated images are written as they are made, and never over earlier ones without --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from generate_helpers import make_entry

from unziplora.registry import Registry

FAST = ["--steps", "2", "--width", "64", "--height", "64"]


@pytest.fixture
def entry(isolated_env: Path):
    return make_entry(Registry.from_settings(), subject="cat", style="sketch", seed=1)


def test_an_interrupted_compose_keeps_the_images_already_drawn(cli, entry, tmp_path: Path, monkeypatch) -> None:
    from unziplora_cli.progress import SamplingProgress

    def progress(self, done: int, total: int) -> None:
        if done == 5:  # step 1 of image 3 of 3 (2 steps each)
            raise KeyboardInterrupt

    monkeypatch.setattr(SamplingProgress, "__call__", progress)
    out = tmp_path / "out"
    result = cli("compose", "--content", entry.id, "-n", "3", "-o", str(out), *FAST)
    assert result.exit_code == 130
    assert sorted(p.name for p in out.iterdir()) == ["00-seed0.png", "01-seed1.png"]
    assert f"warning: 2 image(s) written to {out} before the stop" in result.stderr


@pytest.mark.parametrize("command", ["compose", "restyle"])
def test_existing_images_are_not_overwritten_without_force(cli, entry, tmp_path: Path, monkeypatch, command) -> None:
    from unziplora.generate import api

    out = tmp_path / "out"
    out.mkdir()
    (out / "01-seed1.png").write_bytes(b"earlier image")
    (out / "notes.txt").write_text("kept")
    args = ["--content", entry.id] if command == "compose" else ["--style", entry.id, "--subject", "a dog"]
    with monkeypatch.context() as patch:
        patch.setattr(api, "open_studio", lambda *a, **k: pytest.fail("the base was loaded before -o was checked"))
        refused = cli(command, *args, "-n", "2", "-o", str(out), *FAST)
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {out / '01-seed1.png'} already exists; pass --force to overwrite, or -o with another folder"
    )
    assert (out / "01-seed1.png").read_bytes() == b"earlier image"

    other_seed = cli(command, *args, "--seed", "5", "-o", str(out), *FAST)  # no name taken: fine
    assert other_seed.exit_code == 0, other_seed.stderr
    forced = cli(command, *args, "-n", "2", "-o", str(out), "--force", *FAST)
    assert forced.exit_code == 0, forced.stderr
    assert (out / "01-seed1.png").read_bytes() != b"earlier image"
    assert sorted(p.name for p in out.iterdir()) == ["00-seed0.png", "00-seed5.png", "01-seed1.png", "notes.txt"]


def test_a_prompt_over_77_tokens_is_warned_about_and_recorded_as_used(cli, entry, tmp_path: Path) -> None:
    from unziplora.generate.pngmeta import read_png_meta

    context = "on a beach " + " ".join(f"word{i}" for i in range(120))
    out = tmp_path / "long"
    result = cli("compose", "--content", entry.id, context, "-o", str(out), *FAST)
    assert result.exit_code == 0, result.stderr
    assert (
        "warning: the content prompt is longer than 77 CLIP tokens; the images use (and record) only its start:"
        in result.stderr
    )
    recorded = read_png_meta(out / "00-seed0.png")["prompts"]["prompt"]  # content mode: one prompt
    assert recorded.startswith("A ") and " cat on a beach word0" in recorded
    assert len(recorded) < len(context) and "word119" not in recorded


def _rewrite_payload(entry, name: str, change) -> None:
    """Change one payload tensor and record the new hash, as a buggy tool or a hand edit would."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    path = entry.path / name
    tensors = load_file(str(path))
    key = min(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key] = change(tensors[key])
    save_file(tensors, str(path), metadata={"format": "pt"})
    record = json.loads((entry.path / "entry.json").read_text())
    record["files"][name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
    (entry.path / "entry.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t[0], "is 1-D"),
        (lambda t: t[:0], "is empty"),
        (lambda t: t * float("nan"), "holds NaN or infinite values"),
    ],
)
def test_a_broken_payload_tensor_is_one_line_not_a_traceback(cli, entry, tmp_path: Path, change, problem) -> None:
    _rewrite_payload(entry, "content.safetensors", change)
    out = tmp_path / "out"
    result = cli("compose", "--content", entry.id, "-o", str(out), *FAST)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: entry {entry.id} is damaged: content.safetensors tensor ")
    assert problem in lines[-1] and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())  # no image drawn from it
