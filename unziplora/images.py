"""Loading training and restyle input images safely.

Input images come from users and the web, so every file is treated as untrusted: it is read
once (for its sha256 and size), decoded fully inside a guard, and either turned into a clean
square RGB picture or refused with one line that says what is wrong and what to do. Nothing
half-decoded reaches training, and PIL never prints warnings of its own.

This module is light: numpy and PIL only; torch is imported inside :func:`to_tensor`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from unziplora.errors import InputImageError

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Twice PIL's default MAX_IMAGE_PIXELS: the size at which PIL itself raises DecompressionBombError.
MAX_PIXELS = 178_956_970

# Larger input files are refused before reading (a 179 MP PNG is far smaller).
MAX_FILE_BYTES = 512 << 20

# Formats PIL may use to open inputs. Restricting them keeps PIL away from EPS (which runs
# Ghostscript) and other exotic decoders. Multi-picture JPEGs from phones open through "JPEG"
# (PIL then names them "MPO"; the extra pictures are previews or depth maps, not animation).
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
_FORMAT_HINT = "pass a PNG, JPEG, WebP, BMP, GIF or TIFF image"
# Formats whose extra frames are animation; in MPO/TIFF they are side pictures or pages.
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")
# File signatures of the formats above: a file that starts like an image but cannot be
# identified is a damaged image, not "not an image".
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_CROP_WARN_RATIO = 1.25  # warn when the square crop drops more than ~20% of the long side


@dataclass
class LoadedImage:
    """One input, ready for training, plus what the registry records about its source."""

    image: Image.Image  # RGB, resolution x resolution
    file_name: str
    sha256: str  # of the file's bytes, as stored on disk
    size_bytes: int
    original_size: tuple[int, int]  # (width, height) as displayed, i.e. after EXIF orientation
    warnings: list[str] = field(default_factory=list)

    def source_record(self) -> dict[str, Any]:
        """The JSON-ready description of the source file kept in ``entry.json``."""
        width, height = self.original_size
        return {
            "file_name": self.file_name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "width": width,
            "height": height,
        }


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into the list of image files to use.

    Files given explicitly are kept whatever their extension (their content is checked when
    loaded); folders contribute their image files by extension, sorted by name, not
    recursively. Returns the files (first occurrence kept on duplicates) and notes about
    what was skipped.
    """
    if not paths:
        raise InputImageError("no input images given; pass one or more image files or folders")
    files: list[Path] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def add(file: Path) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            files.append(file)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = 0
            for child in sorted(path.iterdir(), key=lambda p: (p.name.casefold(), p.name)):
                if child.name.startswith("."):
                    continue  # .DS_Store, editor swap files: not worth a note
                if child.is_dir():
                    notes.append(f"skipping {child.name}/: sub-folders are not searched")
                elif _is_image_name(child):
                    add(child)
                    found += 1
                else:
                    notes.append(f"skipping {child.name}: not an image file")
            if found == 0:
                notes.append(f"no image files in {path}")
        elif path.exists():
            add(path)
        else:
            raise InputImageError(f"cannot read {path}: no such file or folder; check the path")
    if not files:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise InputImageError(
            f"no images found in {', '.join(str(p) for p in paths)}: expected files ending in {exts}; "
            "pass image files or a folder that holds them"
        )
    return files, notes


def _read_bytes(path: Path) -> bytes:
    """The whole file, if it is a regular file under MAX_FILE_BYTES: a FIFO or ``/dev/zero`` is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(st.st_mode):
                raise InputImageError(
                    f"cannot read {path}: not a regular file (a pipe or a device?); pass an image file"
                )
            if st.st_size > MAX_FILE_BYTES:
                raise InputImageError(
                    f"cannot read {path}: {st.st_size >> 20} MiB is over the {MAX_FILE_BYTES >> 20} MiB limit for an input image"
                )
            return handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputImageError(f"cannot read {path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputImageError(f"cannot read {path}: it is a folder, not an image file; pass an image file") from None
    except PermissionError:
        raise InputImageError(f"cannot read {path}: permission denied; make the file readable and try again") from None
    except OSError as exc:
        raise InputImageError(f"cannot read {path}: {exc.strerror or exc}; check the file and try again") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.rstrip(".")


def _bomb(path: Path, pixels: int | None, limit: int, dims: str = "") -> InputImageError:
    size = dims or (f"{pixels:,} pixels" if pixels else "too many pixels")
    return InputImageError(
        f"cannot use {path}: the image is {size}, over the limit of {limit:,} pixels "
        "(a possible decompression bomb); downscale it and try again"
    )


def _decode(path: Path, data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode ``data``; every failure becomes an InputImageError."""
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning, bad EXIF, palette transparency, ...); the
            # guard below refuses what matters, the rest must not reach the user's terminal.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise _bomb(path, width * height, max_pixels, f"{width}x{height} pixels")
                frames = getattr(img, "n_frames", 1)
                if img.format in _ANIMATED_FORMATS and frames > 1:
                    raise InputImageError(
                        f"cannot use {path}: it is animated ({frames} frames); "
                        "save the frame you want as a PNG or JPEG and pass that"
                    )
                img.seek(0)
                img.load()  # force the full decode so truncation is caught here, not later
                return ImageOps.exif_transpose(img)
    except InputImageError:
        raise
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb(path, int(match.group(1)) if match else None, max_pixels) from None
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise InputImageError(
                f"cannot use {path}: the image is truncated or damaged (its header cannot be read); "
                "re-export or re-download it"
            ) from None
        raise InputImageError(f"cannot use {path}: not an image, or a format we do not read; {_FORMAT_HINT}") from None
    except MemoryError:
        raise InputImageError(
            f"cannot use {path}: not enough memory to decode it; downscale it and try again"
        ) from None
    except Exception as exc:  # noqa: BLE001 - broken files make PIL raise OSError, SyntaxError, ValueError, EOFError, ...
        raise InputImageError(
            f"cannot use {path}: the image is truncated or damaged ({_one_line(exc)}); re-export or re-download it"
        ) from None


def _over_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _to_rgb(path: Path, img: Image.Image) -> Image.Image:
    """Convert any supported mode to 8-bit RGB, scaling deep pixels instead of clipping them."""
    mode = img.mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode in ("RGB", "L", "P", "1") and img.has_transparency_data):
            return _over_white(img)
        if mode in ("RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr"):
            return img.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # PIL's own I;16 -> L conversion clips at 255; scale the 0..65535 range instead.
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            # 32-bit integers beyond 16 bits: there is no range we could scale from with confidence.
            raise InputImageError(
                f"cannot use {path}: integer pixels outside 0..65535; convert it to an 8-bit RGB PNG or JPEG"
            )
        return _gray_to_rgb(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0):
            raise InputImageError(
                f"cannot use {path}: floating-point pixels outside 0..1; convert it to an 8-bit RGB PNG or JPEG"
            )
        return _gray_to_rgb(np.rint(values * 255.0).astype(np.uint8))
    raise InputImageError(f"cannot use {path}: unsupported pixel mode {mode!r}; convert it to an 8-bit RGB PNG or JPEG")


def open_rgb(path: Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one image file to RGB at its own size, with every check of :func:`load_image`.

    EXIF orientation applied, transparency composited over white, 16-bit/CMYK/grayscale converted;
    empty, broken, animated or oversized files raise :class:`InputImageError` with one line.
    """
    return _open(Path(path), max_pixels)[1]


def _open(path: Path, max_pixels: int) -> tuple[bytes, Image.Image]:
    data = _read_bytes(path)
    if not data:
        raise InputImageError(f"cannot use {path}: the file is empty (0 bytes); re-export or re-download it")
    return data, _to_rgb(path, _decode(path, data, max_pixels))


def load_image(path: Path, resolution: int, *, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read, check and normalise one input image.

    The result is RGB, ``resolution`` x ``resolution``: EXIF orientation applied, transparency
    composited over white, the shorter side scaled to ``resolution`` and the center square
    kept. A file that cannot be used raises :class:`InputImageError` with one line.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels; got {resolution}")
    path = Path(path)
    data, img = _open(path, max_pixels)
    width, height = img.size
    notes: list[str] = []
    side = min(width, height)
    if side < resolution:
        notes.append(
            f"{path.name} is {width}x{height}, smaller than {resolution}x{resolution}: upscaled, "
            "so results may look soft; use a larger image for sharper results"
        )
    if max(width, height) > _CROP_WARN_RATIO * side:
        notes.append(f"{path.name} is {width}x{height}: only its center square is used")
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    if side == resolution and (width, height) == (side, side):
        square = img
    else:
        method = Image.Resampling.LANCZOS if side >= resolution else Image.Resampling.BICUBIC
        square = img.resize((resolution, resolution), method, box=box)
    return LoadedImage(
        image=square,
        file_name=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        original_size=(width, height),
        warnings=notes,
    )


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float32 tensor [3, H, W] in [-1, 1], the range the SDXL VAE expects."""
    import torch

    array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return tensor.to(torch.float32) / 127.5 - 1.0


def thumbnail(img: Image.Image, size: int = 256) -> Image.Image:
    """A small RGB copy (longest side ``size``) for the registry's ``source.png``."""
    small = img.convert("RGB") if img.mode != "RGB" else img.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    return small
