"""How a folder is recognised as a registry: the marker file, and what may be adopted without one.

The tool deletes things inside its registry (``.tmp/``, ``.trash/``, removed entries), so it must
never mistake a user's folder for one. A registry holds ``unziplora-registry.json`` (a format
version), written when the tool creates the registry in a new or empty folder. A folder without it
is used only when it is empty, or when it looks like a registry made before the marker existed
(nothing but the registry's own names, each a real folder holding only registry-shaped names);
anything else is refused until the user says so with ``unzip init DIR``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from unziplora.errors import RegistryError

MARKER = "unziplora-registry.json"
FORMAT = "unziplora-registry"
FORMAT_VERSION = 1
MAX_MARKER_BYTES = 4096
# Every name the registry itself puts at its top level (entries/, .tmp/, .trash/, runs/ are folders).
OWN_FOLDERS = ("entries", ".tmp", ".trash", "runs")
# Where `unzip gallery` puts its site when no -o is given (unziplora.gallery.build imports it).
GALLERY_DIR = "gallery"
OWN_NAMES = frozenset((*OWN_FOLDERS, ".lock", MARKER, GALLERY_DIR))
_OWN_CHILD = {
    "entries": re.compile(r"^[a-z0-9][a-z0-9-]*$"),
    ".tmp": re.compile(r"^[a-z0-9][a-z0-9-]*(\.lock)?$"),
    ".trash": re.compile(r"^[a-z0-9][a-z0-9-]*\.[0-9a-f]{8}$"),
    "runs": re.compile(r"^[a-z0-9][a-z0-9-]*$"),
}


def marker_bytes() -> bytes:
    return (json.dumps({"format": FORMAT, "version": FORMAT_VERSION}) + "\n").encode()


def read_marker(root: Path) -> int | None:
    """The marker's format version; None when there is no marker. Refuses a marker that is not ours."""
    path = root / MARKER
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"registry marker {path} cannot be read ({exc.strerror}); it must be a plain file") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RegistryError(f"registry marker {path} is not a plain file; remove it")
        raw = handle.read(MAX_MARKER_BYTES + 1)
    try:
        parsed = json.loads(raw.decode("utf-8"))
        version = parsed["version"] if isinstance(parsed, dict) and parsed.get("format") == FORMAT else None
    except (ValueError, KeyError):
        version = None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RegistryError(f"registry marker {path} is not an unziplora registry marker; fix or remove it")
    if version > FORMAT_VERSION:
        raise RegistryError(
            f"the registry at {root} was made by a newer unziplora (registry format {version}); upgrade with: pip install -U unziplora"
        )
    return version


def foreign_reason(root: Path, *, others_allowed: bool = False) -> str | None:
    """Why ``root`` (an existing folder without a marker) is not safely ours; None when it is empty or registry-shaped.

    With ``others_allowed`` (``unzip init``) only the registry's own names are checked.
    """
    with os.scandir(root) as it:
        children = list(it)
    for child in children:
        if child.name not in OWN_NAMES:
            if others_allowed:
                continue
            return f"it holds {child.name!r}"
        if child.name in (".lock", MARKER) and not child.is_file(follow_symlinks=False):
            return f"{child.name} is not a plain file"
        if child.name in _OWN_CHILD:
            if child.is_symlink() or not child.is_dir(follow_symlinks=False):
                return f"{child.name} is not a plain folder"
            with os.scandir(child.path) as inner:
                for item in inner:
                    if not _OWN_CHILD[child.name].match(item.name):
                        return f"{child.name}/ holds {item.name!r}"
    return None


def not_a_registry(root: Path, reason: str) -> RegistryError:
    if root.resolve() == Path(root.anchor or "/"):
        return RegistryError(
            f"{root} is not an unziplora registry (no {MARKER}, and {reason}); the filesystem root can never be "
            "one: choose a folder with --registry DIR"
        )
    return RegistryError(
        f"{root} is not an unziplora registry (no {MARKER}, and {reason}); to keep entries there anyway, "
        f"run 'unzip init {root}', or choose another folder with --registry DIR"
    )


def write_marker(root: Path) -> None:
    """Create the marker (never through a symlink, never over an existing file)."""
    path = root / MARKER
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        return  # another process made it meanwhile; read_marker checks it
    with os.fdopen(fd, "wb") as handle:
        handle.write(marker_bytes())
