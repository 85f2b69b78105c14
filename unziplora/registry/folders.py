"""The registry's folders on disk: the root and its layout, the writer lock, sweeping leftovers.

Layout under the root (``$UNZIPLORA_HOME``, config, or the platformdirs user data dir)::

    entries/<id>/     entry.json, content.safetensors, style.safetensors, masks.safetensors,
                      source.png, optional preview.png and previews/ -- complete entries only
    .tmp/<id>/        an entry being written; .tmp/<id>.lock is flock-ed by its writer
    .trash/<id>.<r>/  an entry being deleted
    runs/             unfinished training runs (owned by the trainer; never listed here)
    .lock             the writer lock

The writer lock serialises id allocation, commits, removals and sweeping. A staging folder whose
``.lock`` no process holds belongs to a dead writer and is swept by the next writer, as is
anything left in ``.trash/``. Everything that writes (:mod:`.staging`, :mod:`.update`,
:mod:`.removal`) works on a :class:`Folders`; :class:`~unziplora.registry.store.Registry` is one.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unziplora.errors import RegistryError
from unziplora.registry import marker
from unziplora.registry.fsutil import try_lock, writer_lock


class Folders:
    """Where a registry lives and how its folders are made, locked and swept."""

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()  # every path printed from here on is absolute
        self.durable = durable  # fsync files and folders; benchmarks may turn it off

    entries_dir = property(lambda self: self.root / "entries")
    tmp_dir = property(lambda self: self.root / ".tmp")
    trash_dir = property(lambda self: self.root / ".trash")
    runs_dir = property(lambda self: self.root / "runs")
    lock_path = property(lambda self: self.root / ".lock")

    def root_stat(self) -> os.stat_result | None:
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

    def check_ours(self) -> None:
        """Refuse a folder that is not a registry (no marker, and other things in it)."""
        if marker.read_marker(self.root) is None:
            reason = marker.foreign_reason(self.root)
            if reason is not None:
                raise marker.not_a_registry(self.root, reason)

    def own_folder(self, path: Path, *, create: bool) -> bool:
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
        if self.root_stat() is None:
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
            self.own_folder(folder, create=True)
        self.own_folder(self.runs_dir, create=False)

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
