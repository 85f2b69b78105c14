"""The evaluation scores of a content/style decomposition, from embeddings (issue 16).

Everything here is a pure function of L2-normalisable embedding rows, so the definitions can be
checked by hand; which model produced an embedding is the caller's business (CLIP ViT-L/14 image
and text towers for ``clip_*``, DINOv2 for ``dino``). Every score is a mean of cosine
similarities over the images of one probe kind:

``clip_t``                      all images: cos(CLIP image, CLIP text of the image's own probe prompt)
``content_clip_i``              content images: cos(CLIP image, CLIP image of the source)
``content_dino``                content images: cos(DINO image, DINO source)
``style_clip_i``                style images: cos(CLIP image, CLIP source)
``style_text``                  style images: cos(CLIP image, CLIP text "in <style> style")
``style_leak_into_content``     content images: cos(CLIP image, "in <style> style")
                                minus cos(CLIP image, the bare subject prompt); > 0 means the
                                content LoRA draws the style more than the plain subject
``subject_leak_into_style``     style images: cos(DINO image, DINO source); high means the style
                                LoRA reproduces the source subject (the paper's DINO-on-style view)
``recon_clip_i``, ``recon_dino`` reconstruction images (combined LoRAs, source prompt) vs. the source

Higher is better for all but the two leak scores, where lower is better.

torch is imported inside the functions, so ``unzip list`` can read :data:`SCORES` cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCORES = (
    "clip_t",
    "content_clip_i",
    "content_dino",
    "style_clip_i",
    "style_text",
    "style_leak_into_content",
    "subject_leak_into_style",
    "recon_clip_i",
    "recon_dino",
)
LOWER_IS_BETTER = frozenset({"style_leak_into_content", "subject_leak_into_style"})
KINDS = ("content", "style", "recon", "combined")
# The headline scores ``unzip list`` shows and sorts by (``--sort subject-fidelity``): label -> score key.
HEADLINE = {"subject-fidelity": "content_dino", "style-fidelity": "style_clip_i", "leakage": "style_leak_into_content"}
# The scores of one image, by its probe kind (what the evaluation sheet writes under it).
PER_KIND = {
    "content": ("content_dino", "content_clip_i", "style_leak_into_content"),
    "style": ("style_clip_i", "style_text", "subject_leak_into_style"),
    "recon": ("recon_clip_i", "recon_dino"),
    "combined": ("clip_t",),
}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of ``[n, d]`` against ``[n, d]`` or a single ``[d]`` row (fp32)."""
    import torch

    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return (a * b).sum(dim=-1)


@dataclass
class KindEmbeddings:
    """Embeddings of the images of one probe kind: ``[n, d]`` rows, one per image, and the CLIP
    text embedding of each image's own probe prompt (``[n, d_clip]``)."""

    clip: torch.Tensor
    dino: torch.Tensor
    prompt_text: torch.Tensor


@dataclass
class Reference:
    """The source image (CLIP ``[d]``, DINO ``[d]``) and the two reference texts (CLIP ``[d]``)."""

    clip: torch.Tensor
    dino: torch.Tensor
    style_text: torch.Tensor  # "in <style> style"
    subject_text: torch.Tensor  # the bare subject prompt, e.g. "a cat"


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else float("nan")


def scores(kinds: Mapping[str, KindEmbeddings], ref: Reference) -> dict[str, float]:
    """Every score of :data:`SCORES`; ``nan`` for a score whose probe kind has no images."""
    import torch

    empty = KindEmbeddings(
        torch.zeros(0, ref.clip.shape[-1]), torch.zeros(0, ref.dino.shape[-1]), torch.zeros(0, ref.clip.shape[-1])
    )
    content, style, recon = (kinds.get(k, empty) for k in ("content", "style", "recon"))
    everything = [k for k in kinds.values() if k.clip.shape[0]]
    clip_t = torch.cat([cosine(k.clip, k.prompt_text) for k in everything]) if everything else torch.zeros(0)
    return {
        "clip_t": _mean(clip_t),
        "content_clip_i": _mean(cosine(content.clip, ref.clip)),
        "content_dino": _mean(cosine(content.dino, ref.dino)),
        "style_clip_i": _mean(cosine(style.clip, ref.clip)),
        "style_text": _mean(cosine(style.clip, ref.style_text)),
        "style_leak_into_content": _mean(cosine(content.clip, ref.style_text) - cosine(content.clip, ref.subject_text)),
        "subject_leak_into_style": _mean(cosine(style.dino, ref.dino)),
        "recon_clip_i": _mean(cosine(recon.clip, ref.clip)),
        "recon_dino": _mean(cosine(recon.dino, ref.dino)),
    }
