"""State I/O: PEFT-named content/style LoRAs, merges + masks, checkpoints (ALGORITHM.md 4.8, 8).

* ``lora_state_dict(layers, branch)``: ``unet.<module>.lora_A.weight`` ``[r, in]`` and
  ``unet.<module>.lora_B.weight`` ``[out, r]`` with the binary mask folded into the up rows when the
  mask is on (after training), else ``B * merge`` (column separation off: merge = 1). No alphas, so
  ``pipeline.load_lora_weights`` uses scale 1, exactly our standalone content/style modes.
* ``merge_state_dict(layers)``: ``<module>.merge_content|merge_style`` (fp32) and
  ``<module>.mask_content|mask_style`` (bool, the columns the branch used: its mask if on, else all).
* ``load_unziplora_state``: puts saved LoRAs back for combined generation: masks stay off because
  they are baked into B, so the gate is the merge alone and "both" mode reproduces training's
  final forward exactly. Content and style may come from different entries (cross-image).

Only safetensors is read or written here; nothing is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from unziplora.errors import DamagedEntryError, IncompatibleEntriesError
from unziplora.method.layer import BRANCHES, UnZipLoRALinear

PEFT_PREFIX = "unet."


def _layers(target: nn.Module | Mapping[str, UnZipLoRALinear]) -> dict[str, UnZipLoRALinear]:
    if isinstance(target, nn.Module):
        return {n: m for n, m in target.named_modules() if isinstance(m, UnZipLoRALinear)}
    return dict(target)


def _strip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k.removeprefix(PEFT_PREFIX)): v for k, v in sd.items()}


def _cpu32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()


def lora_state_dict(layers: nn.Module | Mapping[str, UnZipLoRALinear], branch: str) -> dict[str, torch.Tensor]:
    """PEFT-named standalone LoRA of ``branch`` (fp32, CPU), loadable by ``load_lora_weights``."""
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}; got {branch!r}")
    sd: dict[str, torch.Tensor] = {}
    for name, layer in _layers(layers).items():
        up = layer.lora_B[branch].detach().float()
        rows = layer.mask(branch).float() if layer.mask_active(branch) else layer.merge[branch].detach().float()
        sd[f"{PEFT_PREFIX}{name}.lora_A.weight"] = _cpu32(layer.lora_A[branch])
        sd[f"{PEFT_PREFIX}{name}.lora_B.weight"] = _cpu32(up * rows[:, None])
    return sd


def merge_state_dict(layers: nn.Module | Mapping[str, UnZipLoRALinear]) -> dict[str, torch.Tensor]:
    """Merge vectors and the effective binary column masks of every layer."""
    sd: dict[str, torch.Tensor] = {}
    for name, layer in _layers(layers).items():
        for b in BRANCHES:
            sd[f"{name}.merge_{b}"] = _cpu32(layer.merge[b])
            mask = layer.mask(b) if layer.mask_active(b) else torch.ones_like(layer.mask(b))
            sd[f"{name}.mask_{b}"] = mask.detach().to("cpu", torch.bool).contiguous().clone()
    return sd


def _check_coverage(what: str, keys: set[str], expected: set[str]) -> None:
    missing, extra = sorted(expected - keys), sorted(keys - expected)
    if missing or extra:
        first = (missing or extra)[0]
        raise IncompatibleEntriesError(
            f"the {what} does not fit this UNet ({len(missing)} tensors missing, {len(extra)} unexpected, "
            f"e.g. {first}); it was probably trained on a different base model"
        )


@torch.no_grad()
def _load_branch(layer: UnZipLoRALinear, name: str, branch: str, sd: Mapping[str, torch.Tensor] | None) -> None:
    if sd is None:  # no LoRA for this branch: it contributes nothing
        layer.lora_B[branch].zero_()
        return
    down, up = sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"]
    rank = down.shape[0]
    if down.shape != (rank, layer.in_features) or up.shape != (layer.out_features, rank):
        raise IncompatibleEntriesError(
            f"{branch} LoRA tensors of {name} have shapes {tuple(down.shape)} / {tuple(up.shape)}, expected "
            f"[r, {layer.in_features}] / [{layer.out_features}, r]; it was trained on a different base model"
        )
    for store, value in ((layer.lora_A, down), (layer.lora_B, up)):
        old = store[branch]
        if old.shape != value.shape:  # another rank: the entries may have been trained at different ranks
            store[branch] = nn.Parameter(value.to(device=old.device, dtype=old.dtype), requires_grad=old.requires_grad)
        else:
            old.copy_(value)


@torch.no_grad()
def load_unziplora_state(
    layers_or_unet: nn.Module | Mapping[str, UnZipLoRALinear],
    content_sd: Mapping[str, torch.Tensor] | None,
    style_sd: Mapping[str, torch.Tensor] | None,
    merges_sd: Mapping[str, torch.Tensor] | None = None,
    *,
    style_merges_sd: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Load saved (mask-baked) LoRAs and merges into the layers for combined generation.

    Args:
        content_sd / style_sd: PEFT state dicts from :func:`lora_state_dict` (``unet.`` prefix optional);
            ``None`` zeroes that branch.
        merges_sd: from :func:`merge_state_dict`; gives both merges unless ``style_merges_sd`` is
            given, which then supplies the style merges (content and style from different entries).
            Without merges they are 1.
    Masks are switched off (they are baked into B); the stored masks are kept for reference.
    Layers are unfolded first.
    """
    layers = _layers(layers_or_unet)
    lora_keys = {f"{n}.lora_{x}.weight" for n in layers for x in ("A", "B")}
    sources = {
        "content": None if content_sd is None else _strip(content_sd),
        "style": None if style_sd is None else _strip(style_sd),
    }
    merge_sources = {"content": merges_sd, "style": merges_sd if style_merges_sd is None else style_merges_sd}
    for branch, sd in sources.items():
        if sd is not None:
            _check_coverage(f"{branch} LoRA", set(sd), lora_keys)
        msd = merge_sources[branch]
        if msd is not None:
            keys = {k for k in _strip(msd) if k.endswith(f".merge_{branch}")}
            _check_coverage(f"{branch} merge file", keys, {f"{n}.merge_{branch}" for n in layers})
    for name, layer in layers.items():
        layer.unfold()
        for branch in BRANCHES:
            _load_branch(layer, name, branch, sources[branch])
            msd = None if merge_sources[branch] is None else _strip(merge_sources[branch])
            merge = layer.merge[branch]
            merge.copy_(msd[f"{name}.merge_{branch}"] if msd is not None else torch.ones_like(merge))
            mask = None if msd is None else msd.get(f"{name}.mask_{branch}")
            layer.set_mask(branch, mask if mask is not None else torch.zeros_like(layer.mask(branch)))
            layer.set_mask_active(branch, False)


def adapter_state_dict(layers: nn.Module | Mapping[str, UnZipLoRALinear]) -> dict[str, torch.Tensor]:
    """All adapter parameters and buffers (not the base weights), for training checkpoints."""
    return {
        f"{name}.{key}": value.detach().clone()
        for name, layer in _layers(layers).items()
        for key, value in layer.state_dict().items()
        if not key.startswith("base_layer.")
    }


def load_adapter_state_dict(layers: nn.Module | Mapping[str, UnZipLoRALinear], sd: Mapping[str, torch.Tensor]) -> None:
    """Inverse of :func:`adapter_state_dict` (strict: every adapter tensor must be present)."""
    for name, layer in _layers(layers).items():
        own = {k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")}
        own.update({k: v for k, v in layer.state_dict().items() if k.startswith("base_layer.")})
        layer.load_state_dict(own, strict=True)


def read_lora_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into ``(state_dict, metadata)``; refuses anything else clearly."""
    from unziplora.fileio import UnreadableSafetensors, read_safetensors

    path = Path(path)
    try:
        return read_safetensors(path)
    except FileNotFoundError:
        raise DamagedEntryError(f"{path} does not exist; the entry is incomplete. Re-train or re-import it.") from None
    except UnreadableSafetensors as exc:
        raise DamagedEntryError(f"{path} is not a readable safetensors file ({exc}); the file is damaged.") from exc


def write_lora_file(
    path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``state_dict`` as safetensors with ``{"format": "pt"}`` metadata, atomically."""
    from safetensors.torch import save_file

    from unziplora.fileio import atomic_target

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_target(path, durable=False) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **dict(metadata or {})})
    return path
