"""`unzip train` refuses broken inputs with one line and leaves the registry exactly as it was."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from unziplora.registry import Registry


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under the registry with a digest of its bytes (directories included)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def _png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    data = bytearray(_png_bytes((1, 1)))
    # IHDR payload starts after the 8-byte signature + 4-byte length + 4-byte type.
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


CORPUS = {
    "zero.png": (b"", "the file is empty (0 bytes)"),
    "notes.png": (b"just some text, not a picture\n", "not an image"),
    "cut.png": (_png_bytes((64, 64))[:-30], "truncated or damaged"),
    "bomb.png": (_bomb_png(), "decompression bomb"),
    "anim.gif": (_animated_gif(), "it is animated"),
}


@pytest.fixture
def populated(isolated_env: Path) -> Path:
    """A registry holding one entry and one interrupted run, so 'unchanged' means something."""
    reg = Registry(isolated_env)
    with reg.new_entry(subject="cat", style="sketch") as staging:
        (staging.dir / "content.safetensors").write_bytes(b"x" * 10)
        staging.record = {
            "kind": "trained",
            "imported": False,
            "subject": "cat",
            "style": "sketch",
            "prompts": {"combined": "c", "content": "c", "style": "s"},
            "base": {"ref": "tiny-sdxl"},
            "settings": {},
            "figures": {},
        }
    run = isolated_env / "runs" / "dog-run-0000"
    (run / "inputs").mkdir(parents=True)
    (run / "run.json").write_text(
        '{"prompts": {"subject": "dog"}, "config": {"steps": 9}, "sources": [{}], "inputs": ["000.png"]}'
    )
    (run / "inputs" / "000.png").write_bytes(_png_bytes((64, 64)))
    (run / "checkpoint.json").write_text('{"folder": "ckpt-0"}')  # resumable: a training does not sweep it
    return isolated_env


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_broken_image_is_one_line_and_changes_nothing(cli, populated: Path, tmp_path: Path, name: str) -> None:
    content, needle = CORPUS[name]
    path = tmp_path / name
    path.write_bytes(content)
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes((64, 64)))
    before = _snapshot(populated)
    result = cli(
        "train", str(good), str(path), "--subject", "cat", "--style", "sketch", "--base", "tiny-sdxl", "--steps", "2"
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot ") and needle in lines[0], result.stderr
    assert str(path) in lines[0]
    assert _snapshot(populated) == before


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["missing.png", "--subject", "cat", "--style", "sketch"],
            "error: cannot read {tmp}/missing.png: no such file or folder; check the path",
        ),
        (["good.png"], "error: cannot tell the subject and style of good.png: pass --subject and --style"),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--steps", "0"],
            "error: --steps must be a positive integer, got 0",
        ),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--resolution", "100"],
            "error: --resolution must be a multiple of 8",
        ),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--base", "/nope/model"],
            "error: base model path /nope/model does not exist.",
        ),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--device", "cuda"],
            "error: device 'cuda' was requested but CUDA is not available",
        ),
        (["--resume", "zzz-run"], "error: no resumable run matches 'zzz-run' (see 'unzip list --runs')."),
        ([], "error: no images given; pass one or more image files or folders"),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--name", "a/b"],
            "error: 'a/b' is not a valid entry name",
        ),
    ],
)
def test_bad_arguments_are_one_line(cli, populated: Path, tmp_path: Path, args: list[str], line: str) -> None:
    (tmp_path / "good.png").write_bytes(_png_bytes((64, 64)))
    before = _snapshot(populated)
    argv = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
    result = cli("train", *argv, *([] if "--base" in args or "--resume" in args else ["--base", "tiny-sdxl"]))
    # a value that can never work is a usage mistake: exit 2, like Click's
    usage = "--steps" in args or "--resolution" in args or not args
    assert result.exit_code == (2 if usage else 1), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(line.format(tmp=tmp_path)), result.stderr
    assert _snapshot(populated) == before


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--resolution", "65536"],
            (
                "error: --resolution must be a multiple of 8 from 64 to 2048, got 65536 (SDXL's VAE works in blocks "
                "of 8 px; 2048 is twice SDXL's native side, 4x its pixels and memory)"
            ),
        ),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--column-ratio", "0"],
            "error: --column-ratio must be in (0, 1], got 0.0",
        ),
        (
            ["good.png", "--subject", "cat", "--style", "sketch", "--mask-lr", "0.01", "--merge-lr", "0.02"],
            "error: --mask-lr is the old name of --merge-lr; give only --merge-lr.",
        ),
        (
            ["--resume", "dog-run-0000", "--steps", "20", "--rank", "8", "--checkpoint-every", "3", "--style", "ink"],
            (
                "error: --resume finishes run dog-run-0000 with the settings it started with; --steps, --rank, --style "
                "would change them: drop them, or discard the run with 'unzip rm --run dog-run-0000' and train again."
            ),
        ),
        (
            ["--resume", "dog-run-0000", "--mask-lr", "0.5"],
            (
                "error: --resume finishes run dog-run-0000 with the settings it started with; --merge-lr would change "
                "them: drop it, or discard the run with 'unzip rm --run dog-run-0000' and train again."
            ),
        ),
    ],
)
def test_option_mistakes_are_one_exact_line_and_exit_2(cli, populated: Path, tmp_path: Path, args, line) -> None:
    """Bounds come from the option's one declaration; --resume refuses flags that would change the run."""
    (tmp_path / "good.png").write_bytes(_png_bytes((64, 64)))
    before = _snapshot(populated)
    argv = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
    result = cli("train", *argv, *([] if "--resume" in args else ["--base", "tiny-sdxl"]))
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", line + "\n")
    assert _snapshot(populated) == before


def test_list_runs_shows_interrupted_runs(cli, populated: Path) -> None:
    result = cli("list", "--runs", "-q")
    assert result.exit_code == 0
    assert result.stdout.split() == ["dog-run-0000"]
    plain = cli("list", "-q")
    assert plain.stdout.split()[0].startswith("cat-sketch-")
    assert "dog-run" not in plain.stdout


def test_non_finite_loss_stops_with_one_line_and_no_entry(cli, populated: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from unziplora.train import loop

    real = loop.diffusion_loss
    monkeypatch.setattr(loop, "diffusion_loss", lambda *a, **k: real(*a, **k) * torch.tensor(float("nan")))
    (tmp_path / "good.png").write_bytes(_png_bytes((64, 64)))
    before = _snapshot(populated)
    result = cli(
        "train",
        str(tmp_path / "good.png"),
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--base",
        "tiny-sdxl",
        "--steps",
        "3",
        "--resolution",
        "64",
        "-q",
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("error: the loss became nan at step 1; nothing was saved.")
    assert _snapshot(populated) == before


def test_failed_training_keeps_a_checkpointed_run_resumable(cli, populated: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from unziplora.train import loop

    calls = []
    real = loop.diffusion_loss

    def nan_after_four(*a, **k):
        calls.append(1)
        value = real(*a, **k)
        return value * torch.tensor(float("nan")) if len(calls) > 4 else value

    monkeypatch.setattr(loop, "diffusion_loss", nan_after_four)
    (tmp_path / "good.png").write_bytes(_png_bytes((64, 64)))
    result = cli(
        "train",
        str(tmp_path / "good.png"),
        "--subject",
        "owl",
        "--style",
        "ink",
        "--base",
        "tiny-sdxl",
        "--steps",
        "8",
        "--resolution",
        "64",
        "--checkpoint-every",
        "2",
        "-q",
    )
    assert result.exit_code == 1
    assert "error: the loss became nan at step 5" in result.stderr
    runs = cli("list", "--runs", "-q").stdout.split()
    assert any(r.startswith("owl-ink-run-") for r in runs)
