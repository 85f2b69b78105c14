"""File-system primitives the store is built from: locks, crash-test pauses, walking a folder.

Atomic writes, fsync and hashing are :mod:`unziplora.fileio`'s.

Locks are ``fcntl.flock`` locks, which the kernel drops when their process dies (even by SIGKILL),
so a crashed writer can never wedge the registry. On systems without ``fcntl`` the locks become
no-ops: single-writer use stays correct, concurrent writers lose their protection.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from unziplora.errors import RegistryError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PAUSE_ENV = "UNZIPLORA_TEST_PAUSE"
LOCK_TIMEOUT_S = 120.0


def pause(point: str) -> None:
    """Crash-test hook: with UNZIPLORA_TEST_PAUSE=<point>, announce the point on stderr and hang.

    The crash tests SIGKILL the process while it hangs, which is how we prove that no point of a
    write or a removal can leave a partial entry behind.
    """
    if os.environ.get(PAUSE_ENV) == point:
        sys.stderr.write(f"unziplora-test-pause: {point}\n")
        sys.stderr.flush()
        time.sleep(3600)


def try_lock(handle: IO[bytes]) -> bool:
    """Take an exclusive flock without waiting; False if another open file holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def writer_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the registry's writer lock (``<root>/.lock``) for the duration of the block."""
    try:  # never through a symlink, never blocking on a FIFO planted there
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise RegistryError(f"cannot open the registry lock {path} ({exc.strerror}); it must be a plain file") from exc
    handle = os.fdopen(fd, "r+b")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise RegistryError(f"the registry lock {path} is not a plain file; remove it")
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while not try_lock(handle):
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"another unzip process has held the registry lock {path} for over {timeout:.0f} s; "
                    "wait for it to finish and try again"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        yield
    finally:
        handle.close()  # closing drops the flock


def walk_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of every non-directory under ``root``; symlinks are reported, not followed."""
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for item in it:
                rel = f"{prefix}{item.name}"
                if item.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", Path(item.path)))
                else:
                    yield rel, item.stat(follow_symlinks=False)
