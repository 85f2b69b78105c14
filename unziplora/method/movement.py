"""How far training moved each LoRA from its initialisation: figures that change even on a toy base.

On ``tiny-sdxl`` every image is noise, so pictures cannot show that training did anything; these
numbers can. For each branch, over every projection: ``norm`` is ``||dW||_F`` of the learned
factors, ``dW = B A`` (before the column masks and merge vectors scale its rows: those are
recorded apart, and a mask zeroing most rows would otherwise swamp what training did), ``moved``
is ``||dW - dW0||_F`` against the initial ``dW0 = B0 A0``, and ``relative`` is ``moved / ||dW0||_F``
(None for the ``zero`` init, whose ``dW0`` is 0). The merge vectors start at exactly 1: their
mean, range and RMS distance from 1 are recorded per branch.

The initial factors are not kept during training: they are redrawn from the seeded generator in
the injection order (:func:`unziplora.method.layer.initial_factors`), one layer at a time, so this
costs one small matrix product per projection and no memory. Sums are Frobenius norms over the
whole set of projections (the square root of the summed squares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from unziplora.method.layer import BRANCHES, UnZipLoRALinear, init_generator, initial_factors


def _round(value: float) -> float:
    return float(f"{value:.6g}")


@torch.no_grad()
def lora_movement(layers: Mapping[str, UnZipLoRALinear], *, init: str, seed: int) -> dict[str, Any]:
    """Movement figures of freshly trained ``layers`` (injected with ``init`` and ``seed``), JSON-ready.

    ``layers`` must be in injection order (the dict :func:`~unziplora.method.inject_unziplora` returns).
    """
    generator = init_generator(seed)
    sums = {b: {"norm": 0.0, "moved": 0.0, "init": 0.0} for b in BRANCHES}
    merges: dict[str, list[torch.Tensor]] = {b: [] for b in BRANCHES}
    for layer in layers.values():
        for b in BRANCHES:
            a, up = layer.lora_A[b].float(), layer.lora_B[b].float()
            a0, up0 = initial_factors(a.shape[0], a.shape[1], up.shape[0], init, generator)
            delta = up @ a
            delta0 = up0.to(a.device) @ a0.to(a.device)
            sums[b]["norm"] += float(delta.square().sum())
            sums[b]["moved"] += float((delta - delta0).square().sum())
            sums[b]["init"] += float(delta0.square().sum())
            merges[b].append(layer.merge[b].detach().float().flatten().cpu())
    out: dict[str, Any] = {}
    for b in BRANCHES:
        norm, moved, start = (math.sqrt(sums[b][k]) for k in ("norm", "moved", "init"))
        out[b] = {"norm": _round(norm), "moved": _round(moved), "relative": _round(moved / start) if start else None}
    out["merge"] = {}
    for b in BRANCHES:
        values = torch.cat(merges[b]) if merges[b] else torch.ones(1)
        out["merge"][b] = {
            "mean": _round(float(values.mean())),
            "min": _round(float(values.min())),
            "max": _round(float(values.max())),
            "rms_change": _round(float((values - 1).square().mean().sqrt())),
        }
    return out
