"""Single-file checkpoints: tell an SDXL file from SD 1.5 / 2.x / SD3 / Flux by its keys alone.

Only the safetensors header (a JSON block at the front of the file) is read, so a wrong file is
refused before gigabytes of weights are loaded: another family, a missing VAE or text encoder, or
or text encoder. Which configs the file is loaded with is :mod:`unziplora.single_file_arch`'s
business. Light: no torch import.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L = "conditioner.embedders.0.transformer."
OPEN_CLIP = "conditioner.embedders.1.model."
EMA = "model_ema."


def read_header(path: str | Path) -> dict[str, Any]:
    """A safetensors file's header: ``{name: {"dtype", "shape", "data_offsets"}}`` (``__metadata__`` left out).

    Raises:
        BaseModelError: not a readable safetensors file (one line).
    """
    return read_header_at(path)[0]


def read_header_at(path: str | Path) -> tuple[dict[str, Any], int]:
    """:func:`read_header` and the file offset where tensor data starts (``data_offsets`` count from it).

    Raises:
        BaseModelError: not a readable safetensors file (one line).
    """
    path = Path(path)
    try:
        header = read_safetensors_header(path)
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
    except UnreadableSafetensors as exc:
        raise BaseModelError(f"base model {path} is not a safetensors file ({exc}).") from exc
    except OSError as exc:
        raise BaseModelError(f"base model {path} is not a readable safetensors file: {exc}") from exc
    header.pop("__metadata__", None)
    if not all(isinstance(v, dict) and isinstance(v.get("shape"), list) for v in header.values()):
        raise BaseModelError(f"base model {path} is not a safetensors file (a tensor entry has no shape).")
    return header, 8 + size


def header_keys(path: str | Path) -> list[str]:
    """The tensor names in a safetensors file's header (``__metadata__`` left out)."""
    return list(read_header(path))


def family(keys: list[str]) -> str | None:
    """The model family the keys belong to ("SDXL", "SD 1.5", ...), or None when none matches."""
    for name, prefixes in _FAMILIES:
        if any(key.startswith(prefixes) for key in keys):
            if name == "SDXL" and not any(key.startswith(_SDXL_UNET) for key in keys):
                continue
            return name
    return None


def _refuse_family(path: str | Path, found: str | None) -> BaseModelError:
    what = (
        f"an {found} checkpoint"
        if found and found.startswith("S")
        else f"a {found} checkpoint"
        if found
        else "of an unknown layout"
    )
    return BaseModelError(
        f"base model {path} is {what}, not SDXL; UnZipLoRA needs an SDXL single file (SGM/A1111 layout) or a diffusers SDXL folder."
    )


@dataclass(frozen=True)
class SingleFile:
    """What the header of an SDXL single file says, before any weight is read."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: frozenset[str]  # safetensors dtypes of the UNet's tensors ("F16", "F32", "BF16")
    has_ema: bool  # an EMA copy of the UNet (model_ema.diffusion_model*), ignored: the file's model is the other

    def describe(self) -> str:
        """A short note on what is in the file, for a status line."""
        kinds = "/".join(sorted(d.lower() for d in self.dtypes))
        return f"{kinds} UNet, baked-in VAE" + (", EMA copy ignored" if self.has_ema else "")


def check_sdxl_file(path: str | Path) -> SingleFile:
    """The header of an SDXL checkpoint in the SGM layout; a one-line :class:`BaseModelError` otherwise."""
    header = read_header(path)
    found = family(list(header))
    if found != "SDXL":
        raise _refuse_family(path, found)
    for prefix, part in ((VAE, "VAE"), (CLIP_L, "first text encoder (CLIP-L)"), (UNET, "UNet")):
        if not any(key.startswith(prefix) for key in header):
            raise BaseModelError(
                f"base model {path} is an SDXL checkpoint without its {part} (no {prefix}* tensors); "
                "UnZipLoRA needs a full single file (UNet, both text encoders and a baked-in VAE) or a diffusers SDXL folder."
            )
    model = {k: v for k, v in header.items() if not k.startswith(EMA)}
    return SingleFile(
        path=Path(path),
        shapes={k: tuple(int(n) for n in v["shape"]) for k, v in model.items()},
        dtypes=frozenset(str(v.get("dtype")) for k, v in model.items() if k.startswith(UNET)),
        has_ema=any(key.startswith(EMA + "diffusion_model") for key in header),
    )
