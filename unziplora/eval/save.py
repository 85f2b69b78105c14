"""Save an evaluation with its entry: ``eval.json``, the sheet ``eval.png`` and the headline block in entry.json.

The two files are recorded in the entry's ``files`` (so ``show --verify`` checks them) through
:meth:`unziplora.registry.Registry.add_files`, which writes them atomically under the writer
lock; a later evaluation replaces both. ``entry.json`` gains ``evaluation`` (the key is owned by
:mod:`unziplora.entry_files`): every mean score, the settings that produced them and the file
names, so ``unzip list`` and the gallery read scores without opening another file. Scores that
cannot be computed (a probe kind with no images) are ``null``: NaN is not JSON.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from unziplora.entry_files import EVAL_FILE, EVAL_SHEET, EVALUATION_KEY

SHEET_TILE = 256  # px per probe image on the sheet, whatever size the images were made at
_SHORT = {
    "content_dino": "dino",
    "content_clip_i": "clip-i",
    "style_leak_into_content": "leak",
    "style_clip_i": "clip-i",
    "style_text": "text",
    "subject_leak_into_style": "leak",
    "recon_clip_i": "clip-i",
    "recon_dino": "dino",
    "clip_t": "clip-t",
}


def _plain(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def plain_scores(scores: Mapping[str, float]) -> dict[str, float | None]:
    """Scores as JSON can hold them (NaN -> null), rounded to 6 decimals."""
    return {k: _plain(v) for k, v in scores.items()}


def label(scores: Mapping[str, float], limit: int = 4, per_line: int = 2) -> str:
    """The scores under one sheet image, ``per_line`` to a line: ``dino 0.12  clip-i 0.34``."""
    parts = [f"{_SHORT.get(k, k)} {v:.2f}" for k, v in scores.items() if math.isfinite(v)][:limit]
    return "\n".join("  ".join(parts[i : i + per_line]) for i in range(0, len(parts), per_line)) or "-"


def probe_caption(kind: str, prompt: str, width: int = 24) -> str:
    """``content: …cat on a beach``: the kind and what tells the probes apart.

    Every style and combined prompt ends in the entry's own "in <style> style", so that is left out,
    and a long rest keeps its end (the new context or subject), not its start (the entry's token).
    """
    prompt = prompt.strip()
    cut = prompt.rfind(" in ")
    if prompt.endswith(" style") and cut > 0:
        prompt = prompt[:cut]
    room = width - len(kind) - 2
    return f"{kind}: {prompt if len(prompt) <= room else '…' + prompt[-(room - 1) :]}"


def sheet_png(images: Sequence[Any], num: int) -> bytes:
    """The evaluation sheet: one row per probe (``num`` images each), its scores under each image."""
    from unziplora.generate.sheet import grid

    picture = grid(
        [im.image for im in images],
        columns=num,
        labels=[f"{probe_caption(im.kind, im.prompt)}\n{label(im.scores)}" for im in images],  # the probe, its scores
        tile=(SHEET_TILE, SHEET_TILE),
    )
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def recorded_score(record: Mapping[str, Any], score: str) -> float | None:
    """One mean score of the entry's last evaluation, read from entry.json; None when not evaluated."""
    block = record.get(EVALUATION_KEY)
    values = block.get("scores") if isinstance(block, dict) else None
    value = values.get(score) if isinstance(values, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def save_evaluation(registry: Any, evaluation: Any, settings: Mapping[str, Any]) -> Any:
    """Write ``eval.json`` and ``eval.png`` into the entry and its ``evaluation`` block; returns the updated Entry.

    ``settings`` are the run's settings (seed, num, steps, probes, clip, dino), stored with the scores.
    """
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    num = int(settings.get("num", 1))
    block = {
        "scores": plain_scores(evaluation.scores),
        **settings,
        "created": created,
        "file": EVAL_FILE,
        "sheet": EVAL_SHEET,
    }
    full = {
        "id": evaluation.entry_id,
        **block,
        "images": [
            {"kind": im.kind, "prompt": im.prompt, "seed": im.seed, "scores": plain_scores(im.scores)}
            for im in evaluation.images
        ],
    }
    payloads = {
        EVAL_FILE: (json.dumps(full, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"),
        EVAL_SHEET: sheet_png(evaluation.images, num),
    }
    return registry.add_files(evaluation.entry_id, payloads, {EVALUATION_KEY: block})
