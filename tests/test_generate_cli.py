"""``unzip compose`` / ``unzip restyle`` on tiny-sdxl: output, records, and one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from generate_helpers import make_entry

from unziplora.generate import read_png_meta
from unziplora.registry import Registry
from unziplora_cli.progress import is_status_line

FAST = ["--steps", "2", "--width", "64", "--height", "64"]
FORMATS = "pass a PNG, JPEG, WebP, BMP, GIF or TIFF image"
REDO = "re-export or re-download it"
SDXL = {"ref": "stabilityai/stable-diffusion-xl-base-1.0", "kind": "hub", "fingerprint": "0123456789abcdef"}


@pytest.fixture
def reg(isolated_env: Path) -> Registry:
    return Registry.from_settings()


@pytest.fixture
def pair(reg: Registry):
    return make_entry(reg, subject="cat", style="sketch", seed=1), make_entry(
        reg, subject="rose", style="pop art", seed=2
    )


def test_compose_writes_pngs_and_prints_paths(cli, pair, tmp_path: Path):
    a, b = pair
    out = tmp_path / "out"
    result = cli(
        "compose",
        "--content",
        a.id,
        "--style",
        b.id[:6],
        "on a beach",
        "-n",
        "2",
        "--seed",
        "3",
        "--sheet",
        "-o",
        str(out),
        *FAST,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(out / "00-seed3.png"), str(out / "01-seed4.png"), str(out / "sheet.png")]
    assert "note: tiny-sdxl is a toy base with random weights; its images are noise." in result.stderr
    meta = read_png_meta(out / "01-seed4.png")
    assert meta["seed"] == 4 and meta["entries"] == {"content": a.id, "style": b.id} and meta["sampler"] == "ddpm"
    assert meta["prompts"] == {
        "prompt": "A monadikos cat on a beach in pop art style",
        "content_prompt": "A monadikos cat on a beach",
        "style_prompt": "A cat on a beach in pop art style",
    }


def test_compose_json_single_prompt_default_folder(cli, pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    a, b = pair
    monkeypatch.chdir(tmp_path)
    result = cli(
        "compose", "--content", a.id, "--style", b.id, "--single-prompt", "--sampler", "dpmpp", "--json", "-q", *FAST
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    (record,) = payload["images"]
    assert payload["sheet"] is None and record["prompt_separation"] is False and record["sampler"] == "dpmpp"
    path = Path(record["path"])  # absolute, as every printed path is
    assert path.parent.parent == tmp_path / "unzip-out" and path.parent.name.endswith(f"-{a.id}+{b.id}")
    assert path.is_file()
    assert result.stderr == ""  # -q: no note, no progress


def test_restyle_subject(cli, pair, tmp_path: Path):
    _, b = pair
    result = cli(
        "restyle",
        "--style",
        b.id,
        "--subject",
        "a lighthouse",
        "--context",
        "on a cliff",
        "-o",
        str(tmp_path),
        "-q",
        *FAST,
    )
    assert result.exit_code == 0, result.stderr
    meta = read_png_meta(result.stdout.strip())
    assert meta["prompts"]["prompt"] == "A lighthouse on a cliff in pop art style" and meta["mode"] == "style"


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "error: cannot use {path}: the file is empty (0 bytes); " + REDO),
        (b"hello, not a picture", "error: cannot use {path}: not an image, or a format we do not read; " + FORMATS),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00",
            "error: cannot use {path}: the image is truncated or damaged (its header cannot be read); " + REDO,
        ),
    ],
    ids=["zero-bytes", "not-an-image", "truncated"],
)
def test_restyle_refuses_broken_image(cli, pair, tmp_path: Path, content: bytes, expected: str):
    _, b = pair
    photo = tmp_path / "photo.png"
    photo.write_bytes(content)
    result = cli("restyle", "--style", b.id, "--subject", "dog", "--image", str(photo), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [expected.format(path=photo)]
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_restyle_missing_image(cli, pair, tmp_path: Path):
    _, b = pair
    missing = tmp_path / "nope.jpg"
    result = cli("restyle", "--style", b.id, "--subject", "dog", "--image", str(missing))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: cannot read {missing}: no such file; check the path"]


def test_unknown_and_mismatched_ids_are_one_line(cli, reg, pair):
    a, _ = pair
    unknown = cli("compose", "--content", "zzzz", *FAST)
    assert unknown.exit_code == 1
    assert unknown.stderr.splitlines() == ["error: no entry matches 'zzzz' (see 'unzip list')"]
    other = make_entry(reg, subject="dog", style="oil", seed=3, base=SDXL)
    mixed = cli("compose", "--content", a.id, "--style", other.id, *FAST)
    assert mixed.exit_code == 1
    assert mixed.stderr.splitlines() == [
        (
            f"error: cannot combine {a.id} and {other.id}: they were trained on different base models "
            "(tiny-sdxl vs stabilityai/stable-diffusion-xl-base-1.0); pick a content and a style entry trained on the same base"
        )
    ]


def test_entry_that_does_not_fit_the_base(cli, reg):
    broken = make_entry(reg, subject="fox", style="chalk", seed=4, shrink=True)
    result = cli("compose", "--content", broken.id, *FAST)
    assert result.exit_code == 1
    (line,) = [  # the error is the one line besides the tiny note and the status lines of what ran before it
        x
        for x in result.stderr.splitlines()
        if x != "note: tiny-sdxl is a toy base with random weights; its images are noise." and not is_status_line(x)
    ]
    assert line == (
        f"error: entry {broken.id}: content LoRA tensors of up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q have "
        "shapes (4, 127) / (128, 4), expected [r, 128] / [128, r]; it was trained on a different base model"
    )


def test_usage_errors(cli, pair):
    a, _ = pair
    nothing = cli("compose", *FAST)
    assert nothing.exit_code == 2
    assert nothing.stderr.splitlines() == [
        "error: nothing to generate: pass --content ID, --style ID, or both. See 'unzip compose --help'."
    ]
    bad = cli("compose", "--content", a.id, "--sampler", "heun", *FAST)
    assert bad.exit_code == 2  # a bad option value is a usage mistake, as Click's own are
    assert bad.stderr.splitlines() == ["error: unknown sampler 'heun'; use one of ddpm, euler, euler-a, dpmpp, ddim."]
    odd = cli("compose", "--content", a.id, "--width", "100")
    assert odd.exit_code == 2
    assert odd.stderr.splitlines() == ["error: --width must be a multiple of 8 between 8 and 8192; got 100."]
    zero = cli("restyle", "--style", a.id, "--subject", "dog", "-n", "0")
    assert (zero.exit_code, zero.stdout, zero.stderr) == (2, "", "error: --num must be between 1 and 1000; got 0.\n")


def test_help_lists_samplers_defaults_and_examples(cli):
    for command, example in (("compose", "unzip compose --content"), ("restyle", "unzip restyle --style")):
        text = " ".join(cli(command, "--help").stdout.split())
        assert (
            "ddpm, euler, euler-a, dpmpp, ddim [default: ddpm with content and style, euler with only one of them]"
            in text
        )
        assert "Examples:" in text and example in text


def test_generate_commands_import_no_torch():
    code = (
        "import sys, unziplora_cli.commands.generate, unziplora.generate; "
        "unziplora.generate.GenerationOptions; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unwritable_output_folder_is_refused_before_sampling(
    cli, pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from unziplora.generate import api

    monkeypatch.setattr(api, "open_studio", lambda *a, **k: pytest.fail("the base was loaded before -o was checked"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("compose", "--content", pair[0].id, "-o", str(blocker), *FAST)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot write images to {blocker}: ")
