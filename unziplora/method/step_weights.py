"""The gated LoRA weights of every layer, built once per UNet forward and batched by shape.

Per wrapped projection and forward, the plain layer path builds its gates (merge x mask), scales
the two up matrices, concatenates the branches' down and up matrices and only then runs the two
low-rank products: about ten small operators forward and as many backward, each one kernel launch
on a GPU, 560 times per SDXL step. The merges and masks do not change inside a forward, so this
module builds those weights for *all* layers of one shape at once, a dozen operators per shape
group whatever the number of layers:

    down[L, 2r, in]  = cat(stack(A_c), stack(A_s))            (content rows first)
    up[L, out, 2r]   = cat(stack(B_c) * g_c, stack(B_s) * g_s)  (g: the layer's gate per branch)

and hands each layer its slice (``unbind``: views, one ``stack`` in backward). Gradients reach the
per-branch parameters through ordinary autograd, so nothing else changes: the parameters, their
``.grad``, the optimizer and the column-separation hooks are those of the plain path, and the
arithmetic is the same (only the order of float additions inside the products may differ).

:func:`inject_unziplora` installs :func:`prepare` as a forward pre-hook of the UNet. A layer uses
its prepared slice only while nothing it depends on changed since (parameter and buffer version
counters, mode, scales, folding, grad mode), and falls back to the plain path otherwise, so
calling a layer on its own, editing a merge in place or switching modes is always safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from unziplora.method.layer import UnZipLoRALinear


def _group_key(layer: UnZipLoRALinear) -> tuple[Any, ...] | None:
    """Layers with equal keys are prepared together; None: this layer keeps the plain path."""
    if layer.mode != "both" or layer.folded or not layer.step_weights:
        return None
    a_c, a_s = layer.lora_A["content"], layer.lora_A["style"]
    if a_c.shape != a_s.shape or a_c.dtype != a_s.dtype or a_c.device != a_s.device:
        return None  # branches of different ranks (entries trained at different ranks)
    return (layer.in_features, layer.out_features, a_c.shape[0], a_c.dtype, a_c.device, layer.separate_inputs)


def _gates(members: list[UnZipLoRALinear], branch: str) -> torch.Tensor:
    """``[L, out]`` gates of ``branch`` in mode "both": scale * merge * (mask if active)."""
    gate = torch.stack([layer.merge[branch] for layer in members])
    active = [layer.mask_active(branch) for layer in members]
    if any(active):
        masks = torch.stack([layer.mask(branch) for layer in members])
        if not all(active):
            off = torch.tensor([not a for a in active], device=masks.device)
            masks = masks | off[:, None]
        gate = gate * masks
    scales = [layer.scale_content if branch == "content" else layer.scale_style for layer in members]
    if any(s != 1.0 for s in scales):
        gate = gate * torch.tensor(scales, device=gate.device, dtype=gate.dtype)[:, None]
    return gate


def _prompt_deltas(
    downs: tuple[torch.Tensor, torch.Tensor], up: torch.Tensor, content: torch.Tensor, style: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The LoRA part of every cross-attention K/V output of one group, ``[B, T, out]`` per layer.

    Those branches read only the content and style prompt embeddings, which are the same for
    every cross-attention of the UNet: two products for all layers of the group (``[B, T, L*r]``)
    and one batched product with the gated up matrices, instead of six products per layer.
    """
    down_c, down_s = downs  # [L, r, in] each
    count, rank, inp = down_c.shape
    tokens = content.shape[:-1]
    h_c = F.linear(content, down_c.reshape(count * rank, inp)).reshape(-1, count, rank)
    h_s = F.linear(style, down_s.reshape(count * rank, inp)).reshape(-1, count, rank)
    # [L, B*T, 2r], content columns first as in `up`; stack + flatten lays it out as cat(dim=2)
    # would, but the CPU kernel of a last-dimension cat is several times slower.
    h = torch.stack([h_c, h_s], dim=2).flatten(2).transpose(0, 1)
    # up @ h^T rather than h @ up^T: the gradient of ``up`` then comes out contiguous, like the
    # parameters, and autograd hands it on without a copy per layer.
    delta = torch.bmm(up, h.transpose(1, 2)).transpose(1, 2)  # [L, B*T, out]
    # Unbind last: its backward stacks the incoming (often strided) grads in one op, where a
    # per-layer view would first copy each of them.
    return delta.reshape(count, *tokens, up.shape[1]).unbind(0)


def prepare(
    layers: Iterable[UnZipLoRALinear], content: torch.Tensor | None = None, style: torch.Tensor | None = None
) -> int:
    """Build the prepared weights of ``layers`` (with autograd); returns how many layers got them.

    ``content`` / ``style``: the branch prompt embeddings of this forward, if any; the K/V
    branches of prompt-separated layers are then computed here, once for all layers (a layer
    uses them only if it is called with exactly these tensors). Does nothing when gradients are
    off: without a graph to save, the plain path costs only the forward.
    """
    if not torch.is_grad_enabled():
        return 0
    groups: dict[tuple[Any, ...], list[UnZipLoRALinear]] = {}
    for layer in layers:
        key = _group_key(layer)
        layer._prepared = None
        if key is not None:
            groups.setdefault(key, []).append(layer)
    autocast = content is not None and torch.is_autocast_enabled(content.device.type)
    for key, group in groups.items():
        for members in _chunks(key, group):
            _prepare_chunk(key, members, content, style, autocast)
    return sum(len(m) for m in groups.values())


# On a CPU every tensor above glibc's mmap threshold (at most 32 MiB) is a fresh mapping whose
# pages fault in on first touch: a stacked group of full-size SDXL layers (hundreds of MiB, a
# dozen such tensors per step with their gradients) then spends more time in the kernel than in
# the copy. Prepared in pieces below this size, the same tensors are reused from the heap.
# Accelerators keep one piece per group (their caching allocators reuse blocks of any size, and
# each piece costs a few more kernel launches).
CPU_CHUNK_BYTES = 8 << 20


def _chunks(key: tuple[Any, ...], members: list[UnZipLoRALinear]) -> list[list[UnZipLoRALinear]]:
    """``members`` in consecutive pieces whose stacked ``[L, 2r, max(in, out)]`` stays under
    :data:`CPU_CHUNK_BYTES` on a CPU (one piece elsewhere); a q/k/v trio is never split."""
    in_features, out_features, rank, dtype, device = key[:5]
    if device.type != "cpu":
        return [members]
    per_layer = 2 * rank * max(in_features, out_features) * dtype.itemsize
    limit = max(1, CPU_CHUNK_BYTES // per_layer)
    if len(members) <= limit:
        return [members]
    pieces: list[list[UnZipLoRALinear]] = []
    current: list[UnZipLoRALinear] = []
    i = 0
    while i < len(members):
        peers = members[i].qkv_peers
        width = 3 if peers is not None and tuple(members[i : i + 3]) == peers else 1
        if current and len(current) + width > limit:
            pieces.append(current)
            current = []
        current.extend(members[i : i + width])
        i += width
    pieces.append(current)
    return pieces


def _prepare_chunk(
    key: tuple[Any, ...],
    members: list[UnZipLoRALinear],
    content: torch.Tensor | None,
    style: torch.Tensor | None,
    autocast: bool,
) -> None:
    """Prepare one piece of a group (layers of one shape): see :func:`prepare`."""
    stacks = tuple(torch.stack([m.lora_A[b] for m in members]) for b in ("content", "style"))
    # [L, out, 2r]: stack on a new dim 2 and flatten, the layout of cat(dim=2) without the
    # slow last-dimension cat (about 7x faster on a CPU for rank-16 chunks)
    up = torch.stack(
        [torch.stack([m.lora_B[b] for m in members]) * _gates(members, b)[..., None] for b in ("content", "style")],
        dim=2,
    ).flatten(2)
    deltas: tuple[Any, ...] = (None,) * len(members)
    if (
        key[-1]  # separate inputs
        and content is not None
        and style is not None
        and content.shape == style.shape
        and content.shape[-1] == key[0]
        and (autocast or (content.dtype == style.dtype == up.dtype))
    ):
        deltas = tuple((content, style, d) for d in _prompt_deltas(stacks, up, content, style))
        # these layers read their K/V delta; a call with other inputs takes the plain path,
        # so their down matrices are not concatenated (no slice: ``None``)
        downs: list[torch.Tensor | None] = [None] * len(members)
        for layer in members:
            layer._prepared_qkv = None
    else:
        downs = list(_split_downs(members, torch.cat(stacks, dim=1)))
    for layer, d, u, kv in zip(members, downs, up.unbind(0), deltas):
        layer._prepared = (d, u, layer.weights_key(), kv)


def _split_downs(members: list[UnZipLoRALinear], down: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's ``[2r, in]`` slice of ``down``; self-attention q/k/v trios also get theirs as one
    ``[6r, in]`` tensor (``_prepared_qkv`` of the q layer), since the three read the same input.

    One ``split`` makes every slice, so the backward is a single ``cat``.
    """
    index = {id(m): i for i, m in enumerate(members)}
    sizes: list[int] = []
    leads: list[UnZipLoRALinear | None] = []
    i = 0
    while i < len(members):
        layer = members[i]
        layer._prepared_qkv = None
        peers = layer.qkv_peers
        if peers is not None and all(index.get(id(p)) == i + j for j, p in enumerate(peers)):
            sizes.append(3)
            leads.append(layer)
            i += 3
        else:
            sizes.append(1)
            leads.append(None)
            i += 1
    result: list[torch.Tensor] = []
    for chunk, lead in zip(down.split(sizes), leads):
        if lead is None:
            result.append(chunk.view(chunk.shape[1:]))
        else:
            lead._prepared_qkv = chunk.view(-1, chunk.shape[-1])
            result.extend(chunk.unbind(0))
    return result


def prepare_hook(layers: list[UnZipLoRALinear]) -> Any:
    """A forward pre-hook (``with_kwargs=True``) for the UNet that prepares ``layers`` before every forward."""

    def hook(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        extra = kwargs.get("cross_attention_kwargs") or {}
        prepare(layers, extra.get("content_encoder_hidden_states"), extra.get("style_encoder_hidden_states"))

    return hook
