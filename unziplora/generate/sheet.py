"""Contact sheets: many images in one grid, optionally with a small label under each.

Light module (PIL only). Used for ``--sheet`` and for the training preview
(source | content | style | combined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PAD = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 scales its bundled font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _fit(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def grid(
    images: Sequence[Image.Image],
    *,
    columns: int | None = None,
    labels: Sequence[str] | None = None,
    tile: tuple[int, int] | None = None,
) -> Image.Image:
    """Lay ``images`` out row by row on white, each resized to ``tile`` (default: the first's size).

    ``columns`` defaults to a near-square layout. ``labels`` (one per image) are drawn in a strip
    under each tile, each line shortened to fit; a label may have several lines ("\\n").
    """
    if not images:
        raise ValueError("a sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    width, height = tile or images[0].size
    cols = max(1, min(columns or math.ceil(math.sqrt(len(images))), len(images)))
    rows = math.ceil(len(images) / cols)
    font_size = max(10, min(24, width // 12))
    font = _font(font_size)
    lines = max((str(text).count("\n") + 1 for text in labels), default=1) if labels is not None else 0
    line_height = font_size + 2
    strip = font_size + 2 * PAD + (lines - 1) * line_height if labels is not None else 0
    sheet = Image.new("RGB", (cols * width + (cols + 1) * PAD, rows * (height + strip) + (rows + 1) * PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, img in enumerate(images):
        row, col = divmod(index, cols)
        x = PAD + col * (width + PAD)
        y = PAD + row * (height + strip + PAD)
        picture = img.convert("RGB")
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        sheet.paste(picture, (x, y))
        if labels is not None:
            top = y + height + PAD + font_size / 2
            for number, line in enumerate(str(labels[index]).split("\n")):
                text = _fit(line, draw, font, width)
                draw.text((x + width / 2, top + number * line_height), text, fill=INK, font=font, anchor="mm")
    return sheet
