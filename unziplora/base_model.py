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
from unziplora.settings import DEFAULT_BASE_MODEL
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
        from unziplora.hf_cache import check_model_index

        check_model_index(path)  # no model_index.json, `{}`, or another pipeline: refused here, in one line
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
        f"{DEFAULT_BASE_MODEL}."
    )


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` if the Hugging Face cache has one (see :mod:`unziplora.hf_cache`)."""
    from unziplora.hf_cache import snapshot_dir

    return snapshot_dir(repo_id)


def fingerprint(spec: BaseSpec) -> str:
    """A short digest of the base's weights, equal for the same weights however they are referenced.

    A weights fingerprint (``w1:...``, see :mod:`unziplora.weights_fingerprint`) when the UNet's
    safetensors can be read; otherwise (a hub id not cached yet, ``.bin`` weights) a digest of
    what names the base, which only ever equals itself.
    """
    from unziplora import weights_fingerprint as weights

    if spec.kind == "tiny":
        from unziplora.tiny_sdxl import tiny_sdxl_dir

        found = weights.folder_fingerprint(tiny_sdxl_dir())
        return found or f"tiny-sdxl-v{TINY_SDXL_VERSION}"
    if spec.kind == "random":
        return f"sdxl-random-v{SDXL_RANDOM_VERSION}"
    digest = hashlib.sha256()
    if spec.kind == "hub":
        snap = _hub_snapshot(spec.ref)
        found = weights.folder_fingerprint(snap) if snap is not None else None
        if found:
            return found
        digest.update(spec.ref.encode())
        if snap is not None:
            digest.update(snap.name.encode())  # the commit hash of the cached snapshot
        return digest.hexdigest()[:16]
    path = Path(spec.ref)
    found = weights.folder_fingerprint(path) if spec.kind == "folder" else weights.file_fingerprint(path)
    if found:
        return found
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


def same_base(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two entries' ``base`` records name the same weights.

    Equal fingerprints mean the same weights whether they came as a hub id, a folder or a single
    file. The same ``ref`` with another fingerprint (a Hugging Face snapshot updated in place, or
    entries older than weights fingerprints) still counts as one base: the user could not fix
    that anyway.
    """
    if a.get("fingerprint") and a.get("fingerprint") == b.get("fingerprint"):
        return True
    return bool(a.get("ref")) and a.get("ref") == b.get("ref")


def _native_from_configs(unet: dict[str, Any], vae: dict[str, Any]) -> int:
    """UNet ``sample_size`` (latent side) times the VAE's scale factor, as diffusers computes it."""
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


SDXL_CONFIG_DIR = Path(__file__).parent / "sdxl_config"  # what single-file SDXL checkpoints load with


def _file_config(spec: BaseSpec) -> Path | None:
    """The config folder a single file loads with (chosen from its header's shapes, as the loader does).

    None when the header is unusable: the caller falls back to SDXL's configs and loading reports the fault.
    """
    from unziplora.single_file import check_sdxl_file
    from unziplora.single_file_arch import config_folder

    try:
        return config_folder(check_sdxl_file(spec.ref))[1]
    except BaseModelError:
        return None


def native_resolution(spec: BaseSpec) -> int:
    """The base's native image side (1024 for SDXL, 64 for tiny-sdxl), read from its config files.

    Light (no torch, no weights read): the UNet and VAE ``config.json`` of the folder, the cached
    hub snapshot or the builtin SDXL configs (single files); SDXL's configs when a hub base is not
    cached yet or a config is unreadable (loading the base then reports what is wrong).
    """
    if spec.is_tiny:
        from unziplora.tiny_sdxl import UNET_CONFIG, VAE_CONFIG

        return _native_from_configs(UNET_CONFIG, VAE_CONFIG)
    folder = {
        "folder": lambda: Path(spec.ref),
        "hub": lambda: _hub_snapshot(spec.ref),
        "file": lambda: _file_config(spec),
    }.get(spec.kind, lambda: None)()
    for root in (folder, SDXL_CONFIG_DIR):
        if root is None:
            continue
        unet, vae = _read_config(root / "unet" / "config.json"), _read_config(root / "vae" / "config.json")
        try:
            return _native_from_configs(unet or {}, vae or {})
        except (KeyError, TypeError, ValueError):
            continue
    raise BaseModelError(f"the builtin SDXL configs in {SDXL_CONFIG_DIR} are unreadable; reinstall unziplora.")


def _fetch_hint(repo_id: str) -> str:
    from unziplora.hf_cache import download_command

    return (
        f"fetch it once on a machine with network (`{download_command(repo_id)}`) and copy the Hugging Face cache, "
        "or pass --base with a local diffusers folder or a .safetensors checkpoint (or tiny-sdxl to try things out)"
    )


def _looks_like_lora(keys: list[str]) -> bool:
    """LoRA files (kohya, PEFT, diffusers, ours) name their tensors lora_*; full checkpoints never do."""
    return any("lora" in key.lower() for key in keys)


def check_file_base(path: str) -> None:
    """Refuse, in one line, a .safetensors base that is a LoRA or not an SDXL checkpoint (header only)."""
    from unziplora.single_file import check_sdxl_file, header_keys

    if _looks_like_lora(header_keys(path)):
        raise BaseModelError(
            f"base model {path} is a LoRA file, not a checkpoint: --base takes an SDXL checkpoint or diffusers "
            "folder (bring a LoRA in with 'unzip import')."
        )
    check_sdxl_file(path)


def _hub_layout(repo_id: str) -> tuple[Path | None, Any]:
    """The cached snapshot of ``repo_id`` and its :class:`~unziplora.hf_cache.Layout` (None, None: not cached)."""
    from unziplora.hf_cache import sdxl_layout

    snap = _hub_snapshot(repo_id)
    if snap is None:
        return None, None
    try:
        return snap, sdxl_layout(snap)
    except BaseModelError:
        from unziplora.hf_cache import Layout

        return snap, Layout(None, ("model_index.json",))


def availability(spec: BaseSpec) -> tuple[bool, str]:
    """Whether the base can be loaded without network, and a short explanation."""
    if spec.kind == "tiny":
        return True, "builtin, generated locally"
    if spec.kind == "random":
        return True, "builtin, full size with random weights, generated locally on first use (about 7 GB)"
    try:
        if spec.kind == "file":
            from unziplora.single_file import check_sdxl_file

            if not Path(spec.ref).is_file():
                return False, f"{spec.ref} does not exist"
            check_file_base(spec.ref)
            return True, f"SDXL single file ({check_sdxl_file(spec.ref).describe()}), loaded offline"
        if spec.kind == "folder":
            from unziplora.hf_cache import sdxl_layout

            layout = sdxl_layout(Path(spec.ref))
            if not layout.complete:
                return False, f"{spec.ref} lacks {layout.describe()}"
            return True, spec.ref + (" (fp16 weights only)" if layout.variant else "")
    except BaseModelError as exc:
        return False, str(exc)
    snap, layout = _hub_layout(spec.ref)
    if snap is None:
        return False, f"not in the Hugging Face cache; {_fetch_hint(spec.ref)}"
    if not layout.complete:
        return False, f"cached at {snap} but without {layout.describe()}; {_fetch_hint(spec.ref)}"
    return True, f"cached at {snap}" + (" (fp16 variant only: loaded as fp16 weights)" if layout.variant else "")


def load_pipeline(spec: BaseSpec, *, dtype: Any = None, device: str | None = None) -> Any:
    """Load a ``StableDiffusionXLPipeline`` for ``spec`` (weights in ``dtype``, moved to ``device``)."""
    from unziplora.hf_env import prepare_hf, quiet_hf_logs

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
        with quiet_hf_logs():  # their log lines would interleave with ours; failures become one line below
            pipe = _from_source(StableDiffusionXLPipeline, spec, kwargs)
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


def _from_source(cls: Any, spec: BaseSpec, kwargs: dict[str, Any]) -> Any:
    """``cls.from_pretrained`` / ``from_single_file`` for the kind of base ``spec`` is."""
    if spec.kind == "tiny":
        from unziplora.tiny_sdxl import tiny_sdxl_dir

        return cls.from_pretrained(tiny_sdxl_dir(), **kwargs)
    if spec.kind == "random":
        from unziplora.sdxl_random import sdxl_random_dir

        return cls.from_pretrained(sdxl_random_dir(), **kwargs)
    if spec.kind == "folder":
        from unziplora.hf_cache import sdxl_layout

        layout = sdxl_layout(Path(spec.ref))
        if not layout.complete:
            raise BaseModelError(f"base model folder {spec.ref} lacks {layout.describe()}.")
        return cls.from_pretrained(spec.ref, variant=layout.variant, **kwargs)
    if spec.kind == "file":
        check_file_base(spec.ref)
        from unziplora.single_file_load import load_single_file

        return load_single_file(spec.ref, dtype=kwargs.get("torch_dtype"))
    return _load_from_hub(cls, spec.ref, kwargs)


def _load_from_hub(cls: Any, repo_id: str, kwargs: dict[str, Any]) -> Any:
    """Load the cached snapshot (the fp16 variant when only it is there); download it first when allowed.

    Always loaded from the snapshot folder itself: what :func:`availability` (``doctor``) judged is
    exactly what is read, and diffusers never asks the hub.
    """
    from unziplora.hf_cache import download, offline, sdxl_layout

    snap, layout = _hub_layout(repo_id)
    if snap is None or not layout.complete:
        where = "is not in the local Hugging Face cache" if snap is None else f"is cached without {layout.describe()}"
        if offline():
            raise BaseModelError(f"base model {repo_id} {where} and HF_HUB_OFFLINE is set; {_fetch_hint(repo_id)}.")
        try:
            snap = download(repo_id)
        except BaseModelError:
            raise
        except Exception as exc:  # the hub's errors (HTTP, connection, auth) differ by version
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BaseModelError(
                f"base model {repo_id} {where} and could not be downloaded ({reason}); {_fetch_hint(repo_id)}."
            ) from exc
        layout = sdxl_layout(snap)
        if not layout.complete:
            raise BaseModelError(f"base model {repo_id} was downloaded without {layout.describe()}.")
    return cls.from_pretrained(str(snap), variant=layout.variant, **kwargs)


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
