"""Loading an SDXL single file (SGM / A1111 layout) as a diffusers pipeline, with no network.

diffusers' ``from_single_file`` converts the weights; everything else comes from a local config
folder chosen by the header's shapes (:func:`unziplora.single_file_arch.config_folder`), and the hub is
switched off for the whole load (:func:`unziplora.hf_env.hub_offline`), so an empty Hugging Face
cache and no network are fine. Heavy: imports torch and diffusers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unziplora.errors import BaseModelError
from unziplora.hf_env import hub_offline
from unziplora.single_file import OPEN_CLIP, check_sdxl_file
from unziplora.single_file_arch import config_folder


def _open_clip_text_encoder(path: Path, config: Path, dtype: Any) -> Any:
    """The second text encoder, converted from the file's ``conditioner.embedders.1.model.*`` tensors alone.

    diffusers picks the conversion of each CLIP encoder by its width; handed the whole file, it
    takes the first encoder's tensors whenever both encoders are equally wide (as in the tiny
    base). Given only the OpenCLIP tensors there is nothing to confuse.
    """
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors import safe_open
    from transformers import CLIPTextModelWithProjection

    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(OPEN_CLIP)}  # noqa: SIM118 - safe_open handles are not iterable
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModelWithProjection,
        checkpoint=tensors,
        config=str(config),
        subfolder="text_encoder_2",
        torch_dtype=dtype,
        local_files_only=True,
    )


def _check_complete(pipe: Any, path: Path) -> None:
    """A tensor the file lacked is left on the meta device by the conversion; refuse instead of failing later."""
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        for name, tensor in getattr(pipe, component).state_dict().items():
            if tensor.is_meta:
                raise BaseModelError(
                    f"base model {path} could not be loaded: the {component} tensor {name} is missing from the file."
                )


def load_single_file(path: str | Path, *, dtype: Any = None) -> Any:
    """A ``StableDiffusionXLPipeline`` from an SDXL single file, in ``dtype`` (the file's own when None)."""
    from diffusers import StableDiffusionXLPipeline

    path = Path(path)
    info = check_sdxl_file(path)  # one-line refusals from the header, before any weight is read
    _architecture, config = config_folder(info)
    with hub_offline():
        text_encoder_2 = _open_clip_text_encoder(path, config, dtype)
        pipe = StableDiffusionXLPipeline.from_single_file(
            str(path),
            config=str(config),
            local_files_only=True,
            text_encoder_2=text_encoder_2,
            torch_dtype=dtype,
        )
    _check_complete(pipe, path)
    return pipe
