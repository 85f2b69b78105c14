"""Prompt separation (ALGORITHM.md 2.2) as an SDPA attention processor for unmodified diffusers.

Installed with ``unet.set_attn_processor``; the content and style prompt embeddings travel in the
UNet call's ``cross_attention_kwargs``::

    unet(x, t, E_combined, added_cond_kwargs=...,
         cross_attention_kwargs={"content_encoder_hidden_states": E_c, "style_encoder_hidden_states": E_s})

In cross-attention the base ``to_k``/``to_v`` weights see the combined prompt while the content
and style branches of those projections see their own prompts; everything else (``to_q``,
``to_out.0``, all of self-attention) feeds the same tensor to base and branches. Without the two
kwargs, or on a projection whose ``separate_inputs`` is off, this is ordinary SDPA attention.

The arithmetic mirrors diffusers' ``AttnProcessor2_0`` (spatial norm, group norm, cross norm,
attention mask, 4-D inputs, residual, output rescale) so swapping it in changes nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unziplora.method.layer import UnZipLoRALinear


def _match_batch(branch: torch.Tensor | None, encoder: torch.Tensor, name: str) -> torch.Tensor | None:
    """Broadcast a batch-1 branch prompt over the batch; refuse shapes that cannot line up.

    Under classifier-free guidance the caller passes the branch prompts for the whole batch,
    e.g. ``cat([zeros, E_c])`` (the official unconditional pass gives the branches zeros, ALGORITHM 7.1).
    """
    if branch is None:
        return None
    if branch.shape[1:] != encoder.shape[1:]:
        raise ValueError(
            f"{name} has shape {tuple(branch.shape)} but the combined prompt embedding has {tuple(encoder.shape)}; "
            "all three prompts must be encoded to the same token length (77) and width"
        )
    if branch.shape[0] == encoder.shape[0]:
        return branch
    if branch.shape[0] == 1:
        return branch.expand(encoder.shape[0], *branch.shape[1:])
    raise ValueError(
        f"{name} has batch {branch.shape[0]} but the combined prompt embedding has batch {encoder.shape[0]}; "
        "pass one row per batch row (with classifier-free guidance: unconditional rows first) or a single row"
    )


def _project(
    proj: torch.nn.Module, x: torch.Tensor, content: torch.Tensor | None, style: torch.Tensor | None
) -> torch.Tensor:
    if isinstance(proj, UnZipLoRALinear) and proj.separate_inputs and (content is not None or style is not None):
        return proj(x, content_input=content, style_input=style)
    return proj(x)


class UnZipLoRAAttnProcessor:
    """SDPA attention whose cross-attention K/V branches can read their own prompt embeddings."""

    def __init__(self) -> None:
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("UnZipLoRAAttnProcessor needs PyTorch 2.0 or newer (scaled_dot_product_attention)")

    def __call__(
        self,
        attn,  # diffusers.models.attention_processor.Attention
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        content_encoder_hidden_states: torch.Tensor | None = None,
        style_encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        content = style = None
        qkv = None
        if encoder_hidden_states is None:  # self-attention: every branch sees h (ALGORITHM 2.2)
            encoder_hidden_states = hidden_states
            if isinstance(attn.to_q, UnZipLoRALinear):  # q, k, v with one LoRA down product
                qkv = attn.to_q.project_qkv(hidden_states)
        else:
            content = _match_batch(
                content_encoder_hidden_states, encoder_hidden_states, "content_encoder_hidden_states"
            )
            style = _match_batch(style_encoder_hidden_states, encoder_hidden_states, "style_encoder_hidden_states")
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
                content = None if content is None else attn.norm_encoder_hidden_states(content)
                style = None if style is None else attn.norm_encoder_hidden_states(style)
        if qkv is not None:
            query, key, value = qkv
        else:
            query = attn.to_q(hidden_states)
            key = _project(attn.to_k, encoder_hidden_states, content, style)
            value = _project(attn.to_v, encoder_hidden_states, content, style)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
