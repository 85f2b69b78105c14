"""PNG text chunks that make every generated image reproducible on its own.

Two chunks: ``unziplora`` holds the full record as JSON (prompts, entries, seed, scales, sampler,
steps, guidance, size, base) for our tools; ``parameters`` holds the same in the one-paragraph
form AUTOMATIC1111 writes, which most image viewers and UIs (ComfyUI, InvokeAI, civitai) show.
Light module (PIL only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from unziplora import __version__

RECORD_KEY = "unziplora"
PARAMETERS_KEY = "parameters"


def parameters_text(meta: dict[str, Any]) -> str:
    """The A1111-style summary: prompt, negative prompt, then ``Key: value`` pairs."""
    prompts = meta.get("prompts", {})
    lines = [str(prompts.get("prompt", ""))]
    if meta.get("negative"):
        lines.append(f"Negative prompt: {meta['negative']}")
    pairs = {
        "Steps": meta.get("steps"),
        "Sampler": meta.get("sampler"),
        "CFG scale": meta.get("guidance"),
        "Seed": meta.get("seed"),
        "Size": f"{meta.get('width')}x{meta.get('height')}",
        "Model": (meta.get("base") or {}).get("ref"),
        "Denoising strength": meta.get("strength"),
    }
    entries = meta.get("entries", {})
    scales = meta.get("scales", {})
    for part in ("content", "style"):
        if entries.get(part):
            pairs[f"UnZipLoRA {part}"] = f"{entries[part]} (scale {scales.get(part, 1.0)})"
    if prompts.get("content_prompt"):
        pairs["Content prompt"] = json.dumps(prompts["content_prompt"], ensure_ascii=False)
    if prompts.get("style_prompt"):
        pairs["Style prompt"] = json.dumps(prompts["style_prompt"], ensure_ascii=False)
    pairs["Version"] = f"unziplora {__version__}"
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs.items() if value is not None))
    return "\n".join(lines)


def png_info(meta: dict[str, Any]) -> PngInfo:
    """Text chunks for ``Image.save(..., pnginfo=...)``."""
    info = PngInfo()
    info.add_text(RECORD_KEY, json.dumps(meta, ensure_ascii=False, sort_keys=True), zip=False)
    info.add_text(PARAMETERS_KEY, parameters_text(meta), zip=False)
    info.add_text("Software", f"unziplora {__version__}")
    return info


def save_png(image: Image.Image, path: Path, meta: dict[str, Any]) -> Path:
    """Write ``image`` as PNG with its record, through the registry's atomic writer: a failed write
    (a full disk) leaves no partial or 0-byte file at ``path``."""
    import io

    from unziplora.errors import OutputError
    from unziplora.fileio import write_file

    path = Path(path)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG", pnginfo=png_info(meta))
    try:
        write_file(path, encoded.getvalue(), durable=False)
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}; free some disk space or choose another folder with -o"
        ) from None
    return path


def read_png_meta(path: str | Path) -> dict[str, Any]:
    """The ``unziplora`` record of a PNG we wrote (empty if it has none)."""
    with Image.open(path) as img:
        text = img.text.get(RECORD_KEY) if hasattr(img, "text") else None
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
