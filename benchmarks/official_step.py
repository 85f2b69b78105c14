"""A re-implementation of the *official* UnZipLoRA training step, for timing comparisons only.

This is not the official code and copies none of it: it is written from the behaviour described
in ALGORITHM.md (1.3, 4.1, 6.2, Appendix C) so that our step can be timed against what the
official trainer does per step on the same UNet, with the same optimizer and precision:

* **dense LoRA math** (ALGORITHM 1.3, 9 #1): every forward of every wrapped projection builds
  ``M = A^T B^T`` (``in x out``) per branch, multiplies its columns by the merge vector and, when
  active, by the column mask, then computes ``x @ M``;
* **VAE encode every step** (ALGORITHM 6.2 step 1, 9 #2): the training image goes through the
  fp32 VAE encoder each step and the posterior is sampled, scaled by the VAE's factor;
* **no caching**: the orthogonality term and the merge-gradient masks are rebuilt layer by layer
  from the masks on every step (ALGORITHM 4.5, 4.6).

The step times the typical (MASKED) phase of column separation, which is 597 of the 600 steps of
a default run: masks on, merges trainable, orthogonality term on, merge gradients masked to the
overlap of the two masks, clipping at 1.0, AdamW with the three groups of ALGORITHM 6.4, merges
clamped to [0, 1]. The per-step norm logging of the official script (ALGORITHM 9 #17) is left
out, which makes this reference faster than the official step, never slower.

To keep the two sides training the same thing, the parameters, masks and attention processor
(prompt separation, ALGORITHM 2.2) come from our :mod:`unziplora.method`; only the projection's
arithmetic and the data path differ. That is exactly what is being compared.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unziplora.method import BRANCHES, UnZipLoRAAttnProcessor, UnZipLoRALinear, param_groups

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
SIMILARITY_LAMBDA = 0.5  # ALGORITHM 0.1 (train.sh at HEAD)
COLUMN_RATIO = 0.1


class DenseUnZipLoRALinear(UnZipLoRALinear):
    """The official layer's arithmetic on our layer's parameters (mode "both" only)."""

    def forward(
        self, x: torch.Tensor, content_input: torch.Tensor | None = None, style_input: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = self.base_layer(x)
        inputs = {
            "content": x if content_input is None else content_input,
            "style": x if style_input is None else style_input,
        }
        for branch in BRANCHES:
            dense = self.lora_A[branch].T @ self.lora_B[branch].T  # [in, out], rebuilt every call
            dense = dense * self.merge[branch]
            if self.mask_active(branch):
                dense = dense * self.mask(branch).to(dense.dtype)
            y = y + (inputs[branch] @ dense).to(y.dtype)
        return y


def _is_cross_kv(name: str) -> bool:
    return ".attn2." in f".{name}" and name.endswith((".to_k", ".to_v"))


def inject_dense(unet: nn.Module, rank: int, *, seed: int = 0) -> dict[str, DenseUnZipLoRALinear]:
    """Wrap every attention projection of ``unet`` in a :class:`DenseUnZipLoRALinear` (fp32
    masters, official N(0, 1/r^2) init), install the prompt-separation processor, freeze the base."""
    unet.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, DenseUnZipLoRALinear] = {}
    for attn_name, attn in list(unet.named_modules()):
        if not (hasattr(attn, "set_processor") and hasattr(attn, "to_q") and hasattr(attn, "to_out")):
            continue
        for proj in PROJECTIONS:
            parent, child = (attn.to_out, "0") if proj == "to_out.0" else (attn, proj)
            base = parent.get_submodule(child)
            name = f"{attn_name}.{proj}"
            layer = DenseUnZipLoRALinear(base, rank, separate_inputs=_is_cross_kv(name), generator=generator)
            setattr(parent, child, layer)
            layers[name] = layer
    unet.set_attn_processor(UnZipLoRAAttnProcessor())
    return layers


def enter_masked_phase(layers: dict[str, DenseUnZipLoRALinear], seed: int = 0) -> None:
    """The state after a SELECT: ``floor(0.1 * out)`` columns per branch (style avoiding
    content's), masks on, merges trainable. Which columns does not change the cost."""
    generator = torch.Generator().manual_seed(seed)
    for layer in layers.values():
        out = layer.out_features
        k = max(1, int(out * COLUMN_RATIO))
        order = torch.randperm(out, generator=generator)
        content = torch.zeros(out, dtype=torch.bool)
        style = torch.zeros(out, dtype=torch.bool)
        content[order[:k]] = True
        style[order[k // 2 : k // 2 + k]] = True  # some overlap, so the merge gradients are not all masked
        layer.set_mask("content", content)
        layer.set_mask("style", style)
        for branch in BRANCHES:
            layer.set_mask_active(branch, True)
            layer.merge[branch].requires_grad_(True)


class OfficialStep:
    """One official-style optimizer step per call, on a UNet wrapped by :func:`inject_dense`.

    Args:
        unet: the UNet (frozen base, dense layers injected, already on device and dtype).
        layers: the injected layers.
        vae: an fp32 ``AutoencoderKL`` on the device (encodes the image every step).
        image: ``[1, 3, H, W]`` in [-1, 1] on the device.
        cond: :class:`unziplora.train.loop.Conditioning` (prompt embeddings computed once).
        noise_scheduler: a ``DDPMScheduler`` with SDXL's config.
        dtype: the compute dtype of the frozen UNet (autocast when not fp32).
    """

    def __init__(
        self,
        *,
        unet: Any,
        layers: dict[str, DenseUnZipLoRALinear],
        vae: Any,
        image: torch.Tensor,
        cond: Any,
        noise_scheduler: Any,
        dtype: torch.dtype,
        lr: tuple[float, float, float] = (5e-5, 5e-5, 5e-3),
        seed: int = 0,
    ) -> None:
        self.unet, self.layers, self.vae, self.image, self.cond = unet, layers, vae, image, cond
        self.noise_scheduler, self.dtype = noise_scheduler, dtype
        self.device = image.device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.params = [
            p for layer in layers.values() for d in (layer.lora_A, layer.lora_B, layer.merge) for p in d.values()
        ]
        self.optimizer = torch.optim.AdamW(
            param_groups(layers, *lr, weight_decay=1e-4), betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4
        )
        self.last_loss = float("nan")

    def ortho_loss(self) -> torch.Tensor:
        """``λ · mean over layers of mean_j |m_c μ_c m_s μ_s|``, layer by layer (ALGORITHM 4.6)."""
        terms = []
        for layer in self.layers.values():
            gate_c = layer.merge["content"] * layer.mask("content").to(layer.merge["content"].dtype)
            gate_s = layer.merge["style"] * layer.mask("style").to(layer.merge["style"].dtype)
            terms.append((gate_c * gate_s).abs().mean())
        return SIMILARITY_LAMBDA * torch.stack(terms).mean()

    def __call__(self) -> float:
        with torch.no_grad():
            image = self.image.to(torch.float32)
            latents = self.vae.encode(image).latent_dist.sample(generator=self.generator)
            latents = latents * float(self.vae.config.scaling_factor)
        latents = latents.to(self.dtype)
        noise = torch.randn(latents.shape, generator=self.generator, device=self.device, dtype=latents.dtype)
        steps = int(self.noise_scheduler.config.num_train_timesteps)
        timesteps = torch.randint(0, steps, (1,), generator=self.generator, device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        cond = self.cond
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            pred = self.unet(
                noisy,
                timesteps,
                encoder_hidden_states=cond.combined,
                added_cond_kwargs={"text_embeds": cond.pooled, "time_ids": cond.time_ids},
                cross_attention_kwargs={
                    "content_encoder_hidden_states": cond.content,
                    "style_encoder_hidden_states": cond.style,
                },
                return_dict=False,
            )[0]
        loss = F.mse_loss(pred.float(), noise.float()) + self.ortho_loss()
        loss.backward()
        with torch.no_grad():
            for layer in self.layers.values():  # merge gradients only where both masks hold
                overlap = (layer.mask("content") & layer.mask("style")).to(layer.merge["content"].dtype)
                for branch in BRANCHES:
                    if layer.merge[branch].grad is not None:
                        layer.merge[branch].grad.mul_(overlap)
        torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for layer in self.layers.values():
                for branch in BRANCHES:
                    layer.merge[branch].clamp_(0.0, 1.0)
        self.last_loss = float(loss.detach())
        return self.last_loss
