"""The optimisation loop (ALGORITHM.md 6.2), short enough to read top to bottom.

One step: draw a latent from the cached posterior, noise it at a random timestep, predict the
noise with the UNet in mode "both" under the three prompts, MSE (+ the merge orthogonality term
while column separation asks for it), backward, column-separation hook, clip, optimizer step,
second hook. Everything random comes from one ``torch.Generator`` whose state is checkpointed,
so a run interrupted at step k and resumed reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from unziplora.errors import TrainingError
from unziplora.method.selection import faithful_grad_scale
from unziplora.sdxl import LatentPosterior
from unziplora.train.config import TrainConfig


@dataclass
class Conditioning:
    """The three prompt embeddings ``[1, 77, D]``, the combined pooled embedding and time ids."""

    combined: torch.Tensor
    content: torch.Tensor
    style: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor


@dataclass
class StepReport:
    step: int  # completed optimizer steps
    total: int
    loss: float
    seconds: float


class TrainingStopped(Exception):
    """Training stopped on request (Ctrl-C) after ``step`` of ``total`` complete steps: the one stop path.

    The loop raises it between two steps; the trainer checkpoints, attaches the ``run`` and lets
    it through to the front end, which says ``unzip train --resume RUN`` continues it.
    """

    def __init__(self, step: int, total: int, run: Any = None) -> None:
        super().__init__(f"training stopped after step {step} of {total}")
        self.step, self.total, self.run = step, total, run


@dataclass
class LoopResult:
    steps: int
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)


def image_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    """A shuffled order of the training images per epoch, reproducible without saved state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator)


def _snr(noise_scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1 - alphas_cumprod)


def diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, noise_scheduler: Any, min_snr_gamma: float | None
) -> torch.Tensor:
    """MSE in fp32; with ``min_snr_gamma`` each sample is weighted by min(SNR, gamma)/SNR."""
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    snr = _snr(noise_scheduler, timesteps)
    weights = torch.clamp(snr, max=min_snr_gamma) / snr
    return (per_sample * weights).mean()


def train_loop(
    *,
    unet: Any,
    layers: dict[str, Any],
    columns: Any,
    optimizer: torch.optim.Optimizer,
    noise_scheduler: Any,
    cond: Conditioning,
    posterior: LatentPosterior,
    config: TrainConfig,
    generator: torch.Generator,
    device: str,
    dtype: torch.dtype,
    scaler: torch.amp.GradScaler,
    start_step: int = 0,
    on_step: Callable[[StepReport], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> LoopResult:
    """Run optimizer steps ``start_step .. config.steps - 1``; the UNet holds injected layers.

    ``scaler`` is enabled for fp16 (whose gradients underflow without loss scaling) and a
    pass-through otherwise (``GradScaler(enabled=False)``), so every precision takes one path.
    """
    params = [
        p for layer in layers.values() for group in (layer.lora_A, layer.lora_B, layer.merge) for p in group.values()
    ]
    autocast = dtype != torch.float32
    faithful = bool(getattr(columns, "config", {}).get("faithful", False))
    count = posterior.mean.shape[0]
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    extra = (
        {"content_encoder_hidden_states": cond.content, "style_encoder_hidden_states": cond.style}
        if config.prompt_separation
        else None
    )
    losses: list[float] = []
    # Adam's second moments and the column cones hold values far below 1e-38; on CPUs such
    # denormal floats make each op up to 100x slower. Flushing them to zero changes no result
    # that matters (process-wide; torch has no getter to restore the previous setting).
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    loss_value = math.nan
    for step in range(start_step, config.steps):
        if stop_requested is not None and stop_requested():
            raise TrainingStopped(step, config.steps)
        tick = time.perf_counter()
        index = int(image_order(config.seed, step // count, count)[step % count])
        latents = posterior.sample(index, generator).to(device)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device)
        if config.noise_offset:
            offset = torch.randn(latents.shape[:2] + (1, 1), generator=generator, device=generator.device).to(device)
            noise = noise + config.noise_offset * offset
        timesteps = torch.randint(
            0, num_train_timesteps, (latents.shape[0],), generator=generator, device=generator.device
        ).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=autocast):
            pred = unet(
                noisy.to(dtype),
                timesteps,
                encoder_hidden_states=cond.combined,
                added_cond_kwargs={"text_embeds": cond.pooled, "time_ids": cond.time_ids},
                cross_attention_kwargs=extra,
                return_dict=False,
            )[0]
        loss = diffusion_loss(pred, noise, timesteps, noise_scheduler, config.min_snr_gamma)
        ortho = columns.ortho_loss(layers)
        total = loss + ortho if ortho is not None else loss
        loss_value = float(total.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the loss became {loss_value} at step {step + 1}; nothing was saved. Try a lower learning rate "
                "or --precision fp32."
            )
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)  # the column score reads unscaled gradients
        # get_scale syncs with the device: read it only when the faithful threshold uses it
        loss_scale = float(scaler.get_scale()) if faithful and scaler.is_enabled() else None
        columns.after_backward(step, grad_scale=faithful_grad_scale(loss_scale, faithful))
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], config.max_grad_norm)
        scaler.step(optimizer)  # skips the step on inf/nan gradients (fp16 only)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        columns.after_optimizer_step(step)
        losses.append(loss_value)
        if on_step is not None:
            on_step(StepReport(step + 1, config.steps, loss_value, time.perf_counter() - tick))
        if (
            on_checkpoint is not None
            and config.checkpoint_every
            and (step + 1) % config.checkpoint_every == 0
            and step + 1 < config.steps
        ):
            on_checkpoint(step + 1)
    columns.finalize()
    return LoopResult(steps=config.steps, final_loss=loss_value, seconds=time.perf_counter() - started, losses=losses)
