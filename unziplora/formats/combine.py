"""Exact sums of LoRAs, merge-vector folding, and SVD rank reduction.

Why these three: exporting a *combined* content+style LoRA needs the merge vectors folded into
``up`` rows and the two LoRAs added exactly (FORMATS.md 6.3 — concatenation, not kohya's
``--concat``, which keeps the first alpha and weakens both parts); ``--rank`` on export needs the
best rank-k approximation of each update (FORMATS.md 6.1, 8.5).

All factors here are at scale 1 (``ΔW = up @ down``), as in our internal format. Results are float32
(float64 when the inputs are float64); casting to the file dtype is the writer's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from unziplora.formats._keys import join_pairs, split_pairs

if TYPE_CHECKING:
    import torch


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def exact_sum(parts: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA whose update is exactly ``Σ wᵢ · upᵢ @ downᵢ`` (FORMATS.md 6.3).

    Rows of the downs and columns of the ups are concatenated, so the rank is ``Σ rᵢ``; each weight
    is split as ``sqrt|w|`` on both factors with its sign on ``up``, which keeps fp16 magnitudes
    balanced.

    Args:
        parts: ``(down [rᵢ, in], up [out, rᵢ], weight)`` per LoRA; all must share ``in`` and ``out``.

    Returns:
        ``(down [Σr, in], up [out, Σr])``.
    """
    import torch

    if not parts:
        raise ValueError("exact_sum needs at least one LoRA")
    dtype = _work_dtype(*(t for d, u, _w in parts for t in (d, u)))
    downs, ups = [], []
    for down, up, weight in parts:
        if down.shape[1] != parts[0][0].shape[1] or up.shape[0] != parts[0][1].shape[0]:
            raise ValueError(f"cannot add LoRAs of shapes {tuple(parts[0][1].shape)} and {tuple(up.shape)}")
        root = math.sqrt(abs(float(weight)))
        sign = -1.0 if weight < 0 else 1.0
        downs.append(down.to(dtype) * root)
        ups.append(up.to(dtype) * (sign * root))
    return torch.cat(downs, dim=0).contiguous(), torch.cat(ups, dim=1).contiguous()


def exact_sum_state_dicts(parts: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """:func:`exact_sum` per module over internal state dicts; a module missing from some parts
    is the sum of the parts that have it (its rank is then smaller than the others')."""
    split = [(split_pairs(sd), w) for sd, w in parts]
    modules: list[str] = []
    for pairs, _w in split:
        modules += [m for m in pairs if m not in modules]
    out = {}
    for module in modules:
        out[module] = exact_sum([(*pairs[module], w) for pairs, w in split if module in pairs])
    return join_pairs(out)


def fold_merge(up: torch.Tensor, merge: torch.Tensor) -> torch.Tensor:
    """Scale row ``j`` of ``up`` by ``merge[j]``: the combined-mode gate as a plain LoRA
    (ALGORITHM.md 8: "multiply up rows by merge"). Returns ``up``'s dtype."""
    if merge.ndim != 1 or merge.shape[0] != up.shape[0]:
        raise ValueError(f"merge vector of shape {tuple(merge.shape)} does not fit up of shape {tuple(up.shape)}")
    dtype = _work_dtype(up, merge)
    return (up.to(dtype) * merge.to(dtype)[:, None]).to(up.dtype)


def fold_merges(
    state_dict: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], part: str
) -> dict[str, torch.Tensor]:
    """Fold ``masks["<module>.merge_<part>"]`` into every module's ``up`` (``part`` = content|style)."""
    pairs = split_pairs(state_dict)
    missing = [m for m in pairs if f"{m}.merge_{part}" not in masks]
    if missing:
        raise ValueError(f"no merge_{part} vector for module {missing[0]!r} ({len(missing)} modules lack one)")
    return join_pairs({m: (d, fold_merge(u, masks[f"{m}.merge_{part}"])) for m, (d, u) in pairs.items()})


def combine_parts(
    content: Mapping[str, torch.Tensor],
    style: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    content_weight: float = 1.0,
    style_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Content and style with their merge vectors folded in, summed exactly into one LoRA.

    This reproduces UnZipLoRA's combined mode exactly when both branches see the same prompt; the
    official sampler feeds them different prompts at cross-attention K/V, which no single LoRA can.
    """
    return exact_sum_state_dicts(
        [(fold_merges(content, masks, "content"), content_weight), (fold_merges(style, masks, "style"), style_weight)]
    )


def _svd(down: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of ``up @ down`` without forming it: QR of both factors, SVD of the small core.

    ``up = Qu Ru``, ``downᵀ = Qd Rd`` ⇒ ``up @ down = Qu (Ru Rdᵀ) Qdᵀ``; the core is at most r x r.
    Float64 throughout, so singular values and the reported error are accurate.
    """
    import torch

    qu, ru = torch.linalg.qr(up.to(torch.float64))
    qd, rd = torch.linalg.qr(down.to(torch.float64).T)
    uc, s, vhc = torch.linalg.svd(ru @ rd.T, full_matrices=False)
    return qu @ uc, s, vhc @ qd.T


def _reduce(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    dtype = _work_dtype(down, up)
    u, s, vh = _svd(down, up)
    k = min(rank, s.shape[0])
    new_up = (u[:, :k] * s[:k]).to(dtype).contiguous()
    new_down = vh[:k].to(dtype).clone()
    return new_down, new_up, float((s[k:] ** 2).sum()), float((s**2).sum())


def reduce_rank(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` approximation of ``up @ down`` (Eckart–Young), as kohya's resize_lora.

    ``up = U_k S_k``, ``down = V_kᴴ`` (all singular values in ``up``). At ``rank >= r`` the product is
    reproduced (up to float rounding).

    Returns:
        ``(down [k, in], up [out, k], relative Frobenius error ‖ΔW − ΔW_k‖ / ‖ΔW‖)`` (0 for ΔW = 0).
    """
    new_down, new_up, lost, total = _reduce(down, up, rank)
    return new_down, new_up, (math.sqrt(lost / total) if total > 0 else 0.0)


def reduce_rank_state_dict(state_dict: Mapping[str, torch.Tensor], rank: int) -> tuple[dict[str, torch.Tensor], float]:
    """:func:`reduce_rank` on every module of an internal state dict.

    Returns:
        The reduced state dict and the overall relative error
        ``sqrt(Σₘ ‖ΔWₘ − ΔWₘ,ₖ‖² / Σₘ ‖ΔWₘ‖²)`` — modules weigh by the size of their update, so
        one tiny module that truncates badly does not dominate the figure.
    """
    out = {}
    lost_sum = total_sum = 0.0
    for module, (down, up) in split_pairs(state_dict).items():
        new_down, new_up, lost, total = _reduce(down, up, rank)
        out[module] = (new_down, new_up)
        lost_sum += lost
        total_sum += total
    return join_pairs(out), (math.sqrt(lost_sum / total_sum) if total_sum > 0 else 0.0)
