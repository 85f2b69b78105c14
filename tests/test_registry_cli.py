"""``unzip list``, ``unzip show``, ``unzip rm`` against a temp registry: options, exact lines, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import bump_mtime, make_entry

from unziplora.registry import SCHEMA_VERSION, Registry, ids
from unziplora_cli.commands import registry as registry_cmd

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors.torch")
RECORD_KEYS = {
    "id",
    "schema_version",
    "name",
    "created",
    "tool_version",
    "kind",
    "imported",
    "subject",
    "style",
    "prompts",
    "rare_token",
    "sources",
    "base",
    "settings",
    "figures",
    "provenance",
    "files",
    "path",
    "size_bytes",
    "damaged",
}


@pytest.fixture
def reg(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    return Registry.from_settings()


@pytest.fixture
def three(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """cat-sketch-3f2a (oldest, middle size), cat-ink-1b2c (largest), car-pop-9e0f (newest, smallest)."""
    suffixes = iter(["3f2a", "1b2c", "9e0f"])
    monkeypatch.setattr(ids, "random_suffix", lambda hex_digits=4: next(suffixes))
    made = [
        make_entry(reg, "cat", "sketch", size=2000),
        make_entry(reg, "cat", "ink", size=5000),
        make_entry(reg, "car", "pop", size=100),
    ]
    for age, entry in zip((7200, 3600, 60), made):  # created 2 hours, 1 hour and 1 minute ago
        raw = json.loads((entry.path / "entry.json").read_text())
        from datetime import datetime, timedelta, timezone

        raw["created"] = (datetime.now(timezone.utc) - timedelta(seconds=age)).isoformat(timespec="seconds")
        (entry.path / "entry.json").write_text(json.dumps(raw))
    return [e.id for e in made]


def _ids(stdout: str) -> list[str]:
    return stdout.split()


# -- list --------------------------------------------------------------------------------------


def test_list_empty_registry(cli, reg: Registry) -> None:
    result = cli("list")
    assert result.exit_code == 0 and result.stdout == ""
    assert (
        result.stderr
        == f"No entries yet in {reg.root}. Make one with: unzip train IMAGE --subject WORDS --style WORDS\n"
    )
    assert cli("list", "-q").stdout == "" and cli("list", "-q").stderr == ""
    assert json.loads(cli("list", "--json").stdout) == []


def test_list_table(cli, three: list[str]) -> None:
    result = cli("list")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SUBJECT", "STYLE", "BASE", "RANK", "STEPS", "SIZE", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [
        "car-pop-9e0f",
        "cat-ink-1b2c",
        "cat-sketch-3f2a",
    ]  # newest first
    row = lines[1].split()
    assert (
        row[1:7] == ["car-pop", "car", "pop", "tiny-sdxl", "4", "8"]
        and row[8] == "KiB"
        and row[9:] == ["1", "minute", "ago"]
    )
    assert lines[3].endswith("2 hours ago") and all(line == line.rstrip() for line in lines)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["car-pop-9e0f", "cat-ink-1b2c", "cat-sketch-3f2a"]),
        (("--reverse",), ["cat-sketch-3f2a", "cat-ink-1b2c", "car-pop-9e0f"]),
        (("--sort", "name"), ["car-pop-9e0f", "cat-ink-1b2c", "cat-sketch-3f2a"]),
        (("--sort", "name", "--reverse"), ["cat-sketch-3f2a", "cat-ink-1b2c", "car-pop-9e0f"]),
        (("--sort", "size"), ["cat-ink-1b2c", "cat-sketch-3f2a", "car-pop-9e0f"]),
        (("--sort", "size", "--reverse"), ["car-pop-9e0f", "cat-sketch-3f2a", "cat-ink-1b2c"]),
        (("--sort", "created", "--limit", "2"), ["car-pop-9e0f", "cat-ink-1b2c"]),
        (("--filter", "CAT"), ["cat-ink-1b2c", "cat-sketch-3f2a"]),
        (("--filter", "ink"), ["cat-ink-1b2c"]),
        (("--filter", "tiny-sdxl", "--sort", "size", "--limit", "1"), ["cat-ink-1b2c"]),
    ],
)
def test_list_quiet_sort_filter_limit(cli, three: list[str], args: tuple[str, ...], expected: list[str]) -> None:
    result = cli("list", "-q", *args)
    assert result.exit_code == 0 and _ids(result.stdout) == expected and result.stderr == ""


def test_list_filter_matching_nothing(cli, three: list[str]) -> None:
    result = cli("list", "--filter", "zebra")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "No entries match 'zebra' (3 in the registry).\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--sort", "age"),
            "error: Invalid value for '--sort': 'age' is not one of 'created', 'name', 'size', 'subject-fidelity', 'style-fidelity', 'leakage'. See 'unzip list --help'.\n",
        ),
        (
            ("--limit", "0"),
            "error: Invalid value for '--limit': 0 is below the minimum of 1. See 'unzip list --help'.\n",
        ),
        (
            ("--limit", "ten"),
            "error: Invalid value for '--limit': 'ten' is not a whole number. See 'unzip list --help'.\n",
        ),
    ],
)
def test_list_bad_options_are_usage_errors(cli, reg: Registry, args: tuple[str, ...], message: str) -> None:
    result = cli("list", *args)
    assert result.exit_code == 2 and result.stderr == message and result.stdout == ""


def test_list_json_keeps_every_key(cli, three: list[str]) -> None:
    result = cli("list", "--json", "--sort", "name")
    records = json.loads(result.stdout)
    assert [r["id"] for r in records] == ["car-pop-9e0f", "cat-ink-1b2c", "cat-sketch-3f2a"]
    for r in records:
        assert set(r) == RECORD_KEYS | {"preview"} and r["damaged"] is None and isinstance(r["size_bytes"], int)
        assert r["created"].endswith("+00:00") and r["schema_version"] == SCHEMA_VERSION
        assert Path(r["path"]).name == r["id"] and set(r["files"]) >= {"content.safetensors", "style.safetensors"}
    assert json.loads(cli("list", "--json", "--filter", "ink").stdout)[0]["settings"]["rank"] == 4


def test_list_marks_damaged_entries(cli, reg: Registry, three: list[str]) -> None:
    (reg.entries_dir / "cat-ink-1b2c" / "style.safetensors").unlink()
    (reg.entries_dir / "car-pop-9e0f" / "entry.json").write_text("[")
    result = cli("list", "--sort", "name")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[-1] == "STATUS"
    assert lines[1].startswith("car-pop-9e0f") and "DAMAGED: entry.json is not valid JSON" in lines[1]
    assert "DAMAGED: style.safetensors is missing" in lines[2] and lines[3].endswith("ok")
    assert result.stderr == (
        "warning: 2 damaged: car-pop-9e0f, cat-ink-1b2c; see 'unzip show ID --verify' or 'unzip doctor'\n"
    )
    records = {r["id"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert records["car-pop-9e0f"]["damaged"].startswith("entry.json is not valid JSON")
    assert set(records["car-pop-9e0f"]) == RECORD_KEYS | {"preview"} and records["car-pop-9e0f"]["subject"] is None
    assert records["cat-ink-1b2c"]["damaged"] == "style.safetensors is missing"
    assert _ids(cli("list", "-q", "--sort", "name").stdout) == ["car-pop-9e0f", "cat-ink-1b2c", "cat-sketch-3f2a"]


def test_registry_option_per_command_and_global(cli, tmp_path: Path) -> None:
    other = Registry(tmp_path / "other")
    entry = make_entry(other, "owl", "ink")
    assert _ids(cli("list", "-q", "--registry", str(other.root)).stdout) == [entry.id]
    assert _ids(cli("--registry", str(other.root), "list", "-q").stdout) == [entry.id]
    assert cli("list", "-q").stdout == ""


# -- show --------------------------------------------------------------------------------------


def test_show_prints_every_field(cli, reg: Registry, three: list[str]) -> None:
    # a preview.png dropped in after creation is not part of the entry: show names only the listed one
    (reg.entries_dir / "cat-ink-1b2c" / "preview.png").write_bytes(b"png")
    assert "preview:" not in cli("show", "cat-i").stdout
    _list_file(reg, "cat-ink-1b2c", "preview.png")
    result = cli("show", "cat-i")
    assert result.exit_code == 0 and result.stderr == ""
    out = result.stdout
    for text in (
        "id:          cat-ink-1b2c",
        "name:        cat-ink",
        "status:      ok",
        "kind:        trained",
        "subject:     cat",
        "style:       ink",
        "rare token:  sks",
        "base:        tiny-sdxl (kind tiny, fingerprint tiny-sdxl-v1)",
        "  combined:    a sks cat in ink style",
        "  rank:        4",
        "  final_loss:  0.25",
        "  device:      cpu",
        "  cat.jpg  1024x768  50.0 KiB  sha256 abababababababab",
        "  content.safetensors",
        "(1 hour ago)",
        f"preview:     {reg.entries_dir / 'cat-ink-1b2c' / 'preview.png'}",
        "written by:  unziplora",
    ):
        assert text in out, text


def _list_file(reg: Registry, entry_id: str, name: str) -> None:
    """Record ``name`` (already in the folder) in the entry's files, as a writer would have."""
    import hashlib

    path = reg.entries_dir / entry_id / name
    raw = json.loads((reg.entries_dir / entry_id / "entry.json").read_text())
    raw["files"][name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
    (reg.entries_dir / entry_id / "entry.json").write_text(json.dumps(raw))


def test_show_cuts_long_extra_fields(cli, reg: Registry) -> None:
    entry = make_entry(reg, columns={"rounds": list(range(500))}, command="unzip train cat.jpg")
    out = cli("show", entry.id).stdout
    assert "command:     unzip train cat.jpg\n" in out and "... (full value in --json)" in out
    assert json.loads(cli("show", entry.id, "--json").stdout)["columns"]["rounds"][-1] == 499


def test_show_json_and_verify(cli, reg: Registry, three: list[str]) -> None:
    data = json.loads(cli("show", "cat-sketch-3f2a", "--json").stdout)
    assert set(data) == RECORD_KEYS | {"preview"} and data["preview"] is None
    result = cli("show", "cat-sketch-3f2a", "--verify")
    assert result.exit_code == 0 and "verify:      OK (4 files, " in result.stdout
    data = json.loads(cli("show", "cat-sketch-3f2a", "--verify", "--json").stdout)
    assert data["verify"] == {"ok": True, "problems": []}


def test_show_verify_reports_what_differs(cli, reg: Registry, three: list[str]) -> None:
    target = reg.entries_dir / "cat-sketch-3f2a" / "masks.safetensors"
    target.write_bytes(b"\0" * target.stat().st_size)
    bump_mtime(target)
    result = cli("show", "cat-sketch-3f2a", "--verify")
    assert result.exit_code == 1
    assert "status:      DAMAGED: masks.safetensors differs from its recorded sha256" in result.stdout
    assert "verify:      FAILED\n  - masks.safetensors differs from its recorded sha256" in result.stdout
    assert result.stderr.startswith("error: entry cat-sketch-3f2a failed verification: masks.safetensors differs")
    assert result.stderr.count("\n") == 1
    data = json.loads(cli("show", "cat-sketch-3f2a", "--verify", "--json").stdout)
    assert data["verify"]["ok"] is False and data["damaged"].startswith("masks.safetensors differs")
    plain = cli("show", "cat-sketch-3f2a")
    assert plain.exit_code == 0 and plain.stderr.startswith(
        "warning: entry cat-sketch-3f2a is damaged: masks.safetensors"
    )


def test_show_verify_catches_silent_corruption(cli, reg: Registry, three: list[str]) -> None:
    target = reg.entries_dir / "car-pop-9e0f" / "content.safetensors"
    st = target.stat()
    target.write_bytes(b"\1" * st.st_size)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot keeps the mtime: only --verify sees it
    assert cli("show", "car-pop-9e0f").exit_code == 0
    assert cli("show", "car-pop-9e0f", "--verify").exit_code == 1


@pytest.mark.parametrize(
    ("arg", "line"),
    [
        ("ca", "error: 'ca' matches 3 entries: car-pop-9e0f, cat-ink-1b2c, cat-sketch-3f2a; give more characters\n"),
        ("cat-skecth", "error: no entry matches 'cat-skecth'; did you mean cat-sketch-3f2a? (see 'unzip list')\n"),
        ("zebra", "error: no entry matches 'zebra' (see 'unzip list')\n"),
        (
            "../../etc/passwd",
            "error: '../../etc/passwd' is not a valid entry id: it contains a path separator; ids look like cat-sketch-3f2a (see 'unzip list')\n",
        ),
        (
            "..",
            "error: '..' is not a valid entry id: it contains '..'; ids look like cat-sketch-3f2a (see 'unzip list')\n",
        ),
        (
            "/etc",
            "error: '/etc' is not a valid entry id: it contains a path separator; ids look like cat-sketch-3f2a (see 'unzip list')\n",
        ),
        (
            "a\x1bb",
            "error: 'a\\x1bb' is not a valid entry id: it contains a control character; ids look like cat-sketch-3f2a (see 'unzip list')\n",
        ),
        (
            "x" * 70,
            f"error: '{'x' * 70}' is not a valid entry id: it is longer than 64 characters; ids look like cat-sketch-3f2a (see 'unzip list')\n",
        ),
    ],
)
def test_show_errors_are_one_line(cli, three: list[str], arg: str, line: str) -> None:
    result = cli("show", arg)
    assert result.exit_code == 1 and result.stdout == "" and result.stderr == line


def test_show_newer_schema_is_refused(cli, reg: Registry, three: list[str]) -> None:
    path = reg.entries_dir / "cat-ink-1b2c" / "entry.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), schema_version=99)))
    result = cli("show", "cat-ink-1b2c")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: entry cat-ink-1b2c was written by a newer unziplora (entry schema 99; this version reads up to {SCHEMA_VERSION}); "
        "upgrade with: pip install -U unziplora\n"
    )
    assert "DAMAGED: written by a newer unziplora (entry schema 99)" in cli("list").stdout


# -- rm ----------------------------------------------------------------------------------------


def test_rm_dry_run_changes_nothing(cli, reg: Registry, three: list[str]) -> None:
    before = {e.id: e.size_bytes for e in reg.list()}
    result = cli("rm", "cat-s", "car", "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["cat-sketch-3f2a", "car-pop-9e0f"]
    total = sum(before[i] for i in ("cat-sketch-3f2a", "car-pop-9e0f"))
    from unziplora_cli._output import human_bytes

    assert result.stderr == f"Dry run: would remove 2 entries ({human_bytes(total)}); nothing changed.\n"
    assert {e.id for e in reg.list()} == set(three)
    data = json.loads(cli("rm", "cat-s", "--dry-run", "--json").stdout)
    assert data == {
        "dry_run": True,
        "removed": [
            {
                "id": "cat-sketch-3f2a",
                "name": "cat-sketch",
                "path": str(reg.entries_dir / "cat-sketch-3f2a"),
                "bytes": before["cat-sketch-3f2a"],
            }
        ],
        "bytes_freed": before["cat-sketch-3f2a"],
    }


def test_rm_without_tty_or_yes_refuses(cli, reg: Registry, three: list[str]) -> None:
    result = cli("rm", "cat-s")
    assert result.exit_code == 2  # the call cannot work as written: a usage mistake
    assert result.stderr == "error: not removing 1 entry without confirmation: stdin is not a terminal; pass --yes.\n"
    assert len(reg.list()) == 3


def test_rm_asks_and_obeys_the_answer(cli, reg: Registry, three: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_cmd, "_interactive", lambda: True)
    no = cli("rm", "cat-s", "cat-i", input="n\n")
    assert (
        no.exit_code == 0 and "Remove 2 entries (" in no.stderr
    )  # a "no" is an answer, not a failure and "? [y/N] Nothing removed.\n" in no.stderr
    assert len(reg.list()) == 3
    yes = cli("rm", "cat-s", "cat-i", input="y\n")
    assert yes.exit_code == 0 and yes.stderr.endswith("Removed 2 entries, freed " + yes.stderr.rsplit("freed ", 1)[1])
    assert _ids(cli("list", "-q").stdout) == ["car-pop-9e0f"]


def test_rm_yes_several_ids_from_list_q(cli, reg: Registry, three: list[str]) -> None:
    ids_ = _ids(cli("list", "-q", "--filter", "cat").stdout)  # unzip rm $(unzip list -q --filter cat) --yes
    result = cli("rm", *ids_, "--yes")
    assert result.exit_code == 0
    assert sorted(line.split()[0] for line in result.stdout.splitlines()) == ["cat-ink-1b2c", "cat-sketch-3f2a"]
    assert result.stderr.startswith("Removed 2 entries, freed ")
    assert _ids(cli("list", "-q").stdout) == ["car-pop-9e0f"]
    assert not list(reg.trash_dir.iterdir())


def test_rm_json_quiet_and_errors(cli, reg: Registry, three: list[str]) -> None:
    quiet = cli("rm", "car", "-y", "-q")  # -q: the removed ids, nothing on stderr
    assert quiet.exit_code == 0 and quiet.stdout == "car-pop-9e0f\n" and quiet.stderr == ""
    data = json.loads(cli("rm", "cat-ink-1b2c", "--yes", "--json").stdout)
    assert (
        data["dry_run"] is False and [r["id"] for r in data["removed"]] == ["cat-ink-1b2c"] and data["bytes_freed"] > 0
    )
    bad = cli("rm", "cat-sketch-3f2a", "nope", "--yes")
    assert bad.exit_code == 1 and bad.stderr == "error: no entry matches 'nope' (see 'unzip list')\n"
    assert _ids(cli("list", "-q").stdout) == ["cat-sketch-3f2a"]  # one bad id: nothing removed
    assert cli("rm", "../entries", "--yes").exit_code == 1


def test_rm_with_no_ids(cli, reg: Registry) -> None:
    result = cli("rm", "--yes")  # `unzip rm $(unzip list -q --filter nothing) --yes`, like rm -f
    assert result.exit_code == 0 and result.stderr == "Nothing to remove.\n"
    result = cli("rm")
    assert result.exit_code == 2 and result.stderr == "error: Missing argument 'ID...'. See 'unzip rm --help'.\n"


def test_rm_damaged_entry(cli, reg: Registry, three: list[str]) -> None:
    (reg.entries_dir / "cat-ink-1b2c" / "entry.json").write_text("{")
    result = cli("rm", "cat-ink-1b2c", "--yes")
    assert result.exit_code == 0 and result.stdout.rstrip().endswith("(damaged)")
    assert "cat-ink-1b2c" not in cli("list", "-q").stdout


# -- help, doctor, start-up --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ("list", "unzip list --filter cat --json"),
        ("show", "unzip show cat --verify"),
        ("rm", "unzip rm $(unzip list -q --filter cat) --yes"),
    ],
)
def test_help_ends_with_examples(cli, command: str, example: str) -> None:
    out = cli(command, "--help").stdout
    assert "Examples:" in out and example in out


def test_doctor_reports_damaged_entries(cli, reg: Registry, three: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from unziplora import diagnostics

    monkeypatch.setattr(
        diagnostics, "device_check", lambda s: diagnostics.Check("device", "ok", "cpu")
    )  # no torch import
    monkeypatch.setattr(diagnostics, "base_check", lambda s: diagnostics.Check("base model", "ok", "tiny"))
    ok = json.loads(cli("doctor", "--json").stdout)
    assert {"name": "entries", "status": "ok", "detail": "3 entries, none damaged"} in ok["checks"]
    (reg.entries_dir / "cat-ink-1b2c" / "masks.safetensors").unlink()
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "entries")
    assert check["status"] == "fail" and check["detail"].startswith(
        "1 of 3 damaged: cat-ink-1b2c (masks.safetensors is missing). Inspect with 'unzip show ID --verify'"
    )


def test_registry_commands_import_no_heavy_module(reg: Registry, three: list[str]) -> None:
    code = (
        "import sys, io, contextlib\n"
        "from unziplora_cli.app import build_app\n"
        "for argv in (['list'], ['list', '--json'], ['show', 'cat-i', '--verify'], ['rm', 'car', '--dry-run']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            build_app('unzip')(argv, prog_name='unzip')\n"
        "        except SystemExit as exc:\n            assert exc.code == 0, (argv, exc.code)\n"
        "import unziplora.registry\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
