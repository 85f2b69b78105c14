"""diffusers <-> SGM (original Stability/LDM) UNet names, and the kohya keys built from them.

Why: kohya trains SDXL on its own SGM-layout UNet, so the one LoRA naming every tool loads
(kohya, A1111, ComfyUI, diffusers) is ``lora_unet_<SGM path with "." -> "_">`` (FORMATS.md 1, 4, 8.1).
Our LoRAs are named after diffusers modules, so export and import need this mapping.

The index arithmetic (FORMATS.md 1.2) depends only on ``layers_per_block`` (2 for SDXL) and on which
up levels carry attention (their upsampler sits in slot 2 instead of 1). Pure Python, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from unziplora.errors import ImportFormatError
from unziplora.unet_layout import ATTENTIONS, PROJECTIONS, SDXL_GROUP_TABLE

SDXL_LAYERS_PER_BLOCK = 2
# Up levels of SDXL that have attentions; their upsampler is SGM slot 2 (FORMATS.md 1.2).
SDXL_UP_ATTENTION_LEVELS = frozenset({0, 1})

KOHYA_UNET_PREFIX = "lora_unet_"

# diffusers ResnetBlock2D child -> SGM ResBlock child.
_RESNET_CHILDREN: Mapping[str, str] = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_CHILDREN_INV: Mapping[str, str] = {v: k for k, v in _RESNET_CHILDREN.items()}

# Top-level modules outside the three block lists.
_TOP_LEVEL: Mapping[str, str] = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_TOP_LEVEL_INV: Mapping[str, str] = {v: k for k, v in _TOP_LEVEL.items()}
# First path element of every diffusers UNet module (none of them is also an SGM name).
_DIFFUSERS_ROOTS = frozenset({"down_blocks", "mid_block", "up_blocks"} | {p.split(".")[0] for p in _TOP_LEVEL})

# Names that contain "_" themselves; everything else in a kohya stem is split at "_".
# Longest first, so "to_out" wins over "to" and "conv_norm_out" over "conv".
_MULTI_WORD = sorted(
    {
        "input_blocks",
        "output_blocks",
        "middle_block",
        "down_blocks",
        "up_blocks",
        "mid_block",
        "transformer_blocks",
        "to_q",
        "to_k",
        "to_v",
        "to_out",
        "proj_in",
        "proj_out",
        "in_layers",
        "out_layers",
        "emb_layers",
        "skip_connection",
        "time_embed",
        "label_emb",
        "time_emb_proj",
        "conv_shortcut",
        "conv_in",
        "conv_out",
        "conv_norm_out",
        "time_embedding",
        "add_embedding",
        "linear_1",
        "linear_2",
        "add_k_proj",
        "add_v_proj",
        "add_q_proj",
        "to_add_out",
        "norm_cross",
    },
    key=lambda s: -s.count("_"),
)


def _resnet_child(rest: str, table: Mapping[str, str]) -> str:
    """Rename the first path element(s) of a resnet child through ``table`` (keys may be dotted)."""
    for src, dst in table.items():
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src) :]
    return rest


def _split(path: str, n: int) -> tuple[list[str], str]:
    parts = path.split(".")
    return parts[:n], ".".join(parts[n:])


def diffusers_to_sgm(
    module_path: str,
    layers_per_block: int = SDXL_LAYERS_PER_BLOCK,
    up_attention_levels: Iterable[int] = SDXL_UP_ATTENTION_LEVELS,
) -> str:
    """Map a diffusers UNet module path to its SGM path (FORMATS.md 1.2).

    Raises:
        ValueError: the path is not part of an SDXL-layout UNet.
    """
    n = layers_per_block + 1
    for src, dst in _TOP_LEVEL.items():
        if module_path == src or module_path.startswith(src + "."):
            return dst + module_path[len(src) :]
    head, rest = _split(module_path, 4)
    tail = ("." + rest) if rest else ""
    if len(head) >= 4 and head[1].isdigit() and head[3].isdigit():
        block, i, kind, j = head[0], int(head[1]), head[2], int(head[3])
        if block == "down_blocks":
            if kind == "resnets":
                return f"input_blocks.{n * i + j + 1}.0" + ("." + _resnet_child(rest, _RESNET_CHILDREN) if rest else "")
            if kind == "attentions":
                return f"input_blocks.{n * i + j + 1}.1{tail}"
            if kind == "downsamplers" and j == 0:
                return f"input_blocks.{n * (i + 1)}.0" + ("." + re.sub(r"^conv", "op", rest) if rest else "")
        if block == "up_blocks":
            if kind == "resnets":
                return f"output_blocks.{n * i + j}.0" + ("." + _resnet_child(rest, _RESNET_CHILDREN) if rest else "")
            if kind == "attentions":
                return f"output_blocks.{n * i + j}.1{tail}"
            if kind == "upsamplers" and j == 0:
                slot = 2 if i in set(up_attention_levels) else 1
                return f"output_blocks.{n * i + layers_per_block}.{slot}{tail}"
    head, rest = _split(module_path, 3)
    if len(head) == 3 and head[0] == "mid_block" and head[2].isdigit():
        kind, j = head[1], int(head[2])
        if kind == "resnets" and j in (0, 1):
            return f"middle_block.{2 * j}" + ("." + _resnet_child(rest, _RESNET_CHILDREN) if rest else "")
        if kind == "attentions" and j == 0:
            return "middle_block.1" + (("." + rest) if rest else "")
    raise ValueError(f"{module_path!r} is not a module path of an SDXL-layout diffusers UNet")


def sgm_to_diffusers(
    sgm_path: str,
    layers_per_block: int = SDXL_LAYERS_PER_BLOCK,
    up_attention_levels: Iterable[int] = SDXL_UP_ATTENTION_LEVELS,
) -> str:
    """Inverse of :func:`diffusers_to_sgm` (FORMATS.md 1.2, "Inverse").

    Raises:
        ValueError: the path is not part of an SDXL-layout SGM UNet.
    """
    n = layers_per_block + 1
    for src, dst in _TOP_LEVEL_INV.items():
        if sgm_path == src or sgm_path.startswith(src + "."):
            return dst + sgm_path[len(src) :]
    head, rest = _split(sgm_path, 3)
    if len(head) == 3 and head[1].isdigit() and head[2].isdigit():
        block, k, slot = head[0], int(head[1]), int(head[2])
        tail = ("." + rest) if rest else ""
        resnet_tail = ("." + _resnet_child(rest, _RESNET_CHILDREN_INV)) if rest else ""
        if block == "input_blocks" and k >= 1:
            level, pos = divmod(k - 1, n)
            if pos == layers_per_block and slot == 0:
                return f"down_blocks.{level}.downsamplers.0" + ("." + re.sub(r"^op", "conv", rest) if rest else "")
            if pos < layers_per_block and slot == 0:
                return f"down_blocks.{level}.resnets.{pos}{resnet_tail}"
            if pos < layers_per_block and slot == 1:
                return f"down_blocks.{level}.attentions.{pos}{tail}"
        if block == "output_blocks":
            level, pos = divmod(k, n)
            has_attention = level in set(up_attention_levels)
            if slot == 0:
                return f"up_blocks.{level}.resnets.{pos}{resnet_tail}"
            if slot == 1 and has_attention:
                return f"up_blocks.{level}.attentions.{pos}{tail}"
            if pos == layers_per_block and slot == (2 if has_attention else 1):
                return f"up_blocks.{level}.upsamplers.0{tail}"
    head, rest = _split(sgm_path, 2)
    if len(head) == 2 and head[0] == "middle_block" and head[1] in ("0", "1", "2"):
        j = int(head[1])
        if j == 1:
            return "mid_block.attentions.0" + (("." + rest) if rest else "")
        return f"mid_block.resnets.{j // 2}" + ("." + _resnet_child(rest, _RESNET_CHILDREN_INV) if rest else "")
    raise ValueError(f"{sgm_path!r} is not a module path of an SDXL-layout SGM UNet")


def diffusers_to_kohya_key(module_path: str, layers_per_block: int = SDXL_LAYERS_PER_BLOCK) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` ->
    ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`` (the key stem kohya writes)."""
    return KOHYA_UNET_PREFIX + diffusers_to_sgm(module_path, layers_per_block).replace(".", "_")


def _dotted(stem: str) -> str:
    """Undo kohya's "." -> "_" using the known multi-word module names."""
    tokens = stem.split("_")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for name in _MULTI_WORD:
            width = name.count("_") + 1
            if "_".join(tokens[i : i + width]) == name:
                out.append(name)
                i += width
                break
        else:
            out.append(tokens[i])
            i += 1
    return ".".join(out)


def kohya_to_diffusers_module(key_stem: str, layers_per_block: int = SDXL_LAYERS_PER_BLOCK) -> str:
    """Map a kohya UNet key stem to a diffusers module path.

    Accepts both SGM stems (what kohya writes) and diffusers-block stems
    (``lora_unet_down_blocks_1_attentions_0_...``, what diffusers' ``convert_state_dict_to_kohya``
    writes); FORMATS.md 4 says both are in the wild.

    Raises:
        ImportFormatError: the stem does not name an SDXL UNet module.
    """
    if not key_stem.startswith(KOHYA_UNET_PREFIX):
        raise ImportFormatError(f"kohya key {key_stem!r} is not a UNet key (expected the prefix {KOHYA_UNET_PREFIX!r})")
    path = _dotted(key_stem[len(KOHYA_UNET_PREFIX) :])
    if path.split(".")[0] in _DIFFUSERS_ROOTS:
        return path
    try:
        return sgm_to_diffusers(path, layers_per_block)
    except ValueError:
        raise ImportFormatError(f"kohya key {key_stem!r} names no module of an SDXL UNet") from None


def sdxl_attention_projections(depth: int | None = None) -> list[str]:
    """Every attention projection UnZipLoRA wraps, as diffusers paths, in module order.

    Args:
        depth: transformer blocks per group; ``None`` = real SDXL's depths (560 names),
            2 = the builtin tiny base (176 names).
    """
    names = []
    for prefix, _sgm, sdxl_depth in SDXL_GROUP_TABLE:
        for t in range(sdxl_depth if depth is None else depth):
            for attn in ATTENTIONS:
                for proj in PROJECTIONS:
                    names.append(f"{prefix}.transformer_blocks.{t}.{attn}.{proj}")
    return names
