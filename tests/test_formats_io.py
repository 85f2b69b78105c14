"""Atomic safetensors writes that never overwrite by accident; safe reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unziplora.errors import ExportError, ImportFormatError


def test_formats_package_does_not_import_torch():
    code = (
        "import sys, unziplora.formats, unziplora.formats.sgm, unziplora.formats.metadata, unziplora.formats.io; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


torch = pytest.importorskip("torch")

from unziplora.formats import io


def test_write_then_read(tmp_path):
    dest = tmp_path / "sub" / "a.safetensors"
    out = io.write_safetensors(dest, {"x": torch.arange(6.0).reshape(2, 3)}, {"format": "pt"})
    assert out == dest
    tensors, meta = io.read_safetensors(dest)
    assert torch.equal(tensors["x"], torch.arange(6.0).reshape(2, 3)) and meta == {"format": "pt"}
    assert io.read_safetensors_metadata(dest) == {"format": "pt"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.safetensors"]  # no temp file left


def test_existing_file_is_refused_unless_forced(tmp_path):
    dest = tmp_path / "a.safetensors"
    dest.write_bytes(b"precious")
    with pytest.raises(ExportError, match="--force"):
        io.write_safetensors(dest, {"x": torch.zeros(1)})
    assert dest.read_bytes() == b"precious"
    io.write_safetensors(dest, {"x": torch.ones(1)}, force=True)
    assert io.read_safetensors(dest)[0]["x"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_failed_write_leaves_nothing(tmp_path):
    from safetensors import SafetensorError

    dest = tmp_path / "a.safetensors"
    shared = torch.zeros(4)
    with pytest.raises((RuntimeError, SafetensorError)):
        io.write_safetensors(dest, {"a": shared, "b": shared})  # safetensors refuses shared storage
    assert list(tmp_path.iterdir()) == []


def test_bad_destination_and_metadata(tmp_path):
    with pytest.raises(ExportError, match="folder"):
        io.write_safetensors(tmp_path, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="strings"):
        io.write_safetensors(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, {"n": 3})  # type: ignore[dict-item]


def test_reading_garbage_or_missing(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    for path in (bad, tmp_path / "missing.safetensors"):
        with pytest.raises(ImportFormatError):
            io.read_safetensors(path)
        with pytest.raises(ImportFormatError):
            io.read_safetensors_metadata(path)
