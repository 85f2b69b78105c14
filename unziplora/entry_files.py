"""What the LoRA files inside a registry entry say about themselves.

Training and ``unzip import`` both write ``content.safetensors`` / ``style.safetensors`` into
entries; this module owns their names, their safetensors metadata (``unziplora.*`` keys that
make a copied-out file self-describing) and the prompt fields of the entry record. Light.
"""

from __future__ import annotations

import json
from typing import Any

from unziplora import __version__

CONTENT_FILE = "content.safetensors"
STYLE_FILE = "style.safetensors"
MASKS_FILE = "masks.safetensors"
PREVIEW_FILE = "preview.png"  # source | content | style | combined, rendered at the end of training
EVAL_FILE = "eval.json"  # the last ``unzip eval`` result: every score, per-image scores, settings
EVAL_SHEET = "eval.png"  # its evaluation sheet: one row per probe, scores under each image
EVALUATION_KEY = "evaluation"  # entry.json key of the last evaluation's scores and settings (list, gallery)


def lora_metadata(part: str, entry_id: str, prompts: Any, rank: int, base_ref: str, origin: str = "") -> dict[str, str]:
    """safetensors metadata of an entry's ``part`` LoRA (``part`` is content or style)."""
    note = "masks folded into lora_B; merge vectors are in masks.safetensors"
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
