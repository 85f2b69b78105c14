"""Precision names and the torch dtypes they stand for: the one table (light: torch loads on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

STORAGE_DTYPES: tuple[str, ...] = ("fp16", "bf16", "fp32")  # what a saved LoRA file can hold
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")  # what a model can run in ("auto" picks)
_TORCH_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def torch_dtype(name: str) -> torch.dtype:
    """``"fp16"`` / ``"bf16"`` / ``"fp32"`` -> the torch dtype (KeyError for anything else)."""
    import torch

    return getattr(torch, _TORCH_NAMES[name])
