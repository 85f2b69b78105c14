"""One registry entry as read from disk, and the checks that flag it as damaged.

Reading is cheap enough for ``unzip list`` over a thousand entries: each payload's size is
checked against ``entry.json`` (catches missing and truncated files), and its hash is trusted as
long as the file is not newer than ``entry.json`` -- the writer writes ``entry.json`` last, so
a payload edited afterwards has a later modification time and is hashed again (an edit shows as
damaged). After a successful rehash, ``entry.json``'s modification time is moved forward so the
work is not repeated (its content never changes). ``Entry.verify`` always rehashes everything.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from unziplora.errors import DamagedEntryError, SchemaVersionError
from unziplora.fileio import hash_file
from unziplora.registry import schema
from unziplora.registry.fsutil import walk_files

ENTRY_JSON = "entry.json"
MAX_ENTRY_JSON_BYTES = 16 << 20  # a real one is a few KiB; anything far larger is not ours


class _NotRegular(OSError):
    """entry.json exists but is a link, FIFO, device or oversized: it is never read."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"entry.json holds {name}, which is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"entry.json holds the number {text[:20]}, too large for JSON readers")
    return value


# One decoder for every entry: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


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
        out.update(path=str(self.path), size_bytes=self.size_bytes, damaged=self.damaged, preview=self.preview)
        return out

    @property
    def preview(self) -> str | None:
        """Absolute path of the entry's preview sheet when its record lists one (no file-system call)."""
        from unziplora.entry_files import PREVIEW_IMAGE

        return str(self.path / PREVIEW_IMAGE) if PREVIEW_IMAGE in self.files else None


def _parse_record(raw: bytes | None, entry_id: str) -> tuple[dict[str, Any], str | None, SchemaVersionError | None]:
    if raw is None:
        return {}, "entry.json is missing", None
    try:
        parsed = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "entry.json is not UTF-8 text", None
    except json.JSONDecodeError as exc:
        return {}, f"entry.json is not valid JSON ({exc.msg} at line {exc.lineno})", None
    except RecursionError:
        return {}, "entry.json is nested too deeply to be an entry", None
    except ValueError as exc:  # NaN/Infinity, or an integer with thousands of digits
        return {}, str(exc) if str(exc).startswith("entry.json") else f"entry.json is not usable JSON ({exc})", None
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


def read_plain(path: str) -> tuple[bytes | None, int]:
    """(content, mtime_ns) of a plain file; (None, 0) if it does not exist.

    Opened without following a link and without blocking on a FIFO; anything but a regular file
    of a sane size raises _NotRegular, so a planted /dev/zero or pipe can neither hang nor flood us.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, 0
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular(errno.ELOOP, "is a symbolic link") from None
        raise
    try:  # plain os calls, no file object: this runs once per entry on every `unzip list`
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(errno.EINVAL, "is not a regular file")
        if st.st_size > MAX_ENTRY_JSON_BYTES:
            raise _NotRegular(errno.EFBIG, f"is {st.st_size} bytes, over the {MAX_ENTRY_JSON_BYTES >> 20} MiB limit")
        # Ask for what fstat saw, plus one byte to notice growth (not 16 MiB: that is allocated per call).
        want = st.st_size + 1
        chunks = []
        while want > 0:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks), st.st_mtime_ns
    finally:
        os.close(fd)


def mark_verified(path: Path, newest_ns: int) -> None:
    """Move entry.json's mtime to at least ``newest_ns`` (best effort: a read-only registry rehashes next time)."""
    target = max(time.time_ns(), newest_ns)
    try:
        os.utime(path / ENTRY_JSON, ns=(target, target), follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what removing it frees)."""
    try:
        return sum(st.st_size for _, st in walk_files(path) if stat.S_ISREG(st.st_mode))
    except OSError:
        return 0


def _linked_parent(folder: str, name: str) -> str | None:
    """The first sub-folder of ``name`` that is a symlink or not a folder; None when all are plain folders."""
    parts = name.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        try:
            if not stat.S_ISDIR(os.lstat(os.path.join(folder, sub)).st_mode):
                return sub
        except OSError:
            return None  # missing: the file check reports it
    return None


def load(path: Path, *, rehash: bool = False) -> Entry | None:
    """Read the entry at ``path``; None if the folder vanished meanwhile (removed by another process).

    Plain ``os`` calls on strings: this runs once per entry on every ``unzip list``.
    """
    entry_id = path.name
    folder = str(path)
    try:
        raw, verified_ns = read_plain(os.path.join(folder, ENTRY_JSON))
    except NotADirectoryError:
        return Entry(entry_id, path, {}, "not a folder", 0, ["not a folder"])
    except _NotRegular as exc:
        raw, verified_ns, unreadable = None, 0, f"entry.json {exc.strerror}"
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
        file_path = f"{folder}/{name}"  # name is a safe relative path (schema.problem checked it)
        linked = _linked_parent(folder, name) if "/" in name else None
        if linked is not None:
            problems.append(f"{name} lies under {linked}, which is not a plain folder (a link out of the entry?)")
            continue
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
            problems.append(
                f"{name} differs from its recorded sha256 (now {digest[:12]}, recorded {info['sha256'][:12]})"
            )
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
