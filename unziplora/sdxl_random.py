"""The builtin ``sdxl-random`` base: SDXL base 1.0's exact architecture, random weights, offline.

For real-size checks and benchmarks only (``python -m benchmarks.realsize``): never a default and
never built in CI, since it is about 7 GB in fp16. It uses the component configs shipped in
``unziplora/sdxl_config/`` (SDXL base 1.0's UNet, VAE, CLIP-L and bigG text encoders, scheduler)
and :mod:`unziplora.tiny_sdxl`'s locally written byte-level tokenizers (their ids fit in CLIP's
49,408-token embedding tables). Its images are noise.

Built deterministically (fixed seeds) into the user cache dir on first use, **one component at a
time**: each is created directly in fp16, saved and freed before the next, so building needs
about the largest component in RAM (the UNet, 5.1 GB) rather than the whole pipeline. From then
on it is loaded with ``from_pretrained`` exactly like a real SDXL folder.
"""

from __future__ import annotations

import gc
import json
import tempfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

SDXL_RANDOM = "sdxl-random"
# Bump when the generated weights or configs change, so stale caches are rebuilt.
SDXL_RANDOM_VERSION = 1
SEED = 20261202

# model_index.json of a StableDiffusionXLPipeline (the same components as SDXL base 1.0's).
_COMPONENTS: dict[str, list[str]] = {
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def shipped_config(component: str) -> dict[str, Any]:
    """SDXL base 1.0's config of ``component`` as shipped in the package (``sdxl_config/``)."""
    folder = files("unziplora") / "sdxl_config" / component
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _seeded_fp16(seed: int, make: Callable[[], Any]) -> Any:
    """``make()`` with torch seeded and fp16 as the default dtype (no fp32 copy is ever allocated)."""
    import torch

    state = torch.random.get_rng_state()
    default = torch.get_default_dtype()
    try:
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float16)
        return make()
    finally:
        torch.set_default_dtype(default)
        torch.random.set_rng_state(state)


def _build_component(name: str, folder: Path) -> None:
    """Create, save and free one component of the pipeline into ``folder / name``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from unziplora.tiny_sdxl import _write_tokenizer_files

    target = folder / name
    if name in {"tokenizer", "tokenizer_2"}:
        with tempfile.TemporaryDirectory() as tmp:
            _write_tokenizer_files(Path(tmp))
            CLIPTokenizer.from_pretrained(tmp, model_max_length=77).save_pretrained(target)
        return
    if name == "scheduler":
        EulerDiscreteScheduler.from_config(shipped_config("scheduler")).save_pretrained(target)
        return
    offset = list(_COMPONENTS).index(name)
    if name == "unet":
        model = _seeded_fp16(SEED + offset, lambda: UNet2DConditionModel.from_config(shipped_config("unet")))
    elif name == "vae":
        model = _seeded_fp16(SEED + offset, lambda: AutoencoderKL.from_config(shipped_config("vae")))
    else:
        cls = CLIPTextModel if name == "text_encoder" else CLIPTextModelWithProjection
        config = CLIPTextConfig.from_dict(shipped_config(name))
        model = _seeded_fp16(SEED + offset, lambda: cls(config))
    model.save_pretrained(target, safe_serialization=True)
    del model
    gc.collect()


def _write_model_index(folder: Path) -> None:
    import diffusers

    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        **_COMPONENTS,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def sdxl_random_dir(cache_dir: Path | None = None, *, on_note: Callable[[str], None] | None = None) -> Path:
    """Where the full-size random base lives, building it first if needed (minutes, ~7 GB of disk).

    Like :func:`unziplora.tiny_sdxl.tiny_sdxl_dir`, it is built in a temporary sibling and renamed
    into place, so an interrupted build leaves nothing that looks complete; ``model_index.json`` is
    written last.
    """
    from unziplora.activity import phase
    from unziplora.fileio import cached_folder
    from unziplora.settings import user_cache_dir

    root = cache_dir or user_cache_dir()

    def build(staging: Path) -> None:
        with phase(f"building {SDXL_RANDOM} (first use only: minutes, about 7 GB in {root})"):
            for name in _COMPONENTS:
                if on_note is not None:
                    on_note(f"building the full-size random base: {name}")
                _build_component(name, staging)
            _write_model_index(staging)  # last: the folder counts as complete once it is there

    return cached_folder(root, f"sdxl-random-v{SDXL_RANDOM_VERSION}", build)
