"""kohya-format LoRAs: the one SDXL naming that kohya, A1111, ComfyUI and diffusers all load.

Why this layout (FORMATS.md 8.1–8.3): keys ``lora_unet_<SGM path>.lora_down.weight`` /
``.lora_up.weight`` plus a 0-dim float32 ``.alpha`` per module. Our factors carry the full update
(scale 1), so with one rank everywhere we write ``alpha = rank``. With *mixed* ranks (exact sums of
partial LoRAs, imports) ``alpha = rank`` per module would mean per-module alphas, which diffusers
0.42 mis-applies: its ``alpha_pattern`` keys match no module and those modules silently get the
majority alpha (FORMATS.md 5, "Bug"; reproduced in tests/test_formats_roundtrip.py). So we write
**one** alpha ``A`` for every module — the most common rank — and bake ``r/A`` into ``up``:
every loader computes ``A/r`` per module from ``lora_down.shape[0]`` and gets scale 1 overall.
Never alpha 0, which A1111/ComfyUI read as "off".
Hashes are computed exactly as sd-scripts does, because A1111 trusts ``sshs_model_hash``
without checking it (FORMATS.md 3.3–3.4).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from unziplora.dtypes import torch_dtype
from unziplora.errors import ImportFormatError
from unziplora.formats import metadata as md
from unziplora.formats._keys import join_pairs, split_pairs
from unziplora.formats.sgm import (
    KOHYA_UNET_PREFIX,
    SDXL_LAYERS_PER_BLOCK,
    diffusers_to_kohya_key,
    kohya_to_diffusers_module,
)

if TYPE_CHECKING:
    import torch

DOWN = ".lora_down.weight"
UP = ".lora_up.weight"
ALPHA = ".alpha"
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")

_ALIASES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32"}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp16"``/``"bf16"``/``"fp32"`` (or a torch dtype) -> torch dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        name = str(dtype).lower()
        return torch_dtype(_ALIASES.get(name, name))
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use fp16, bf16 or fp32") from None


def shared_alpha(ranks: list[int]) -> int:
    """The one alpha written for every module: the most common rank (the larger on a tie)."""
    if not ranks:
        raise ValueError("the LoRA has no modules")
    counts = Counter(ranks)
    return max(counts, key=lambda r: (counts[r], r))


def kohya_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` as sd-scripts' ``precalculate_safetensors_hashes``.

    Serialises the tensors with only the ``ss_*`` metadata in memory; the model hash is the SHA-256
    of the data region (after ``8 + header_len`` bytes) — equal to the final file's, since safetensors
    lays data out canonically; the legacy hash is the first 8 hex of the SHA-256 of bytes
    ``[0x100000, 0x110000)`` of that serialisation (``e3b0c442`` for files under 1 MiB).
    """
    from safetensors.torch import save

    blob = save(dict(tensors), {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + header_len :]).hexdigest()
    legacy_hash = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def to_kohya(
    peft_sd: Mapping[str, torch.Tensor],
    *,
    dtype: str | torch.dtype = "fp16",
    metadata: md.LoraInfo | None = None,
    layers_per_block: int = SDXL_LAYERS_PER_BLOCK,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Internal (PEFT-named, scale 1) LoRA -> kohya SGM tensors and header metadata.

    Args:
        peft_sd: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` at scale 1.
        dtype: storage dtype of down/up (alpha is always float32).
        metadata: descriptive facts; ``None`` writes the required keys only.
        layers_per_block: 2 for SDXL.

    Returns:
        ``(tensors, metadata)`` ready for :func:`unziplora.formats.io.write_safetensors`.
    """
    import torch

    target = resolve_dtype(dtype)
    info = metadata or md.LoraInfo()
    pairs = split_pairs(peft_sd)
    ranks = [int(down.shape[0]) for down, _up in pairs.values()]
    alpha = shared_alpha(ranks)
    tensors: dict[str, torch.Tensor] = {}
    for module, (down, up) in pairs.items():
        stem = diffusers_to_kohya_key(module, layers_per_block)
        rank = int(down.shape[0])
        if rank != alpha:  # loaders apply alpha/rank; pre-multiply so the product stays up @ down
            up = up.detach().to(torch.float64) * (rank / alpha)
        tensors[stem + DOWN] = down.detach().to("cpu", target).contiguous()
        tensors[stem + UP] = up.detach().to("cpu", target).contiguous()
        tensors[stem + ALPHA] = torch.tensor(float(alpha), dtype=torch.float32)
    meta = md.ss_metadata(info, ranks, alpha=float(alpha))
    model_hash, legacy_hash = kohya_hashes(tensors, meta)
    meta.update(md.modelspec_metadata(info, implementation=md.IMPLEMENTATION_SGM))
    meta["sshs_model_hash"] = model_hash
    meta["sshs_legacy_hash"] = legacy_hash
    # No modelspec.hash_sha256: sd-scripts' resize_lora/merge scripts recompute sshs_* but copy the
    # modelspec keys, so a stored copy would go stale; loaders hash the file themselves.
    meta.update(md.provenance_metadata(info))
    return tensors, meta


def _stem_and_kind(key: str) -> tuple[str, str]:
    for suffix, kind in ((DOWN, "down"), (UP, "up"), (ALPHA, "alpha")):
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    if key.endswith(".dora_scale"):
        raise ImportFormatError(f"{key!r} is a DoRA weight; DoRA LoRAs cannot be imported, only plain LoRAs.")
    raise ImportFormatError(f"kohya key {key!r} is not a LoRA tensor (.lora_down.weight, .lora_up.weight or .alpha)")


def from_kohya(
    tensors: Mapping[str, torch.Tensor],
    *,
    skip_text_encoders: bool = False,
    layers_per_block: int = SDXL_LAYERS_PER_BLOCK,
) -> dict[str, torch.Tensor]:
    """kohya tensors (SGM or diffusers-block names) -> internal PEFT-named LoRA at scale 1.

    ``alpha / r`` is baked into ``up``. A missing alpha — or alpha 0, which kohya itself reads as
    "= rank" — means scale 1.

    Args:
        skip_text_encoders: drop ``lora_te*`` modules instead of refusing the file (we train the UNet only).

    Raises:
        ImportFormatError: keys that are not kohya UNet LoRA keys, or inconsistent factors.
    """
    import torch

    groups: dict[str, dict[str, torch.Tensor]] = {}
    text_encoder_keys = 0
    for key, value in tensors.items():
        if not key.startswith(KOHYA_PREFIXES):
            raise ImportFormatError(f"{key!r} is not a kohya LoRA key (they start with lora_unet_ or lora_te)")
        if not key.startswith(KOHYA_UNET_PREFIX):
            text_encoder_keys += 1
            continue
        stem, kind = _stem_and_kind(key)
        groups.setdefault(stem, {})[kind] = value
    if text_encoder_keys and not skip_text_encoders:
        raise ImportFormatError(
            f"the LoRA also changes the text encoders ({text_encoder_keys} tensors); unziplora keeps UNet LoRAs only — "
            "pass --skip-text-encoders to import the UNet part only"
        )
    pairs = {}
    for stem, parts in groups.items():
        if "down" not in parts or "up" not in parts:
            raise ImportFormatError(f"kohya module {stem!r} lacks its lora_down or lora_up weight")
        down, up = parts["down"], parts["up"]
        if down.ndim != 2 or up.ndim != 2:
            raise ImportFormatError(f"kohya module {stem!r} is a convolution LoRA; only linear LoRAs can be imported")
        rank = int(down.shape[0])
        alpha = float(parts["alpha"].item()) if "alpha" in parts else 0.0
        scale = alpha / rank if alpha else 1.0
        if scale != 1.0:
            up = (up.to(torch.float32) * scale).to(up.dtype)
        pairs[kohya_to_diffusers_module(stem, layers_per_block)] = (down, up)
    if not pairs:
        raise ImportFormatError("the file holds no UNet LoRA tensors (lora_unet_...).")
    sd = join_pairs(pairs)
    split_pairs(sd, error=ImportFormatError)  # shapes: [r, in] and [out, r] with equal r
    return sd
