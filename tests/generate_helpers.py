"""Registry entries for generation tests, written without training.

Random UnZipLoRA layers on a bare tiny-SDXL UNet (random merges, active random column masks),
saved through the method's own state functions, so the files have the real format: PEFT-named
content/style LoRAs with masks folded into ``lora_B`` and ``masks.safetensors`` with the merges.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_BASE = {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": "tiny-sdxl-v1"}


def bare_unet() -> Any:
    from diffusers import UNet2DConditionModel

    from unziplora.tiny_sdxl import UNET_CONFIG

    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG)


def random_layers(unet: Any, seed: int, rank: int = 4, boost: float = 1.0, keep: float = 0.5) -> dict[str, Any]:
    """Inject layers with random factors, merges in [0.3, 1] and a ``keep`` share of columns masked in."""
    from unziplora.method import inject_unziplora

    gen = torch.Generator().manual_seed(seed)
    layers = inject_unziplora(unet, rank, generator=gen)
    with torch.no_grad():
        for layer in layers.values():
            for branch in ("content", "style"):
                layer.lora_B[branch].mul_(boost)
                layer.merge[branch].copy_(torch.rand(layer.out_features, generator=gen) * 0.7 + 0.3)
                layer.set_mask(branch, torch.rand(layer.out_features, generator=gen) > 1.0 - keep)
                layer.set_mask_active(branch, True)
    return layers


def make_entry(
    reg: Any,
    *,
    subject: str = "cat",
    style: str = "sketch",
    seed: int = 1,
    rank: int = 4,
    base: dict[str, Any] | None = None,
    unet: Any = None,
    shrink: bool = False,
) -> Any:
    """Write one entry (content, style, masks) and return it. ``shrink`` drops one module (bad shapes)."""
    from unziplora.method import lora_state_dict, merge_state_dict, remove_unziplora, write_lora_file
    from unziplora.prompts import build_training_prompts

    unet = unet if unet is not None else bare_unet()
    layers = random_layers(unet, seed, rank)
    content, style_sd, masks = (
        lora_state_dict(layers, "content"),
        lora_state_dict(layers, "style"),
        merge_state_dict(layers),
    )
    remove_unziplora(unet)
    if shrink:
        for sd in (content, style_sd):
            for key in [k for k in sd if ".up_blocks." in k]:
                sd[key] = sd[key][:, :-1] if key.endswith("lora_A.weight") else sd[key]
    prompts = build_training_prompts(subject, style)
    with reg.new_entry(subject=subject, style=style) as staging:
        write_lora_file(staging.path("content.safetensors"), content)
        write_lora_file(staging.path("style.safetensors"), style_sd)
        write_lora_file(staging.path("masks.safetensors"), masks)
        staging.record = {
            "subject": prompts.subject,
            "style": prompts.style_words,
            "prompts": {"combined": prompts.combined, "content": prompts.content, "style": prompts.style},
            "rare_token": prompts.token,
            "base": dict(base or TINY_BASE),
            "settings": {"rank": rank},
        }
    return reg.get(staging.id)
