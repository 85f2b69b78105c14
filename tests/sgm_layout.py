"""Write a diffusers SDXL folder as one SGM-layout (A1111 / ComfyUI) ``.safetensors`` file.

The tests have no real SDXL checkpoint, so they make one from the tiny base: every tensor of the
UNet, the VAE and both text encoders is renamed to the name the original Stability code gives it
(``model.diffusion_model.*``, ``first_stage_model.*``, ``conditioner.embedders.0.transformer.*``,
``conditioner.embedders.1.model.*``) and reshaped where that layout differs (the VAE's attention
projections are 1x1 convolutions, OpenCLIP packs q/k/v into one ``in_proj`` and stores its text
projection transposed). This is the inverse of what diffusers' ``from_single_file`` undoes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from unziplora.formats.sgm import diffusers_to_sgm

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_sgm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers UNet names -> ``model.diffusion_model.*`` (module paths mapped by formats.sgm)."""
    return {UNET_PREFIX + diffusers_to_sgm(name): tensor for name, tensor in state.items()}


def _vae_name(name: str, up_blocks: int) -> str:
    name = name.replace("conv_norm_out", "norm_out")
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", name)
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", name)
    name = re.sub(
        r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)",
        lambda m: f"decoder.up.{up_blocks - 1 - int(m[1])}." + (f"block.{m[3]}" if m[2] == "resnets" else "upsample"),
        name,
    )
    name = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", name)
    if "mid_block.attentions.0." in name:
        name = name.replace("mid_block.attentions.0.", "mid.attn_1.")
        for new, old in _VAE_ATTENTION.items():
            name = name.replace(f"attn_1.{new}.", f"attn_1.{old}.")
    return name.replace("conv_shortcut", "nin_shortcut")


def vae_to_sgm(state: dict[str, torch.Tensor], up_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers VAE names -> ``first_stage_model.*``; attention projections back to 1x1 convs."""
    out = {}
    for name, tensor in state.items():
        new = _vae_name(name, up_blocks)
        if ".attn_1." in new and new.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + new] = tensor
    return out


def clip_l_to_sgm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModel`` names, prefixed as SGM stores them (``...transformer.text_model.*``).

    transformers >= 5.6 flattened ``CLIPTextModel`` (no ``text_model.`` in its own names); the
    files in the wild were written with it, so it is put back.
    """
    return {
        CLIP_L_PREFIX + "text_model." + name.removeprefix("text_model."): tensor
        for name, tensor in state.items()
        if not name.endswith("position_ids")
    }


def open_clip_to_sgm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModelWithProjection`` names -> OpenCLIP's (``conditioner.embedders.1.model.*``)."""
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    out: dict[str, torch.Tensor] = {OPEN_CLIP_PREFIX + "text_projection": state["text_projection.weight"].T}
    for name, sgm in fixed.items():
        out[OPEN_CLIP_PREFIX + sgm] = state[name]
    layers = {int(m[1]) for k in state if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    for i in sorted(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{OPEN_CLIP_PREFIX}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            )
            out[dst + f"attn.out_proj.{kind}"] = state[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = state[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = state[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = state[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = state[src + f"mlp.fc2.{kind}"]
    return out


def pipeline_to_sgm(pipe: Any, *, vae: bool = True, ema: bool = False) -> dict[str, torch.Tensor]:
    """The whole pipeline in SGM names (the VAE left out when ``vae`` is false).

    ``ema`` adds a ``model_ema.*`` copy of the UNet with *different* values, as EMA-carrying
    training checkpoints have; a loader must ignore it (it is not the model the file names).
    """
    state = unet_to_sgm(pipe.unet.state_dict())
    state |= clip_l_to_sgm(pipe.text_encoder.state_dict())
    state |= open_clip_to_sgm(pipe.text_encoder_2.state_dict())
    if vae:
        state |= vae_to_sgm(pipe.vae.state_dict(), len(pipe.vae.config.up_block_types))
    if ema:
        for key, tensor in list(state.items()):
            if key.startswith(UNET_PREFIX):
                state["model_ema." + key[len("model.") :].replace(".", "")] = tensor + 1.0
    return state


def write_sgm_file(
    pipe: Any,
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    vae: bool = True,
    ema: bool = False,
    extras: bool = False,
) -> Path:
    """Save ``pipe`` as one SGM-layout safetensors file in ``dtype`` (fp16 = a "pruned" file).

    ``extras`` adds the non-weight tensors many real files carry: CLIP-L's integer ``position_ids``
    and the EMA bookkeeping scalars, without an EMA copy.
    """
    state = {k: v.detach().to(dtype).contiguous() for k, v in pipeline_to_sgm(pipe, vae=vae, ema=ema).items()}
    if extras:
        state[CLIP_L_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
        state["model_ema.decay"] = torch.tensor(0.9999)
        state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    save_file(state, str(path), metadata={"format": "pt"})
    return path
