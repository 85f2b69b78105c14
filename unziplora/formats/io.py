"""Writing and reading LoRA safetensors files safely.

Why: an export must never leave a half-written file under the name a user (or A1111's folder
scan) will pick up, and must never silently overwrite an existing file. So writes go through
:func:`unziplora.fileio.atomic_target`: a temporary sibling, fsync'ed, then linked (no overwrite) or
replaced (``force=True``) into place — the huggingface_hub habit (STYLE.md habit 11). Reads use
``safe_open`` only, so no pickle is ever executed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from unziplora import fileio
from unziplora.errors import ExportError, ImportFormatError
from unziplora.fileio import atomic_target

if TYPE_CHECKING:
    import torch


def write_safetensors(
    dest: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    force: bool = False,
) -> Path:
    """Atomically write ``tensors`` (+ header ``metadata``) to ``dest``.

    Args:
        dest: target file; its parent folder is created if missing.
        tensors: name -> tensor; moved to CPU and made contiguous.
        metadata: header ``__metadata__``; every value must be a string (safetensors' rule).
        force: replace an existing file instead of refusing.

    Returns:
        The path written.

    Raises:
        ExportError: ``dest`` exists (and not ``force``), is a folder, or cannot be written.
    """
    from safetensors.torch import save_file

    path = Path(dest)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name ending in .safetensors.")
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; pass --force to overwrite it.")
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"safetensors metadata values must be strings; not so for {bad[:3]}")
    from safetensors import SafetensorError

    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # removed again on failure
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create folder {path.parent}: {exc.strerror or exc}.") from None
    done = False
    try:
        with atomic_target(path, overwrite=force) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        done = True
    except FileExistsError:  # the name appeared meanwhile: a concurrent writer is never clobbered
        raise ExportError(f"{path} already exists; pass --force to overwrite it.") from None
    except SafetensorError as exc:  # safetensors reports a full disk or a failed write this way
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "No space left" in text or "os error 28" in text:
            text = "no space left on the device; free some disk space and try again"
        elif "os error 30" in text or "Read-only file system" in text:
            text = "the folder is on a read-only file system; choose another -o"
        elif "os error 13" in text or "Permission denied" in text:
            text = "permission denied; choose a folder you can write to with -o"
        raise ExportError(f"cannot write {path}: {text}.") from None
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}.") from None
    finally:
        if not done:
            for folder in made:  # innermost first; only folders this call created, and only if empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return path


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the header metadata of a safetensors file (CPU, no pickle).

    Raises:
        ImportFormatError: the file is missing or is not a readable safetensors file.
    """
    p = Path(path)
    try:
        return fileio.read_safetensors(p)
    except FileNotFoundError:
        raise ImportFormatError(f"{p} does not exist or is not a file.") from None
    except fileio.UnreadableSafetensors as exc:
        raise ImportFormatError(f"{p} is not a readable safetensors file ({exc}).") from None


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Header metadata only, parsed without torch, so `show`-like commands stay fast.

    Raises:
        ImportFormatError: the file is missing or its header is not safetensors.
    """
    p = Path(path)
    try:
        header = fileio.read_safetensors_header(p)
    except FileNotFoundError:
        raise ImportFormatError(f"{p} does not exist.") from None
    except fileio.UnreadableSafetensors as exc:
        raise ImportFormatError(f"{p} is not a safetensors file ({exc}).") from None
    meta = header.get("__metadata__")
    return {str(k): str(v) for k, v in (meta or {}).items()}
