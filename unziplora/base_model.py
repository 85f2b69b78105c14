"""Finding and loading the SDXL base model — the one module that knows where bases come from.

A base is given as one string:

* ``tiny-sdxl`` — the builtin offline toy (see :mod:`unziplora.tiny_sdxl`), generated on first use
  and then loaded from its folder exactly like a real one;
* ``sdxl-random`` — SDXL base 1.0's full-size architecture with random weights, for real-size checks
  (see :mod:`unziplora.sdxl_random`; about 7 GB, built on first use, never a default);
* a local diffusers folder (has ``model_index.json``);
* a single-file SDXL checkpoint (``.safetensors``);
* a Hugging Face repo id such as ``stabilityai/stable-diffusion-xl-base-1.0``, read from the local
  Hugging Face cache, downloading only when the hub is reachable and offline mode is off.

Parsing and fingerprinting are light (no torch); loading imports diffusers inside the function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unziplora.errors import BaseModelError
from unziplora.sdxl_random import SDXL_RANDOM, SDXL_RANDOM_VERSION
from unziplora.tiny_sdxl import TINY_SDXL, TINY_SDXL_VERSION

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BaseSpec:
    """A parsed ``--base`` value."""

    kind: str  # "tiny" | "random" | "folder" | "file" | "hub"
    ref: str  # what we record in entries: "tiny-sdxl", "sdxl-random", an absolute path, or a repo id

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"


def parse_base(value: str) -> BaseSpec:
    """Classify a ``--base`` string; refuse what cannot be a base with a clear line."""
    text = (value or "").strip()
    if not text:
        raise BaseModelError(
            "no base model given; pass --base with a Hugging Face id, a folder, a .safetensors file or tiny-sdxl."
        )
    if text == TINY_SDXL:
        return BaseSpec("tiny", TINY_SDXL)
    if text == SDXL_RANDOM:
        return BaseSpec("random", SDXL_RANDOM)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise BaseModelError(
                f"base model folder {path} has no model_index.json; point --base at a diffusers SDXL folder "
                "(as written by save_pretrained) or at a single .safetensors checkpoint."
            )
        return BaseSpec("folder", str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise BaseModelError(
                f"base model file {path} is not a .safetensors checkpoint; only safetensors weights are loaded."
            )
        return BaseSpec("file", str(path.resolve()))
    if (
        text.startswith((".", "/", "~"))
        or text.endswith(".safetensors")
        or os.sep in text.strip("/").replace("/", "", 1)
    ):
        raise BaseModelError(f"base model path {text} does not exist.")
    if _REPO_ID.match(text):
        return BaseSpec("hub", text)
    raise BaseModelError(
        f"base model '{text}' is neither an existing folder or .safetensors file nor a Hugging Face id like "
        "stabilityai/stable-diffusion-xl-base-1.0."
    )


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` if the Hugging Face cache has one."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["model_index.json"]))
    except Exception:  # noqa: BLE001 - any hub/cache failure means "not cached": doctor and train say how to fetch
        return None


def fingerprint(spec: BaseSpec) -> str:
    """A short digest that changes when the base's weights change; cheap to compute."""
    digest = hashlib.sha256()
    if spec.kind == "tiny":
        return f"tiny-sdxl-v{TINY_SDXL_VERSION}"
    if spec.kind == "random":
        return f"sdxl-random-v{SDXL_RANDOM_VERSION}"
    if spec.kind == "hub":
        snap = _hub_snapshot(spec.ref)
        digest.update(spec.ref.encode())
        if snap is not None:
            digest.update(snap.name.encode())  # the commit hash of the cached snapshot
        return digest.hexdigest()[:16]
    path = Path(spec.ref)
    if spec.kind == "folder":
        unet_config = path / "unet" / "config.json"
        if unet_config.is_file():
            digest.update(unet_config.read_bytes())
        for weight in sorted(path.glob("unet/*.safetensors")):
            digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
        return digest.hexdigest()[:16]
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _fetch_hint(repo_id: str) -> str:
    return (
        f"fetch it once on a machine with network (`hf download {repo_id}`) and copy the Hugging Face cache, "
        "or pass --base with a local diffusers folder or a .safetensors checkpoint (or tiny-sdxl to try things out)"
    )


def availability(spec: BaseSpec) -> tuple[bool, str]:
    """Whether the base can be loaded without network, and a short explanation."""
    if spec.kind == "tiny":
        return True, "builtin, generated locally"
    if spec.kind == "random":
        return True, "builtin, full size with random weights, generated locally on first use (about 7 GB)"
    if spec.kind in {"folder", "file"}:
        return Path(spec.ref).exists(), spec.ref
    snap = _hub_snapshot(spec.ref)
    if snap is None:
        return False, f"not in the Hugging Face cache; {_fetch_hint(spec.ref)}"
    return True, f"cached at {snap}"


def load_pipeline(spec: BaseSpec, *, dtype: Any = None, device: str | None = None) -> Any:
    """Load a ``StableDiffusionXLPipeline`` for ``spec`` (weights in ``dtype``, moved to ``device``)."""
    from unziplora.hf_env import prepare_hf

    prepare_hf()
    import torch
    from diffusers import StableDiffusionXLPipeline

    # Denormal floats (common in random or barely-trained weights and in Adam's moments) make
    # CPU arithmetic up to 100x slower; flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated", category=FutureWarning)
        if spec.kind == "tiny":
            from unziplora.tiny_sdxl import tiny_sdxl_dir

            pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir(), **kwargs)
        elif spec.kind == "random":
            from unziplora.sdxl_random import sdxl_random_dir

            pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_random_dir(), **kwargs)
        elif spec.kind == "folder":
            pipe = StableDiffusionXLPipeline.from_pretrained(spec.ref, **kwargs)
        elif spec.kind == "file":
            from unziplora.single_file import check_sdxl_file

            check_sdxl_file(spec.ref)
            pipe = StableDiffusionXLPipeline.from_single_file(spec.ref, **kwargs)
        else:
            pipe = _load_from_hub(StableDiffusionXLPipeline, spec.ref, kwargs)
    except BaseModelError:
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"base model {spec.ref} could not be loaded: {reason}") from exc
    _check_sdxl(pipe, spec)
    from unziplora.device import apply_cpu_threads

    apply_cpu_threads(device or "cpu", pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def _load_from_hub(cls: Any, repo_id: str, kwargs: dict[str, Any]) -> Any:
    try:
        return cls.from_pretrained(repo_id, local_files_only=True, **kwargs)
    except OSError as cached_exc:
        if _offline():
            raise BaseModelError(
                f"base model {repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {_fetch_hint(repo_id)}."
            ) from cached_exc
    try:
        return cls.from_pretrained(repo_id, **kwargs)
    except OSError as exc:
        raise BaseModelError(
            f"base model {repo_id} is not in the local Hugging Face cache and could not be downloaded; {_fetch_hint(repo_id)}."
        ) from exc


def _check_sdxl(pipe: Any, spec: BaseSpec) -> None:
    unet = getattr(pipe, "unet", None)
    config = getattr(unet, "config", None)
    if (
        config is None
        or getattr(config, "addition_embed_type", None) != "text_time"
        or getattr(pipe, "text_encoder_2", None) is None
    ):
        raise BaseModelError(
            f"base model {spec.ref} is not an SDXL model (UnZipLoRA needs SDXL's UNet and two text encoders)."
        )
