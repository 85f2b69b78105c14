"""The evaluation models: a CLIP (image + text towers) and a DINOv2, from the HF cache or a folder.

Defaults are the paper's kind of models: ``openai/clip-vit-large-patch14`` and
``facebook/dinov2-base``. A reference is a hub id (read from the local cache first, downloaded
only when the hub is reachable and offline mode is off, like the base model) or a folder written
by ``save_pretrained`` holding the model, its image processor and, for CLIP, its tokenizer.
Embeddings are fp32 rows; :mod:`unziplora.eval.metrics` normalises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unziplora.errors import BaseModelError

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dinov2-base"


def _offline() -> bool:
    from unziplora.hf_cache import offline as base_offline

    return base_offline()


def _load(cls: Any, ref: str, what: str) -> Any:
    """``cls.from_pretrained(ref)`` with the base model's cache-first policy and one-line errors."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        try:
            return cls.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise BaseModelError(f"{what} folder {folder} cannot be loaded: {str(exc).splitlines()[0]}") from exc
    if ref.startswith((".", "/", "~")):
        raise BaseModelError(f"{what} folder {folder} does not exist.")
    hint = f"fetch it once on a machine with network (`hf download {ref}`) and copy the Hugging Face cache, or pass a folder"
    try:
        return cls.from_pretrained(ref, local_files_only=True)
    except OSError as cached:
        if _offline():
            raise BaseModelError(
                f"{what} {ref} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}."
            ) from cached
    from unziplora.hf_env import download_progress

    try:
        with download_progress():  # the hub's bars on a terminal: this may be a long download
            return cls.from_pretrained(ref)
    except OSError as exc:
        raise BaseModelError(
            f"{what} {ref} is not in the local Hugging Face cache and could not be downloaded; {hint}."
        ) from exc


@dataclass
class Embedders:
    """Loaded CLIP and DINOv2 with their processors, on one device, in eval mode."""

    clip: Any
    clip_tokenizer: Any
    clip_processor: Any
    dino: Any
    dino_processor: Any
    device: str = "cpu"

    @classmethod
    def load(cls, clip: str = DEFAULT_CLIP, dino: str = DEFAULT_DINO, *, device: str = "cpu") -> Embedders:
        from unziplora.hf_env import prepare_hf

        prepare_hf()
        from transformers import AutoImageProcessor, CLIPModel, CLIPTokenizer, Dinov2Model

        loaded = cls(
            clip=_load(CLIPModel, clip, "CLIP model"),
            clip_tokenizer=_load(CLIPTokenizer, clip, "CLIP tokenizer"),
            clip_processor=_load(AutoImageProcessor, clip, "CLIP image processor"),
            dino=_load(Dinov2Model, dino, "DINOv2 model"),
            dino_processor=_load(AutoImageProcessor, dino, "DINOv2 image processor"),
            device=device,
        )
        loaded.clip.to(device).eval()
        loaded.dino.to(device).eval()
        return loaded

    def clip_images(self, images: list[Any]) -> Any:
        import torch

        pixels = self.clip_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return _features(self.clip.get_image_features(pixel_values=pixels.to(self.device))).float().cpu()

    def clip_texts(self, texts: list[str]) -> Any:
        import torch

        max_length = min(77, int(self.clip.config.text_config.max_position_embeddings))
        tokens = self.clip_tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.no_grad():
            return (
                _features(
                    self.clip.get_text_features(
                        input_ids=tokens["input_ids"].to(self.device),
                        attention_mask=tokens["attention_mask"].to(self.device),
                    )
                )
                .float()
                .cpu()
            )

    def dino_images(self, images: list[Any]) -> Any:
        """The CLS token of the last layer (the DINO score of DreamBooth and the paper)."""
        import torch

        pixels = self.dino_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return self.dino(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0].float().cpu()


def _features(output: Any) -> Any:
    """transformers returns a tensor (older) or a model output with ``pooler_output`` (newer)."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output
