"""Preview images of a run: content-only, style-only and combined samples from the live layers.

``--preview-every N`` writes them into the run's ``previews/`` folder while training; every
finished entry gets ``preview.png`` (source | content | style | combined) so ``unzip show`` can
point at it. Sampling leaves the layers as it found them (mode, training state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = (("content", "content"), ("style", "style"), ("both", "combined"))


def _samples(pipe: Any, device: str, layers: dict[str, Any], request: Any) -> list[Any]:
    from unziplora.generate.preview import sample_with_layers

    config = request.config
    unet_was_training = pipe.unet.training
    pipe.unet.eval()
    moved = []
    for part in (pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
        if str(next(part.parameters()).device) != str(device):
            part.to(device)
            moved.append(part)
    try:
        return [
            sample_with_layers(
                pipe,
                request.prompts,
                mode=mode,
                seed=config.seed,
                steps=config.preview_steps,
                guidance=5.0,
                width=config.resolution,
                height=config.resolution,
                prompt_separation=config.prompt_separation,
            )
            for mode, _ in MODES
        ]
    finally:
        for part in moved:
            part.to("cpu")
        pipe.unet.train(unet_was_training)


def entry_preview(pipe: Any, device: str, layers: dict[str, Any], request: Any) -> Any:
    """The sheet stored as the entry's preview.png."""
    from unziplora.generate.preview import preview_sheet

    images = _samples(pipe, device, layers, request)
    return preview_sheet(request.images[0].image, images, ["source"] + [label for _, label in MODES])


def write_step_previews(pipe: Any, device: str, run_dir: Path, layers: dict[str, Any], request: Any, step: int) -> Path:
    """Write ``previews/step-000100.png`` (a sheet) into the run directory; return its path."""
    from unziplora.generate.preview import preview_sheet

    images = _samples(pipe, device, layers, request)
    folder = run_dir / "previews"
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    preview_sheet(request.images[0].image, images, ["source"] + [label for _, label in MODES]).save(path)
    return path
