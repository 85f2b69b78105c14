"""The projection table import checks against equals what diffusers builds, for tiny and real SDXL."""

from __future__ import annotations

import json

import pytest

from unziplora.base_model import parse_base
from unziplora.method.blocks import sdxl_attention_modules
from unziplora.transfer.layout import SDXL_UNET_LAYOUT, base_projection_shapes, projection_shapes, unet_layout


def built_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """Projection shapes of a diffusers UNet built from ``config`` on the meta device (no memory)."""
    pytest.importorskip("torch")
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from unziplora.unet_layout import PROJECTIONS

    with init_empty_weights():
        unet = UNet2DConditionModel(**config)
    return {
        name: (m.in_features, m.out_features)
        for name, m in unet.named_modules()
        if ".attn" in name and name.endswith(PROJECTIONS)
    }


def test_full_size_sdxl_table():
    config = dict(
        SDXL_UNET_LAYOUT,
        sample_size=128,
        attention_head_dim=[5, 10, 20],
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    shapes = projection_shapes(SDXL_UNET_LAYOUT)
    assert list(shapes) == sdxl_attention_modules()  # 560, in UNet order
    assert shapes == built_shapes(config)
    assert shapes["up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_k"] == (2048, 1280)


def test_tiny_table_and_bases_without_a_config(tmp_path):
    from unziplora.hf_cache import PIPELINE_COMPONENTS
    from unziplora.tiny_sdxl import UNET_CONFIG

    tiny = base_projection_shapes(parse_base("tiny-sdxl"))
    assert len(tiny) == 176 and tiny == built_shapes(dict(UNET_CONFIG))
    assert unet_layout(parse_base("stabilityai/stable-diffusion-xl-base-1.0")) == SDXL_UNET_LAYOUT  # not cached: SDXL's
    folder = tmp_path / "base"
    (folder / "unet").mkdir(parents=True)
    index = {"_class_name": "StableDiffusionXLPipeline"}  # `{}` is refused as a base (not a pipeline)
    index.update({c: ["diffusers", "Stub"] for c in PIPELINE_COMPONENTS})
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "config.json").write_text(json.dumps(dict(UNET_CONFIG)))
    assert base_projection_shapes(parse_base(str(folder))) == tiny  # a folder's own config is read
