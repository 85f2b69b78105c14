"""Which architecture an SDXL single file has, and so which configs it is loaded with.

A single file holds weights only. Its header's shapes and layer counts are summarised
(:func:`header_architecture`) and compared with what a diffusers config folder implies
(:func:`config_architecture`): real single files are full SDXL, so SDXL base 1.0's shipped configs
(:mod:`unziplora.single_file_config`); a file shaped like the builtin ``tiny-sdxl`` (what the tests
write) gets that base's folder. Both then go through the same loader. Anything else of the SDXL
family (pruned variants such as SSD-1B) is refused in one line naming the first difference.
Light: no torch import (the tiny base is generated only for a file as narrow as it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unziplora.errors import BaseModelError
from unziplora.single_file import CLIP_L, OPEN_CLIP, UNET, VAE, SingleFile

ARCHITECTURE_COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2")


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
