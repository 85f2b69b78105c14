"""Putting UnZipLoRA layers into a diffusers UNet and taking them out again (ALGORITHM.md 2.1).

Every ``to_q``, ``to_k``, ``to_v`` and ``to_out.0`` of every ``Attention`` (self- and
cross-attention) is replaced in place by an :class:`UnZipLoRALinear` wrapping it, the way PEFT
replaces modules, and every attention gets :class:`UnZipLoRAAttnProcessor` so the content/style
prompt kwargs reach the cross-attention key/value projections. Nothing of diffusers is copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from unziplora.method.layer import BRANCHES, MODES, UnZipLoRALinear
from unziplora.method.processor import UnZipLoRAAttnProcessor
from unziplora.method.step_weights import prepare_hook
from unziplora.unet_layout import PROJECTIONS

_SAVED_PROCESSORS = "_unziplora_saved_processors"
_PREPARE_HANDLE = "_unziplora_prepare_handle"

Layers = Mapping[str, UnZipLoRALinear]


def _attention_modules(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in unet.named_modules():
        if hasattr(module, "set_processor") and hasattr(module, "to_q") and hasattr(module, "to_out"):
            yield name, module


def _is_cross_kv(name: str) -> bool:
    return ".attn2." in f".{name}" and name.endswith((".to_k", ".to_v"))


def inject_unziplora(
    unet: nn.Module,
    rank: int,
    *,
    init: str = "official",
    prompt_separation: bool = True,
    freeze_base: bool = True,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    step_weights: bool = True,
) -> dict[str, UnZipLoRALinear]:
    """Wrap every attention projection of ``unet`` and install the prompt-separation processor.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (any weight dtype/device).
        rank: LoRA rank of both branches.
        init: ``"official"`` (A, B ~ N(0, 1/r^2), ALGORITHM 1.1) or ``"zero"`` (B = 0).
        prompt_separation: whether cross-attention K/V branches read the content/style prompts.
        freeze_base: set ``requires_grad=False`` on every UNet parameter first (as PEFT does).
        dtype: dtype of the LoRA and merge tensors (fp32 masters by default).
        generator: CPU generator for the init; layers are initialised in the UNet's module order.
        step_weights: build every layer's gated weights once per UNet forward, batched by shape
            (:mod:`unziplora.method.step_weights`); False keeps the plain per-layer path.

    Cast the UNet to its training/inference dtype *before* injecting: a later ``unet.to(fp16)``
    would also cast the fp32 LoRA masters (as in the official script, ALGORITHM 1.1).

    Returns:
        ``{module path: layer}`` such as ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``.
    """
    if unziplora_layers(unet):
        raise RuntimeError("this UNet already has UnZipLoRA layers; call remove_unziplora(unet) first")
    if freeze_base:
        unet.requires_grad_(False)
    targets: list[tuple[str, nn.Module, str, nn.Linear]] = []
    for attn_name, attn in _attention_modules(unet):
        for proj in PROJECTIONS:
            parent = attn.to_out if proj == "to_out.0" else attn
            child = "0" if proj == "to_out.0" else proj
            base = parent.get_submodule(child)
            if isinstance(base, nn.Linear):
                targets.append((f"{attn_name}.{proj}", parent, child, base))
    layers: dict[str, UnZipLoRALinear] = {}
    for name, parent, child, base in targets:
        layer = UnZipLoRALinear(
            base,
            rank,
            init=init,
            separate_inputs=prompt_separation and _is_cross_kv(name),
            dtype=dtype,
            generator=generator,
        )
        layer.step_weights = step_weights
        for param in layer.merge.values():
            param.requires_grad_(False)  # frozen until the first SELECT (ALGORITHM 4.2)
        setattr(parent, child, layer)
        layers[name] = layer
    for attn_name, _ in _attention_modules(unet):
        if ".attn1" in f".{attn_name}" or attn_name.startswith("attn1"):
            trio = tuple(layers.get(f"{attn_name}.{proj}") for proj in ("to_q", "to_k", "to_v"))
            if all(trio):
                trio[0].qkv_peers = trio  # type: ignore[union-attr, assignment]
    setattr(unet, _SAVED_PROCESSORS, dict(unet.attn_processors))
    unet.set_attn_processor(UnZipLoRAAttnProcessor())
    setattr(
        unet, _PREPARE_HANDLE, unet.register_forward_pre_hook(prepare_hook(list(layers.values())), with_kwargs=True)
    )
    return layers


def remove_unziplora(unet: nn.Module) -> dict[str, nn.Linear]:
    """Put the plain ``nn.Linear`` projections (unfolded) and the original processors back."""
    restored: dict[str, nn.Linear] = {}
    handle = getattr(unet, _PREPARE_HANDLE, None)
    if handle is not None:
        handle.remove()
        delattr(unet, _PREPARE_HANDLE)
    for name, layer in unziplora_layers(unet).items():
        layer._prepared = None
        layer.unfold()
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name), child, layer.base_layer)
        restored[name] = layer.base_layer
    saved = getattr(unet, _SAVED_PROCESSORS, None)
    if saved is not None:
        unet.set_attn_processor(dict(saved))
        delattr(unet, _SAVED_PROCESSORS)
    return restored


def unziplora_layers(unet: nn.Module) -> dict[str, UnZipLoRALinear]:
    """All UnZipLoRA layers of ``unet`` by module path, in the UNet's module order."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, UnZipLoRALinear)}


def _as_layers(target: nn.Module | Layers | Iterable[UnZipLoRALinear]) -> list[UnZipLoRALinear]:
    if isinstance(target, UnZipLoRALinear):
        return [target]
    if isinstance(target, nn.Module):
        return list(unziplora_layers(target).values())
    if isinstance(target, Mapping):
        return list(target.values())
    return list(target)


def set_mode(target: nn.Module | Layers | Iterable[UnZipLoRALinear], mode: str) -> None:
    """Set ``"both"``, ``"content"`` or ``"style"`` on every layer of a UNet or a layer dict."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    for layer in _as_layers(target):
        layer.mode = mode


@contextmanager
def mode(target: nn.Module | Layers, m: str) -> Iterator[None]:
    """Temporarily run in mode ``m``; the previous per-layer modes come back on exit."""
    layers = _as_layers(target)
    previous = [layer.mode for layer in layers]
    try:
        set_mode(layers, m)
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer.mode = old


def set_scales(target: nn.Module | Layers, *, content: float | None = None, style: float | None = None) -> None:
    """Set the per-branch generation multipliers (``--content-scale`` / ``--style-scale``)."""
    for layer in _as_layers(target):
        if content is not None:
            layer.scale_content = float(content)
        if style is not None:
            layer.scale_style = float(style)


def set_prompt_separation(target: nn.Module | Layers, enabled: bool) -> None:
    """Switch prompt separation (ALGORITHM 2.2) for the ablation: when off, the cross-attention
    K/V branches read the combined prompt like the base weights do."""
    for name, layer in (unziplora_layers(target) if isinstance(target, nn.Module) else dict(target)).items():
        layer.separate_inputs = bool(enabled) and _is_cross_kv(name)


def fold(target: nn.Module | Layers, *, include_separate: bool = False) -> int:
    """Fold every branch whose input equals the base input into the base weights.

    ``include_separate=False`` (prompt-separated generation) keeps the cross-attention K/V branches
    live, which are then the only LoRA work left per step; ``True`` (one prompt for everything)
    folds all branches. Returns how many layers were folded.
    """
    return sum(bool(layer.fold(include_separate=include_separate)) for layer in _as_layers(target))


def unfold(target: nn.Module | Layers) -> None:
    """Undo :func:`fold` bit-exactly."""
    for layer in _as_layers(target):
        layer.unfold()


def param_groups(
    layers: Layers | Iterable[UnZipLoRALinear],
    content_lr: float,
    style_lr: float,
    merge_lr: float,
    weight_decay: float = 1e-4,
) -> list[dict[str, Any]]:
    """The three AdamW groups of ALGORITHM 6.4: content A/B, style A/B, all merge vectors.

    Merges are in their group even while frozen: with ``zero_grad(set_to_none=True)`` a frozen
    merge has no gradient and AdamW skips it entirely.
    """
    items = _as_layers(layers)
    groups: list[dict[str, Any]] = []
    for branch, lr in zip(BRANCHES, (content_lr, style_lr)):
        params = [p for layer in items for p in (layer.lora_A[branch], layer.lora_B[branch])]
        groups.append({"name": branch, "params": params, "lr": lr, "weight_decay": weight_decay})
    merges = [layer.merge[b] for layer in items for b in BRANCHES]
    groups.append({"name": "merge", "params": merges, "lr": merge_lr, "weight_decay": weight_decay})
    return groups
