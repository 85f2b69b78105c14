"""Generated images found in a folder through the ``unziplora`` PNG text chunk compose writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unziplora.errors import InputImageError


def scan(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every PNG under ``folder`` that carries an unziplora record, sorted by path."""
    from unziplora.generate.pngmeta import read_png_meta  # PIL only

    if not folder.is_dir():
        raise InputImageError(f"--images {folder}: not a folder")
    found = []
    for path in sorted(folder.rglob("*.png")):
        try:
            meta = read_png_meta(path)
        except OSError:
            continue  # not a readable PNG: not ours
        if meta:
            found.append((path, meta))
    return found
