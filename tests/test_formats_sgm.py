"""The diffusers <-> SGM / kohya name table (FORMATS.md 1.2–1.3)."""

from __future__ import annotations

import pytest

from unziplora.errors import ImportFormatError
from unziplora.formats.sgm import (
    diffusers_to_kohya_key,
    diffusers_to_sgm,
    kohya_to_diffusers_module,
    sdxl_attention_projections,
    sgm_to_diffusers,
)
from unziplora.unet_layout import SDXL_GROUP_TABLE

# FORMATS.md 1.3, verbatim.
TABLE = [
    ("down_blocks.1.attentions.0", "lora_unet_input_blocks_4_1_", 2),
    ("down_blocks.1.attentions.1", "lora_unet_input_blocks_5_1_", 2),
    ("down_blocks.2.attentions.0", "lora_unet_input_blocks_7_1_", 10),
    ("down_blocks.2.attentions.1", "lora_unet_input_blocks_8_1_", 10),
    ("mid_block.attentions.0", "lora_unet_middle_block_1_", 10),
    ("up_blocks.0.attentions.0", "lora_unet_output_blocks_0_1_", 10),
    ("up_blocks.0.attentions.1", "lora_unet_output_blocks_1_1_", 10),
    ("up_blocks.0.attentions.2", "lora_unet_output_blocks_2_1_", 10),
    ("up_blocks.1.attentions.0", "lora_unet_output_blocks_3_1_", 2),
    ("up_blocks.1.attentions.1", "lora_unet_output_blocks_4_1_", 2),
    ("up_blocks.1.attentions.2", "lora_unet_output_blocks_5_1_", 2),
]


def test_group_table_matches_formats_md():
    assert [(d, "lora_unet_" + s.replace(".", "_") + "_", n) for d, s, n in SDXL_GROUP_TABLE] == TABLE


def test_full_sdxl_has_560_projections_that_map_and_map_back():
    names = sdxl_attention_projections()
    assert len(names) == len(set(names)) == 560  # 70 transformer blocks x 2 attentions x 4 projections
    keys = [diffusers_to_kohya_key(n) for n in names]
    assert len(set(keys)) == 560
    prefixes = {d: k for d, k, _n in TABLE}
    for name, key in zip(names, keys):
        group = name.split(".transformer_blocks.")[0]
        inner = name[len(group) + 1 :].replace(".", "_")
        assert key == prefixes[group] + inner
        assert kohya_to_diffusers_module(key) == name


@pytest.mark.parametrize(
    "module, key",
    [
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        ),
        (
            "up_blocks.0.attentions.2.transformer_blocks.7.attn2.to_out.0",
            "lora_unet_output_blocks_2_1_transformer_blocks_7_attn2_to_out_0",
        ),
        (
            "mid_block.attentions.0.transformer_blocks.9.ff.net.0.proj",
            "lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj",
        ),
        ("up_blocks.1.attentions.1.proj_out", "lora_unet_output_blocks_4_1_proj_out"),
        ("down_blocks.0.downsamplers.0.conv", "lora_unet_input_blocks_3_0_op"),
        ("up_blocks.0.upsamplers.0.conv", "lora_unet_output_blocks_2_2_conv"),
        ("down_blocks.1.resnets.0.conv_shortcut", "lora_unet_input_blocks_4_0_skip_connection"),
        ("mid_block.resnets.1.time_emb_proj", "lora_unet_middle_block_2_emb_layers_1"),
        ("add_embedding.linear_2", "lora_unet_label_emb_0_2"),
    ],
)
def test_formats_md_examples(module, key):
    assert diffusers_to_kohya_key(module) == key
    assert kohya_to_diffusers_module(key) == module


def test_diffusers_block_kohya_stems_are_accepted():
    """What diffusers' convert_state_dict_to_kohya writes (FORMATS.md 5)."""
    stem = "lora_unet_up_blocks_0_attentions_2_transformer_blocks_7_attn2_to_out_0"
    assert kohya_to_diffusers_module(stem) == "up_blocks.0.attentions.2.transformer_blocks.7.attn2.to_out.0"


def test_every_leaf_of_the_tiny_unet_round_trips_and_its_kohya_keys_exist():
    torch = pytest.importorskip("torch")
    from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

    unet = build_tiny_sdxl_pipeline().unet
    modules = dict(unet.named_modules())
    leaves = [
        n for n, m in modules.items() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    assert len(leaves) > 400
    for name in leaves:
        assert sgm_to_diffusers(diffusers_to_sgm(name)) == name
        assert kohya_to_diffusers_module(diffusers_to_kohya_key(name)) == name
    tiny = sdxl_attention_projections(depth=2)
    assert len(tiny) == 176  # 11 groups x 2 transformer blocks x 2 attentions x 4 projections
    for name in tiny:
        assert isinstance(modules[kohya_to_diffusers_module(diffusers_to_kohya_key(name))], torch.nn.Linear)
    actual = {n for n in modules if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))}
    assert actual == set(tiny)


@pytest.mark.parametrize("stem", ["lora_unet_input_blocks_99_1_proj_in", "lora_unet_foo_bar", "lora_te1_text_model_x"])
def test_unknown_stems_are_import_errors(stem):
    with pytest.raises(ImportFormatError):
        kohya_to_diffusers_module(stem)


def test_unknown_diffusers_path_is_a_value_error():
    with pytest.raises(ValueError):
        diffusers_to_sgm("down_blocks.1.mystery.0")
