"""Writing a new entry: staged in ``.tmp/<id>``, hashed, recorded, and moved into place by one rename.

Why it is crash safe: an entry appears under ``entries/`` by one ``rename``, so ``entries/`` only
ever holds whole entries, whatever moment a process dies at. Payloads are written outside the
writer lock, so long writes never block others.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unziplora import __version__
from unziplora.errors import RegistryError
from unziplora.fileio import fsync_dir, hash_file, write_file
from unziplora.registry import entry as entry_mod
from unziplora.registry import ids, schema
from unziplora.registry.entry import ENTRY_JSON, Entry
from unziplora.registry.folders import Folders
from unziplora.registry.fsutil import pause, try_lock, walk_files


@dataclass
class Staging:
    """An entry being written: put payload files in ``dir``, then set ``record`` before the block ends."""

    id: str
    dir: Path
    subject: str
    style: str
    name: str | None = None
    record: dict[str, Any] | None = None
    entry: Entry | None = field(default=None, repr=False)  # set after the commit

    def path(self, name: str) -> Path:
        """Where to write payload file ``name`` (``content.safetensors``, ``previews/1.png``)."""
        if not schema.safe_relpath(name):
            raise RegistryError(f"{name!r} is not a file name inside an entry")
        return self.dir / name


def _allocate(folders: Folders, subject: str, style: str) -> str:
    for attempt in range(200):
        candidate = ids.make_id(subject, style, ids.SUFFIX_HEX if attempt < 100 else 8)
        taken = (folders.entries_dir / candidate, folders.tmp_dir / candidate, folders.tmp_dir / f"{candidate}.lock")
        if not any(os.path.lexists(p) for p in taken):
            return candidate
    raise RegistryError(f"could not find a free id for {ids.slug(subject, style)!r}; remove some entries")


@contextmanager
def new_entry(folders: Folders, *, subject: str, style: str, name: str | None = None) -> Iterator[Staging]:
    """Stage a new entry; on normal exit it is hashed, recorded and moved into place atomically.

    ``with reg.new_entry(subject="cat", style="pencil sketch") as st:`` write files under ``st.dir``,
    set ``st.record = {...}``; afterwards ``st.entry`` is the new Entry. If the block raises, the
    staging folder is deleted and the registry is exactly as before.
    """
    if name is not None:
        ids.validate_name(name)
    folders.ensure_dirs()
    with folders.locked():
        folders.sweep()
        entry_id = _allocate(folders, subject, style)
        lock_file = folders.tmp_dir / f"{entry_id}.lock"
        handle = open(lock_file, "a+b")  # noqa: SIM115 - closed in finally below
        try_lock(handle)  # a fresh file under the writer lock: nobody else can hold it
        staging = Staging(entry_id, folders.tmp_dir / entry_id, subject, style, name)
        staging.dir.mkdir()
    committed = False
    try:
        pause("staged")
        yield staging
        _commit(folders, staging)
        committed = True
    finally:
        if not committed:
            shutil.rmtree(staging.dir, ignore_errors=True)
        lock_file.unlink(missing_ok=True)
        handle.close()


def _commit(folders: Folders, staging: Staging) -> None:
    """Hash the payloads, write entry.json last, then rename the folder into ``entries/`` under the lock."""
    pause("after-payload")
    files: dict[str, dict[str, Any]] = {}
    for rel, st in sorted(walk_files(staging.dir)):
        if rel == ENTRY_JSON or any(part.startswith(".") for part in rel.split("/")):
            continue
        if not schema.safe_relpath(rel) or not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"cannot write entry {staging.id}: {rel} is not a plain file with a plain name")
        digest, size = hash_file(staging.dir / rel, durable=folders.durable)
        files[rel] = {"sha256": digest, "bytes": size}
    default_name = staging.name or (staging.record or {}).get("name") or ids.slug(staging.subject, staging.style)
    record = schema.complete(
        staging.record,
        entry_id=staging.id,
        name=ids.validate_name(str(default_name)[: ids.MAX_NAME_LENGTH]),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tool_version=__version__,
        files=files,
        subject=staging.subject,
        style=staging.style,
    )
    # Written last: payloads not newer than entry.json are trusted by readers (see entry.py).
    write_file(staging.dir / ENTRY_JSON, schema.dumps(record), durable=folders.durable)
    if folders.durable:
        for folder in {staging.dir, *((staging.dir / rel).parent for rel in files)}:
            fsync_dir(folder)
    pause("before-commit")
    target = folders.entries_dir / staging.id
    with folders.locked():
        pause("commit-locked")
        if os.path.lexists(target):
            raise RegistryError(f"cannot write entry {staging.id}: {target} already exists")
        os.rename(staging.dir, target)
        if folders.durable:
            fsync_dir(folders.entries_dir)
            fsync_dir(folders.tmp_dir)
    pause("after-commit")
    staging.entry = entry_mod.load(target)
