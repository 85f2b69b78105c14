"""Preview images of a run: content-only, style-only and combined samples from the live layers.

``--preview-every N`` writes them into the run's ``previews/`` folder while training; every
finished entry gets ``preview.png`` (source | content | style | combined) so ``unzip show`` can
point at it. Sampling leaves the layers as it found them (mode, training state).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODES = (("content", "content"), ("style", "style"), ("both", "combined"))


PREVIEW_GUIDANCE = 5.0


@contextmanager
def _without_text_encoders(pipe: Any) -> Iterator[None]:
    """The pipeline without its (parked) text encoders, so it takes its device from the VAE and UNet
    rather than from a module on ``meta``; the prompts are encoded already."""
    saved = pipe.text_encoder, pipe.text_encoder_2
    pipe.text_encoder = pipe.text_encoder_2 = None
    try:
        yield
    finally:
        pipe.text_encoder, pipe.text_encoder_2 = saved


def _samples(pipe: Any, frozen: Any, layers: dict[str, Any], request: Any) -> list[Any]:
    """The three samples. The text encoders come back from disk only to encode the prompts and go
    again before sampling, so the preview's peak holds the UNet, the VAE and one sample's
    activations; the VAE is parked again afterwards (the loop does not need it)."""
    from unziplora.generate.preview import sample_with_layers
    from unziplora.generate.sampling import encode_plan, plan_prompts

    config = request.config
    unet_was_training = pipe.unet.training
    pipe.unet.eval()
    try:
        frozen.unpark("vae")
        frozen.unpark("text_encoder", "text_encoder_2")
        plans = [plan_prompts(request.prompts, mode, config.prompt_separation) for mode, _ in MODES]
        conds = [encode_plan(pipe, plan, negative=None, guidance=PREVIEW_GUIDANCE) for plan in plans]
        frozen.park("text_encoder", "text_encoder_2")
        with _without_text_encoders(pipe):
            return [
                sample_with_layers(
                    pipe,
                    request.prompts,
                    mode=mode,
                    seed=config.seed,
                    steps=config.preview_steps,
                    guidance=PREVIEW_GUIDANCE,
                    width=config.resolution,
                    height=config.resolution,
                    prompt_separation=config.prompt_separation,
                    cond=cond,
                )
                for (mode, _), cond in zip(MODES, conds)
            ]
    finally:
        frozen.park(*frozen.NAMES)
        pipe.unet.train(unet_was_training)


def entry_preview(pipe: Any, frozen: Any, layers: dict[str, Any], request: Any) -> Any:
    """The sheet stored as the entry's preview.png."""
    from unziplora.generate.preview import preview_sheet

    images = _samples(pipe, frozen, layers, request)
    return preview_sheet(request.images[0].image, images, ["source"] + [label for _, label in MODES])


def write_step_previews(pipe: Any, frozen: Any, run_dir: Path, layers: dict[str, Any], request: Any, step: int) -> Path:
    """Write ``previews/step-000100.png`` (a sheet) into the run directory; return its path."""
    from unziplora.generate.preview import preview_sheet

    images = _samples(pipe, frozen, layers, request)
    folder = run_dir / "previews"
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    preview_sheet(request.images[0].image, images, ["source"] + [label for _, label in MODES]).save(path)
    return path
