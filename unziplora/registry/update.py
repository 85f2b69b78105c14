"""Changing a committed entry in place: ``unzip eval`` adds its result files and record fields."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from unziplora.errors import DamagedEntryError, EntryNotFoundError, RegistryError
from unziplora.fileio import fsync_dir, write_file
from unziplora.registry import entry as entry_mod
from unziplora.registry import schema
from unziplora.registry.entry import ENTRY_JSON, Entry
from unziplora.registry.folders import Folders
from unziplora.registry.fsutil import pause
from unziplora.registry.lookup import resolve


def add_files(folders: Folders, text: str, payloads: dict[str, bytes], fields: dict[str, Any]) -> Entry:
    """Add (or replace) files in a committed entry and set top-level ``fields`` of its record.

    Used by ``unzip eval`` to save its result with the entry. Under the writer lock, so it
    cannot interleave with a removal or another update: ``entry.json`` is re-read there (never
    a stale copy), each payload is written through a temporary sibling, fsync-ed and renamed
    into place, and ``entry.json`` is rewritten the same way last (so the new files are not
    newer than it, and readers trust them without rehashing). Readers see the old or the new
    entry.json; a crash between the payload renames and the entry.json rename leaves only the
    replaced files flagged by ``show --verify``, and running the update again repairs that.
    Names are plain file names at the entry's top level (not entry.json, not dot-files).
    """
    for name in payloads:
        if not schema.safe_relpath(name) or "/" in name or name.startswith(".") or name == ENTRY_JSON:
            raise RegistryError(f"{name!r} is not a file name an entry update may write")
    folders.ensure_dirs()
    with folders.locked():
        entry_id = resolve(folders, text)
        folder = folders.entries_dir / entry_id
        folders.own_folder(folder, create=False)
        current = entry_mod.load(folder)
        if current is None:
            raise EntryNotFoundError(f"entry {entry_id} was removed meanwhile (see 'unzip list')")
        if current.schema_error is not None:
            raise current.schema_error
        others = [p for p in current.problems if not any(p.startswith(f"{n} ") for n in payloads)]
        if current.damaged and others:
            raise DamagedEntryError(
                f"entry {entry_id} is damaged: {others[0]}; check it with 'unzip show {entry_id} --verify'"
            )
        record = dict(current.record)
        files = dict(record["files"])
        for name, blob in payloads.items():
            if stat.S_ISDIR(_lstat_mode(folder / name)):
                raise RegistryError(f"cannot write {name} into entry {entry_id}: a folder has that name")
            write_file(folder / name, blob, durable=folders.durable)
            files[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        record.update(fields)
        record["files"] = files
        issue = schema.problem(record)
        if issue:
            raise RegistryError(f"cannot update entry {entry_id}: {issue.removeprefix('entry.json: ')}")
        pause("update-payload")
        write_file(folder / ENTRY_JSON, schema.dumps(record), durable=folders.durable)
        if folders.durable:
            fsync_dir(folder)
    found = entry_mod.load(folder)
    if found is None:
        raise EntryNotFoundError(f"entry {entry_id} was removed meanwhile (see 'unzip list')")
    return found


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0
