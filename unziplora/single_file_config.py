"""The diffusers config folder a single-file SDXL checkpoint is loaded with, offline.

A single ``.safetensors`` checkpoint (SGM / A1111 layout) holds weights only; diffusers'
``from_single_file`` also needs every component's config, the scheduler's, and both tokenizers'
files, which it would otherwise download from the Hugging Face hub. SDXL base 1.0's configs
ship in ``unziplora/sdxl_config`` (JSON) with CLIP's BPE merges (gzip); on first use they are
laid out as a diffusers folder (``model_index.json``, one subfolder per component) in the user
cache dir, like ``tiny-sdxl``, written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Bump when a shipped config or tokenizer file changes, so stale folders are rebuilt.
SDXL_CONFIG_VERSION = 1
# Component configs copied verbatim from the package (path inside sdxl_config/).
SHIPPED_JSON: tuple[str, ...] = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer_2/tokenizer_config.json",
    "unet/config.json",
    "vae/config.json",
)
TOKENIZERS: tuple[str, ...] = ("tokenizer", "tokenizer_2")


def shipped_config_text(name: str) -> str:
    """A shipped SDXL base 1.0 file by its path in the folder (``"unet/config.json"``)."""
    return (files("unziplora") / "sdxl_config" / name).read_text(encoding="utf-8")


def sdxl_config_dir(cache_dir: Path | None = None) -> Path:
    """SDXL base 1.0's diffusers config folder (no weights), built from the package on first use."""
    from unziplora.clip_bpe import shipped_merges, write_tokenizer_files
    from unziplora.fileio import cached_folder
    from unziplora.settings import user_cache_dir

    def build(staging: Path) -> None:
        merges = shipped_merges()
        for name in SHIPPED_JSON:
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(shipped_config_text(name), encoding="utf-8")
        for name in TOKENIZERS:
            write_tokenizer_files(staging / name, merges)

    return cached_folder(cache_dir or user_cache_dir(), f"sdxl-config-v{SDXL_CONFIG_VERSION}", build)
