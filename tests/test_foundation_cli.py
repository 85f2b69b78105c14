"""The CLI frame: fast start, passthrough to Info-ZIP, error lines, doctor, config precedence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from unziplora_cli import passthrough
from unziplora_cli.app import COMMAND_MODULES, COMMAND_NAMES, build_app

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors.torch")
VENV_BIN = Path(sys.executable).parent


def _fresh_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env or os.environ.copy())
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["doctor", "--help"]])
def test_start_imports_no_heavy_module(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from unziplora_cli.app import build_app\n"
        f"try:\n    build_app('unzip')({argv!r}, prog_name='unzip')\n"
        "except SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert _fresh_python(code).strip().splitlines()[-1] == "[]"


def test_completion_request_imports_no_heavy_module() -> None:
    env = dict(os.environ, _UNZIP_COMPLETE="complete_bash", COMP_WORDS="unzip do", COMP_CWORD="1")
    code = (
        "import sys\nfrom unziplora_cli.app import build_app\n"
        "try:\n    build_app('unzip')([], prog_name='unzip', complete_var='_UNZIP_COMPLETE')\n"
        "except SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = _fresh_python(code, env)
    assert "doctor" in out
    assert out.strip().splitlines()[-1] == "HEAVY []"


# What the light commands must never load: the model stack, and pydantic (Typer's converter; see _coerce.py).
LIGHT_FORBIDDEN = (*HEAVY, "huggingface_hub", "pydantic")
LIGHT_CALLS = (
    ["--help"],
    ["list"],
    ["list", "--json", "--sort", "name", "--limit", "5", "--filter", "cat"],
    ["list", "--runs"],
    ["show", "ENTRY"],
    ["rm", "ENTRY", "--dry-run"],
    ["rm", "--help"],
)


def test_light_commands_import_neither_torch_nor_pydantic(isolated_env: Path) -> None:
    """Through the console script's own path (passthrough check, one command built), in one fresh process."""
    from registry_helpers import make_entry

    from unziplora.registry import Registry

    entry = make_entry(Registry.from_settings(), "cat", "ink")
    calls = [[entry.id if a == "ENTRY" else a for a in argv] for argv in LIGHT_CALLS]
    code = (
        "import os, sys\nfrom unziplora_cli import app\n"
        f"for argv in {calls!r} + [None]:\n"
        "    if argv is None:  # TAB completion of an entry id, as bash asks for it\n"
        "        os.environ.update(_UNZIP_COMPLETE='complete_bash', COMP_WORDS='unzip show c', COMP_CWORD='2')\n"
        "        argv = []\n"
        "    sys.argv = ['unzip', *argv]\n"
        "    try:\n        app.main()\n    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (argv, exc.code)\n"
        f"print('LOADED', sorted(m for m in {LIGHT_FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = _fresh_python(code)
    assert entry.id in out  # show, rm --dry-run and the completion all saw the entry
    assert out.strip().splitlines()[-1] == "LOADED []"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--json", "list"], {}, "list"),
        (["--registry", "x", "show", "a"], {}, "show"),
        (["--help"], {}, None),  # the root's help lists every command
        (["trian"], {}, None),  # a typo: every command, so Click can suggest one
        ([], {"COMP_WORDS": "unzip show ", "COMP_CWORD": "2"}, "show"),
        ([], {"COMP_WORDS": "unzip sh", "COMP_CWORD": "1"}, None),  # completing the command name itself
        ([], {"_TYPER_COMPLETE_ARGS": "unzip rm c"}, "rm"),
        ([], {"_TYPER_COMPLETE_ARGS": "unzip li"}, None),
    ],
)
def test_only_the_named_command_is_built(argv, env, expected, monkeypatch: pytest.MonkeyPatch) -> None:
    from unziplora_cli.app import command_named

    if env:
        monkeypatch.setenv("_UNZIP_COMPLETE", "complete_bash")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert command_named(argv) == expected


def test_command_names_match_registered_commands() -> None:
    app = build_app()
    import typer.main

    group = typer.main.get_command(app)
    assert set(group.commands) == COMMAND_NAMES
    assert set(COMMAND_MODULES)  # every module registers at least one command


def test_version_and_help(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("unziplora ")
    result = cli("--help")
    assert result.exit_code == 0 and "doctor" in result.stdout


def test_usage_error_is_one_line_exit_2(cli) -> None:
    result = cli("doctor", "--no-such-flag")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: No such option: --no-such-flag. See 'unzip doctor --help'.\n"


@pytest.mark.skipif(shutil.which("unzip", path="/usr/bin:/bin") is None, reason="Info-ZIP unzip not installed")
def test_passthrough_extracts_a_real_zip(tmp_path: Path) -> None:
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("hello.txt", "hello from zip\n")
        zf.writestr("dir/inner.txt", "inner\n")
    ours = VENV_BIN / "unzip"
    assert ours.exists(), "the project must be installed (pip install -e .)"
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin")
    result = subprocess.run(
        [str(ours), str(archive), "-d", str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello from zip\n"
    assert (tmp_path / "out" / "dir" / "inner.txt").read_text() == "inner\n"
    # Info-ZIP's own option before the archive also passes through.
    listing = subprocess.run([str(ours), "-l", str(archive)], capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "hello.txt" in listing.stdout


def test_unziplora_never_passes_through(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.txt", "x")
    result = subprocess.run([str(VENV_BIN / "unziplora"), str(archive)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: No such command")
    assert not (tmp_path / "x.txt").exists()


def test_no_other_unzip_gives_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(VENV_BIN))
    result = subprocess.run([str(VENV_BIN / "unzip"), "archive.zip"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "error: 'archive.zip' is not an unzip command (see 'unzip --help'); to extract zip archives, "
        "install Info-ZIP unzip (e.g. apt-get install unzip).\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list"], False),
        (["--registry", "/tmp/x", "doctor"], False),
        (["-q", "archive.zip"], True),
        (["-l", "archive.zip"], True),
        (["archive.zip", "-d", "out"], True),
        (["--version"], False),
        ([], False),
    ],
)
def test_passthrough_decision(argv: list[str], expected: bool) -> None:
    assert passthrough.wants_passthrough(argv, {"list", "doctor"}) is expected


def test_doctor_json_ok_with_tiny_base(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNZIPLORA_BASE_MODEL", "tiny-sdxl")
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    names = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert {"torch", "diffusers", "device", "config", "registry", "base model"} <= set(names)
    assert names["device"]["detail"].startswith("cpu, fp32")
    for name, ref in (("eval CLIP", "openai/clip-vit-large-patch14"), ("eval DINOv2", "facebook/dinov2-base")):
        assert names[name]["status"] == "ok"  # optional: absent from the cache is not a failure
        assert f"`hf download {ref}`" in names[name]["detail"] or "cached at" in names[name]["detail"]


def test_doctor_fails_when_default_base_is_not_cached(cli) -> None:
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    base = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")
    assert base["status"] == "fail"
    assert "hf download stabilityai/stable-diffusion-xl-base-1.0" in base["detail"]


def test_doctor_reports_broken_config(cli, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('device = "cpu\n')
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    check = json.loads(result.stdout)["checks"][0]
    assert check["name"] == "config" and check["status"] == "fail"
    assert f"config file {tmp_path / 'config.toml'} is not valid TOML" in check["detail"]
    assert "line 1" in check["detail"]
