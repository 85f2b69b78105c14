"""Tiny random CLIP and DINOv2 models written with save_pretrained, for the evaluation tests."""

from __future__ import annotations

from pathlib import Path


def build_tiny_eval_models(root: Path) -> tuple[Path, Path]:
    import torch
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        Dinov2Config,
        Dinov2Model,
    )

    from unziplora.tiny_sdxl import _write_tokenizer_files

    clip_dir, dino_dir = root / "clip", root / "dino"
    clip_dir.mkdir(parents=True)
    _write_tokenizer_files(clip_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_dir), model_max_length=77)
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **small,
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(str(clip_dir))
    tokenizer.save_pretrained(str(clip_dir))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(clip_dir))
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, **small)).save_pretrained(str(dino_dir))
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(dino_dir))
    return clip_dir, dino_dir
