"""SDXL-architecture model pieces at three widths, built in-process with random weights.

* ``tiny``   — exactly :mod:`unziplora.tiny_sdxl` (the CI base): smoke runs, seconds in all;
* ``medium`` — SDXL's block layout at about 1/5 of its channel widths (64, 128, 256), SDXL's real
  text width (cross-attention 2048, pooled 1280, time-embedding 256) and 32x32 latents (256 px),
  so one training step takes seconds on a CPU. Rank 16 keeps LoRA's share of each projection a
  little above SDXL's (rank 64 on 640/1280 wide projections), so the LoRA overhead measured here
  is, if anything, pessimistic. The VAE keeps SDXL's encoder layout at 1/2..1/8 widths so that
  one encode costs about a third of the UNet floor, as SDXL's does at 1024 px (4.9 of 14.2 TFLOPs);
* ``wide``   — the real SDXL base UNet config (widths 320/640/1280, heads of 64, cross-attention
  2048, so every wrapped projection has SDXL's exact shape) with two transformer blocks instead
  of ten at the 1280-wide level, at 256 px (32x32 latents), rank 64, SDXL's VAE config: the
  full-width training step on a CPU in minutes and ~4 GB instead of ~10 GB of weights;
* ``sdxl256`` — the real SDXL base UNet config unchanged (transformer depths 1/2/10, 2.6 B
  parameters, 10.3 GB in fp32) at 256 px (32x32 latents), rank 64, SDXL's VAE config: issue 15's
  CPU figure "real UNet config, 256 px, rank 64, one thread, fp32". Ours and the floor share one
  set of base weights (about 14 GB in all); the official-style side does not fit next to them on
  a 23 GB machine (its dense ``[in, out]`` products, two kept for backward per branch and
  projection, add about 15 GB over SDXL's 0.95 B attention-projection weights), so its rows use
  ``wide``;
* ``sdxl``   — the real SDXL base UNet and VAE configs at 1024 px (128x128 latents), rank 64,
  full-size text encoders: for a GPU only.

Nothing is downloaded; the CLIP tokenizers are the tiny base's locally written ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

SIZES = ("tiny", "medium", "wide", "sdxl256", "sdxl")

_SDXL_LAYOUT: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "norm_num_groups": 32,
}

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the values that shape compute).
SDXL_UNET: dict[str, Any] = {
    **_SDXL_LAYOUT,
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

WIDE_UNET: dict[str, Any] = {**SDXL_UNET, "sample_size": 32, "transformer_layers_per_block": (1, 2, 2)}

SDXL256_UNET: dict[str, Any] = {**SDXL_UNET, "sample_size": 32}

MEDIUM_UNET: dict[str, Any] = {
    **_SDXL_LAYOUT,
    "sample_size": 32,
    "block_out_channels": (64, 128, 256),
    "transformer_layers_per_block": (1, 2, 2),
    "attention_head_dim": (1, 2, 4),  # heads of 64 channels, as SDXL's
    "cross_attention_dim": 2048,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

_VAE_LAYOUT: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

SDXL_VAE: dict[str, Any] = {
    **_VAE_LAYOUT,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
}

WIDE_VAE: dict[str, Any] = {**SDXL_VAE, "sample_size": 256}

MEDIUM_VAE: dict[str, Any] = {
    **_VAE_LAYOUT,
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 256,
}


@dataclass(frozen=True)
class SizeSpec:
    """Everything that differs between the sizes."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    rank: int
    text_layers: tuple[int, int]  # depth of the two text encoders (widths follow cross_attention_dim)
    gen_steps: int  # sampler steps per generated image
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_side(self) -> int:
        return int(self.unet["sample_size"])

    @property
    def resolution(self) -> int:
        return self.latent_side * 8

    @property
    def cross_dim(self) -> int:
        return int(self.unet["cross_attention_dim"])

    @property
    def pooled_dim(self) -> int:
        return int(self.unet["projection_class_embeddings_input_dim"]) - 6 * int(self.unet["addition_time_embed_dim"])


def size_spec(name: str) -> SizeSpec:
    """The spec of one of :data:`SIZES`."""
    if name == "tiny":
        from unziplora.tiny_sdxl import UNET_CONFIG, VAE_CONFIG

        return SizeSpec("tiny", dict(UNET_CONFIG), dict(VAE_CONFIG), rank=4, text_layers=(3, 3), gen_steps=4)
    if name == "medium":
        return SizeSpec("medium", dict(MEDIUM_UNET), dict(MEDIUM_VAE), rank=16, text_layers=(1, 1), gen_steps=10)
    if name == "wide":
        return SizeSpec("wide", dict(WIDE_UNET), dict(WIDE_VAE), rank=64, text_layers=(1, 1), gen_steps=10)
    if name == "sdxl256":
        return SizeSpec("sdxl256", dict(SDXL256_UNET), dict(WIDE_VAE), rank=64, text_layers=(1, 1), gen_steps=10)
    if name == "sdxl":
        return SizeSpec("sdxl", dict(SDXL_UNET), dict(SDXL_VAE), rank=64, text_layers=(12, 32), gen_steps=30)
    raise ValueError(f"size must be one of {', '.join(SIZES)}; got {name!r}")


def build_unet(spec: SizeSpec, seed: int = 0) -> Any:
    """A randomly initialised ``UNet2DConditionModel`` of the spec (fp32, CPU)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**spec.unet)


def build_vae(spec: SizeSpec, seed: int = 1) -> Any:
    """A randomly initialised ``AutoencoderKL`` of the spec (fp32, CPU)."""
    import torch
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**spec.vae)


def build_pipeline(spec: SizeSpec, unet: Any = None, vae: Any = None) -> Any:
    """A ``StableDiffusionXLPipeline`` of the spec (random weights, SDXL's scheduler config).

    ``tiny`` is the builtin tiny base itself. Other sizes take its tokenizers and get two CLIP
    text encoders whose hidden sizes add up to the UNet's cross-attention width the way
    SDXL's 768 + 1280 do, and whose projection gives the pooled width.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from unziplora.tiny_sdxl import SDXL_SCHEDULER_CONFIG, build_tiny_sdxl_pipeline

    tiny = build_tiny_sdxl_pipeline()
    if spec.name == "tiny":
        if unet is not None:
            tiny.unet = unet
        if vae is not None:
            tiny.vae = vae
        return tiny
    tokenizer = tiny.tokenizer
    first = 768 * spec.cross_dim // 2048
    widths = (first, spec.cross_dim - first)

    def text_config(hidden: int, layers: int) -> Any:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_attention_heads=hidden // 64,
            num_hidden_layers=layers,
            max_position_embeddings=77,
            projection_dim=spec.pooled_dim,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        text_encoder = CLIPTextModel(text_config(widths[0], spec.text_layers[0]))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(widths[1], spec.text_layers[1]))
    return StableDiffusionXLPipeline(
        vae=vae if vae is not None else build_vae(spec),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=copy.deepcopy(tokenizer),
        unet=unet if unet is not None else build_unet(spec),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
    )


def random_conditioning(spec: SizeSpec, device: str, dtype: Any, seed: int = 3) -> Any:
    """The three prompt embeddings, pooled embedding and time ids of a training step, random.

    Both our trainer and the official one encode the prompts once before the loop, so the text
    encoders play no part in a training step; random tensors of the right shapes stand in.
    """
    import torch

    from unziplora.sdxl import time_ids
    from unziplora.train.loop import Conditioning

    g = torch.Generator().manual_seed(seed)

    def embed(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    return Conditioning(
        combined=embed(1, 77, spec.cross_dim),
        content=embed(1, 77, spec.cross_dim),
        style=embed(1, 77, spec.cross_dim),
        pooled=embed(1, spec.pooled_dim),
        time_ids=time_ids(spec.resolution, 1, dtype, device),
    )
