"""A deterministic world of shapes in styles: 64 px images with two known factors.

*Subject* = a shape (circle, square, triangle, star, heart, cross) with random position, size,
rotation and colour. *Style* = how the shape is filled: solid, stripes, dots, checker, gradient,
outline, and ``zigzag``, which the toy base never sees in pretraining (the separation benchmark's
new style). Textures repeat on an 8 px grid fixed to the image, the VAE's cell size, so an 8x8
latent can carry them.

Only numpy and PIL; the same :class:`Scene` always gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
STYLES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "gradient", "outline", "zigzag")
HELD_OUT_STYLES: tuple[str, ...] = ("zigzag",)  # never in the toy base's pretraining set
TRAIN_STYLES: tuple[str, ...] = tuple(s for s in STYLES if s not in HELD_OUT_STYLES)
# Saturated hues the shapes are painted in (RGB 0..255); the second colour of a texture is a darker one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),
    (240, 150, 20),
    (40, 170, 60),
    (40, 90, 220),
    (150, 50, 200),
    (20, 170, 180),
)
BACKGROUND = (245, 245, 240)
_SUPER = 4  # supersampling factor for smooth shape edges
_CELL = 8


@dataclass(frozen=True)
class Scene:
    """Everything that decides one image."""

    shape: str
    style: str
    cx: float  # centre, px
    cy: float
    radius: float  # px, half the shape's extent
    angle: float  # radians
    colour: int  # index into PALETTE


def caption(shape: str | None, style: str | None) -> str:
    """The world's captions: ``a <shape> in <style> style``, ``a <shape>``, ``an image in <style> style``."""
    if shape and style:
        return f"a {shape} in {style} style"
    if shape:
        return f"a {shape}"
    if style:
        return f"an image in {style} style"
    return ""


def random_scene(
    rng: np.random.Generator, shape: str | None = None, style: str | None = None, styles: tuple[str, ...] = TRAIN_STYLES
) -> Scene:
    """A scene with the given factors (random where None), position/size/rotation/colour random."""
    return Scene(
        shape=shape if shape is not None else SHAPES[int(rng.integers(len(SHAPES)))],
        style=style if style is not None else styles[int(rng.integers(len(styles)))],
        cx=float(rng.uniform(24, 40)),
        cy=float(rng.uniform(24, 40)),
        radius=float(rng.uniform(16, 22)),
        angle=float(rng.uniform(-0.5, 0.5)),
        colour=int(rng.integers(len(PALETTE))),
    )


def _polygon(scene: Scene) -> list[tuple[float, float]] | None:
    """Outline points (supersampled px) of polygonal shapes; None for the circle and heart."""
    r = scene.radius
    if scene.shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * r * 0.8, y * r * 0.8) for x, y in pts]
    elif scene.shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        pts = [(x, y + r * 0.2) for x, y in pts]
    elif scene.shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    elif scene.shape == "cross":
        w = r * 0.36
        pts = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
    else:
        return None
    ca, sa = math.cos(scene.angle), math.sin(scene.angle)
    return [((scene.cx + x * ca - y * sa) * _SUPER, (scene.cy + x * sa + y * ca) * _SUPER) for x, y in pts]


def _heart(scene: Scene) -> list[tuple[float, float]]:
    ca, sa = math.cos(scene.angle), math.sin(scene.angle)
    s = scene.radius / 17.0
    pts = []
    for k in range(96):
        t = 2 * math.pi * k / 96
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) - 1.5
        x, y = x * s, y * s
        pts.append(((scene.cx + x * ca - y * sa) * _SUPER, (scene.cy + x * sa + y * ca) * _SUPER))
    return pts


def shape_mask(scene: Scene) -> np.ndarray:
    """Coverage of the shape, float32 in [0, 1], SIZE x SIZE (anti-aliased)."""
    big = Image.new("L", (SIZE * _SUPER, SIZE * _SUPER), 0)
    draw = ImageDraw.Draw(big)
    if scene.shape == "circle":
        r = scene.radius * 0.9 * _SUPER
        cx, cy = scene.cx * _SUPER, scene.cy * _SUPER
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif scene.shape == "heart":
        draw.polygon(_heart(scene), fill=255)
    else:
        poly = _polygon(scene)
        if poly is None:
            raise ValueError(f"unknown shape {scene.shape!r}")
        draw.polygon(poly, fill=255)
    small = big.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _erode(mask: np.ndarray, px: int) -> np.ndarray:
    """Binary erosion by a (2px+1) square, numpy only."""
    m = mask > 0.5
    for _ in range(px):
        p = np.pad(m, 1, constant_values=False)
        m = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m.astype(np.float32)


def _texture(style: str, colour: np.ndarray) -> np.ndarray:
    """SIZE x SIZE x 3 float fill for ``style`` (outline is handled by the caller)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dark = colour * 0.3
    light = colour * 0.35 + np.array(BACKGROUND, np.float32) * 0.65
    if style == "solid" or style == "outline":
        sel = np.ones((SIZE, SIZE), np.float32)
        second = colour
    elif style == "stripes":
        sel = ((yy % _CELL) < _CELL / 2).astype(np.float32)
        second = dark
    elif style == "checker":
        sel = (((xx // _CELL) + (yy // _CELL)) % 2 == 0).astype(np.float32)
        second = light
    elif style == "dots":
        d = np.hypot((xx % _CELL) - 3.5, (yy % _CELL) - 3.5)
        sel = (d > 2.2).astype(np.float32)
        second = dark
    elif style == "gradient":
        sel = np.clip((xx - 8) / (SIZE - 16), 0, 1)
        second = dark
        return sel[..., None] * second + (1 - sel[..., None]) * light
    elif style == "zigzag":
        phase = np.abs((xx % _CELL) - _CELL / 2)  # 0..4 triangle wave along x
        sel = (((yy + phase) % _CELL) < _CELL / 2).astype(np.float32)
        second = light
    else:
        raise ValueError(f"unknown style {style!r}")
    return sel[..., None] * colour + (1 - sel[..., None]) * second


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 RGB, SIZE x SIZE x 3."""
    mask = shape_mask(scene)
    colour = np.array(PALETTE[scene.colour], np.float32)
    if scene.style == "outline":
        inner = _erode(mask, 3)
        mask = np.clip(mask - inner, 0, 1)
    fill = _texture(scene.style, colour)
    bg = np.array(BACKGROUND, np.float32)
    out = mask[..., None] * fill + (1 - mask[..., None]) * bg
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_image(scene: Scene) -> Image.Image:
    return Image.fromarray(render(scene), "RGB")


def downsample(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 images [N, SIZE, SIZE, 3] area-averaged to ``size`` px (the toy base works at 32 px)."""
    if size == pixels.shape[1]:
        return pixels
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BOX)) for p in pixels])


def dataset(n: int, seed: int, styles: tuple[str, ...] = TRAIN_STYLES) -> tuple[np.ndarray, list[Scene]]:
    """``n`` random scenes (deterministic for ``seed``) and their pixels, uint8 [n, SIZE, SIZE, 3]."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, styles=styles) for _ in range(n)]
    pixels = np.stack([render(s) for s in scenes])
    return pixels, scenes
