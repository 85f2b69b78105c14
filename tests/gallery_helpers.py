"""Tiny gallery fixtures: entries with a real preview sheet and a real source PNG, no training."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image
from registry_helpers import record_for

from unziplora.registry import Entry, Registry

PREVIEW = Path(__file__).resolve().parent.parent / "docs" / "preview-tiny-sdxl.png"  # a real training preview sheet
HOSTILE = """<script>document.title='pwned'</script> "double" 'single' & <b>bold</b>"""


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def make_gallery_entry(
    reg: Registry,
    subject: str = "cat",
    style: str = "pencil sketch",
    *,
    color=(200, 80, 40),
    samples: bool = False,
    **extra,
) -> Entry:
    def write(folder: Path) -> None:
        for name in ("content.safetensors", "style.safetensors", "masks.safetensors"):
            (folder / name).write_bytes(os.urandom(64))
        (folder / "source.png").write_bytes(png_bytes(color))
        (folder / "preview.png").write_bytes(PREVIEW.read_bytes())
        if samples:
            (folder / "previews").mkdir()
            (folder / "previews" / "0002.png").write_bytes(png_bytes((40, 90, 200), 32))

    return reg.create(record_for(subject, style, **extra), write, subject=subject, style=style)
