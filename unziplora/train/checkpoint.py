"""Checkpoints of a training run: tensors in safetensors, everything else in JSON — no pickles.

A checkpoint holds the trainable LoRA state (parameters and mask buffers), the optimizer state,
the column-separation scheduler state, the training RNG state and the step. Nested state dicts
(the optimizer's, the scheduler's) are split into a flat tensor map and a JSON skeleton whose
leaves point at tensor keys, then joined back on load.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from unziplora.fileio import atomic_target, read_safetensors, write_file

TENSORS = "checkpoint.safetensors"
MANIFEST = "checkpoint.json"
_REF = "__tensor__"


def split_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list/tuple by ``{"__tensor__": key}``."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        out[key] = obj.detach().to("cpu").contiguous()
        return {_REF: key}
    if isinstance(obj, dict):
        return {"__dict__": [[_jsonable_key(k), split_tensors(v, f"{prefix}.{k}", out)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [split_tensors(v, f"{prefix}.{i}", out) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix}")


def _jsonable_key(key: Any) -> Any:
    if isinstance(key, (str, int)):
        return key
    raise TypeError(f"checkpoint dict keys must be str or int, got {type(key).__name__}")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if _REF in obj:
            return tensors[obj[_REF]]
        if "__dict__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts of tensors and plain values) as the run's checkpoint.

    Each save goes into its own ``ckpt-<token>/`` folder; only then is the small pointer file
    ``checkpoint.json`` replaced atomically, and older folders deleted. A crash at any point
    leaves the pointer naming a complete checkpoint.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, "s", tensors)
    folder = run_dir / f"ckpt-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    with atomic_target(folder / TENSORS) as tmp:
        save_file(tensors, str(tmp))
    write_file(folder / "state.json", json.dumps(skeleton).encode("utf-8"))
    write_file(run_dir / MANIFEST, json.dumps({"folder": folder.name}).encode("utf-8"))
    for old in run_dir.glob("ckpt-*"):
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / MANIFEST).is_file()


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read the checkpoint the run's pointer file names."""
    folder = run_dir / json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))["folder"]
    skeleton = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return join_tensors(skeleton, read_safetensors(folder / TENSORS)[0])
