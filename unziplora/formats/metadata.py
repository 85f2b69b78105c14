"""What an exported LoRA says about itself: ``ss_*``, ``modelspec.*`` and ``unziplora.*`` header keys.

Why each family (FORMATS.md 3, 8.3): A1111 files a LoRA under SDXL only if
``ss_base_model_version`` starts with ``sdxl_`` and uses ``ss_output_name`` as its alias; kohya's
tools propagate the minimum ``ss_network_*`` set; ModelSpec (``modelspec.*``) is what SwarmUI and
model hubs read; ``unziplora.*`` records our provenance (entry, part, prompts) so a file found
later can be traced back. Light module: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

SDXL_BASE_MODEL_VERSION = "sdxl_base_v1-0"  # sd-scripts sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0
MODELSPEC_VERSION = "1.0.1"
MODELSPEC_ARCHITECTURE = "stable-diffusion-xl-v1-base/lora"
IMPLEMENTATION_SGM = "https://github.com/Stability-AI/generative-models"
IMPLEMENTATION_DIFFUSERS = "https://github.com/huggingface/diffusers"


@dataclass(frozen=True)
class LoraInfo:
    """Descriptive facts about one exported LoRA; every field is optional.

    Attributes:
        title: human title (``modelspec.title``); also the default ``ss_output_name``.
        output_name: A1111 alias (``ss_output_name``); defaults to ``title``.
        description: ``modelspec.description``.
        trigger_phrase: words that call the LoRA up (``modelspec.trigger_phrase``, ``unziplora.trigger``).
        training_comment: ``ss_training_comment``.
        author, license, tags: the matching ``modelspec.*`` keys (tags comma-joined).
        date: ISO-8601 local time without zone; defaults to now (seconds precision).
        resolution: the trained side in pixels (square crops): ``modelspec.resolution`` ``"WxH"``
            and ``ss_resolution`` ``"(W, H)"``, as sd-scripts writes its resolution tuple.
        prediction_type: ``"epsilon"`` for SDXL base.
        base_model: id or path of the base (``ss_sd_model_name``, ``unziplora.base_model``).
        entry_id: registry entry the LoRA came from (``unziplora.entry_id``).
        part: ``content``, ``style`` or ``combined`` (``unziplora.part``).
        prompts: named prompts used in training, stored as JSON (``unziplora.prompts``).
        training: kohya-style training facts, e.g. ``{"learning_rate": 5e-5, "max_train_steps": 600,
            "seed": 0}``; keys get an ``ss_`` prefix unless they have one, values go through ``str()``
            exactly as sd-scripts does.
    """

    title: str | None = None
    output_name: str | None = None
    description: str | None = None
    trigger_phrase: str | None = None
    training_comment: str | None = None
    author: str | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    date: str | None = None
    resolution: int = 1024
    prediction_type: str = "epsilon"
    base_model: str | None = None
    entry_id: str | None = None
    part: str | None = None
    prompts: Mapping[str, str] = field(default_factory=dict)
    training: Mapping[str, object] = field(default_factory=dict)


def _now() -> str:
    return datetime.now().replace(microsecond=0).isoformat()


def network_dim_alpha(ranks: Iterable[int], alpha: float | None = None) -> tuple[str, str]:
    """``ss_network_dim`` / ``ss_network_alpha``: the rank and alpha when all modules share the rank
    (alpha printed as kohya prints a float, ``"16.0"``); when ranks vary, both ``"Dynamic"``, as
    sd-scripts' ``resize_lora.py`` writes for a dynamic resize (a numeric alpha next to
    ``"Dynamic"`` would be read as alpha/dim with no dim)."""
    distinct = sorted(set(ranks))
    if len(distinct) != 1:
        return "Dynamic", "Dynamic"
    return str(distinct[0]), str(float(alpha if alpha is not None else distinct[0]))


def ss_metadata(info: LoraInfo, ranks: Iterable[int], *, alpha: float | None = None) -> dict[str, str]:
    """kohya's minimum network keys (``build_minimum_network_metadata``) plus naming and training facts."""
    dim, alpha_text = network_dim_alpha(ranks, alpha)
    meta: dict[str, str] = {}
    for key, value in info.training.items():
        meta[key if key.startswith("ss_") else f"ss_{key}"] = str(value)
    meta.update(
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": dim,
            "ss_network_alpha": alpha_text,
            "ss_base_model_version": SDXL_BASE_MODEL_VERSION,
            "ss_v2": "False",
            "ss_resolution": str((info.resolution, info.resolution)),
        }
    )
    name = info.output_name or info.title
    if name:
        meta["ss_output_name"] = name
    if info.training_comment or info.description:
        meta["ss_training_comment"] = info.training_comment or info.description or ""
    if info.base_model:
        meta.setdefault("ss_sd_model_name", info.base_model)
    return meta


def modelspec_metadata(info: LoraInfo, *, implementation: str = IMPLEMENTATION_SGM) -> dict[str, str]:
    """ModelSpec keys as sd-scripts writes them for an SDXL LoRA (FORMATS.md 3.2)."""
    meta = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": MODELSPEC_ARCHITECTURE,
        "modelspec.implementation": implementation,
        "modelspec.title": info.title or info.output_name or f"LoRA@{int(datetime.now().timestamp())}",
        "modelspec.date": info.date or _now(),
        "modelspec.resolution": f"{info.resolution}x{info.resolution}",
        "modelspec.prediction_type": info.prediction_type,
    }
    optional = {
        "modelspec.description": info.description,
        "modelspec.trigger_phrase": info.trigger_phrase,
        "modelspec.author": info.author,
        "modelspec.license": info.license,
        "modelspec.tags": ",".join(info.tags) if info.tags else None,
    }
    meta.update({k: v for k, v in optional.items() if v})
    return meta


def provenance_metadata(info: LoraInfo) -> dict[str, str]:
    """Our own ``unziplora.*`` keys; loaders ignore unknown keys, so these are free to add."""
    from unziplora import __version__

    meta = {"unziplora.version": __version__}
    optional = {
        "unziplora.entry_id": info.entry_id,
        "unziplora.part": info.part,
        "unziplora.trigger": info.trigger_phrase,
        "unziplora.base_model": info.base_model,
        "unziplora.prompts": json.dumps(dict(info.prompts), ensure_ascii=False) if info.prompts else None,
    }
    meta.update({k: v for k, v in optional.items() if v})
    return meta
