"""Putting registry entries into a UNet: content from one entry, style from the same or another.

Cross-image composition (ALGORITHM.md 7.3) takes entry A's content LoRA and content merge vectors
and entry B's style LoRA and style merge vectors, with no re-optimisation. Entries must come from
the same base model: a LoRA trained on one base means nothing on another, and LoRAs of different
shapes cannot be loaded at all. Both are refused with one line before anything heavy happens
(different recorded bases) or while loading (shapes that do not fit the UNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unziplora.base_model import same_base
from unziplora.entry_files import MASKS_FILE, part_file, read_payload
from unziplora.errors import DamagedEntryError, IncompatibleEntriesError


def entry_base(entry: Any) -> dict[str, Any]:
    """The ``base`` record of an entry (``ref``, ``kind``, ``fingerprint``); refuses entries without one."""
    base = entry.record.get("base")
    if not isinstance(base, dict) or not isinstance(base.get("ref"), str) or not base.get("ref"):
        raise IncompatibleEntriesError(
            f"entry {entry.id} does not record which base model it was trained on; pass --base MODEL"
        )
    return base


def check_same_base(content: Any | None, style: Any | None) -> dict[str, Any] | None:
    """The shared base record of the entries given; IncompatibleEntriesError if they differ.

    Same weights fingerprint means the same base, whether each was given as a hub id, a folder or
    a single file; see :func:`unziplora.base_model.same_base`.
    """
    bases = [(e, entry_base(e)) for e in (content, style) if e is not None]
    if not bases:
        return None
    (first, base), rest = bases[0], bases[1:]
    for other, other_base in rest:
        if other.id != first.id and not same_base(base, other_base):
            raise IncompatibleEntriesError(
                f"cannot combine {first.id} and {other.id}: they were trained on different base models "
                f"({base['ref']} vs {other_base['ref']}); pick a content and a style entry trained on the same base"
            )
    return base


@dataclass
class PartTensors:
    """One branch as stored in an entry: its PEFT LoRA and the entry's merge vectors."""

    entry_id: str
    lora: dict[str, Any]
    merges: dict[str, Any] | None
    rank: int


def read_part(entry: Any, part: str) -> PartTensors:
    """Read ``content``/``style`` LoRA and the merges of ``entry`` (safetensors only)."""
    lora = read_payload(entry, part_file(part))
    merges = read_payload(entry, MASKS_FILE) if entry.has_file(MASKS_FILE) else None
    downs = [v for k, v in lora.items() if k.endswith("lora_A.weight")]
    if not downs:
        raise DamagedEntryError(f"entry {entry.id}: {part_file(part)} holds no LoRA tensors; re-train or re-import it")
    _check_payload(entry, part_file(part), lora)
    return PartTensors(entry.id, lora, merges, int(downs[0].shape[0]))


def _check_payload(entry: Any, name: str, lora: dict[str, Any]) -> None:
    """An entry file edited or broken by hand: every factor a non-empty, finite 2-D float matrix.

    Without this a rank-0 or 1-D factor surfaced as a shape traceback deep in sampling, and NaN
    factors drew NaN images.
    """
    import torch

    for key, tensor in lora.items():
        problem = None
        if tensor.ndim != 2:
            problem = f"is {tensor.ndim}-D (shape {tuple(tensor.shape)}); a LoRA factor is a matrix"
        elif tensor.numel() == 0:
            problem = f"is empty (shape {tuple(tensor.shape)})"
        elif not tensor.is_floating_point():
            problem = f"holds {str(tensor.dtype).removeprefix('torch.')} values, not floats"
        elif not bool(torch.isfinite(tensor).all()):
            problem = "holds NaN or infinite values"
        if problem:
            raise DamagedEntryError(
                f"entry {entry.id} is damaged: {name} tensor {key!r} {problem}; re-train or re-import it"
            )


def _refit(exc: IncompatibleEntriesError, entry: Any, base_ref: str | None) -> IncompatibleEntriesError:
    trained = (
        entry.record.get("base", {}).get("ref", "another base")
        if isinstance(entry.record.get("base"), dict)
        else "another base"
    )
    if base_ref and base_ref != trained:
        return IncompatibleEntriesError(
            f"entry {entry.id} was trained on base {trained} and does not fit base {base_ref}; "
            "leave out --base to use the entry's own base"
        )
    return IncompatibleEntriesError(f"entry {entry.id}: {exc}")


def assemble(unet: Any, content: Any | None, style: Any | None, *, base_ref: str | None = None) -> dict[str, Any]:
    """Load ``content``'s content LoRA + content merges and ``style``'s style LoRA + style merges.

    Injects UnZipLoRA layers (with prompt separation) if the UNet has none yet; a branch without an
    entry is zeroed. Returns the layers by module path.
    """
    from unziplora.method.inject import inject_unziplora, unziplora_layers
    from unziplora.method.state import load_unziplora_state

    if content is None and style is None:
        raise ValueError("assemble needs a content entry, a style entry, or both")
    check_same_base(content, style)
    parts = {
        "content": read_part(content, "content") if content else None,
        "style": read_part(style, "style") if style else None,
    }
    layers = unziplora_layers(unet)
    if not layers:
        rank = next(p.rank for p in parts.values() if p is not None)
        layers = inject_unziplora(unet, rank, init="zero", prompt_separation=True)
    c, s = parts["content"], parts["style"]
    style_merges = s.merges if s else None
    if s is not None and style_merges is None and c is not None and c.merges is not None:
        import torch  # the style entry has no merges: ones, not the content entry's style merges

        style_merges = {f"{n}.merge_style": torch.ones(layer.out_features) for n, layer in layers.items()}
    try:
        load_unziplora_state(
            layers,
            c.lora if c else None,
            s.lora if s else None,
            c.merges if c else None,
            style_merges_sd=style_merges,
        )
    except IncompatibleEntriesError as exc:
        culprit = content if content is not None and "content" in str(exc) else (style or content)
        raise _refit(exc, culprit, base_ref) from exc
    return layers
