"""Block table (ALGORITHM.md 5.3) against the official pattern dictionaries expanded by hand (5.1-5.2)."""

from __future__ import annotations

import pytest

from unziplora.method import BLOCK_TABLE, SDXL_ATTENTION_GROUPS, block_class, expand_block_table, sdxl_attention_modules
from unziplora.method.blocks import SDXL_GROUP_DEPTHS

# ALGORITHM 5.1, verbatim.
OFFICIAL_CONTENT = {"mid_block": ["N_0_A_A"], "up_blocks.": ["1_A_A_A", "0_1_A_A"], "down_blocks.": ["A_A_A_A"]}
OFFICIAL_STYLE = {"mid_block": ["N_0_A_A"], "up_blocks.": ["0_0,2_A_A"], "down_blocks.": ["A_A_A_A"]}


def expand_official(dictionary: dict[str, list[str]]) -> dict[str, set[str]]:
    """The grammar of ALGORITHM 5.2 (with the list-merging fix of 9 #10)."""
    out: dict[str, set[str]] = {}
    for key, patterns in dictionary.items():
        for pattern in patterns:
            blocks, groups, attns, projs = pattern.split("_")
            if blocks == "N":
                block_list = [""]
            elif blocks == "A":
                block_list = ["0", "1"] if key == "up_blocks." else ["1", "2"]
            else:
                block_list = blocks.split(",")
            if groups == "A":
                group_list = ["0", "1", "2"] if key == "up_blocks." else ["1", "0"]
            else:
                group_list = groups.split(",")
            attn_list = ["attn1", "attn2"] if attns == "A" else [f"attn{i}" for i in attns.split(",")]
            proj_list = ["to_k", "to_v", "to_q", "to_out.0"] if projs == "A" else [f"to_{p}" for p in projs.split(",")]
            for block in block_list:
                for group in group_list:
                    sep = "." if block else ""
                    name = f"{key}{block}{sep}attentions.{group}."
                    out.setdefault(name, set()).update(f"{a}.{p}" for a in attn_list for p in proj_list)
    return out


def official_class(module: str) -> str:
    content, style = expand_official(OFFICIAL_CONTENT), expand_official(OFFICIAL_STYLE)
    shared = set(content) & set(style)
    key = module.split("transformer")[0]
    tail = module.split("transformer_blocks.")[1].split(".", 1)[1]  # "attn2.to_out.0"
    if key in shared:
        return "both"
    if key in style and tail in style[key]:
        return "style_sparse"
    if key in content and tail in content[key]:
        return "content_sparse"
    return "both"


def test_sdxl_module_inventory():
    names = sdxl_attention_modules()
    assert len(names) == 560 and len(set(names)) == 560
    assert names[0] == "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert names[-1] == "up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_out.0"
    assert len(SDXL_ATTENTION_GROUPS) == 11 and set(BLOCK_TABLE) == set(SDXL_ATTENTION_GROUPS)
    assert sum(SDXL_GROUP_DEPTHS.values()) == 70


def test_table_equals_official_dictionaries_on_every_sdxl_module():
    for name in sdxl_attention_modules():
        assert block_class(name) == official_class(name), name


def test_table_expands_to_exact_module_lists():
    classes = expand_block_table(sdxl_attention_modules())

    def modules(groups: list[str]) -> list[str]:
        return [n for n in sdxl_attention_modules() if n.split(".transformer_blocks.")[0] in groups]

    assert classes["both"] == modules(
        [
            "down_blocks.1.attentions.0",
            "down_blocks.1.attentions.1",
            "down_blocks.2.attentions.0",
            "down_blocks.2.attentions.1",
            "mid_block.attentions.0",
        ]
    )
    assert classes["style_sparse"] == modules(["up_blocks.0.attentions.0", "up_blocks.0.attentions.2"])
    assert classes["content_sparse"] == modules(
        ["up_blocks.0.attentions.1", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"]
    )
    assert [len(classes[c]) for c in ("both", "content_sparse", "style_sparse")] == [272, 128, 160]


def test_prefix_matching_is_per_component_and_table_is_replaceable():
    assert (
        block_class(
            "up_blocks.1.attentions.10.transformer_blocks.0.attn1.to_q", {"up_blocks.1.attentions.1": "style_sparse"}
        )
        == "both"
    )
    custom = {"up_blocks.0": "content_sparse", "up_blocks.0.attentions.2": "style_sparse"}  # longest prefix wins
    assert block_class("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", custom) == "content_sparse"
    assert block_class("up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_k", custom) == "style_sparse"
    assert block_class("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", {}) == "both"


@pytest.mark.parametrize("name", ["down_blocks.1.attentions.0", "mid_block.attentions.0"])
def test_unknown_class_is_refused(name):
    from unziplora.method.blocks import validate_table

    with pytest.raises(ValueError, match=name):
        validate_table({name: "sparse"})
