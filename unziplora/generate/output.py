"""Writing generated images: one PNG per image with its record, and an optional contact sheet.

Default folder: ``./unzip-out/<YYYYmmdd-HHMMSS>-<ids>/`` (a ``-2``, ``-3``... suffix when two
runs start in the same second), so runs never overwrite each other. Light module (PIL only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from unziplora.generate.pngmeta import save_png
from unziplora.generate.sheet import grid

DEFAULT_ROOT = Path("unzip-out")
SHEET_NAME = "sheet.png"


def default_out_dir(ids: Sequence[str | None], *, root: Path = DEFAULT_ROOT, now: datetime | None = None) -> Path:
    """A fresh folder name under ``root`` made of the time and the entry ids (not created)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = "+".join(dict.fromkeys(i for i in ids if i)) or "images"
    parts = re.sub(r"[^A-Za-z0-9._+-]", "-", parts)[:120]
    candidate = root / f"{stamp}-{parts}"
    counter = 2
    while candidate.exists():
        candidate = root / f"{stamp}-{parts}-{counter}"
        counter += 1
    return candidate


def image_name(index: int, seed: int) -> str:
    return f"{index:02d}-seed{seed}.png"


@dataclass
class Saved:
    """What was written: one path per image (in order) and the sheet if asked for."""

    paths: list[Path] = field(default_factory=list)
    sheet: Path | None = None

    def records(self, results: Sequence[Any]) -> list[dict[str, Any]]:
        """JSON-ready records (``--json``): path plus the PNG record of each image."""
        out = [{"path": str(p), **r.meta} for p, r in zip(self.paths, results)]
        return out


def planned_names(seeds: Sequence[int], *, sheet: bool = False) -> list[str]:
    """The file names a call will write for ``seeds`` (image ``i`` uses ``seeds[i]``)."""
    return [image_name(i, seed) for i, seed in enumerate(seeds)] + ([SHEET_NAME] if sheet else [])


def prepare_out_dir(out_dir: Path, names: Sequence[str] = (), *, force: bool = False) -> bool:
    """Create the output folder before sampling, so a bad ``-o`` fails before any work is done.

    An existing folder that already holds one of ``names`` is refused unless ``force`` (earlier
    images are never overwritten silently). Returns True when this call created the folder (the
    caller removes it again if nothing is written).
    """
    from unziplora.errors import OutputError

    existed = out_dir.is_dir()
    taken = [n for n in names if os.path.lexists(out_dir / n)] if existed else []
    if taken and not force:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise OutputError(
            f"{out_dir / taken[0]} already exists{more}; pass --force to overwrite, or -o with another folder"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".unziplora-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(
            f"cannot write images to {out_dir}: {reason}; pass -o with a folder you can write to"
        ) from exc
    return not existed


def save_image(result: Any, out_dir: Path) -> Path:
    """Write one :class:`Generated` as PNG (text chunks carry its record); return its path."""
    return save_png(result.image, Path(out_dir) / image_name(result.index, result.seed), result.meta)


def save_results(results: Sequence[Any], out_dir: Path, *, sheet: bool = False, written: Sequence[Path] = ()) -> Saved:
    """Write each :class:`Generated` not yet ``written`` (paths, in order); optionally a sheet."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = Saved()
    for index, result in enumerate(results):
        saved.paths.append(written[index] if index < len(written) else save_image(result, out_dir))
    if sheet and results:
        labels = [f"seed {r.seed}" for r in results]
        picture = grid([r.image for r in results], labels=labels)
        first = dict(results[0].meta)
        first.pop("seed", None)
        first.pop("index", None)
        first["seeds"] = [r.seed for r in results]
        saved.sheet = save_png(picture, out_dir / SHEET_NAME, first)
    return saved
