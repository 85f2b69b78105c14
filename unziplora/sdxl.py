"""SDXL's conditioning inputs: the three prompt embeddings, time ids, and cached image latents.

The only module that knows SDXL's two-encoder quirks. Prompts go through the pipeline's own
``encode_prompt`` (penultimate hidden states of both CLIP encoders concatenated to 2048 features,
77 tokens, pooled embedding from the second encoder), exactly what ALGORITHM.md 2.3 describes.

Latents: the official trainer re-encoded the image with the VAE on every step (ALGORITHM.md 9,
#2). We encode once and keep the posterior's mean and standard deviation, then draw
``mean + std * noise`` each step — the same distribution at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PromptEmbeddings:
    """Token embeddings ``[n, 77, D]`` and pooled embeddings ``[n, P]`` for a list of prompts."""

    embeds: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: Any, dtype: Any = None) -> PromptEmbeddings:
        return PromptEmbeddings(self.embeds.to(device=device, dtype=dtype), self.pooled.to(device=device, dtype=dtype))


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: list[str], device: Any = None) -> PromptEmbeddings:
    """Encode prompts with both SDXL text encoders (no classifier-free guidance)."""
    device = device or pipe.text_encoder_2.device
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=list(prompts),
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
    )
    return PromptEmbeddings(embeds, pooled)


def time_ids(resolution: int, batch: int, dtype: Any, device: Any) -> torch.Tensor:
    """SDXL's added time ids ``[H, W, crop_top, crop_left, H, W]``, constant as in training (ALGORITHM 2.3)."""
    row = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=dtype, device=device)
    return row.unsqueeze(0).repeat(batch, 1)


@dataclass
class LatentPosterior:
    """Mean and std of the VAE posterior for each training image, already scaled for the UNet."""

    mean: torch.Tensor  # [n, 4, h, w]
    std: torch.Tensor

    def sample(self, index: torch.Tensor | int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh latent sample for image(s) ``index`` (``mean + std * N(0, 1)``)."""
        if isinstance(index, int):
            index = torch.tensor([index])
        mean, std = self.mean[index], self.std[index]
        noise = torch.randn(
            mean.shape, generator=generator, device=generator.device if generator else mean.device, dtype=mean.dtype
        )
        return mean + std * noise.to(mean.device)


@torch.no_grad()
def encode_latent_posterior(vae: Any, images: torch.Tensor, device: Any = None) -> LatentPosterior:
    """Encode ``images`` (``[n, 3, H, W]`` in [-1, 1]) once with the VAE in fp32.

    SDXL's VAE overflows in fp16 (its config sets ``force_upcast``), so it runs in fp32 here
    as in the official trainer; the result is scaled by the VAE's scaling factor.
    """
    device = device or vae.device
    original_dtype = next(vae.parameters()).dtype
    vae.to(device=device, dtype=torch.float32)
    try:
        dist = vae.encode(images.to(device=device, dtype=torch.float32)).latent_dist
        scale = float(vae.config.scaling_factor)
        return LatentPosterior(mean=dist.mean * scale, std=dist.std * scale)
    finally:
        vae.to(dtype=original_dtype)
