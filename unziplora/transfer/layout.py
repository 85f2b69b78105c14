"""Which attention projections a base model has, and their shapes, without loading the model.

Why: an imported LoRA becomes an entry that ``unzip compose`` later loads into UnZipLoRA layers,
which wrap exactly the ``to_q/to_k/to_v/to_out.0`` projections of every attention (ALGORITHM.md
2.1). A file that misses some, changes other modules (``proj_in``, ``ff``), or was trained on a
model of other widths must be refused at import time with one clear line, not at generation time.
The projection set follows from a few fields of the UNet config, so it is read from
``unet/config.json`` when the base is a folder (or a cached hub snapshot) and otherwise taken from
SDXL base 1.0's config. Light module: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unziplora.base_model import BaseSpec
from unziplora.unet_layout import ATTENTIONS, PROJECTIONS

# The fields of stabilityai/stable-diffusion-xl-base-1.0's unet/config.json that decide the layout.
SDXL_UNET_LAYOUT: dict[str, Any] = {
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
}


def _per_level(value: Any, levels: int) -> list[int]:
    return [int(value)] * levels if isinstance(value, int) else [int(v) for v in value]


def projection_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``{module path: (in_features, out_features)}`` of every attention projection a diffusers
    ``UNet2DConditionModel`` with this config has, in module order (560 for SDXL base)."""
    channels = [int(c) for c in config["block_out_channels"]]
    levels = len(channels)
    layers = _per_level(config.get("layers_per_block", 2), levels)
    depth = _per_level(config.get("transformer_layers_per_block", 1), levels)
    cross = config.get("cross_attention_dim", 2048)
    cross_dims = _per_level(cross, levels)
    reverse_depth = config.get("reverse_transformer_layers_per_block") or list(reversed(depth))
    groups: list[tuple[str, int, int, int]] = []  # (prefix, transformer blocks, width, cross dim)
    for i, kind in enumerate(config["down_block_types"]):
        if "CrossAttn" in kind:
            groups += [
                (f"down_blocks.{i}.attentions.{j}", depth[i], channels[i], cross_dims[i]) for j in range(layers[i])
            ]
    if "CrossAttn" in str(config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"):
        groups.append(("mid_block.attentions.0", depth[-1], channels[-1], cross_dims[-1]))
    rev_channels, rev_layers, rev_cross = channels[::-1], layers[::-1], cross_dims[::-1]
    for i, kind in enumerate(config["up_block_types"]):
        if "CrossAttn" in kind:
            groups += [
                (f"up_blocks.{i}.attentions.{j}", int(reverse_depth[i]), rev_channels[i], rev_cross[i])
                for j in range(rev_layers[i] + 1)
            ]
    shapes: dict[str, tuple[int, int]] = {}
    for prefix, blocks, width, cross_dim in groups:
        for t in range(blocks):
            for attn in ATTENTIONS:
                for proj in PROJECTIONS:
                    fan_in = cross_dim if attn == "attn2" and proj in ("to_k", "to_v") else width
                    shapes[f"{prefix}.transformer_blocks.{t}.{attn}.{proj}"] = (fan_in, width)
    return shapes


def _folder_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "unet" / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def unet_layout(spec: BaseSpec) -> dict[str, Any]:
    """The layout fields of ``spec``'s UNet: the builtin tiny config, a folder's (or a cached hub
    snapshot's) ``unet/config.json``, the config a single file's shapes choose, else SDXL base 1.0's."""
    if spec.is_tiny:
        from unziplora.tiny_sdxl import UNET_CONFIG

        return dict(UNET_CONFIG)
    if spec.kind == "random":
        from unziplora.sdxl_random import shipped_config

        return shipped_config("unet")
    config = None
    if spec.kind == "folder":
        config = _folder_config(Path(spec.ref))
    elif spec.kind == "hub":
        from unziplora.base_model import _hub_snapshot

        snapshot = _hub_snapshot(spec.ref)
        config = _folder_config(snapshot) if snapshot is not None else None
    elif spec.kind == "file":
        from unziplora.errors import BaseModelError
        from unziplora.single_file import check_sdxl_file
        from unziplora.single_file_arch import config_folder

        try:
            config = _folder_config(config_folder(check_sdxl_file(spec.ref))[1])
        except BaseModelError:
            config = None  # loading it says why; the layout falls back to SDXL's
    if not config or "block_out_channels" not in config or "down_block_types" not in config:
        return dict(SDXL_UNET_LAYOUT)
    return config


def base_projection_shapes(spec: BaseSpec) -> dict[str, tuple[int, int]]:
    """:func:`projection_shapes` of the base ``spec``."""
    return projection_shapes(unet_layout(spec))


def describe_missing(missing: Sequence[str], total: int) -> str:
    """``"12 of 176 attention projections are missing (e.g. ...)"``."""
    return f"{len(missing)} of the {total} attention projections are missing (e.g. {missing[0]})"
