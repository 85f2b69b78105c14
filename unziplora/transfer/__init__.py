"""Moving LoRAs in and out of the registry: ``unzip export`` and ``unzip import`` as functions.

Importing this package is cheap (no torch); the names below load their module on first use::

    from unziplora.registry import Registry
    from unziplora.transfer import export_entry, import_official

    reg = Registry.from_settings()
    result = export_entry(reg.get("cat-sketch-3f2a"), fmt="kohya", part="style", out="sketch.safetensors")
    entry = import_official("models/sketch_cat/sketch_cat", reg, subject="cat", style="sketch")

* :func:`export_entry` / :class:`ExportResult` (:mod:`.export`): kohya (A1111, ComfyUI) or diffusers
  files of the content, style or combined LoRA, optional SVD rank reduction;
* :func:`import_official` / :func:`import_files` (:mod:`.importer`): official UnZipLoRA outputs, or a
  content and a style LoRA file, into an entry marked imported;
* :mod:`.layout`: the attention projections (and shapes) a base has, read without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES: dict[str, str] = {
    "export_entry": "export",
    "ExportResult": "export",
    "resolve_format": "export",
    "output_path": "export",
    "import_official": "importer",
    "import_files": "importer",
}

__all__ = [
    "ExportResult",
    "export_entry",
    "import_files",
    "import_official",
    "output_path",
    "resolve_format",
]

if TYPE_CHECKING:
    from unziplora.transfer.export import ExportResult, export_entry, output_path, resolve_format
    from unziplora.transfer.importer import import_files, import_official


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'unziplora.transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"unziplora.transfer.{module}"), name)
    globals()[name] = value
    return value
