"""The one owner of how unziplora writes, hashes and reads files (light: no torch at import).

* :func:`atomic_target` — the only temp-file-then-rename writer: a hidden temporary sibling is
  written, fsync'ed, then put in place with ``os.replace`` (or with a hard link that refuses to
  clobber a name that appeared meanwhile), and the folder is fsync'ed so the rename survives a
  crash. Readers see the old file or the new one, never half of one. :func:`write_file` and
  :func:`write_json` are its byte and JSON forms.
* :func:`fsync_dir` — the only directory fsync.
* :func:`hash_file` — the only sha256 of a file.
* :func:`match_new_file_mode` — give a file the mode a plain ``open()`` would have given it, found
  by creating a probe file next to it (huggingface_hub's way): safetensors creates 0600 files, and
  reading the umask means setting it, which races with other threads.
* :func:`read_safetensors` — the only safetensors reader (``safe_open``: no pickle ever runs), and
  :func:`read_safetensors_header`, the only header parser (plain JSON, no torch).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_CHUNK = 1 << 20
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class UnreadableSafetensors(ValueError):
    """A file that exists but is not a readable safetensors file; the message is the first line of why."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def temp_sibling(path: Path) -> Path:
    """A hidden, unique temporary name in ``path``'s folder (same file system, so renames are atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


@contextmanager
def atomic_target(path: Path, *, overwrite: bool = True, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it becomes ``path`` in one step.

    ``overwrite=False`` puts it in place with a hard link, which fails with FileExistsError if
    ``path`` exists by then (file systems without hard links fall back to ``os.replace``).
    ``durable`` fsyncs the file before and the folder after the rename. The temporary file is
    removed whatever happens.
    """
    tmp = temp_sibling(path)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:
                os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a whole file atomically: readers see the old content or the new, never a part."""
    with atomic_target(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """:func:`write_file` of ``data`` as indented UTF-8 JSON."""
    write_file(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"), durable=durable)


def hash_file(path: Path, *, durable: bool = False) -> tuple[str, int]:
    """(sha256 hex, bytes) of a file; with ``durable`` also fsync it, in the same pass.

    Never follows a symlink and never blocks on a FIFO (OSError instead).
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if durable:
            os.fsync(handle.fileno())
    return digest.hexdigest(), size


def match_new_file_mode(path: Path) -> None:
    """Give ``path`` the permission bits a new file in its folder gets (umask and default ACLs).

    A probe file is created beside it and its mode copied, as huggingface_hub does; unlike
    ``os.umask(0); os.umask(mask)`` this changes no process-wide state another thread could see.
    """
    probe = temp_sibling(path)
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    os.chmod(path, mode)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor (on the CPU) and the header metadata of a safetensors file.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        UnreadableSafetensors: it is not a readable safetensors file (the message says why, one line).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(p))
    try:
        with safe_open(str(p), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnreadableSafetensors(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return tensors, metadata


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), read without torch.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnreadableSafetensors: it is not a safetensors file (the message says why, one line).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise UnreadableSafetensors("file shorter than a safetensors header")
            (size,) = struct.unpack("<Q", raw)
            if size <= 0 or size > _MAX_HEADER:
                raise UnreadableSafetensors("header length is implausible")
            header = json.loads(handle.read(size))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableSafetensors(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if not isinstance(header, dict):
        raise UnreadableSafetensors("header is not a table")
    return header


def cached_folder(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name``, built first by ``build(staging)`` when it holds no ``model_index.json`` yet.

    ``build`` fills a fresh hidden sibling, which is then renamed into place: concurrent first uses
    (parallel test workers, the processes of one launch) and interrupted builds never leave a
    folder that looks complete. When another process wins the race its copy is kept (the builds
    are deterministic, so it is the same).
    """
    import shutil
    import uuid

    target = root / name
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir()
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
