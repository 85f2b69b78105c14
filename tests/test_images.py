"""Input images: every kind of awkward file is either handled correctly or refused in one line."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unziplora.errors import InputImageError
from unziplora.images import MAX_PIXELS, collect_inputs, load_image, thumbnail, to_tensor

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
HINT_FORMATS = "pass a PNG, JPEG, WebP, BMP, GIF or TIFF image"


@pytest.fixture(autouse=True)
def _no_warnings_escape():
    """Loading must never print PIL warnings: turn any warning into a test failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def _colors(image: Image.Image) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, 3)}


def _mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _refusal(path: Path, resolution: int = 16, **kwargs) -> str:
    with pytest.raises(InputImageError) as info:
        load_image(path, resolution, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- collect_inputs


def test_collect_folder_sorted_images_only_with_notes(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("b.png", "A.JPG", "c.webp"):
        _noise((4, 4)).save(folder / name, format="PNG")
    (folder / "notes.txt").write_text("prompt: a cat")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "sub").mkdir()
    files, notes = collect_inputs([folder])
    assert [f.name for f in files] == ["A.JPG", "b.png", "c.webp"]
    assert notes == ["skipping notes.txt: not an image file", "skipping sub/: sub-folders are not searched"]


def test_collect_files_and_folders_deduplicated(tmp_path: Path) -> None:
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    _noise((4, 4)).save(one)
    _noise((4, 4)).save(two)
    files, notes = collect_inputs([two, tmp_path, tmp_path / "." / "one.png", two])
    assert files == [two, one]
    assert notes == []


def test_collect_keeps_explicit_file_with_any_extension(tmp_path: Path) -> None:
    odd = tmp_path / "photo.heic"
    odd.write_bytes(b"x")
    assert collect_inputs([odd]) == ([odd], [])


def test_collect_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(InputImageError) as info:
        collect_inputs([missing])
    assert str(info.value) == f"cannot read {missing}: no such file or folder; check the path"


def test_collect_empty_result(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(InputImageError) as info:
        collect_inputs([tmp_path])
    assert str(info.value) == (
        f"no images found in {tmp_path}: expected files ending in .png, .jpg, .jpeg, .webp, .bmp, .gif, "
        ".tif, .tiff; pass image files or a folder that holds them"
    )


def test_collect_nothing_given() -> None:
    with pytest.raises(InputImageError, match="^no input images given; pass one or more image files or folders$"):
        collect_inputs([])


def test_collect_notes_empty_folder_among_others(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    image = tmp_path / "x.png"
    _noise((4, 4)).save(image)
    assert collect_inputs([empty, image]) == ([image], [f"no image files in {empty}"])


# ---------------------------------------------------------------- load_image: handled correctly


def test_plain_rgb_metadata(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    _noise((32, 32)).save(path)
    loaded = load_image(path, 32)
    data = path.read_bytes()
    assert loaded.image.mode == "RGB" and loaded.image.size == (32, 32)
    assert loaded.file_name == "cat.png"
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.size_bytes == len(data)
    assert loaded.original_size == (32, 32)
    assert loaded.warnings == []
    with Image.open(path) as original:
        assert np.array_equal(np.asarray(loaded.image), np.asarray(original.convert("RGB")))
    assert loaded.source_record() == {
        "file_name": "cat.png",
        "sha256": loaded.sha256,
        "size_bytes": len(data),
        "width": 32,
        "height": 32,
    }


def test_short_side_resized_and_center_cropped(tmp_path: Path) -> None:
    # 60x20: red | blue | red thirds; the center square is the blue third.
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, :20] = RED
    array[:, 20:40] = BLUE
    array[:, 40:] = RED
    path = tmp_path / "wide.png"
    Image.fromarray(array).save(path)
    loaded = load_image(path, 10)
    assert loaded.image.size == (10, 10)
    assert loaded.original_size == (60, 20)
    assert np.abs(np.asarray(loaded.image).astype(int) - BLUE).max() <= 20
    assert loaded.warnings == ["wide.png is 60x20: only its center square is used"]


def test_small_image_upscaled_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8), BLUE).save(path)
    loaded = load_image(path, 32)
    assert loaded.image.size == (32, 32)
    assert loaded.image.getpixel((16, 16)) == BLUE
    assert loaded.warnings == [
        "small.png is 8x8, smaller than 32x32: upscaled, so results may look soft; use a larger image for sharper results"
    ]


def test_rgba_transparency_composited_over_white(tmp_path: Path) -> None:
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[:, :4] = (255, 0, 0, 0)  # fully transparent red -> white
    array[:, 4:] = (0, 0, 255, 255)  # opaque blue stays blue
    array[0, 4] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "rgba.png"
    Image.fromarray(array, mode="RGBA").save(path)
    image = load_image(path, 8).image
    assert image.mode == "RGB"
    assert image.getpixel((0, 3)) == WHITE
    assert image.getpixel((6, 3)) == BLUE
    assert _close(image.getpixel((4, 0)), (127, 127, 127), 1)


def test_la_composited_over_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(path)
    assert _colors(load_image(path, 8).image) == {WHITE}


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])  # index 0 red (transparent), index 1 green
    for x in range(4, 8):
        for y in range(8):
            image.putpixel((x, y), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    loaded = load_image(path, 8).image
    assert loaded.getpixel((1, 1)) == WHITE
    assert loaded.getpixel((6, 1)) == (0, 255, 0)


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    # Stored 40x20 with red left half and blue right half; orientation 6 means "rotate 90 degrees
    # clockwise to display", so it displays 20x40 with red on top and blue at the bottom.
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = RED
    array[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    loaded = load_image(path, 20)
    assert loaded.original_size == (20, 40)
    # Center square of rows 10..30: top half red, bottom half blue.
    assert _close(loaded.image.getpixel((10, 2)), RED, 30)
    assert _close(loaded.image.getpixel((10, 17)), BLUE, 30)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    assert _mode(path) == "CMYK"
    image = load_image(path, 16).image
    assert image.mode == "RGB"
    assert _close(image.getpixel((8, 8)), RED, 8)


def test_sixteen_bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    # PIL's own I;16 -> RGB conversion clips everything above 255 to white; we scale instead.
    row = np.array([[0, 257, 1000, 32896], [51400, 65278, 65535, 128]], dtype=np.uint16)
    square = np.tile(row, (4, 2))  # 8x8, so nothing is cropped or resized
    path = tmp_path / "deep.png"
    Image.fromarray(square).save(path)
    assert _mode(path) == "I;16"
    got = np.asarray(load_image(path, 8).image)
    expected = np.rint(square.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(got[..., 0], expected)
    assert np.array_equal(got[..., 0], got[..., 2])
    assert got[0, 3, 0] == 128 and got[1, 0, 0] == 200 and got[1, 2, 0] == 255 and got[0, 2, 0] == 4


def test_thirty_two_bit_int_tiff_in_16_bit_range(tmp_path: Path) -> None:
    path = tmp_path / "int.tif"
    Image.fromarray(np.full((8, 8), 51400, dtype=np.int32)).save(path)
    assert _mode(path) == "I"
    assert load_image(path, 8).image.getpixel((0, 0)) == (200, 200, 200)


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.new("F", (8, 8), 0.5).save(path)
    assert load_image(path, 8).image.getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(("mode", "value", "expected"), [("L", 77, (77, 77, 77)), ("1", 1, WHITE), ("1", 0, (0, 0, 0))])
def test_grayscale(tmp_path: Path, mode: str, value: int, expected: tuple[int, int, int]) -> None:
    path = tmp_path / "gray.png"
    Image.new(mode, (8, 8), value).save(path)
    assert _colors(load_image(path, 8).image) == {expected}


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "GIF", "TIFF"])
def test_other_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"still.{fmt.lower()}"
    Image.new("RGB", (8, 8), BLUE).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert _close(load_image(path, 8).image.getpixel((4, 4)), BLUE, 4)


# ---------------------------------------------------------------- load_image: refused clearly


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _refusal(path) == f"cannot use {path}: the file is empty (0 bytes); re-export or re-download it"


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("this is not a picture\n")
    assert _refusal(path) == f"cannot use {path}: not an image, or a format we do not read; {HINT_FORMATS}"


def test_eps_is_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "art.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    assert _refusal(path) == f"cannot use {path}: not an image, or a format we do not read; {HINT_FORMATS}"


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    _noise((64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _refusal(path) == (
        f"cannot use {path}: the image is truncated or damaged (image file is truncated); re-export or re-download it"
    )


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    _noise((64, 64)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _refusal(path)
    assert message.startswith(f"cannot use {path}: the image is truncated or damaged (image file is truncated")
    assert message.endswith("); re-export or re-download it")


def test_png_cut_inside_header(tmp_path: Path) -> None:
    path = tmp_path / "stub.png"
    _noise((8, 8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:10])  # the signature and two bytes: PIL cannot even identify it
    assert _refusal(path) == (
        f"cannot use {path}: the image is truncated or damaged (its header cannot be read); re-export or re-download it"
    )
    path.write_bytes(data[:20])  # identified as PNG, IHDR cut short
    message = _refusal(path)
    assert message.startswith(f"cannot use {path}: the image is truncated or damaged (")
    assert message.endswith("); re-export or re-download it")


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    chunk = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = chunk
    data[29:33] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)


def test_decompression_bomb_from_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(20_000, 20_000))
    assert _refusal(path) == (
        f"cannot use {path}: the image is 400,000,000 pixels, over the limit of {MAX_PIXELS:,} pixels "
        "(a possible decompression bomb); downscale it and try again"
    )


def test_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _noise((40, 30)).save(path)
    assert _refusal(path, max_pixels=1000) == (
        f"cannot use {path}: the image is 40x30 pixels, over the limit of 1,000 pixels "
        "(a possible decompression bomb); downscale it and try again"
    )
    assert load_image(path, 16, max_pixels=1200).image.size == (16, 16)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, (0, 255, 0), BLUE)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    assert _refusal(path) == (
        f"cannot use {path}: it is animated (3 frames); save the frame you want as a PNG or JPEG and pass that"
    )


def test_single_frame_gif_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "still.gif"
    Image.new("RGB", (8, 8), RED).save(path)
    assert load_image(path, 8).image.getpixel((0, 0)) == RED


def test_unsupported_mode(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.new("LAB", (8, 8)).save(path)
    assert _refusal(path) == (
        f"cannot use {path}: unsupported pixel mode 'LAB'; convert it to an 8-bit RGB PNG or JPEG"
    )


def test_int_tiff_beyond_16_bits(tmp_path: Path) -> None:
    path = tmp_path / "wide.tif"
    Image.fromarray(np.full((8, 8), 70_000, dtype=np.int32)).save(path)
    assert _refusal(path) == (
        f"cannot use {path}: integer pixels outside 0..65535; convert it to an 8-bit RGB PNG or JPEG"
    )


def test_float_tiff_beyond_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "hdr.tif"
    Image.new("F", (8, 8), 3.5).save(path)
    assert _refusal(path) == (
        f"cannot use {path}: floating-point pixels outside 0..1; convert it to an 8-bit RGB PNG or JPEG"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.png"
    assert _refusal(path) == f"cannot read {path}: no such file; check the path"


def test_folder_given_as_file(tmp_path: Path) -> None:
    assert _refusal(tmp_path) == f"cannot read {tmp_path}: it is a folder, not an image file; pass an image file"


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    _noise((8, 8)).save(path)

    def deny(file: object, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(file))

    import unziplora.images

    monkeypatch.setattr(unziplora.images.os, "open", deny)  # the image is opened with os.open (never blocking)
    assert _refusal(path) == f"cannot read {path}: permission denied; make the file readable and try again"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read mode-000 files")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    _noise((8, 8)).save(path)
    path.chmod(0)
    try:
        assert _refusal(path) == f"cannot read {path}: permission denied; make the file readable and try again"
    finally:
        path.chmod(0o600)


def test_bad_resolution(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resolution must be a positive number of pixels; got 0"):
        load_image(tmp_path / "x.png", 0)


# ---------------------------------------------------------------- to_tensor / thumbnail


def test_to_tensor_range_and_shape() -> None:
    torch = pytest.importorskip("torch")
    array = np.zeros((2, 3, 3), dtype=np.uint8)
    array[0, 0] = (0, 255, 128)
    tensor = to_tensor(Image.fromarray(array))
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[0, 0, 0].item() == -1.0 and tensor[1, 0, 0].item() == 1.0
    assert abs(tensor[2, 0, 0].item() - (128 / 127.5 - 1)) < 1e-6
    assert tensor.min().item() >= -1.0 and tensor.max().item() <= 1.0


def test_thumbnail_keeps_aspect_and_does_not_touch_the_original() -> None:
    original = _noise((600, 300))
    small = thumbnail(original)
    assert small.size == (256, 128) and small.mode == "RGB"
    assert original.size == (600, 300)
    assert thumbnail(Image.new("L", (64, 64)), size=32).size == (32, 32)


def test_module_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, unziplora.images; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
