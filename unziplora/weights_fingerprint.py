"""A fingerprint of a base's UNet weights that is the same however the base is referenced.

Entries record the base they were trained on. The same weights reach us as a Hugging Face id, a
local copy of that folder, or a single SGM-layout file (often fp16); comparing the strings given
would call them three bases. So the fingerprint hashes *values*: the first
:data:`SAMPLE_ELEMENTS` numbers of a few UNet tensors spread over the network (named by their
diffusers names, found in a single file under their SGM names), each rounded to fp16, with
their shapes. fp32 and fp16 copies of one model agree (fp16 is how pruned files store it);
different fine-tunes differ in every tensor. Only the safetensors headers and about
:data:`SAMPLE_ELEMENTS` x 7 numbers are read (tens of KB, a few milliseconds even for a 7 GB
file), so nothing is cached. Light: numpy only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from unziplora.errors import BaseModelError
from unziplora.formats.sgm import diffusers_to_sgm
from unziplora.single_file import UNET, read_header_at

# Marks a weights fingerprint; older entries hold other strings (compared as before: by ref).
PREFIX = "w1:"
SAMPLE_ELEMENTS = 4096
SAMPLED: tuple[str, ...] = (
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "add_embedding.linear_1.weight",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight",
    "conv_out.weight",
)
_UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def _as_fp16(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float16)
    if dtype not in _NUMPY:
        raise ValueError(f"unsupported dtype {dtype}")
    return np.frombuffer(raw, dtype=_NUMPY[dtype]).astype(np.float16)


def _digest(sources: dict[str, tuple[Path, str]]) -> str | None:
    """Hash the sampled tensors; ``sources`` maps each diffusers name to (file, name in that file)."""
    digest = hashlib.sha256()
    headers: dict[Path, tuple[dict, int]] = {}
    for name in SAMPLED:
        if name not in sources:
            return None
        path, key = sources[name]
        if path not in headers:
            headers[path] = read_header_at(path)
        header, start = headers[path]
        entry = header.get(key)
        if entry is None or entry.get("dtype") not in (*_NUMPY, "BF16"):
            return None
        width = 2 if entry["dtype"] in ("F16", "BF16") else np.dtype(_NUMPY[entry["dtype"]]).itemsize
        count = min(int(np.prod(entry["shape"], dtype=np.int64)), SAMPLE_ELEMENTS)
        with path.open("rb") as handle:
            handle.seek(start + int(entry["data_offsets"][0]))
            values = _as_fp16(handle.read(count * width), entry["dtype"])
        digest.update(f"{name}:{entry['shape']}:".encode())
        digest.update(values.tobytes())
    return PREFIX + digest.hexdigest()[:16]


def _folder_sources(unet_dir: Path) -> dict[str, tuple[Path, str]] | None:
    """Where each sampled tensor lives in a diffusers ``unet/`` folder (single or sharded, fp32 or fp16)."""
    for weights in _UNET_WEIGHTS:
        if (unet_dir / weights).is_file():
            return {name: (unet_dir / weights, name) for name in SAMPLED}
        index = unet_dir / (weights + ".index.json")
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            return {name: (unet_dir / weight_map[name], name) for name in SAMPLED if name in weight_map}
    return None


def folder_fingerprint(folder: Path) -> str | None:
    """The fingerprint of a diffusers SDXL folder (a Hugging Face snapshot is one); None without safetensors UNet weights."""
    sources = _folder_sources(folder / "unet")
    return _safe(sources)


def file_fingerprint(path: Path) -> str | None:
    """The fingerprint of an SGM-layout single file."""
    return _safe({name: (path, UNET + diffusers_to_sgm(name)) for name in SAMPLED})


def _safe(sources: dict[str, tuple[Path, str]] | None) -> str | None:
    if not sources:
        return None
    try:
        return _digest(sources)
    except (OSError, ValueError, BaseModelError):
        return None  # unreadable weights: the caller falls back to comparing refs
