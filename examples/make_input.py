"""Draw the example input, a lighthouse on a cliff in flat poster colours, with PIL only.

    python examples/make_input.py examples/a_lighthouse_in_flat_poster_style.png

No third-party images: the project makes its own example so it can ship with the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw


def draw(size: int = 256) -> Image.Image:
    s = size / 256
    img = Image.new("RGB", (size, size), (246, 214, 160))  # warm sky
    d = ImageDraw.Draw(img)
    d.ellipse([170 * s, 28 * s, 226 * s, 84 * s], fill=(250, 164, 72))  # sun
    d.rectangle([0, 176 * s, size, size], fill=(38, 92, 140))  # sea
    for y in (196, 216, 236):  # waves
        d.line([(10 * s, y * s), (246 * s, y * s)], fill=(92, 150, 196), width=max(1, int(3 * s)))
    d.polygon([(0, 150 * s), (120 * s, 132 * s), (150 * s, 176 * s), (0, 190 * s)], fill=(84, 66, 52))  # cliff
    d.polygon([(62 * s, 136 * s), (96 * s, 136 * s), (90 * s, 60 * s), (68 * s, 60 * s)], fill=(240, 240, 236))  # tower
    for y0 in (80, 110):  # red bands
        d.polygon(
            [(66 * s, (y0 + 14) * s), (92 * s, (y0 + 14) * s), (91 * s, y0 * s), (67 * s, y0 * s)], fill=(196, 48, 44)
        )
    d.rectangle([64 * s, 46 * s, 94 * s, 60 * s], fill=(52, 52, 60))  # lantern room
    d.polygon([(60 * s, 46 * s), (98 * s, 46 * s), (79 * s, 30 * s)], fill=(196, 48, 44))  # roof
    d.polygon([(94 * s, 50 * s), (168 * s, 34 * s), (168 * s, 66 * s)], fill=(255, 236, 150))  # beam
    return img


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("a_lighthouse_in_flat_poster_style.png")
    draw().save(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
