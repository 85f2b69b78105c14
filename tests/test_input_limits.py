"""Inputs that could hang or flood a command: FIFOs, devices, huge or deeply nested files.

Each call runs in a daemon thread with a deadline, so a regression fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import make_entry

from unziplora.registry import Registry

DEADLINE_S = 20.0


def within_deadline(fn: Any, *args: Any) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), f"{fn} still running after {DEADLINE_S} s (hangs on the input)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"bare {name} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def two(isolated_env: Path) -> tuple[Registry, str, str]:
    """A registry with a good entry and a second one whose entry.json each test spoils."""
    reg = Registry(isolated_env)
    good = make_entry(reg, "cat", "ink", size=10)
    bad = make_entry(reg, "dog", "ink", size=10)
    return reg, good.id, bad.id


def _spoil_fifo(path: Path, original: str) -> None:
    os.mkfifo(path)


def _spoil_dev_zero_link(path: Path, original: str) -> None:
    path.symlink_to("/dev/zero")


def _spoil_char_device(path: Path, original: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    zero = os.stat("/dev/zero")
    os.mknod(path, 0o600 | 0o020000, zero.st_rdev)


def _spoil_deep(path: Path, original: str) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def _spoil_huge(path: Path, original: str) -> None:
    with open(path, "wb") as handle:
        handle.truncate(17 << 20)  # sparse: costs no disk


def _spoil_nan(path: Path, original: str) -> None:
    path.write_text(json.dumps(json.loads(original)).replace('"final_loss": 0.25', '"final_loss": NaN'))


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (_spoil_fifo, "entry.json is not a regular file"),
        (_spoil_dev_zero_link, "entry.json is a symbolic link"),
        (_spoil_char_device, "entry.json is not a regular file"),
        (_spoil_deep, "entry.json is nested too deeply to be an entry"),
        (_spoil_huge, "entry.json is 17825792 bytes, over the 16 MiB limit"),
        (_spoil_nan, "entry.json holds NaN, which is not JSON"),
    ],
    ids=["fifo", "dev-zero-link", "char-device", "deep", "huge", "nan"],
)
def test_one_bad_entry_json_never_breaks_the_others(cli, two, spoil: Any, why: str) -> None:
    reg, good, bad = two
    target = reg.entries_dir / bad / "entry.json"
    original = target.read_text()
    target.unlink()
    spoil(target, original)
    listing = within_deadline(cli, "list")
    assert listing.exit_code == 0 and good in listing.stdout and f"DAMAGED: {why}" in listing.stdout
    rows = _strict_json(within_deadline(cli, "list", "--json").stdout)
    assert {r["id"]: r["damaged"] for r in rows} == {good: None, bad: why}
    shown = within_deadline(cli, "show", bad, "--json")
    assert _strict_json(shown.stdout)["damaged"] == why
    assert within_deadline(cli, "show", good, "--verify").exit_code == 0
    doctor = within_deadline(cli, "doctor", "--json")
    assert why in doctor.stdout
    assert within_deadline(cli, "rm", bad, "--yes").exit_code == 0
    assert reg.ids() == [good]


def test_infinite_number_is_damaged_not_printed(cli, two) -> None:
    reg, _, bad = two
    path = reg.entries_dir / bad / "entry.json"
    path.write_text(path.read_text().replace('"final_loss": 0.25', '"final_loss": 1e999'))
    rows = _strict_json(cli("list", "--json").stdout)
    assert [r["damaged"] for r in rows if r["id"] == bad] == [
        "entry.json holds the number 1e999, too large for JSON readers"
    ]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_config_that_is_not_a_file_is_one_line(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    path = tmp_path / "config.fifo"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    monkeypatch.setenv("UNZIPLORA_CONFIG", str(path))
    result = within_deadline(cli, "list")
    assert result.exit_code == 1
    assert (
        result.stderr == f"error: config file {path} is not a regular file; point UNZIPLORA_CONFIG at a config.toml.\n"
    )


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_input_image_that_is_not_a_file_is_one_line(cli, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cat.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    result = within_deadline(
        cli, "train", str(path), "--subject", "cat", "--style", "ink", "--base", "tiny-sdxl", "--steps", "1"
    )
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: cannot read {path}: not a regular file (a pipe or a device?); pass an image file\n"


# -- hostile LoRA files given to import ---------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lora_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A content LoRA (kohya) and a style LoRA (diffusers) exported from one tiny entry."""
    from transfer_helpers import make_entry as make_trained_entry

    from unziplora.transfer import export_entry

    folder = tmp_path_factory.mktemp("hostile")
    entry = make_trained_entry(Registry(folder / "reg"), subject="fox", style="chalk art", seed=7)
    content = export_entry(entry, fmt="kohya", part="content", dtype="fp32", cwd=folder).path
    style = export_entry(entry, fmt="diffusers", part="style", dtype="fp32", cwd=folder).path
    return content, style


def _refused(cli, *args: str) -> str:
    result = cli("import", *args, "--base", "tiny-sdxl", "--subject", "fox", "--style", "chalk")
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("error: ").rstrip("\n")


def _first(tensors: dict[str, Any], suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.to(torch.int8), "is int8; a LoRA holds float16, bfloat16 or float32 values"),
        (lambda t: t > 0, "is bool; a LoRA holds"),
        (lambda t: t.to(torch.complex64), "is complex64; a LoRA holds"),
        (lambda t: t.to(torch.float8_e4m3fn), "is float8_e4m3fn; a LoRA holds"),
        (lambda t: torch.full_like(t, float("nan")), "holds NaN or infinite values"),
        (lambda t: torch.full_like(t, float("inf")), "holds NaN or infinite values"),
        (lambda t: t[:0], "is empty (shape (0, "),
        (lambda t: t.reshape(-1), "only linear LoRAs can be imported"),
    ],
    ids=["int8", "bool", "complex", "fp8", "nan", "inf", "empty", "rank-1"],
)
def test_import_refuses_bad_tensors(cli, tmp_path: Path, lora_pair, change: Any, expected: str) -> None:
    from unziplora.formats.io import read_safetensors, write_safetensors

    content, style = lora_pair
    tensors, meta = read_safetensors(content)
    key = _first(tensors, ".lora_down.weight")
    tensors[key] = change(tensors[key])
    write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    assert expected in _refused(cli, str(tmp_path / "bad.safetensors"), str(style))


def test_import_refuses_nan_alpha(cli, tmp_path: Path, lora_pair) -> None:
    from unziplora.formats.io import read_safetensors, write_safetensors

    content, style = lora_pair
    tensors, meta = read_safetensors(content)
    tensors[_first(tensors, ".alpha")] = torch.tensor(float("nan"))
    write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    assert "holds NaN or infinite values" in _refused(cli, str(tmp_path / "bad.safetensors"), str(style))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"unet.lora_alpha": "x"}, "has lora_alpha 'x'; it must be a positive number"),
        ({"unet.lora_alpha": 0}, "has lora_alpha 0; it must be a positive number"),
        ({"unet.lora_alpha": 4, "unet.alpha_pattern": {"(": 2}}, "alpha_pattern '(' is not a valid pattern"),
        ({"unet.lora_alpha": 4, "unet.alpha_pattern": [1]}, "alpha_pattern is not an object"),
    ],
    ids=["alpha-text", "alpha-zero", "bad-regex", "pattern-list"],
)
def test_import_refuses_bad_adapter_metadata(cli, tmp_path: Path, lora_pair, config: dict, expected: str) -> None:
    from unziplora.formats.io import read_safetensors, write_safetensors

    content, style = lora_pair
    tensors, meta = read_safetensors(style)
    meta = dict(meta, lora_adapter_metadata=json.dumps(config))
    write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    assert expected in _refused(cli, str(content), str(tmp_path / "bad.safetensors"))


def test_huge_subject_is_refused_early(cli, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(tmp_path / "cat.png")
    subject = "cat " * 12_500_000  # 50 MB
    result = within_deadline(
        cli, "train", str(tmp_path / "cat.png"), "--subject", subject, "--style", "ink", "--base", "tiny-sdxl"
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "error: a subject, style or prompt text is 50000000 characters long, over the limit of 2000 "
        "(the text encoders read only about 77 words); shorten it\n"
    )


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("files", ["content.safetensors"], "entry.json: 'files' is missing or not an object"),
        (
            "files",
            {"content.safetensors": {"sha256": "ab", "bytes": -1}},
            "entry.json: file content.safetensors lacks sha256 or bytes",
        ),
        ("base", {"ref": ["x"]}, "entry.json: 'base.ref' is not text"),
        ("base", "tiny", "entry.json: 'base' is not an object"),
    ],
)
def test_wrong_field_types_mark_one_entry_damaged(cli, two, field: str, value: Any, why: str) -> None:
    reg, good, bad = two
    path = reg.entries_dir / bad / "entry.json"
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    rows = _strict_json(cli("list", "--json").stdout)
    assert {r["id"]: r["damaged"] for r in rows} == {good: None, bad: why}
    result = cli("compose", "--content", bad, "--style", good, "-o", "out")
    assert result.exit_code == 1 and result.stderr.startswith(f"error: entry {bad} is damaged: {why}")


def test_hostile_run_json_is_skipped(cli, isolated_env: Path) -> None:
    reg = Registry(isolated_env)
    make_entry(reg)
    for name, text in {
        "a-run-0001": "[1, 2]",
        "b-run-0002": '{"prompts": [1], "config": 3}',
        "c-run-0003": "[" * 100_000,
    }.items():
        (reg.runs_dir / name).mkdir(parents=True)
        (reg.runs_dir / name / "run.json").write_text(text)
    os.mkfifo(reg.runs_dir / "d-run-0004")
    result = within_deadline(cli, "list", "--runs")
    assert result.exit_code == 0 and result.stdout.startswith("b-run-0002  - / -  step 0/?"), result.output


# -- a full disk --------------------------------------------------------------------------------


def _small_tmpfs(folder: Path, size: str):
    """Mount a tmpfs of ``size`` on ``folder`` (root only; the test is skipped otherwise)."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs (mounted only when running as root; skipped otherwise)."""
    yield from _small_tmpfs(tmp_path / "disk", "64k")


@pytest.mark.parametrize("size", ["300k", "900k"])  # full while staging the LoRAs / while writing the rest
def test_train_on_a_full_disk_is_one_line_and_leaves_no_entry(cli, tmp_path: Path, size: str) -> None:
    from PIL import Image

    image = tmp_path / "cat.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(image)
    for disk in _small_tmpfs(tmp_path / "disk", size):
        reg = disk / "reg"
        result = cli(
            "train",
            str(image),
            "--subject",
            "cat",
            "--style",
            "flat",
            "--base",
            "tiny-sdxl",
            "--resolution",
            "64",
            "--steps",
            "2",
            "--rank",
            "4",
            "--preview-steps",
            "1",
            "--registry",
            str(reg),
            "-q",
        )
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines()[-1] == (
            "error: cannot write a safetensors file: no space left on the device; free some disk space and run the command again."
        )
        assert "Traceback" not in result.stderr
        assert not any((reg / "entries").iterdir()) and not any((reg / ".tmp").iterdir())


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(cli, isolated_env: Path, tiny_disk: Path) -> None:
    from transfer_helpers import make_entry as make_trained_entry

    entry = make_trained_entry(Registry(isolated_env), subject="fox", style="chalk art", seed=7)
    result = cli("export", entry.id, "--format", "diffusers", "--dtype", "fp32", "-o", str(tiny_disk / "out" / "fox"))
    assert result.exit_code == 1, result.output
    assert (
        result.stderr.startswith(f"error: cannot write {tiny_disk / 'out' / 'fox'}") and result.stderr.count("\n") == 1
    )
    assert "no space left on the device" in result.stderr
    assert list(tiny_disk.iterdir()) == []  # no .tmp file, no empty folders


def test_png_on_a_full_disk_leaves_no_file(tiny_disk: Path) -> None:
    import numpy as np
    from PIL import Image

    from unziplora.errors import OutputError
    from unziplora.generate.pngmeta import save_png

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    with pytest.raises(OutputError, match="cannot write .*0001.png: No space left on device"):
        save_png(noise, tiny_disk / "0001.png", {"seed": 1})
    assert list(tiny_disk.iterdir()) == []


def test_safetensors_disk_full_error_is_one_line(tiny_disk: Path) -> None:
    """train and checkpoints write with safetensors directly: its full-disk error maps to one line."""
    from safetensors.torch import save_file

    from unziplora_cli._errors import exit_code_for, message_for

    with pytest.raises(Exception) as caught:  # SafetensorError is what is under test
        save_file({"w": torch.zeros(100_000)}, str(tiny_disk / "x.safetensors"))
    assert type(caught.value).__name__ == "SafetensorError"
    assert exit_code_for(caught.value) == 1
    assert message_for(caught.value) == (
        "cannot write a safetensors file: no space left on the device; free some disk space and run the command again."
    )


def test_export_into_a_read_only_folder_is_one_plain_line(cli, isolated_env: Path, tmp_path: Path) -> None:
    import subprocess

    from transfer_helpers import make_entry as make_trained_entry

    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    entry = make_trained_entry(Registry(isolated_env), subject="fox", style="chalk art", seed=7)
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = cli("export", entry.id, "-o", str(folder / "x.safetensors"))
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot write {folder / 'x.safetensors'}: the folder is on a read-only file system; choose another -o.\n"
    )
