"""Samples for training previews (``preview.png``, ``--preview-every``).

The trainer holds a pipeline whose UNet already carries freshly trained UnZipLoRA layers (masks
active, nothing loaded from files). :func:`sample_with_layers` samples one image from exactly those
layers and hands them back as it found them (mode, fold state, base weights bit-exact, train/eval
flag, the pipeline's scheduler), so training continues unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from unziplora.generate.options import default_sampler
from unziplora.generate.sheet import grid
from unziplora.prompts import PromptSet

PREVIEW_LABELS = ("source", "content", "style", "combined")


def sample_with_layers(
    pipe: Any,
    prompts: PromptSet,
    *,
    mode: str,
    seed: int,
    steps: int,
    guidance: float,
    width: int,
    height: int,
    sampler: str | None = None,
    prompt_separation: bool = True,
    cond: Any = None,
) -> Image.Image:
    """One image from the UnZipLoRA layers already in ``pipe.unet``.

    Args:
        pipe: a ``StableDiffusionXLPipeline`` with its VAE present (and its text encoders unless ``cond`` is given).
        prompts: the run's three prompts; mode ``content`` reads ``prompts.content``, ``style``
            reads ``prompts.style``, ``both`` reads all three (``prompts.combined`` only, when
            ``prompt_separation`` is False).
        mode: ``"both"``, ``"content"`` or ``"style"`` (standalone modes ignore merges, as exported
            LoRAs do; active masks apply).
        sampler: a name from :data:`unziplora.generate.options.SAMPLERS`; None is the official
            default of the mode (DDPM for both, Euler otherwise).
        cond: the plan's conditioning from :func:`unziplora.generate.sampling.encode_plan`, when
            the caller encoded it already (then the text encoders are not used).
    """
    from unziplora.generate.sampling import plan_prompts, sample_images

    plan = plan_prompts(prompts, mode, prompt_separation)
    return sample_images(
        pipe,
        plan,
        seeds=[seed],
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        sampler=sampler or default_sampler(mode),
        cond=cond,
    )[0]


def preview_sheet(
    source: Image.Image, images: Sequence[Image.Image], labels: Sequence[str] | None = None
) -> Image.Image:
    """One row: the source image, then the samples, each labelled (default: content, style, combined).

    Every tile takes the size of the first sample (the source is scaled to match).
    """
    samples = list(images)
    if not samples:
        raise ValueError("preview_sheet needs at least one sample image")
    names = list(labels) if labels is not None else list(PREVIEW_LABELS[1 : 1 + len(samples)])
    if len(names) == len(samples):
        names = ["source", *names]
    if len(names) != len(samples) + 1:
        raise ValueError(f"got {len(names)} labels for 1 source and {len(samples)} samples")
    return grid([source, *samples], columns=len(samples) + 1, labels=names, tile=samples[0].size)
