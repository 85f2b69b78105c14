"""The picture ``unzip restyle --image`` starts from: loaded safely, aspect kept, sized for SDXL.

Light module (PIL only). Decoding goes through :mod:`unziplora.images`, so broken, empty,
animated or oversized files are refused with the same one-line messages as training inputs; unlike
training, the picture is not cropped to a square: it keeps its aspect at the base's native area.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageOps

from unziplora.images import open_rgb

SIZE_MULTIPLE = 32  # SDXL's VAE (8) times its UNet's two downsamplings (4)


def open_picture(path: str | Path) -> Image.Image:
    """Decode an image file to RGB (EXIF orientation applied, transparency over white)."""
    return open_rgb(Path(path))


def _round(value: float) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def target_size(picture_size: tuple[int, int], native: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Output size: as asked, or the picture's aspect at about ``native x native`` pixels."""
    w, h = picture_size
    aspect = w / h
    if width is not None and height is not None:
        return width, height
    if width is not None:
        return width, _round(width / aspect)
    if height is not None:
        return _round(height * aspect), height
    return _round(native * math.sqrt(aspect)), _round(native / math.sqrt(aspect))


def fit_picture(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and center-crop ``picture`` to exactly ``size`` (the crop is tiny when aspects match)."""
    if picture.size == size:
        return picture
    return ImageOps.fit(picture, size, Image.Resampling.LANCZOS)
