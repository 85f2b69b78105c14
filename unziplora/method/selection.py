"""Pure column-separation math on one layer (ALGORITHM.md 4.3-4.6); scheduling is in ``columns``.

Clean behaviour where ALGORITHM 9 lists a defect:

* #3: the score is computed on *unscaled* gradients against ``DEFAULT_THRESHOLD`` = 1e-5 / 65536,
  the threshold the official fp16 run effectively applied (its gradients still carried the
  GradScaler's initial scale 2^16), so the selection does not depend on the precision; a faithful
  fp16 run follows the scaler's current scale instead (:func:`faithful_grad_scale`);
* #4: exactly ``k = floor(out * ratio)`` columns per round, ranked by the sparsity score, ties
  broken by the summed absolute cone, remaining ties by the lower column index;
* the avoid rule never hands style a column content holds, even when fewer than ``k`` remain.

``faithful=True`` (``unzip train --faithful``) replaces #4 by the official rule,
:func:`official_columns`: columns strictly above the k-th largest score (at most ``k - 1``,
none when the top ``k`` scores tie).
"""

from __future__ import annotations

import math

import torch

from unziplora.method.blocks import BOTH, CONTENT_SPARSE, STYLE_SPARSE
from unziplora.method.layer import UnZipLoRALinear

OFFICIAL_THRESHOLD = 1e-5  # the official absolute cone threshold, on loss-scaled fp16 gradients
OFFICIAL_LOSS_SCALE = 65536.0  # GradScaler's initial scale, which the official gradients carried
DEFAULT_THRESHOLD = OFFICIAL_THRESHOLD / OFFICIAL_LOSS_SCALE


def faithful_grad_scale(loss_scale: float | None, faithful: bool) -> float:
    """The ``grad_scale`` to score unscaled gradients with, so a faithful run thresholds as the official one.

    ALGORITHM 9 #3: the official cone is ``C(S·g) > 1e-5`` with ``S`` the GradScaler's *current*
    scale (65536 until an overflow halves it). Ours is ``C(g) / grad_scale > 1e-5 / 65536`` on
    unscaled gradients, so ``grad_scale = 65536 / S`` makes the two the same test. The clean
    default ignores the loss scale (``1.0``): its selection must not depend on the precision.
    """
    if not faithful or loss_scale is None or not loss_scale > 0:
        return 1.0
    return OFFICIAL_LOSS_SCALE / float(loss_scale)


def columns_per_round(out_features: int, ratio: float) -> int:
    """``k = floor(out * ratio)`` as the official code computes it (64 of 640, 128 of 1280 at 0.1)."""
    return max(0, int(out_features * ratio))


@torch.no_grad()
def column_scores(
    layer: UnZipLoRALinear, branch: str, *, threshold: float = DEFAULT_THRESHOLD, grad_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparsity score and tie-break of every output column of ``branch`` (ALGORITHM 4.3).

    With ``Δ = B A`` and ``D = m * (B dA + dB A) [+ Δ * dm]`` (the first-order change of the
    merged weight), the cone is ``C = Δ ⊙ D``; the score of column ``j`` is the fraction of its
    ``in`` entries with ``|C| > threshold`` and the tie-break is ``Σ_i |C[j, i]|``.
    ``grad_scale`` is the factor the gradients still carry (a GradScaler's scale if they were
    not unscaled yet; 1 otherwise). Both are ``[out]`` fp32 tensors; zeros without gradients.
    """
    a, b, m = layer.lora_A[branch], layer.lora_B[branch], layer.merge[branch]
    out = b.shape[0]
    if a.grad is None and b.grad is None and m.grad is None:
        zeros = torch.zeros(out, device=b.device)
        return zeros, zeros.clone()
    a32, b32, m32 = a.detach().float(), b.detach().float(), m.detach().float()
    delta = b32 @ a32
    drift = torch.zeros_like(delta)
    if a.grad is not None:
        drift += b32 @ a.grad.float()
    if b.grad is not None:
        drift += b.grad.float() @ a32
    drift *= m32[:, None]
    if m.grad is not None:
        drift += delta * m.grad.float()[:, None]
    cone = (delta * drift).abs_().div_(grad_scale)
    score = (cone > threshold).float().mean(dim=1)
    return score, cone.sum(dim=1)


def top_k_columns(
    score: torch.Tensor, tiebreak: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool ``[out]`` mask of the ``k`` best columns by (score, tiebreak), lower index first on
    full ties; columns in ``exclude`` are never chosen (fewer than ``k`` if too few remain)."""
    chosen = torch.zeros(score.shape[0], dtype=torch.bool, device=score.device)
    candidates = torch.arange(score.shape[0], device=score.device)
    if exclude is not None:
        candidates = candidates[~exclude.to(torch.bool)]
    if k <= 0 or candidates.numel() == 0:
        return chosen
    # Two stable sorts give a lexicographic order: secondary key first, then the primary key.
    order = torch.sort(tiebreak[candidates], descending=True, stable=True).indices
    order = order[torch.sort(score[candidates][order], descending=True, stable=True).indices]
    chosen[candidates[order[:k]]] = True
    return chosen


def official_columns(score: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``[out]`` mask of the official rule (ALGORITHM 4.4, ``mask_updated_elements``).

    Excluded columns score ``-inf``; ``τ_k`` is the k-th largest score and a column is chosen when
    its score is *strictly* greater. So at most ``k - 1`` columns, fewer on ties at ``τ_k``, none
    when the top ``k`` all tie; if fewer than ``k`` columns are not excluded, ``τ_k = -inf`` and
    every non-excluded column is chosen.
    """
    if k <= 0 or score.numel() == 0:
        return torch.zeros(score.shape[0], dtype=torch.bool, device=score.device)
    values = score.detach().float().clone()
    if exclude is not None:
        values[exclude.to(torch.bool)] = -math.inf
    kth = torch.topk(values, min(k, values.numel())).values[-1]
    return values > kth


@torch.no_grad()
def select_columns(
    layer: UnZipLoRALinear,
    block: str,
    k: int,
    *,
    avoid: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
    grad_scale: float = 1.0,
    faithful: bool = False,
) -> dict[str, int]:
    """One SELECT round on ``layer`` (ALGORITHM 4.4): grow the masks by union, then switch them on.

    ``block`` is the layer's block class (:mod:`unziplora.method.blocks`). ``faithful`` picks
    columns with :func:`official_columns` instead of exactly ``k``. Returns how many columns each
    branch newly gained this round.
    """

    def pick(branch: str, exclude: torch.Tensor | None = None) -> torch.Tensor:
        score, tiebreak = column_scores(layer, branch, threshold=threshold, grad_scale=grad_scale)
        return official_columns(score, k, exclude) if faithful else top_k_columns(score, tiebreak, k, exclude)

    mask_c, mask_s = layer.mask("content").clone(), layer.mask("style").clone()
    before = {"content": int(mask_c.sum()), "style": int(mask_s.sum())}
    full = torch.ones_like(mask_c)
    if block in (BOTH, CONTENT_SPARSE):
        mask_c |= pick("content")
    else:
        mask_c = full
    if block in (BOTH, STYLE_SPARSE):
        exclude = mask_c if (avoid and block == BOTH) else None
        mask_s |= pick("style", exclude)
    else:
        mask_s = full
    layer.set_mask("content", mask_c)
    layer.set_mask("style", mask_s)
    for branch in ("content", "style"):
        layer.set_mask_active(branch, True)
    return {"content": int(mask_c.sum()) - before["content"], "style": int(mask_s.sum()) - before["style"]}


def merge_grad_masks(layer: UnZipLoRALinear, finetune_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the merge gradients may be non-zero (ALGORITHM 4.5): the overlap ``μ_c ∧ μ_s`` of
    both branches by default; each branch's own mask with ``finetune_mask``."""
    mask_c, mask_s = layer.mask("content"), layer.mask("style")
    if finetune_mask:
        return mask_c, mask_s
    overlap = mask_c & mask_s
    return overlap, overlap


def ortho_gate(layer: UnZipLoRALinear) -> torch.Tensor:
    """``μ_c μ_s`` when both masks are on, else ones: the mask part of the orthogonality term."""
    if layer.mask_active("content") and layer.mask_active("style"):
        return (layer.mask("content") & layer.mask("style")).float()
    return torch.ones(layer.out_features, device=layer.mask("content").device)
