"""The registry on disk: create, read, resolve and remove entries, safely under concurrency.

Layout under the root (``$UNZIPLORA_HOME``, config, or the platformdirs user data dir)::

    entries/<id>/     entry.json, content.safetensors, style.safetensors, masks.safetensors,
                      source.png, optional preview.png and previews/ -- complete entries only
    .tmp/<id>/        an entry being written; .tmp/<id>.lock is flock-ed by its writer
    .trash/<id>.<r>/  an entry being deleted
    runs/             unfinished training runs (owned by the trainer; never listed here)
    .lock             the writer lock

Why it is crash safe: an entry is written in ``.tmp/<id>`` and appears under ``entries/`` by one
``rename``; removal renames it into ``.trash/`` before deleting anything. So ``entries/`` only ever
holds whole entries, whatever moment a process dies at. The writer lock serialises id allocation,
commits, removals and sweeping; payloads are written outside it, so long writes never block
others. A staging folder whose ``.lock`` no process holds belongs to a dead writer and is swept
by the next writer, as is anything left in ``.trash/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unziplora import __version__
from unziplora.errors import AmbiguousEntryError, DamagedEntryError, EntryNotFoundError, RegistryError
from unziplora.registry import entry as entry_mod
from unziplora.registry import ids, marker, schema
from unziplora.registry.entry import ENTRY_JSON, Entry
from unziplora.registry.fsutil import fsync_dir, hash_file, pause, try_lock, walk_files, write_file, writer_lock
from unziplora.registry.removal import RemovalPlan, plan_removal


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


class Registry:
    """The local store of decomposed images. Reading needs no lock; writing takes ``.lock`` briefly."""

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()  # every path printed from here on is absolute
        self.durable = durable  # fsync files and folders; benchmarks may turn it off

    @classmethod
    def from_settings(cls, registry: str | Path | None = None) -> Registry:
        """The registry chosen by --registry > $UNZIPLORA_HOME > config.toml > the user data dir."""
        from unziplora.settings import load_settings

        return cls(load_settings(registry=registry).registry)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    entries_dir = property(lambda self: self.root / "entries")
    tmp_dir = property(lambda self: self.root / ".tmp")
    trash_dir = property(lambda self: self.root / ".trash")
    runs_dir = property(lambda self: self.root / "runs")
    lock_path = property(lambda self: self.root / ".lock")

    # -- writing -------------------------------------------------------------------------------

    def _root_stat(self) -> os.stat_result | None:
        """stat of the root (a symlinked root is the user's choice and is followed); None if absent."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise RegistryError(
                f"registry path {self.root} lies under a file, not a folder; pass --registry DIR or set UNZIPLORA_HOME"
            ) from None
        except OSError as exc:
            raise RegistryError(
                f"registry path {self.root} cannot be used ({exc.strerror}); pass --registry DIR or set UNZIPLORA_HOME"
            ) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise RegistryError(
                f"registry path {self.root} is a file, not a folder; pass --registry DIR or set UNZIPLORA_HOME"
            )
        return st

    def _check_ours(self) -> None:
        """Refuse a folder that is not a registry (no marker, and other things in it)."""
        if marker.read_marker(self.root) is None:
            reason = marker.foreign_reason(self.root)
            if reason is not None:
                raise marker.not_a_registry(self.root, reason)

    def _own_folder(self, path: Path, *, create: bool) -> bool:
        """Whether ``path`` is a plain folder (made when ``create``); a symlink or a file there is refused."""
        if create:
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise RegistryError(f"cannot create {path} ({exc.strerror}); check the registry folder") from exc
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise RegistryError(
                f"{path} is {what}; the registry never follows links or writes through other files inside itself. "
                "Replace it with a plain folder"
            )
        return True

    def ensure_dirs(self, *, adopt: bool = False) -> None:
        """Make the registry's folders (and its marker in a new or empty folder); refuse a foreign folder.

        ``adopt`` (``unzip init``) takes a non-empty folder without a marker, as long as none of the
        registry's own names in it hold foreign things.
        """
        if self._root_stat() is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"cannot create the registry folder {self.root} ({exc.strerror}); pass --registry DIR"
                ) from exc
            marker.write_marker(self.root)
        elif marker.read_marker(self.root) is None:
            reason = marker.foreign_reason(self.root, others_allowed=adopt)
            if reason is not None and adopt:
                raise RegistryError(
                    f"cannot make {self.root} a registry: {reason}, and the registry would delete what is there; "
                    "choose another folder"
                )
            if reason is not None:
                raise marker.not_a_registry(self.root, reason)
            try:
                marker.write_marker(self.root)
            except OSError as exc:
                raise RegistryError(
                    f"cannot write the registry marker in {self.root} ({exc.strerror}); check the folder permissions"
                ) from exc
        for folder in (self.entries_dir, self.tmp_dir, self.trash_dir):
            self._own_folder(folder, create=True)
        self._own_folder(self.runs_dir, create=False)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writer lock (callers must have run ensure_dirs)."""
        with writer_lock(self.lock_path):
            yield

    def sweep(self) -> None:
        """Delete what dead writers left in ``.tmp`` and ``.trash``; call with the writer lock held.

        Both folders are opened without following links and worked on through their descriptors, so
        a link planted anywhere in them is at most unlinked, never followed.
        """
        with _open_own_dir(self.tmp_dir) as tmp_fd:
            with os.scandir(tmp_fd) as it:
                items = list(it)
            present = {i.name for i in items}
            for item in items:
                if item.is_symlink():
                    _unlink_at(item.name, tmp_fd)
                elif item.name.endswith(".lock"):
                    if item.name[: -len(".lock")] not in present:
                        self._drop_if_unheld(tmp_fd, item.name, None)
                elif item.is_dir(follow_symlinks=False):
                    self._drop_if_unheld(tmp_fd, f"{item.name}.lock", item.name)
        with _open_own_dir(self.trash_dir) as trash_fd:
            with os.scandir(trash_fd) as it:
                items = list(it)
            for item in items:
                if item.is_dir(follow_symlinks=False):
                    shutil.rmtree(item.name, dir_fd=trash_fd, ignore_errors=True)
                else:
                    _unlink_at(item.name, trash_fd)

    @staticmethod
    def _drop_if_unheld(dir_fd: int, lock_name: str, folder: str | None) -> None:
        try:  # never O_CREAT: a finishing writer may have just unlinked it
            fd = os.open(lock_name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            fd = None
        except OSError:
            return  # not a lock file we could have made: leave it
        handle = os.fdopen(fd, "r+b") if fd is not None else None
        try:
            if handle is not None and not try_lock(handle):
                return  # its writer is alive
            if folder is not None:
                shutil.rmtree(folder, dir_fd=dir_fd, ignore_errors=True)
            _unlink_at(lock_name, dir_fd)
        finally:
            if handle is not None:
                handle.close()

    def _allocate(self, subject: str, style: str) -> str:
        for attempt in range(200):
            candidate = ids.make_id(subject, style, ids.SUFFIX_HEX if attempt < 100 else 8)
            taken = (self.entries_dir / candidate, self.tmp_dir / candidate, self.tmp_dir / f"{candidate}.lock")
            if not any(os.path.lexists(p) for p in taken):
                return candidate
        raise RegistryError(f"could not find a free id for {ids.slug(subject, style)!r}; remove some entries")

    @contextmanager
    def new_entry(self, *, subject: str, style: str, name: str | None = None) -> Iterator[Staging]:
        """Stage a new entry; on normal exit it is hashed, recorded and moved into place atomically.

        ``with reg.new_entry(subject="cat", style="pencil sketch") as st:`` write files under ``st.dir``,
        set ``st.record = {...}``; afterwards ``st.entry`` is the new Entry. If the block raises, the
        staging folder is deleted and the registry is exactly as before.
        """
        if name is not None:
            ids.validate_name(name)
        self.ensure_dirs()
        with self.locked():
            self.sweep()
            entry_id = self._allocate(subject, style)
            lock_file = self.tmp_dir / f"{entry_id}.lock"
            handle = open(lock_file, "a+b")  # noqa: SIM115 - closed in finally below
            try_lock(handle)  # a fresh file under the writer lock: nobody else can hold it
            staging = Staging(entry_id, self.tmp_dir / entry_id, subject, style, name)
            staging.dir.mkdir()
        committed = False
        try:
            pause("staged")
            yield staging
            self._commit(staging)
            committed = True
        finally:
            if not committed:
                shutil.rmtree(staging.dir, ignore_errors=True)
            lock_file.unlink(missing_ok=True)
            handle.close()

    def _commit(self, staging: Staging) -> None:
        pause("after-payload")
        files: dict[str, dict[str, Any]] = {}
        for rel, st in sorted(walk_files(staging.dir)):
            if rel == ENTRY_JSON or any(part.startswith(".") for part in rel.split("/")):
                continue
            if not schema.safe_relpath(rel) or not stat.S_ISREG(st.st_mode):
                raise RegistryError(f"cannot write entry {staging.id}: {rel} is not a plain file with a plain name")
            digest, size = hash_file(staging.dir / rel, durable=self.durable)
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
        write_file(staging.dir / ENTRY_JSON, schema.dumps(record), durable=self.durable)
        if self.durable:
            for folder in {staging.dir, *((staging.dir / rel).parent for rel in files)}:
                fsync_dir(folder)
        pause("before-commit")
        target = self.entries_dir / staging.id
        with self.locked():
            pause("commit-locked")
            if os.path.lexists(target):
                raise RegistryError(f"cannot write entry {staging.id}: {target} already exists")
            os.rename(staging.dir, target)
            if self.durable:
                fsync_dir(self.entries_dir)
                fsync_dir(self.tmp_dir)
        pause("after-commit")
        staging.entry = entry_mod.load(target)

    def create(
        self,
        record: dict[str, Any],
        write_payload: Callable[[Path], None] | None = None,
        *,
        subject: str | None = None,
        style: str | None = None,
        name: str | None = None,
    ) -> Entry:
        """One-call form of :meth:`new_entry`: ``write_payload(dir)`` writes the files, ``record`` the fields."""
        subject = subject if subject is not None else str(record.get("subject", ""))
        style = style if style is not None else str(record.get("style", ""))
        with self.new_entry(subject=subject, style=style, name=name) as staging:
            if write_payload is not None:
                write_payload(staging.dir)
            staging.record = dict(record)
        assert staging.entry is not None
        return staging.entry

    def add_files(self, text: str, payloads: dict[str, bytes], fields: dict[str, Any]) -> Entry:
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
        self.ensure_dirs()
        with self.locked():
            entry_id = self.resolve(text)
            folder = self.entries_dir / entry_id
            self._own_folder(folder, create=False)
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
                write_file(folder / name, blob, durable=self.durable)
                files[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
            record.update(fields)
            record["files"] = files
            issue = schema.problem(record)
            if issue:
                raise RegistryError(f"cannot update entry {entry_id}: {issue.removeprefix('entry.json: ')}")
            pause("update-payload")
            write_file(folder / ENTRY_JSON, schema.dumps(record), durable=self.durable)
            if self.durable:
                fsync_dir(folder)
        found = entry_mod.load(folder)
        if found is None:
            raise EntryNotFoundError(f"entry {entry_id} was removed meanwhile (see 'unzip list')")
        return found

    # -- reading -------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Ids of every entry folder, sorted; unaddressable folder names are ignored."""
        if self._root_stat() is None:
            return []
        self._check_ours()
        if not self._own_folder(self.entries_dir, create=False):
            return []
        try:
            with os.scandir(self.entries_dir) as it:
                names = [d.name for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _addressable(n))

    def list(self) -> list[Entry]:
        """Every entry, damaged ones included (``entry.damaged`` says why), sorted by id."""
        folder = self.entries_dir
        loaded = (entry_mod.load(folder / entry_id) for entry_id in self.ids())
        return [e for e in loaded if e is not None]

    def resolve(self, text: str) -> str:
        """The id meant by ``text``: an exact id, a unique id prefix, or a unique entry name."""
        ids.check_lookup(text)
        known = self.ids()
        if text in known:
            return text
        matches = [i for i in known if i.startswith(text)]
        if not matches:
            names = self._names(known)
            matches = sorted(i for i, n in names.items() if n == text)
            if not matches:
                raise EntryNotFoundError(self._not_found(text, known, names))
        if len(matches) > 1:
            shown = ", ".join(matches[:8]) + (f", ... ({len(matches) - 8} more)" if len(matches) > 8 else "")
            raise AmbiguousEntryError(f"'{text}' matches {len(matches)} entries: {shown}; give more characters")
        return matches[0]

    def _names(self, known: list[str]) -> dict[str, str]:
        names = {}
        for entry_id in known:
            try:
                raw, _ = entry_mod.read_plain(str(self.entries_dir / entry_id / ENTRY_JSON))
                name = json.loads(raw or b"{}").get("name")
            except (OSError, ValueError, AttributeError, RecursionError):
                continue
            if isinstance(name, str):
                names[entry_id] = name
        return names

    def _not_found(self, text: str, known: list[str], names: dict[str, str]) -> str:
        if not known:
            return f"no entry matches '{text}'; the registry at {self.root} is empty (see 'unzip train --help')"
        by_name = {n: i for i, n in names.items()}
        close = [by_name.get(c, c) for c in ids.nearest(text, known + sorted(set(by_name)))]
        close = list(dict.fromkeys(close))
        if not close:
            return f"no entry matches '{text}' (see 'unzip list')"
        return f"no entry matches '{text}'; did you mean {' or '.join(close)}? (see 'unzip list')"

    def get(self, text: str, *, allow_damaged: bool = False) -> Entry:
        """The entry for an id, prefix or name. Damaged entries raise unless ``allow_damaged``."""
        entry_id = self.resolve(text)
        found = entry_mod.load(self.entries_dir / entry_id)
        if found is None:
            raise EntryNotFoundError(f"entry {entry_id} was removed meanwhile (see 'unzip list')")
        if found.schema_error is not None:
            raise found.schema_error
        if found.damaged and not allow_damaged:
            raise DamagedEntryError(
                f"entry {entry_id} is damaged: {found.damaged}; check it with 'unzip show {entry_id} --verify' "
                f"or remove it with 'unzip rm {entry_id}'"
            )
        return found

    # -- removing ------------------------------------------------------------------------------

    def plan_removal(self, texts: Iterable[str]) -> RemovalPlan:
        """Resolve every id first (any error removes nothing), with the bytes each would free."""
        return plan_removal(self, texts)

    def remove(self, texts: Iterable[str], dry_run: bool = False) -> RemovalPlan:
        """Remove entries (renamed out of ``entries/`` first, then deleted); returns the plan carried out."""
        plan = self.plan_removal(texts)
        return plan if dry_run else plan.execute()


@contextmanager
def _open_own_dir(path: Path) -> Iterator[int]:
    """A descriptor of the registry folder ``path``, refusing a symlink in its place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise RegistryError(
            f"{path} is not a plain folder ({exc.strerror}); the registry never follows links inside itself"
        ) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _unlink_at(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        pass


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _addressable(name: str) -> bool:
    try:
        ids.validate_id(name)
    except ValueError:
        return False
    return True
