"""Single-file checkpoints: tell an SDXL file from SD 1.5 / 2.x / SD3 / Flux by its keys alone.

Only the safetensors header (a JSON block at the front of the file) is read, so a wrong file is
refused before gigabytes of weights are loaded. Light: no torch import.
"""

from __future__ import annotations

from pathlib import Path

from unziplora.errors import BaseModelError
from unziplora.fileio import UnreadableSafetensors, read_safetensors_header

# Key prefixes that mark each family, checked in order (the first family that matches wins).
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Flux", ("double_blocks.", "model.diffusion_model.double_blocks.")),
    ("SD3", ("model.diffusion_model.joint_blocks.", "text_encoders.")),
    ("SDXL", ("conditioner.embedders.1.model.",)),
    ("SD 2.x", ("cond_stage_model.model.",)),
    ("SD 1.5", ("cond_stage_model.transformer.",)),
)
_SDXL_UNET = "model.diffusion_model.label_emb."


def header_keys(path: str | Path) -> list[str]:
    """The tensor names in a safetensors file's header (``__metadata__`` left out)."""
    path = Path(path)
    try:
        header = read_safetensors_header(path)
    except UnreadableSafetensors as exc:
        raise BaseModelError(f"base model {path} is not a safetensors file ({exc}).") from exc
    except OSError as exc:
        raise BaseModelError(f"base model {path} is not a readable safetensors file: {exc}") from exc
    return [key for key in header if key != "__metadata__"]


def family(keys: list[str]) -> str | None:
    """The model family the keys belong to ("SDXL", "SD 1.5", ...), or None when none matches."""
    for name, prefixes in _FAMILIES:
        if any(key.startswith(prefixes) for key in keys):
            if name == "SDXL" and not any(key.startswith(_SDXL_UNET) for key in keys):
                continue
            return name
    return None


def check_sdxl_file(path: str | Path) -> None:
    """Raise a one-line :class:`BaseModelError` unless ``path`` is an SDXL checkpoint in the SGM layout."""
    found = family(header_keys(path))
    if found == "SDXL":
        return
    what = (
        f"an {found} checkpoint"
        if found and found.startswith("S")
        else f"a {found} checkpoint"
        if found
        else "of an unknown layout"
    )
    raise BaseModelError(
        f"base model {path} is {what}, not SDXL; UnZipLoRA needs an SDXL single file (SGM/A1111 layout) or a diffusers SDXL folder."
    )
