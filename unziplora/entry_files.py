"""The files inside a registry entry: their names, the one writer and the one reader of the LoRAs.

Training and ``unzip import`` both write ``content.safetensors`` / ``style.safetensors`` (PEFT keys
``unet.<module>.lora_A/B.weight``, scale 1) and ``masks.safetensors`` (merge vectors fp32 and column
masks bool) through :func:`write_payload`; compose, restyle and export read them back through
:func:`read_payload`. This module also owns their safetensors metadata (``unziplora.*`` keys that
make a copied-out file self-describing) and the prompt fields of the entry record. Light: torch
and safetensors load only when a file is written or read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unziplora import __version__

if TYPE_CHECKING:
    import torch

PARTS: tuple[str, str] = ("content", "style")
CONTENT_FILE = "content.safetensors"
STYLE_FILE = "style.safetensors"
MASKS_FILE = "masks.safetensors"
PAYLOAD_FILES: tuple[str, ...] = (CONTENT_FILE, STYLE_FILE, MASKS_FILE)
SOURCE_IMAGE = "source.png"  # a thumbnail of the first training image
PREVIEW_IMAGE = "preview.png"  # source | content | style | combined, when training rendered one
PREVIEWS_DIR = "previews"  # the sheets rendered during training (--preview-every)
EVAL_FILE = "eval.json"  # the last ``unzip eval`` result: every score, per-image scores, settings
EVAL_SHEET = "eval.png"  # its evaluation sheet: one row per probe, scores under each image
EVALUATION_KEY = "evaluation"  # entry.json key of the last evaluation's scores and settings (list, gallery)


def lora_metadata(part: str, entry_id: str, prompts: Any, rank: int, base_ref: str, origin: str = "") -> dict[str, str]:
    """safetensors metadata of an entry's ``part`` LoRA (``part`` is content or style)."""
    note = f"masks folded into lora_B; merge vectors are in {MASKS_FILE}"
    return {
        "format": "pt",
        "unziplora.version": __version__,
        "unziplora.entry": entry_id,
        "unziplora.part": part,
        "unziplora.rank": str(rank),
        "unziplora.base": base_ref,
        "unziplora.prompt": prompts.content if part == "content" else prompts.style,
        "unziplora.prompts": json.dumps(prompts.to_dict(), ensure_ascii=False),
        "unziplora.note": f"{origin}; {note}" if origin else note,
    }


def prompt_fields(prompts: Any) -> dict[str, Any]:
    """The subject/style words, the three prompts and the rare token, as entry.json holds them."""
    return {
        "subject": prompts.subject or "",
        "style": prompts.style_words or "",
        "prompts": {"combined": prompts.combined, "content": prompts.content, "style": prompts.style},
        "rare_token": prompts.token,
    }


def part_file(part: str) -> str:
    """The file holding ``part``'s LoRA (``content`` or ``style``)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return CONTENT_FILE if part == "content" else STYLE_FILE


def write_payload(
    folder: Path,
    entry_id: str,
    loras: Mapping[str, Mapping[str, torch.Tensor]],
    masks: Mapping[str, torch.Tensor],
    *,
    prompts: Any,
    ranks: Mapping[str, int],
    base_ref: str,
    origin: str = "",
) -> None:
    """Write an entry's three LoRA files into ``folder`` (a registry staging folder).

    ``loras`` maps each part to its PEFT state dict (already in the dtype to store), ``masks`` is
    :func:`unziplora.method.state.merge_state_dict`'s layout, ``ranks`` the rank recorded per part.
    The files get the mode a plain ``open()`` would give them (safetensors creates them 0600).
    """
    from safetensors.torch import save_file

    from unziplora.fileio import match_new_file_mode

    for part in PARTS:
        meta = lora_metadata(part, entry_id, prompts, ranks[part], base_ref, origin=origin)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in loras[part].items()}
        save_file(tensors, str(folder / part_file(part)), metadata=meta)
    merges = {k: v.detach().to("cpu").contiguous() for k, v in masks.items()}
    save_file(merges, str(folder / MASKS_FILE), metadata={"format": "pt", "unziplora.entry": entry_id})
    for name in PAYLOAD_FILES:
        match_new_file_mode(folder / name)


def read_payload(entry: Any, name: str) -> dict[str, torch.Tensor]:
    """The tensors of the entry's file ``name`` (one of :data:`PAYLOAD_FILES`).

    Raises:
        DamagedEntryError: the file is missing or is not a readable safetensors file.
    """
    from unziplora.method.state import read_lora_file

    return read_lora_file(entry.file(name))[0]


def payload_hashes(entry: Any, part: str) -> tuple[str, ...]:
    """The recorded sha256 of ``part``'s LoRA and of the masks: equal hashes, same tensors."""
    files = entry.files
    return tuple(str(files.get(name, {}).get("sha256")) for name in (part_file(part), MASKS_FILE))


MOVEMENT_KEY = "movement"  # figures key: how far training moved each LoRA (unziplora.method.movement)


def movement_summary(record: dict[str, Any]) -> str:
    """``figures.movement`` as one line for ``show`` and the gallery; ``-`` when not recorded
    (imported entries and entries trained before it was measured)."""
    figures = record.get("figures")
    found = figures.get(MOVEMENT_KEY) if isinstance(figures, dict) else None
    if not isinstance(found, dict):
        return "-"

    def num(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    branches, merges = [], []
    for branch in ("content", "style"):
        lora = found.get(branch) if isinstance(found.get(branch), dict) else {}
        relative = lora.get("relative")
        if isinstance(relative, (int, float)) and not isinstance(relative, bool):
            branches.append(f"{branch} {relative * 100:.3g}% of its initial norm")
        else:  # the zero init: nothing to compare with, the distance itself is the figure
            branches.append(f"{branch} ||dW|| {num(lora.get('moved'))}")
        merge = (found.get("merge") or {}).get(branch) if isinstance(found.get("merge"), dict) else None
        if isinstance(merge, dict):
            merges.append(f"{branch} mean {num(merge.get('mean'))} [{num(merge.get('min'))}, {num(merge.get('max'))}]")
    line = "LoRA delta ||dW - dW0||: " + ", ".join(branches)
    return line + (f"; merge vectors (start at 1): {', '.join(merges)}" if merges else "")
