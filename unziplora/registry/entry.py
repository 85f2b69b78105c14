"""One registry entry as read from disk, and the checks that flag it as damaged.

Reading is cheap enough for ``unzip list`` over a thousand entries: each payload's size is
checked against ``entry.json`` (catches missing and truncated files), and its hash is trusted as
long as the file is not newer than ``entry.json`` -- the writer writes ``entry.json`` last, so
a payload edited afterwards has a later modification time and is hashed again (an edit shows as
damaged). After a successful rehash, ``entry.json``'s modification time is moved forward so the
work is not repeated (its content never changes). ``Entry.verify`` always rehashes everything.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from unziplora.errors import DamagedEntryError, SchemaVersionError
from unziplora.registry import schema
from unziplora.registry.fsutil import hash_file, walk_files

ENTRY_JSON = "entry.json"


@dataclass
class Entry:
    """An entry folder under ``entries/``. ``damaged`` says why it cannot be used (None if it can)."""

    id: str
    path: Path
    record: dict[str, Any] = field(repr=False)
    damaged: str | None = None
    size_bytes: int = 0  # payload files + entry.json; the whole folder for an unreadable entry
    problems: list[str] = field(default_factory=list, repr=False)
    schema_error: SchemaVersionError | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.record.get("name") or self.id)

    @property
    def subject(self) -> str:
        return str(self.record.get("subject") or "")

    @property
    def style(self) -> str:
        return str(self.record.get("style") or "")

    @property
    def created(self) -> datetime | None:
        try:
            return datetime.fromisoformat(str(self.record.get("created")))
        except ValueError:
            return None

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files = self.record.get("files")
        return files if isinstance(files, dict) else {}

    def file(self, name: str) -> Path:
        """Path of a payload file (``content.safetensors``); DamagedEntryError if the entry lacks it."""
        if not schema.safe_relpath(name):
            raise DamagedEntryError(f"{name!r} is not a file name inside entry {self.id}")
        if name not in self.files:
            listed = ", ".join(sorted(self.files)) or "none"
            raise DamagedEntryError(f"entry {self.id} has no file {name} (it has: {listed})")
        return self.path / name

    def has_file(self, name: str) -> bool:
        return name in self.files

    def verify(self) -> list[str]:
        """Rehash every payload; return what differs (empty means intact)."""
        if self.schema_error is not None:
            return [str(self.schema_error)]
        fresh = load(self.path, rehash=True)
        if fresh is None:
            return [f"entry {self.id} no longer exists"]
        return fresh.problems

    def to_dict(self) -> dict[str, Any]:
        """The full record plus where it lives, its size on disk and its state (for ``--json``)."""
        out: dict[str, Any] = {"id": self.id}
        out.update({k: v for k, v in self.record.items() if k != "id"})
        for key in schema.STANDARD_KEYS:  # an unreadable entry still has every key, as null
            out.setdefault(key, None)
        out.update(path=str(self.path), size_bytes=self.size_bytes, damaged=self.damaged)
        return out


def _parse_record(raw: bytes | None, entry_id: str) -> tuple[dict[str, Any], str | None, SchemaVersionError | None]:
    if raw is None:
        return {}, "entry.json is missing", None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "entry.json is not UTF-8 text", None
    except json.JSONDecodeError as exc:
        return {}, f"entry.json is not valid JSON ({exc.msg} at line {exc.lineno})", None
    try:
        record = schema.upgrade(parsed, entry_id)
    except SchemaVersionError as exc:
        keep = parsed if isinstance(parsed, dict) else {}
        version = keep.get("schema_version")
        return keep, f"written by a newer unziplora (entry schema {version}); upgrade unziplora to read it", exc
    except ValueError as exc:
        return (parsed if isinstance(parsed, dict) else {}), str(exc), None
    issue = schema.problem(record)
    if issue is None and record["id"] != entry_id:
        issue = f"entry.json names id {record['id']!r} but the folder is {entry_id!r}"
    return record, issue, None


def _read(path: str) -> tuple[bytes | None, int]:
    """(content, mtime_ns) of a file; (None, 0) if it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None, 0


def mark_verified(path: Path, newest_ns: int) -> None:
    """Move entry.json's mtime to at least ``newest_ns`` (best effort: a read-only registry rehashes next time)."""
    target = max(time.time_ns(), newest_ns)
    try:
        os.utime(path / ENTRY_JSON, ns=(target, target))
    except OSError:
        pass


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what removing it frees)."""
    try:
        return sum(st.st_size for _, st in walk_files(path) if stat.S_ISREG(st.st_mode))
    except OSError:
        return 0


def load(path: Path, *, rehash: bool = False) -> Entry | None:
    """Read the entry at ``path``; None if the folder vanished meanwhile (removed by another process).

    Plain ``os`` calls on strings: this runs once per entry on every ``unzip list``.
    """
    entry_id = path.name
    folder = str(path)
    try:
        raw, verified_ns = _read(os.path.join(folder, ENTRY_JSON))
    except NotADirectoryError:
        return Entry(entry_id, path, {}, "not a folder", 0, ["not a folder"])
    except OSError as exc:
        raw, verified_ns, unreadable = None, 0, f"entry.json cannot be read ({exc.strerror})"
    else:
        unreadable = None
    if raw is None and not os.path.isdir(folder):
        return None
    record, issue, schema_error = _parse_record(raw, entry_id)
    issue = unreadable or issue
    if issue is not None:
        return Entry(entry_id, path, record, issue, disk_bytes(path), [issue], schema_error)
    problems: list[str] = []
    rehashed_ns = 0  # newest mtime among files hashed again and found intact
    size = len(raw or b"")
    for name, info in record["files"].items():
        file_path = os.path.join(folder, name)
        try:
            st = os.lstat(file_path)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror})")
            continue
        size += st.st_size
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{name} is not a regular file")
            continue
        if st.st_size != info["bytes"]:
            what = "truncated" if st.st_size < info["bytes"] else "longer than recorded"
            problems.append(f"{name} is {what} ({st.st_size} of {info['bytes']} bytes)")
            continue
        if not rehash and st.st_mtime_ns <= verified_ns:
            continue
        try:
            digest, _ = hash_file(Path(file_path))
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror})")
            continue
        if digest != info["sha256"]:
            problems.append(f"{name} differs from its recorded sha256 (now {digest[:12]}, recorded {info['sha256'][:12]})")
            continue
        rehashed_ns = max(rehashed_ns, st.st_mtime_ns)
    if problems and not os.path.isdir(folder):
        return None  # removed while we read it (renamed into .trash): gone, not damaged
    if rehashed_ns and not problems:
        mark_verified(path, rehashed_ns)
    damaged = None
    if problems:
        damaged = problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)"
    return Entry(entry_id, path, record, damaged, size, problems)
