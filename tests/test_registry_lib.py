"""The registry library: ids, the entry.json schema, create/get/resolve/list/remove, damage."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from registry_helpers import PAYLOADS, bump_mtime, make_entry, record_for

from unziplora import __version__
from unziplora.errors import (
    AmbiguousEntryError,
    DamagedEntryError,
    EntryNotFoundError,
    InvalidEntryIdError,
    RegistryError,
    SchemaVersionError,
)
from unziplora.registry import SCHEMA_VERSION, Registry, ids, schema, slug, validate_id, validate_name


@pytest.fixture
def reg(isolated_env: Path) -> Registry:
    return Registry.from_settings()


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "style", "expected"),
    [
        ("cat", "pencil sketch", "cat-pencil-sketch"),
        ("A black Cat!", "in the style of Pop-Art", "black-cat-pop-art"),
        ("Café", "ukiyo-e", "cafe-ukiyo-e"),
        ("猫", "水彩", "entry"),
        ("an extraordinarily long subject description", "x", "extraordinarily-long-x"),
    ],
)
def test_slug(subject: str, style: str, expected: str) -> None:
    assert slug(subject, style) == expected


def test_ids_are_slug_plus_four_hex() -> None:
    assert re.fullmatch(r"cat-pencil-sketch-[0-9a-f]{4}", ids.make_id("cat", "pencil sketch"))
    long = ids.make_id("word " * 30, "other " * 30)
    assert len(long) <= 50 and validate_id(long) == long


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("..", "it contains '..'"),
        ("../etc", "it contains a path separator"),
        ("a/b", "it contains a path separator"),
        ("a\\b", "it contains a path separator"),
        ("/etc/passwd", "it contains a path separator"),
        ("C:evil", "it contains ':'"),
        ("a\x00b", "it contains a NUL character"),
        ("a\nb", "it contains a control character"),
        ("x" * 65, "it is longer than 64 characters"),
        (".lock", "it starts with '.'"),
        ("~root", "it starts with '~'"),
        ("cat sketch", "it contains a space"),
    ],
)
def test_validate_id_refuses_paths(text: str, reason: str) -> None:
    with pytest.raises(InvalidEntryIdError) as info:
        validate_id(text)
    assert f"is not a valid entry id: {reason}; ids look like cat-sketch-3f2a (see 'unzip list')" in str(info.value)
    assert "\n" not in str(info.value) and "\x00" not in str(info.value)


def test_validate_name_allows_spaces_not_paths() -> None:
    assert validate_name("my cat, take 2") == "my cat, take 2"
    for bad in ("../x", "a/b", "", "x" * 65, "a\tb"):
        with pytest.raises(InvalidEntryIdError):
            validate_name(bad)


# -- create ------------------------------------------------------------------------------------


def test_create_writes_a_complete_record(reg: Registry) -> None:
    entry = make_entry(reg, "cat", "pencil sketch")
    assert re.fullmatch(r"cat-pencil-sketch-[0-9a-f]{4}", entry.id)
    assert entry.path == reg.root / "entries" / entry.id and entry.damaged is None
    raw = json.loads((entry.path / "entry.json").read_text())
    assert list(raw)[:5] == ["schema_version", "id", "name", "created", "tool_version"]
    assert raw["schema_version"] == SCHEMA_VERSION and raw["id"] == entry.id and raw["tool_version"] == __version__
    assert raw["name"] == "cat-pencil-sketch" and raw["kind"] == "trained" and raw["imported"] is False
    assert raw["created"].endswith("+00:00") and entry.created is not None
    for key in (
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
    ):
        assert key in raw
    assert sorted(raw["files"]) == sorted(PAYLOADS)
    for name, info in raw["files"].items():
        data = (entry.path / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert entry.file("content.safetensors") == entry.path / "content.safetensors"
    assert (
        entry.size_bytes == sum(i["bytes"] for i in raw["files"].values()) + (entry.path / "entry.json").stat().st_size
    )
    assert entry.verify() == []
    assert not list(reg.tmp_dir.iterdir())


def test_new_entry_context_manager_with_subfolders_and_name(reg: Registry) -> None:
    with reg.new_entry(subject="rose", style="pop art", name="my rose") as st:
        assert st.dir.parent == reg.tmp_dir and st.id.startswith("rose-pop-art-")
        st.path("content.safetensors").write_bytes(b"c")
        st.path("previews/0001.png").parent.mkdir()
        st.path("previews/0001.png").write_bytes(b"p")
        st.record = {"kind": "imported", "provenance": {"file": "x.safetensors", "format": "kohya"}}
        assert reg.list() == []  # readers never see a staging entry
    entry = reg.get(st.id)
    assert entry.name == "my rose" and set(entry.files) == {"content.safetensors", "previews/0001.png"}
    assert entry.record["kind"] == "imported" and entry.record["imported"] is True


def test_failed_write_leaves_nothing(reg: Registry) -> None:
    with pytest.raises(RuntimeError), reg.new_entry(subject="cat", style="ink") as st:
        st.path("content.safetensors").write_bytes(b"x")
        raise RuntimeError("training blew up")
    assert reg.list() == [] and not list(reg.tmp_dir.iterdir())


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (None, "staging.record must be a dict"),
        ({"figures": {"final_loss": float("nan")}}, "a field is not plain JSON"),
        ({"prompts": "a cat"}, "'prompts' is not an object"),
        ({"kind": "stolen"}, "'kind' must be one of trained, imported"),
    ],
)
def test_bad_records_are_refused(reg: Registry, record: object, message: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)), reg.new_entry(subject="cat", style="ink") as st:
        st.record = record  # type: ignore[assignment]
    assert reg.list() == [] and not list(reg.tmp_dir.iterdir())


def test_symlinked_payload_is_refused(reg: Registry, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    with pytest.raises(RegistryError, match="is not a plain file"), reg.new_entry(subject="cat", style="ink") as st:
        (st.dir / "content.safetensors").symlink_to(tmp_path / "secret")
        st.record = {}
    assert reg.list() == []


def test_bad_name_is_refused_before_anything_is_written(reg: Registry) -> None:
    with pytest.raises(InvalidEntryIdError), reg.new_entry(subject="cat", style="ink", name="../../etc"):
        pass
    assert reg.ids() == []


def test_id_collisions_retry(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    suffixes = iter(["aaaa", "aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(ids, "random_suffix", lambda hex_digits=4: next(suffixes))
    first, second = make_entry(reg, "cat", "ink"), make_entry(reg, "cat", "ink")
    assert (first.id, second.id) == ("cat-ink-aaaa", "cat-ink-bbbb")


def test_stale_staging_of_dead_writer_is_swept_but_live_one_is_not(reg: Registry) -> None:
    make_entry(reg)
    dead = reg.tmp_dir / "dog-ink-dead"
    dead.mkdir()
    (dead / "content.safetensors").write_bytes(b"half")
    (reg.tmp_dir / "dog-ink-dea2.lock").write_bytes(b"")  # orphan lock file, nobody holds it
    (reg.trash_dir / "old-entry.1234").mkdir()
    with reg.new_entry(subject="live", style="one") as live:
        live.path("content.safetensors").write_bytes(b"x")
        live.record = {}
        make_entry(reg, "other", "writer")  # sweeps while `live` is still staging
        assert live.dir.is_dir()
    assert not dead.exists() and not list(reg.trash_dir.iterdir())
    assert sorted(p.name for p in reg.tmp_dir.iterdir()) == []
    assert len(reg.list()) == 3 and all(e.damaged is None for e in reg.list())


def test_runs_dir_is_not_listed(reg: Registry) -> None:
    make_entry(reg)
    (reg.runs_dir / "cat-ink-run1").mkdir(parents=True)
    (reg.entries_dir / ".hidden").mkdir()
    (reg.entries_dir / "stray.txt").write_text("x")
    assert len(reg.list()) == 1


def test_missing_registry_lists_empty_and_creates_nothing(reg: Registry) -> None:
    assert reg.list() == [] and not reg.root.exists()


def test_registry_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="is a file, not a folder"):
        Registry(tmp_path / "file").list()


# -- resolve / get -----------------------------------------------------------------------------


def test_resolve_exact_prefix_and_name(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["3f2a", "1b2c", "9e0f"])
    monkeypatch.setattr(ids, "random_suffix", lambda hex_digits=4: next(names))
    make_entry(reg, "cat", "sketch", name="whiskers")
    make_entry(reg, "cat", "ink")
    make_entry(reg, "car", "pop")
    assert reg.resolve("cat-sketch-3f2a") == "cat-sketch-3f2a"
    assert reg.resolve("cat-s") == "cat-sketch-3f2a"
    assert reg.resolve("whiskers") == "cat-sketch-3f2a"
    with pytest.raises(AmbiguousEntryError) as info:
        reg.resolve("ca")
    assert (
        str(info.value) == "'ca' matches 3 entries: car-pop-9e0f, cat-ink-1b2c, cat-sketch-3f2a; give more characters"
    )
    with pytest.raises(EntryNotFoundError) as info:
        reg.resolve("cat-skecth")
    assert str(info.value) == "no entry matches 'cat-skecth'; did you mean cat-sketch-3f2a? (see 'unzip list')"
    with pytest.raises(EntryNotFoundError) as info:
        reg.resolve("zzz")
    assert str(info.value) == "no entry matches 'zzz' (see 'unzip list')"
    assert reg.get("car").id == "car-pop-9e0f"


def test_unknown_id_in_empty_registry(reg: Registry) -> None:
    with pytest.raises(EntryNotFoundError) as info:
        reg.get("cat")
    assert str(info.value) == f"no entry matches 'cat'; the registry at {reg.root} is empty (see 'unzip train --help')"


@pytest.mark.parametrize("text", ["..", "../entries", "/etc", "entries/x", "a\x00", ".tmp", ".trash"])
def test_lookups_never_leave_the_registry(reg: Registry, text: str) -> None:
    make_entry(reg)
    with pytest.raises(InvalidEntryIdError):
        reg.get(text)
    with pytest.raises(InvalidEntryIdError):
        reg.remove([text])


# -- damage ------------------------------------------------------------------------------------


def _damage(reg: Registry, kind: str) -> str:
    entry = make_entry(reg, "dmg", kind)
    path = entry.path
    if kind == "badjson":
        (path / "entry.json").write_text("{not json")
    elif kind == "missing":
        (path / "style.safetensors").unlink()
    elif kind == "truncated":
        data = (path / "masks.safetensors").read_bytes()
        (path / "masks.safetensors").write_bytes(data[:-10])
    elif kind == "mismatch":
        target = path / "content.safetensors"
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF
        target.write_bytes(bytes(data))
        bump_mtime(target)
    elif kind == "renamed":
        path.rename(reg.entries_dir / "dmg-renamed-0000")
        return "dmg-renamed-0000"
    return entry.id


DAMAGE = {
    "badjson": "entry.json is not valid JSON",
    "missing": "style.safetensors is missing",
    "truncated": "masks.safetensors is truncated",
    "mismatch": "content.safetensors differs from its recorded sha256",
    "renamed": "entry.json names id",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_entries_are_flagged_and_never_break_listing(reg: Registry, kind: str) -> None:
    good = make_entry(reg, "good", "one")
    bad_id = _damage(reg, kind)
    listed = {e.id: e for e in reg.list()}
    assert listed[good.id].damaged is None
    assert listed[bad_id].damaged is not None and DAMAGE[kind] in listed[bad_id].damaged
    with pytest.raises(DamagedEntryError) as info:
        reg.get(bad_id)
    assert str(info.value).startswith(f"entry {bad_id} is damaged: {DAMAGE[kind]}")
    assert reg.get(bad_id, allow_damaged=True).damaged
    assert any(DAMAGE[kind] in p for p in reg.get(bad_id, allow_damaged=True).verify())
    assert reg.remove([bad_id]).removed == [bad_id]
    assert [e.id for e in reg.list()] == [good.id]


def test_unchanged_payloads_are_not_rehashed_but_edited_ones_are(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = make_entry(reg)
    calls: list[Path] = []
    from unziplora.registry import entry as entry_mod

    real = entry_mod.hash_file
    monkeypatch.setattr(entry_mod, "hash_file", lambda p, **k: calls.append(p) or real(p, **k))
    reg.list()
    assert calls == []
    bump_mtime(entry.path / "source.png")  # touched but identical: hashed once, then trusted again
    assert reg.list()[0].damaged is None and len(calls) == 1
    reg.list()
    assert len(calls) == 1


def test_newer_schema_is_refused_older_is_migrated(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_entry(reg)
    raw = json.loads((entry.path / "entry.json").read_text())
    (entry.path / "entry.json").write_text(json.dumps(dict(raw, schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(SchemaVersionError) as info:
        reg.get(entry.id, allow_damaged=True)
    assert str(info.value) == (
        f"entry {entry.id} was written by a newer unziplora (entry schema {SCHEMA_VERSION + 1}; this version reads up to "
        f"{SCHEMA_VERSION}); upgrade with: pip install -U unziplora"
    )
    assert "newer unziplora" in reg.list()[0].damaged
    # An older schema is read through MIGRATIONS (simulated: pretend the current version is one higher).
    (entry.path / "entry.json").write_text(json.dumps(raw))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, SCHEMA_VERSION, lambda r: dict(r, subject=r["subject"].upper()))
    got = reg.get(entry.id)
    assert got.record["schema_version"] == SCHEMA_VERSION + 1 and got.subject == "CAT"


# -- remove ------------------------------------------------------------------------------------


def test_remove_plan_then_execute(reg: Registry) -> None:
    a, b, c = make_entry(reg, "a", "x"), make_entry(reg, "b", "y", size=5000), make_entry(reg, "c", "z")
    plan = reg.remove([a.id, b.id[:3], a.id], dry_run=True)
    assert [i.id for i in plan.items] == [a.id, b.id] and not plan.executed
    assert plan.total_bytes == a.size_bytes + b.size_bytes
    assert len(reg.list()) == 3
    done = plan.execute()
    assert done.removed == [a.id, b.id] and done.freed_bytes == plan.total_bytes
    assert [e.id for e in reg.list()] == [c.id] and not list(reg.trash_dir.iterdir())
    assert plan.execute().removed == [a.id, b.id]  # already gone: nothing more happens


def test_remove_with_one_unknown_id_removes_nothing(reg: Registry) -> None:
    a = make_entry(reg)
    with pytest.raises(EntryNotFoundError):
        reg.remove([a.id, "nope"])
    assert [e.id for e in reg.list()] == [a.id]


def test_record_helper_matches_schema() -> None:
    out = schema.complete(
        record_for("cat", "ink"),
        entry_id="cat-ink-0000",
        name="n",
        created="2026-01-01T00:00:00+00:00",
        tool_version="0",
        files={},
        subject="cat",
        style="ink",
    )
    assert schema.problem(out) is None
