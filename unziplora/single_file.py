"""Single-file checkpoints: tell an SDXL file from SD 1.5 / 2.x / SD3 / Flux by its keys alone.

Only the safetensors header (a JSON block at the front of the file) is read, so a wrong file is
refused before gigabytes of weights are loaded: another family, a missing VAE or text encoder, or
an SDXL-family file whose layers are not shaped like any architecture we have configs for.

The header's shapes also choose the configs the file is loaded with (:func:`architecture_of`):
real single files are full SDXL, so SDXL base 1.0's shipped configs; a file shaped like the
builtin ``tiny-sdxl`` (what the tests write) gets that base's folder. Both go through the same
loader. Light: no torch import.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unziplora.errors import BaseModelError

# The largest header we accept (real SDXL headers are a few hundred KB).
_MAX_HEADER = 100 * 1024 * 1024

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
ARCHITECTURE_COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2")


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
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise BaseModelError(f"base model {path} is not a safetensors file (too short).")
            (size,) = struct.unpack("<Q", raw)
            if size <= 0 or size > _MAX_HEADER:
                raise BaseModelError(f"base model {path} is not a safetensors file (bad header size).")
            header = json.loads(fh.read(size))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, BaseModelError):
            raise
        raise BaseModelError(f"base model {path} is not a readable safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise BaseModelError(f"base model {path} is not a safetensors file (header is not a table).")
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


# -- which architecture: shapes from the header against shapes a config folder implies ----------


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    """How many distinct indices ``(\\d+)`` in ``pattern`` occur among the keys."""
    regex = re.compile(pattern)
    return len({m[1] for key in shapes if (m := regex.match(key))})


def _depths_from_header(shapes: Mapping[str, Any]) -> dict[str, int]:
    """Transformer blocks per attention group, by SGM group name (``input_blocks.4.1`` -> 2)."""
    groups = {
        m[1] for k in shapes if (m := re.match(r"model\.diffusion_model\.(\w+(?:\.\d+)?\.1)\.transformer_blocks\.", k))
    }
    return {g: _count(shapes, rf"model\.diffusion_model\.{re.escape(g)}\.transformer_blocks\.(\d+)\.") for g in groups}


def header_architecture(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The few shapes and counts that tell SDXL architectures apart, read from a file's header."""

    def shape(key: str) -> list[int] | None:
        found = shapes.get(key)
        return list(found) if found is not None else None

    return {
        "unet.conv_in": shape(UNET + "input_blocks.0.0.weight"),
        "unet.label_emb": shape(UNET + "label_emb.0.0.weight"),
        "unet.cross_attention": shape(UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"),
        "unet.depths": _depths_from_header(shapes),
        "vae.conv_in": shape(VAE + "encoder.conv_in.weight"),
        "vae.levels": _count(shapes, r"first_stage_model\.encoder\.down\.(\d+)\."),
        "text_encoder.embedding": shape(CLIP_L + "text_model.embeddings.token_embedding.weight"),
        "text_encoder.layers": _count(
            shapes, r"conditioner\.embedders\.0\.transformer\.text_model\.encoder\.layers\.(\d+)\."
        ),
        "text_encoder_2.embedding": shape(OPEN_CLIP + "token_embedding.weight"),
        "text_encoder_2.layers": _count(shapes, r"conditioner\.embedders\.1\.model\.transformer\.resblocks\.(\d+)\."),
    }


def _per_level(value: Any, levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * levels


def config_architecture(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The same summary as :func:`header_architecture`, implied by a diffusers folder's component configs.

    ``configs`` maps ``unet``, ``vae``, ``text_encoder``, ``text_encoder_2`` to their config.json.
    Group names follow FORMATS.md 1.2: down level i, layer j -> ``input_blocks.{n*i+j+1}.1``; up level
    i, layer j -> ``output_blocks.{n*i+j}.1`` with n = layers_per_block + 1.
    """
    unet, vae = configs["unet"], configs["vae"]
    te1, te2 = configs["text_encoder"], configs["text_encoder_2"]
    widths = list(unet["block_out_channels"])
    levels, per_block = len(widths), int(unet["layers_per_block"])
    n = per_block + 1
    depth = _per_level(unet.get("transformer_layers_per_block", 1), levels)
    depths: dict[str, int] = {}
    for i, kind in enumerate(unet["down_block_types"]):
        if kind.startswith("CrossAttn"):
            depths |= {f"input_blocks.{n * i + j + 1}.1": depth[i] for j in range(per_block)}
    depths["middle_block.1"] = depth[-1]
    up_depth = _per_level(unet.get("reverse_transformer_layers_per_block") or depth[::-1], levels)
    for i, kind in enumerate(unet["up_block_types"]):
        if kind.startswith("CrossAttn"):
            depths |= {f"output_blocks.{n * i + j}.1": up_depth[i] for j in range(n)}
    time_dim = unet.get("time_embedding_dim") or 4 * widths[0]
    cross = unet["cross_attention_dim"]
    return {
        "unet.conv_in": [widths[0], unet["in_channels"], unet.get("conv_in_kernel", 3), unet.get("conv_in_kernel", 3)],
        "unet.label_emb": [time_dim, unet["projection_class_embeddings_input_dim"]],
        "unet.cross_attention": [widths[1], cross if isinstance(cross, int) else cross[1]],
        "unet.depths": depths,
        "vae.conv_in": [vae["block_out_channels"][0], vae["in_channels"], 3, 3],
        "vae.levels": len(vae["down_block_types"]),
        "text_encoder.embedding": [te1["vocab_size"], te1["hidden_size"]],
        "text_encoder.layers": te1["num_hidden_layers"],
        "text_encoder_2.embedding": [te2["vocab_size"], te2["hidden_size"]],
        "text_encoder_2.layers": te2["num_hidden_layers"],
    }


def folder_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The four component configs of a diffusers folder (or a shipped config folder)."""
    return {
        name: json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        for name in ARCHITECTURE_COMPONENTS
    }


def first_difference(found: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """``"unet.depths[middle_block.1] is 1 in the file, 10 in SDXL base 1.0"`` for the first field that differs."""
    for key, want in expected.items():
        got = found.get(key)
        if isinstance(want, dict) and isinstance(got, dict):
            for group in sorted(set(want) | set(got)):
                if got.get(group) != want.get(group):
                    return f"{key}[{group}] is {got.get(group)} in the file, {want.get(group)} in SDXL base 1.0"
        elif got != want:
            return f"{key} is {got} in the file, {want} in SDXL base 1.0"
    return None


def config_folder(info: SingleFile) -> tuple[str, Path]:
    """The architecture the file's shapes match and the diffusers config folder to load it with.

    SDXL base 1.0's shipped configs first (every real SDXL fine-tune: Juggernaut, Pony,
    Illustrious...); then the builtin ``tiny-sdxl``'s folder, generated if needed, which is what a
    file written from the tiny base (the tests) matches.

    Raises:
        BaseModelError: an SDXL-family file shaped like neither (SSD-1B, Vega and other pruned variants).
    """
    from unziplora.single_file_config import sdxl_config_dir, shipped_config_text

    found = header_architecture(info.shapes)
    sdxl = config_architecture(
        {name: json.loads(shipped_config_text(f"{name}/config.json")) for name in ARCHITECTURE_COMPONENTS}
    )
    difference = first_difference(found, sdxl)
    if difference is None:
        return "SDXL base 1.0", sdxl_config_dir()
    from unziplora.tiny_sdxl import UNET_CONFIG, tiny_sdxl_dir

    # Only a file as narrow as the tiny base is worth generating the tiny base for.
    if found["unet.conv_in"] == [UNET_CONFIG["block_out_channels"][0], UNET_CONFIG["in_channels"], 3, 3]:
        folder = tiny_sdxl_dir()
        if first_difference(found, config_architecture(folder_configs(folder))) is None:
            return "tiny-sdxl", folder
    raise BaseModelError(
        f"base model {info.path} is an SDXL-family checkpoint not shaped like SDXL base 1.0 ({difference}); "
        "UnZipLoRA loads single files of SDXL's own architecture only: convert it to a diffusers folder and pass that."
    )
