"""The registry never touches what is not its own: foreign folders, symlinks planted inside it.

Every case puts canary files outside the registry and checks they survive, byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from registry_helpers import make_entry

from unziplora.registry import Registry
from unziplora.registry.marker import MARKER


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the registry holding canaries (a file and a sub-folder with a file)."""
    folder = tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    (folder / "canary.txt").write_text("keep me")
    (folder / "sub" / "canary2.txt").write_text("keep me too")
    return folder


def _intact(folder: Path) -> bool:
    return (folder / "canary.txt").read_text() == "keep me" and (
        folder / "sub" / "canary2.txt"
    ).read_text() == "keep me too"


def _reg(isolated_env: Path) -> Registry:
    reg = Registry(isolated_env)
    make_entry(reg)
    return reg


def test_new_registry_gets_a_marker(cli, isolated_env: Path) -> None:
    reg = _reg(isolated_env)
    marker = json.loads((reg.root / MARKER).read_text())
    assert marker == {"format": "unziplora-registry", "version": 1}
    assert cli("list", "-q").exit_code == 0


def test_foreign_folder_is_refused_with_canaries_kept(cli, outside: Path) -> None:
    # A project folder with its own .tmp/ and .trash/: adopting it would sweep them.
    for name in (".tmp", ".trash"):
        (outside / name).mkdir()
        (outside / name / "mine.txt").write_text("user file")
    for args in (("list",), ("rm", "x", "--yes"), ("show", "x")):
        result = cli(*args, "--registry", str(outside))
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"error: {outside} is not an unziplora registry (no {MARKER}")
        assert f"run 'unzip init {outside}'" in result.stderr and len(result.stderr.splitlines()) == 1
    assert _intact(outside) and (outside / ".tmp" / "mine.txt").exists() and (outside / ".trash" / "mine.txt").exists()
    assert sorted(p.name for p in outside.iterdir()) == [".tmp", ".trash", "canary.txt", "sub"]
    # init refuses too: its own .tmp/.trash would be swept
    result = cli("init", str(outside))
    assert result.exit_code == 1 and "the registry would delete what is there" in result.stderr
    assert _intact(outside) and (outside / ".tmp" / "mine.txt").exists()


def test_init_adopts_a_folder_with_other_files(cli, outside: Path) -> None:
    result = cli("init", str(outside))
    assert result.exit_code == 0 and result.stderr == f"{outside} is now an unziplora registry.\n"
    make_entry(Registry(outside))
    assert cli("list", "-q", "--registry", str(outside)).stdout.count("\n") == 1
    assert _intact(outside)
    assert cli("init", str(outside)).stderr == f"{outside} is already an unziplora registry.\n"


def test_init_refuses_the_filesystem_root(cli) -> None:
    result = cli("init", "/")
    assert (
        result.exit_code == 1
        and result.stderr == "error: refusing to make the file-system root / a registry; choose a folder\n"
    )
    assert not Path("/", MARKER).exists()


def test_registry_root_is_refused(cli) -> None:
    result = cli("rm", "x", "--yes", "--registry", "/")
    assert result.exit_code == 1 and "/ is not an unziplora registry" in result.stderr
    assert "unzip init" not in result.stderr  # init refuses / as well: do not suggest it


def test_old_registry_without_marker_is_adopted(cli, isolated_env: Path) -> None:
    reg = _reg(isolated_env)
    (reg.root / MARKER).unlink()
    (reg.root / "runs").mkdir()
    assert cli("list", "-q").stdout.strip() == reg.ids()[0]
    make_entry(reg, "dog", "ink")
    assert (reg.root / MARKER).is_file() and len(reg.ids()) == 2


def test_old_registry_with_a_foreign_file_is_refused(cli, isolated_env: Path) -> None:
    reg = _reg(isolated_env)
    (reg.root / MARKER).unlink()
    (reg.root / ".trash" / "notes.txt").write_text("x")
    result = cli("list")
    assert result.exit_code == 1 and "(no unziplora-registry.json, and .trash/ holds 'notes.txt')" in result.stderr
    assert (reg.root / ".trash" / "notes.txt").exists()


@pytest.mark.parametrize("name", [".trash", ".tmp"])
def test_symlinked_trash_or_tmp_is_never_emptied(cli, isolated_env: Path, outside: Path, name: str) -> None:
    reg = _reg(isolated_env)
    target = reg.root / name
    for item in target.iterdir():
        item.unlink()
    target.rmdir()
    target.symlink_to(outside, target_is_directory=True)
    entry_id = reg.ids()[0]
    result = cli("rm", entry_id, "--yes")
    assert result.exit_code == 1 and result.stderr.startswith(
        f"error: {target} is a symbolic link; the registry never follows links"
    )
    assert _intact(outside) and reg.ids() == [entry_id]
    with pytest.raises(OSError, match="symbolic link"):
        make_entry(reg, "dog", "ink")
    assert _intact(outside) and sorted(p.name for p in outside.iterdir()) == ["canary.txt", "sub"]


def test_symlinks_inside_trash_and_tmp_are_unlinked_not_followed(isolated_env: Path, outside: Path) -> None:
    reg = _reg(isolated_env)
    (reg.trash_dir / "x-1234.deadbeef").symlink_to(outside, target_is_directory=True)
    (reg.tmp_dir / "y-1234").symlink_to(outside, target_is_directory=True)
    (reg.tmp_dir / "y-1234.lock").symlink_to(outside / "canary.txt")
    make_entry(reg, "dog", "ink")  # sweeps
    assert _intact(outside) and list(reg.trash_dir.iterdir()) == [] and list(reg.tmp_dir.iterdir()) == []


def test_symlinked_entries_folder_is_refused(cli, isolated_env: Path, tmp_path: Path) -> None:
    reg = _reg(isolated_env)
    other = Registry(tmp_path / "other")
    victim = make_entry(other, "dog", "ink")
    os.rename(reg.entries_dir, tmp_path / "moved")
    reg.entries_dir.symlink_to(other.entries_dir, target_is_directory=True)
    for args in (("rm", victim.id, "--yes"), ("list",), ("show", victim.id)):
        result = cli(*args)
        assert result.exit_code == 1 and f"{reg.entries_dir} is a symbolic link" in result.stderr, args
    with pytest.raises(OSError, match="symbolic link"):
        make_entry(reg, "eel", "ink")
    assert other.ids() == [victim.id] and other.get(victim.id).damaged is None


def test_symlinked_lock_is_refused(isolated_env: Path, tmp_path: Path) -> None:
    reg = _reg(isolated_env)
    reg.lock_path.unlink()
    outside_lock = tmp_path / "elsewhere.lock"
    reg.lock_path.symlink_to(outside_lock)
    with pytest.raises(OSError, match="cannot open the registry lock"):
        make_entry(reg, "dog", "ink")
    assert not outside_lock.exists()


def test_symlinked_runs_is_refused(cli, isolated_env: Path, outside: Path) -> None:
    reg = _reg(isolated_env)
    reg.runs_dir.symlink_to(outside, target_is_directory=True)
    result = cli("list", "--runs")
    assert result.exit_code == 1 and f"{reg.runs_dir} is not a plain folder" in result.stderr
    with pytest.raises(OSError, match="runs is a symbolic link"):
        make_entry(reg, "dog", "ink")
    assert _intact(outside)


def test_symlinked_entry_folder_is_ignored(cli, isolated_env: Path, tmp_path: Path) -> None:
    reg = _reg(isolated_env)
    other = Registry(tmp_path / "other")
    victim = make_entry(other, "dog", "ink")
    (reg.entries_dir / victim.id).symlink_to(victim.path, target_is_directory=True)
    assert victim.id not in cli("list", "-q").stdout
    assert cli("rm", victim.id, "--yes").exit_code == 1
    assert other.get(victim.id).damaged is None


def test_verify_reports_a_symlinked_payload_and_subfolder(cli, isolated_env: Path, tmp_path: Path) -> None:
    reg = Registry(isolated_env)

    def write(folder: Path) -> None:
        (folder / "previews").mkdir()
        (folder / "previews" / "1.png").write_bytes(b"png")
        (folder / "content.safetensors").write_bytes(b"abc")

    entry = reg.create({}, write, subject="cat", style="ink")
    stolen = tmp_path / "stolen"
    os.rename(entry.path / "previews", stolen)
    (entry.path / "previews").symlink_to(stolen, target_is_directory=True)
    result = cli("show", entry.id, "--verify")
    assert result.exit_code == 1 and "verify:      FAILED" in result.stdout
    assert "previews/1.png lies under previews, which is not a plain folder" in result.stdout
    (entry.path / "content.safetensors").rename(tmp_path / "c")
    (entry.path / "content.safetensors").symlink_to(tmp_path / "c")
    assert "content.safetensors is not a regular file" in cli("show", entry.id, "--verify").stdout


def test_list_never_touches_a_symlinked_entry_json(cli, isolated_env: Path, tmp_path: Path) -> None:
    reg = _reg(isolated_env)
    entry = reg.list()[0]
    outside_json = tmp_path / "outside.json"
    outside_json.write_bytes((entry.path / "entry.json").read_bytes())
    os.utime(outside_json, ns=(1_000_000_000, 1_000_000_000))
    (entry.path / "entry.json").unlink()
    (entry.path / "entry.json").symlink_to(outside_json)
    result = cli("list")
    assert result.exit_code == 0 and "DAMAGED: entry.json is a symbolic link" in result.stdout
    assert outside_json.stat().st_mtime_ns == 1_000_000_000


@pytest.mark.parametrize("where", ["file", "under-file", "long-name"])
def test_unusable_registry_path_is_one_line(cli, tmp_path: Path, where: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    path = {"file": afile, "under-file": afile / "reg", "long-name": tmp_path / ("x" * 300)}[where]
    for args in (("list",), ("rm", "x", "--yes")):
        result = cli(*args, "--registry", str(path))
        assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), (
            result.output
        )
    assert afile.read_text() == "x"


def test_control_characters_are_shown_visibly(cli, isolated_env: Path) -> None:
    reg = Registry(isolated_env)
    evil = "\x1b[2J\x1b]0;pwned\x07"
    entry = make_entry(
        reg,
        f"cat{evil}",
        "ink\x9b",
        sources=[{"name": f"img{evil}.png", "sha256": "ab" * 32, "bytes": 1}],
        provenance={"header": f"ss_output_name {evil}"},
    )
    raw = json.loads((entry.path / "entry.json").read_text())
    raw["name"] = f"name{evil}\u202e"
    (entry.path / "entry.json").write_text(json.dumps(raw))
    outputs = [cli("list").stdout, cli("show", entry.id).stdout, cli("rm", entry.id, "--dry-run").stdout]
    for out in outputs:
        assert not any(ch in out for ch in "\x1b\x07\x9b\u202e"), out
        assert "\\x1b[2J\\x1b]0;pwned\\x07" in out
    assert "\\u202e" in outputs[0] and "ink\\x9b" in outputs[1] and "img\\x1b" in outputs[1]
    assert "ss_output_name \\u001b" in outputs[1]  # an object value is shown as JSON, which escapes it
