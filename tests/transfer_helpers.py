"""Shared pieces of the export/import tests: entries without training, UNet runs, official outputs.

Entries are written the way training writes them (unziplora.train.payload): random UnZipLoRA layers
on the tiny-SDXL UNet with learned-looking merges and active column masks, saved through
``lora_state_dict`` / ``merge_state_dict`` (masks folded into ``lora_B``), payloads in fp16 (the
default save precision) and ``unziplora.prompts`` metadata.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from generate_helpers import random_layers as shared_random_layers

BOOST = 1.0
TINY_BASE = {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": "tiny-sdxl-v1"}


def tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    from unziplora.tiny_sdxl import SEED, UNET_CONFIG

    state = torch.random.get_rng_state()
    torch.manual_seed(SEED)  # the tiny base's own UNet weights (build_tiny_sdxl_pipeline seeds the same way)
    try:
        return UNet2DConditionModel(**UNET_CONFIG).eval()
    finally:
        torch.random.set_rng_state(state)


def random_layers(unet: Any, seed: int, rank: int) -> dict[str, Any]:
    return shared_random_layers(unet, seed, rank, boost=BOOST, keep=0.6)


def make_entry(
    reg: Any,
    *,
    subject: str = "cat",
    style: str = "pencil sketch",
    seed: int = 1,
    rank: int = 4,
    dtype: torch.dtype = torch.float16,
    base: dict[str, Any] | None = None,
    resolution: int | None = None,
) -> Any:
    """One trained-looking entry (content, style, masks) in ``reg``."""
    from safetensors.torch import save_file

    from unziplora.method import lora_state_dict, merge_state_dict
    from unziplora.prompts import build_training_prompts

    layers = random_layers(tiny_unet(), seed, rank)
    prompts = build_training_prompts(subject, style)
    parts = {b: {k: v.to(dtype) for k, v in lora_state_dict(layers, b).items()} for b in ("content", "style")}
    with reg.new_entry(subject=subject, style=style) as st:
        for b, sd in parts.items():
            meta = {"format": "pt", "unziplora.part": b, "unziplora.prompts": json.dumps(prompts.to_dict())}
            save_file(sd, str(st.dir / f"{b}.safetensors"), metadata=meta)
        save_file(merge_state_dict(layers), str(st.dir / "masks.safetensors"), metadata={"format": "pt"})
        st.record = {
            "kind": "trained",
            "subject": prompts.subject,
            "style": prompts.style_words,
            "prompts": {"combined": prompts.combined, "content": prompts.content, "style": prompts.style},
            "rare_token": prompts.token,
            "base": dict(base or TINY_BASE),
            "settings": {"rank": rank, "steps": 2, "seed": 0, **({"resolution": resolution} if resolution else {})},
        }
    return reg.get(st.id)


def unet_inputs(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500, 120]),
        "encoder_hidden_states": torch.randn(2, 77, 64, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.randn(2, 6, generator=g),
        },
    }


@torch.no_grad()
def run_unet(unet: Any, cross_attention_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    return unet(**unet_inputs(), cross_attention_kwargs=cross_attention_kwargs, return_dict=False)[0]


def read(path: Path | str) -> dict[str, torch.Tensor]:
    from unziplora.method import read_lora_file

    return read_lora_file(path)[0]


def native_unet(base_unet: Any, content_entry: Any, style_entry: Any | None = None) -> tuple[Any, dict[str, Any]]:
    """Our own layers loaded from entries (as compose does), prompt separation off."""
    from unziplora.method import inject_unziplora, load_unziplora_state, set_prompt_separation

    style_entry = style_entry or content_entry
    unet = copy.deepcopy(base_unet)
    layers = inject_unziplora(unet, 4, init="zero")
    load_unziplora_state(
        layers,
        read(content_entry.file("content.safetensors")),
        read(style_entry.file("style.safetensors")),
        read(content_entry.file("masks.safetensors")),
        style_merges_sd=read(style_entry.file("masks.safetensors")),
    )
    set_prompt_separation(layers, False)
    return unet, layers


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show a refused call changed nothing)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fake_official(
    folder: Path, modules: dict[str, tuple[int, int]], *, rank: int = 4, seed: int = 0
) -> tuple[Path, dict[str, Any]]:
    """An official output laid out as ALGORITHM.md 8 documents it: ``X_content/``, ``X_style/``
    (``unet.unet.<m>.lora.down/up.weight``, fp32, masks as zero ``up`` rows, ``{"format": "pt"}``)
    and ``X_merger_<part>.pth`` (``unet.<m>.lora.merge_<part>`` -> ``nn.Parameter``)."""
    from safetensors.torch import save_file

    stem = folder / "sketch_cat" / "sketch_cat"
    stem.mkdir(parents=True)  # X holds only logs
    g = torch.Generator().manual_seed(seed)
    truth: dict[str, Any] = {}
    for part in ("content", "style"):
        tensors, merges, factors = {}, {}, {}
        for m, (fan_in, fan_out) in modules.items():
            down = torch.randn(rank, fan_in, generator=g) / rank
            up = torch.randn(fan_out, rank, generator=g) / rank
            up[torch.rand(fan_out, generator=g) < 0.3] = 0.0  # columns the trainer masked out
            merge = torch.rand(fan_out, generator=g) * 0.8 + 0.2
            tensors[f"unet.unet.{m}.lora.down.weight"] = down
            tensors[f"unet.unet.{m}.lora.up.weight"] = up
            merges[f"unet.{m}.lora.merge_{part}"] = torch.nn.Parameter(merge)
            factors[m] = (down, up, merge)
        (stem.parent / f"sketch_cat_{part}").mkdir()
        save_file(
            tensors,
            str(stem.parent / f"sketch_cat_{part}" / "pytorch_lora_weights.safetensors"),
            metadata={"format": "pt"},
        )
        torch.save(merges, f"{stem}_merger_{part}.pth")
        truth[part] = factors
    return stem, truth


def chmod_of(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
