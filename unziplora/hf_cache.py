"""SDXL in the Hugging Face cache: where a repo's snapshot is, what the loader reads from it, downloads.

One owner for three facts that must agree — what ``doctor`` calls cached, what ``train`` loads,
and what the README's ``hf download`` line fetches:

* :func:`snapshot_dir` finds a repo's snapshot the way ``huggingface_hub`` lays it out
  (``<cache>/models--org--name/refs/main`` -> ``snapshots/<commit>/``), reading only the file
  system (no ``huggingface_hub`` import: ``doctor`` stays fast and works offline);
* :func:`sdxl_layout` says whether a folder (a snapshot, or a local diffusers folder) holds every
  file the loader reads, in full precision or only as the ``fp16`` variant (SDXL's repo ships
  both; a cache filled with ``--include '*.fp16.safetensors'`` has only the latter), and names
  what is missing otherwise;
* :func:`loader_patterns` are the ``hf download --include`` patterns for exactly those files;
* :func:`download` fetches them, with the hub's progress bars on a terminal and one plain line
  per file otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unziplora.errors import BaseModelError

FP16 = "fp16"
# Component folder -> weight file stem, for every component with weights.
WEIGHTS: dict[str, str] = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
}
# Files the loader reads besides the weights and the tokenizers.
CONFIGS: tuple[str, ...] = (
    "model_index.json",
    *(f"{component}/config.json" for component in WEIGHTS),
    "scheduler/scheduler_config.json",
)
TOKENIZERS = ("tokenizer", "tokenizer_2")
PIPELINE_COMPONENTS = (*WEIGHTS, "tokenizer", "tokenizer_2", "scheduler")


def loader_patterns(variant: str | None = None) -> list[str]:
    """``hf download REPO --include ...`` patterns for what the loader reads (``variant`` "fp16": half the bytes)."""
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    return [
        "model_index.json",
        "*/config.json",
        "scheduler/*",
        "tokenizer/*",
        "tokenizer_2/*",
        *(f"{component}/{stem}{suffix}" for component, stem in WEIGHTS.items()),
    ]


def download_command(repo_id: str, variant: str | None = None) -> str:
    """The shell line that fills the cache with ``repo_id`` for the loader (as the README shows it)."""
    return f"hf download {repo_id} --include " + " ".join(f"'{p}'" if "*" in p else p for p in loader_patterns(variant))


def cache_dir() -> Path:
    """The hub cache, resolved as ``huggingface_hub`` does (HF_HUB_CACHE, else HF_HOME/hub, else XDG)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def snapshot_dir(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id``: the one ``refs/main`` names, else the newest; None if none."""
    repo = cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        ref = ""
    if ref and (snapshots / ref).is_dir():
        return snapshots / ref
    try:
        found = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass(frozen=True)
class Layout:
    """What a diffusers SDXL folder holds for the loader."""

    variant: str | None  # None: full-precision weights; "fp16": only the fp16 variant is complete
    missing: tuple[str, ...]  # files the loader needs and the folder lacks (empty: loadable)

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        """``unet/..., vae/... (and 3 more)``: what is missing, short enough for one line."""
        shown = ", ".join(self.missing[:3])
        return shown + (f" (and {len(self.missing) - 3} more)" if len(self.missing) > 3 else "")


def _weights(folder: Path, component: str, variant: str | None) -> bool:
    stem = WEIGHTS[component]
    names = (
        (f"{stem}.{variant}.safetensors", f"{stem}.safetensors.index.{variant}.json")
        if variant
        else (f"{stem}.safetensors", f"{stem}.safetensors.index.json")
    )
    return any((folder / component / name).is_file() for name in names)  # is_file: a dangling cache link is missing


def _tokenizer(folder: Path) -> bool:
    """A CLIP tokenizer: the fast one's tokenizer.json, or vocab.json with merges.txt (SDXL's repo)."""
    return (folder / "tokenizer.json").is_file() or all((folder / n).is_file() for n in ("vocab.json", "merges.txt"))


def check_model_index(folder: Path) -> None:
    """Refuse, in one line, a folder whose model_index.json does not describe an SDXL pipeline."""
    index = folder / "model_index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaseModelError(
            f"base model folder {folder} has no model_index.json; point --base at a diffusers SDXL folder "
            "(as written by save_pretrained) or at a single .safetensors checkpoint."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"base model folder {folder}: model_index.json is not readable JSON ({exc}).") from exc
    name = data.get("_class_name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise BaseModelError(
            f"base model folder {folder}: model_index.json names no pipeline (no _class_name); "
            "it is not a diffusers SDXL folder."
        )
    absent = [c for c in PIPELINE_COMPONENTS if not (isinstance(data.get(c), list) and data.get(c)[0])]
    if not name.startswith("StableDiffusionXL") or absent:
        detail = f"lacks {', '.join(absent)}" if absent else "is not SDXL"
        raise BaseModelError(
            f"base model folder {folder} holds a {name} ({detail}); UnZipLoRA needs an SDXL base pipeline "
            "(UNet, VAE, two text encoders and tokenizers, scheduler)."
        )


def sdxl_layout(folder: Path) -> Layout:
    """Which weights ``folder`` can be loaded with, and what is missing (model_index.json checked first)."""
    check_model_index(folder)
    missing = [name for name in CONFIGS if not (folder / name).is_file()]
    missing += [f"{t}/vocab.json" for t in TOKENIZERS if not _tokenizer(folder / t)]
    if all(_weights(folder, c, None) for c in WEIGHTS):
        return Layout(None, tuple(missing))
    if all(_weights(folder, c, FP16) for c in WEIGHTS):
        return Layout(FP16, tuple(missing))
    missing += [f"{c}/{stem}.safetensors" for c, stem in WEIGHTS.items() if not _weights(folder, c, None)]
    return Layout(None, tuple(missing))


def hub_endpoint_host() -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (no HTTP, no hub library)."""
    import socket

    try:
        with socket.create_connection((hub_endpoint_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline() -> bool:
    """HF_HUB_OFFLINE is set: the hub is never asked."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _plain_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def download(repo_id: str, *, say: Callable[[str], None] | None = None) -> Path:
    """Fetch the loader's files of ``repo_id`` into the cache; return the snapshot folder.

    On a terminal the hub's own progress bars show (unless HF_HUB_DISABLE_PROGRESS_BARS=1);
    otherwise (a log file, a batch job) one plain line per file, as it starts.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    from unziplora.hf_env import download_progress

    say = say or _plain_line
    patterns = loader_patterns()
    say(f"downloading {repo_id} from the Hugging Face hub (once; later runs read the cache)")
    with download_progress() as bars:
        if bars:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        planned = snapshot_download(repo_id, allow_patterns=patterns, dry_run=True)
        for item in planned:
            size = getattr(item, "file_size", None)
            shown = f" ({size / 1e9:.2f} GB)" if isinstance(size, int) and size >= 1e8 else ""
            if getattr(item, "will_download", True):  # already cached: nothing to say
                say(f"  {item.filename}{shown}")
            hf_hub_download(repo_id, item.filename, revision=getattr(item, "commit_hash", None))
    found = snapshot_dir(repo_id)
    if found is None:
        raise BaseModelError(f"base model {repo_id} was downloaded but its snapshot is not in {cache_dir()}.")
    return found
