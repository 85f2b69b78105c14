"""Usage mistakes: one line in plain words, exit 2; `unzip` alone is a request for help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unziplora_cli import passthrough
from unziplora_cli._usage import option_hint, with_full_stop

VENV_BIN = Path(sys.executable).parent


def test_bare_unzip_prints_help_not_an_error(cli) -> None:
    result = cli()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: unzip") and "train" in result.stdout
    assert "error" not in result.stderr


def test_typo_command_suggests_without_stray_punctuation(cli) -> None:
    result = cli("trian", "x.png")
    assert result.exit_code == 2
    assert result.stderr == "error: No such command 'trian'. Did you mean 'train'? See 'unzip --help'.\n"


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("--lr", "unziplora calls it --content-lr or --style-lr"),
        ("--learning_rate", "unziplora calls it --content-lr or --style-lr"),
        ("--network_dim", "unziplora calls it --rank"),
        ("--max_train_steps", "unziplora calls it --steps"),
        ("--stpes", "did you mean --steps or --style?"),
    ],
)
def test_other_trainers_vocabulary_points_at_ours(cli, tmp_path: Path, option: str, hint: str) -> None:
    result = cli("train", option, "3", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert result.stderr == f"error: No such option: {option} ({hint}). See 'unzip train --help'.\n"
    assert not (tmp_path / "registry").exists()


def test_hints_only_name_options_the_command_has() -> None:
    assert option_hint("--network_dim", ["--json", "--filter"]) is None
    assert option_hint("--jsno", ["--json", "--filter"]) == "did you mean --json?"
    assert (
        option_hint("--gradient_checkpointing", ["--gradient-checkpointing"])
        == "did you mean --gradient-checkpointing?"
    )


def test_full_stop_once() -> None:
    assert with_full_stop("Did you mean 'train'?") == "Did you mean 'train'?"
    assert with_full_stop("No such option: --x") == "No such option: --x."
    assert with_full_stop("Missing argument.") == "Missing argument."


def test_typo_stays_ours_unless_an_archive_has_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = {"train", "list", "show"}
    monkeypatch.chdir(tmp_path)
    assert passthrough.wants_passthrough(["trian", "x.png"], commands) is False
    assert passthrough.wants_passthrough(["archive.zip"], commands) is True
    (tmp_path / "trian.zip").write_bytes(b"PK")
    assert passthrough.wants_passthrough(["trian"], commands) is True  # Info-ZIP's: trian.zip exists


def test_typo_through_the_unzip_script_is_not_handed_to_info_zip(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin")
    result = subprocess.run(
        [str(VENV_BIN / "unzip"), "trian", "x.png"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == "error: No such command 'trian'. Did you mean 'train'? See 'unzip --help'.\n"
