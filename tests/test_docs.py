"""The README, completions and examples stay true to the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unziplora_cli import docgen

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def test_readme_reference_and_completion_scripts_match_the_code() -> None:
    assert docgen.outdated() == [], "run: python -m unziplora_cli.docgen --write"


@pytest.mark.parametrize("command", docgen.command_names())
def test_every_help_ends_with_real_examples(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    tail = result.stdout.split("Examples:", 1)
    assert len(tail) == 2, f"unzip {command} --help has no examples"
    examples = [line.strip() for line in tail[1].splitlines() if "unzip " in line]
    assert len(examples) >= 2, tail[1]
    assert any(f"unzip {command}" in e for e in examples)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_tab_completion_lists_entry_ids(isolated_env: Path) -> None:
    for name in ("cat-sketch-1a2b", "cow-ink-3c4d", "dog-oil-5e6f"):
        (isolated_env / "entries" / name).mkdir(parents=True)
    script = (
        f"source {ROOT / 'completions' / 'unzip.bash'}\n"
        "COMP_WORDS=(unzip show c); COMP_CWORD=2\n"
        "_unzip_completion unzip\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cat-sketch-1a2b", "cow-ink-3c4d"]


@pytest.mark.parametrize(
    ("shell", "marker", "extra"),
    [
        ("zsh", "#compdef unzip", {}),
        ("fish", "complete --command unzip", {"_TYPER_COMPLETE_FISH_ACTION": "get-args"}),
    ],
)
def test_zsh_and_fish_files_hold_their_own_shells_script_and_it_lists_entry_ids(
    isolated_env: Path, shell: str, marker: str, extra: dict[str, str]
) -> None:
    """Each shell's file speaks that shell's protocol (bash's script in the zsh file did nothing)."""
    script = (ROOT / "completions" / f"unzip.{shell}").read_text(encoding="utf-8")
    assert script.startswith(marker) and f"complete_{shell}" in script
    for name in ("cat-sketch-1a2b", "cow-ink-3c4d", "dog-oil-5e6f"):
        (isolated_env / "entries" / name).mkdir(parents=True)
    env = dict(os.environ, _UNZIP_COMPLETE=f"complete_{shell}", _TYPER_COMPLETE_ARGS="unzip show c", **extra)
    result = subprocess.run([str(VENV_BIN / "unzip")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cat-sketch-1a2b" in result.stdout and "cow-ink-3c4d" in result.stdout
    assert "dog-oil-5e6f" not in result.stdout


@pytest.mark.slow
def test_walkthrough_runs_green(tmp_path: Path, tiny_cache: Path) -> None:
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        TMPDIR=str(tmp_path),
        UNZIPLORA_CACHE=str(tiny_cache),
    )
    env.pop("UNZIPLORA_HOME", None)
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "walkthrough.sh")], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "walkthrough finished" in result.stdout
    work = next(tmp_path.glob("unziplora-walkthrough.*"))
    assert (work / "export" / "lighthouse_style.safetensors").is_file()
    assert (work / "export" / "lighthouse_both" / "pytorch_lora_weights.safetensors").is_file()
    assert (work / "out" / "mix" / "sheet.png").is_file()
