"""Build the site: incremental (unchanged files are hard-linked from the last build, never
rewritten) and atomic (written into a sibling folder, then swapped in: one renameat2 exchange on Linux,
two renames elsewhere).

``manifest.json`` in the site maps each file to a key: the sha256 of the HTML for pages, the
recorded sha256 of the registry file for copied images. A file whose key did not change is
linked from the previous site (same inode, same mtime); a browser that has the old site open
keeps reading complete files, since nothing in the old folder is ever modified in place.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unziplora.entry_files import PREVIEW_IMAGE, SOURCE_IMAGE
from unziplora.errors import RegistryError
from unziplora.gallery import pages
from unziplora.gallery.images import scan
from unziplora.registry.marker import GALLERY_DIR

MANIFEST = "manifest.json"
SITE_DIRNAME = GALLERY_DIR  # the registry layout owns the name
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def default_output(registry_root: Path) -> Path:
    """Where the site goes without ``-o``: ``gallery/`` inside the registry (beside ``entries/``)."""
    return registry_root / SITE_DIRNAME


@dataclass
class BuildReport:
    path: Path
    entries: int
    images: int
    written: int
    kept: int


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = (now - when).total_seconds()
    for unit, size in (
        ("year", 31536000),
        ("month", 2592000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


class _Writer:
    """Writes files into the new site, reusing the old site's file when its key is unchanged."""

    def __init__(self, new: Path, old: Path | None, old_manifest: dict[str, str]) -> None:
        self.new, self.old, self.old_manifest = new, old, old_manifest
        self.manifest: dict[str, str] = {}
        self.written = self.kept = 0
        self._dirs: set[Path] = set()

    def _target(self, rel: str) -> Path:
        target = self.new / rel
        if target.parent not in self._dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(target.parent)
        return target

    def _reuse(self, rel: str, key: str, target: Path) -> bool:
        if self.old is None or self.old_manifest.get(rel) != key:
            return False
        try:
            os.link(self.old / rel, target)
        except OSError:
            return False
        self.kept += 1
        return True

    def text(self, rel: str, content: str) -> None:
        data = content.encode("utf-8")
        key = hashlib.sha256(data).hexdigest()
        self.manifest[rel] = key
        target = self._target(rel)
        if not self._reuse(rel, key, target):
            target.write_bytes(data)
            self.written += 1

    def copy(self, rel: str, source: Path, key: str) -> None:
        self.manifest[rel] = key
        target = self._target(rel)
        if not self._reuse(rel, key, target):
            shutil.copyfile(source, target)
            self.written += 1


def _entry_images(entry: Any) -> list[tuple[str, str]]:
    """(label, file name in the entry) of the preview sheet, then every other image the entry keeps."""
    names = [n for n in entry.files if n.lower().endswith(IMAGE_SUFFIXES) and n != SOURCE_IMAGE]
    names.sort(key=lambda n: (n != PREVIEW_IMAGE, n))
    return [("preview: source | content | style | combined" if n == PREVIEW_IMAGE else n, n) for n in names]


def _read_manifest(site: Path) -> dict[str, str]:
    try:
        value = json.loads((site / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``. On Linux the two folders trade places in one step, so ``target``
    never stops existing; elsewhere the old site is renamed aside and the new one renamed in."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now holds the old site
        return
    old_aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old_aside)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old_aside, target)
        raise
    shutil.rmtree(old_aside, ignore_errors=True)


def build_gallery(
    entries: list[Any], out: Path, *, total: int | None = None, images_dir: Path | None = None
) -> BuildReport:
    """Write the site for ``entries`` to ``out`` (replacing what is there) and say what was written."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise RegistryError(f"gallery output {out} is a file, not a folder; pass -o DIR")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise RegistryError(
            f"gallery output {out} is a folder that is not a gallery; pick another -o DIR (it would be replaced)"
        )
    found = scan(images_dir) if images_dir is not None else []
    out.parent.mkdir(parents=True, exist_ok=True)
    new = out.with_name(f".{out.name}.new-{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    writer = _Writer(new, out if out.is_dir() else None, _read_manifest(out))
    try:
        writer.text("style.css", pages.page_css())
        now = datetime.now(timezone.utc)
        cards = []
        for entry in entries:
            folder = f"e/{entry.id}"
            files = entry.files
            card_images: dict[str, str] = {}
            for role, name in (("source", SOURCE_IMAGE), ("preview", PREVIEW_IMAGE)):
                if name in files and (entry.path / name).is_file():
                    rel = f"{folder}/{name}"
                    writer.copy(rel, entry.path / name, str(files[name].get("sha256")))
                    card_images[role] = rel
            sheets = []
            for label, name in _entry_images(entry):
                if not (entry.path / name).is_file():
                    continue
                rel = f"{folder}/{name}"
                if rel not in writer.manifest:
                    writer.copy(rel, entry.path / name, str(files[name].get("sha256")))
                sheets.append((label, rel))
            listing = [(n, int(i.get("bytes", 0)), str(i.get("sha256", ""))) for n, i in files.items()]
            writer.text(f"{folder}/index.html", pages.entry_page(entry, sheets, listing))
            cards.append(pages.card(entry, card_images, _age(entry.created, now)))
        writer.text("index.html", pages.index_page(cards, len(entries) if total is None else total, len(entries)))
        items = []
        for i, (path, meta) in enumerate(found):
            rel = f"images/{i:05d}.png"
            stat = path.stat()
            writer.copy(rel, path, f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
            items.append(
                {"src": rel, "name": str(path.relative_to(images_dir)) if images_dir else path.name, "meta": meta}
            )
        writer.text(
            "images.html",
            pages.images_page(items, str(images_dir) if images_dir is not None else None, {e.id for e in entries}),
        )
        (new / MANIFEST).write_text(json.dumps(writer.manifest, indent=0, sort_keys=True), "utf-8")
        _swap(new, out)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return BuildReport(out, len(entries), len(items), writer.written, writer.kept)
