"""Shared helpers for the registry tests: make entries quickly, damage them on purpose."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unziplora.registry import Entry, Registry

PAYLOADS = ("content.safetensors", "style.safetensors", "masks.safetensors", "source.png")


def record_for(subject: str, style: str, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "prompts": {
            "combined": f"a sks {subject} in {style} style",
            "content": f"a sks {subject}",
            "style": f"in {style} style",
        },
        "rare_token": "sks",
        "sources": [{"name": f"{subject}.jpg", "sha256": "ab" * 32, "bytes": 51234, "width": 1024, "height": 768}],
        "base": {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": "tiny-sdxl-v1"},
        "settings": {"steps": 8, "rank": 4, "learning_rate": 5e-5, "resolution": 64, "seed": 0},
        "figures": {"steps": 8, "seconds": 1.5, "final_loss": 0.25, "device": "cpu", "precision": "fp32"},
    }
    record.update(extra)
    return record


def make_entry(
    reg: Registry,
    subject: str = "cat",
    style: str = "pencil sketch",
    *,
    size: int = 1000,
    name: str | None = None,
    **extra: Any,
) -> Entry:
    def write(folder: Path) -> None:
        for i, payload in enumerate(PAYLOADS):
            (folder / payload).write_bytes(os.urandom(size * (i + 1)))

    return reg.create(record_for(subject, style, **extra), write, subject=subject, style=style, name=name)


def bump_mtime(path: Path) -> None:
    """Make a file look edited after its entry was written (as a real edit would)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
