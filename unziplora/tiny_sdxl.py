"""The builtin ``tiny-sdxl`` base: SDXL's architecture at toy widths, random weights, offline.

No machine this project is built on can download SDXL, yet tests, CI, benchmarks and the offline
try-out must run the *same* code path as the real model. So this module generates, with a fixed
seed, a ``StableDiffusionXLPipeline`` whose UNet has SDXL's block types and layout (3 levels,
DownBlock2D + 2 CrossAttnDownBlock2D, 2 CrossAttnUpBlock2D + UpBlock2D, two layers per block,
``text_time`` added conditioning, linear projections), so all 11 attention groups carry SDXL's
module names; two CLIP text encoders (the second with a projection) with locally written
byte-level tokenizers; a small VAE with SDXL's downsampling factor of 8; SDXL's scheduler config.

It is saved with ``save_pretrained`` into the user cache dir on first use and from then on loaded
with ``from_pretrained`` exactly like a real SDXL folder. Its images are noise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

TINY_SDXL = "tiny-sdxl"
# Bump when the generated weights or configs change, so stale caches are rebuilt.
TINY_SDXL_VERSION = 1
SEED = 20241204

# SDXL base 1.0's scheduler_config.json (EulerDiscreteScheduler), verbatim values.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# Widths chosen so every attention group exists with 2 transformer blocks (as FORMATS.md 1.3).
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,  # 64 px / VAE factor 8
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 2),
    "attention_head_dim": (2, 4, 8),
    "cross_attention_dim": 64,  # 32 (CLIP-L stand-in) + 32 (bigG stand-in), like 768 + 1280
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,  # 6 time ids * 8 + 32 pooled text embedding
    "norm_num_groups": 32,
}

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.13025,  # SDXL's
    "force_upcast": True,
}


def _write_tokenizer_files(folder: Path) -> None:
    """A character-level CLIP vocabulary: every byte alone and word-final, no merges.

    Different prompts therefore give different token ids (unlike a handful-of-words test vocab,
    where most words become ``<unk>``), which the prompt-separation tests rely on.
    """
    from unziplora.clip_bpe import write_tokenizer_files

    write_tokenizer_files(folder, merges=[])


def build_tiny_sdxl_pipeline() -> Any:
    """Build the tiny SDXL pipeline in memory, deterministically (same seed, same weights)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    vocab_size = len(tokenizer)
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id

    def text_config(projection_dim: int) -> Any:
        return CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=3,
            max_position_embeddings=77,
            projection_dim=projection_dim,
            hidden_act="gelu",
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        torch.manual_seed(SEED + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(SEED + 2)
        text_encoder = CLIPTextModel(text_config(32))
        torch.manual_seed(SEED + 3)
        text_encoder_2 = CLIPTextModelWithProjection(text_config(32))
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def tiny_sdxl_dir(cache_dir: Path | None = None) -> Path:
    """Where the tiny base lives on disk, generating it first if needed.

    Generation writes into a temporary sibling and renames it into place, so concurrent
    first uses (parallel test workers, several processes of one launch) never see half a model.
    """
    from unziplora.activity import phase
    from unziplora.fileio import cached_folder
    from unziplora.settings import user_cache_dir

    def build(staging: Path) -> None:
        with phase(f"building {TINY_SDXL} (first use only)"):
            build_tiny_sdxl_pipeline().save_pretrained(staging, safe_serialization=True)

    return cached_folder(cache_dir or user_cache_dir(), f"tiny-sdxl-v{TINY_SDXL_VERSION}", build)
