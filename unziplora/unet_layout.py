"""Names in SDXL's UNet that the method, the formats and import all rely on (light: plain data).

UnZipLoRA wraps the four projections of every attention (self- and cross-), and SDXL base 1.0 has
its attentions in 11 groups (ALGORITHM.md Appendix A, FORMATS.md 1.3). Each fact lives here once.
"""

from __future__ import annotations

PROJECTIONS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
ATTENTIONS: tuple[str, ...] = ("attn1", "attn2")  # self-attention, cross-attention

# The 11 SDXL attention groups in UNet order: (diffusers prefix, SGM prefix, transformer blocks in
# real SDXL base 1.0; 70 in all; the tiny base has 2 everywhere).
SDXL_GROUP_TABLE: tuple[tuple[str, str, int], ...] = (
    ("down_blocks.1.attentions.0", "input_blocks.4.1", 2),
    ("down_blocks.1.attentions.1", "input_blocks.5.1", 2),
    ("down_blocks.2.attentions.0", "input_blocks.7.1", 10),
    ("down_blocks.2.attentions.1", "input_blocks.8.1", 10),
    ("mid_block.attentions.0", "middle_block.1", 10),
    ("up_blocks.0.attentions.0", "output_blocks.0.1", 10),
    ("up_blocks.0.attentions.1", "output_blocks.1.1", 10),
    ("up_blocks.0.attentions.2", "output_blocks.2.1", 10),
    ("up_blocks.1.attentions.0", "output_blocks.3.1", 2),
    ("up_blocks.1.attentions.1", "output_blocks.4.1", 2),
    ("up_blocks.1.attentions.2", "output_blocks.5.1", 2),
)
SDXL_ATTENTION_GROUPS: tuple[str, ...] = tuple(prefix for prefix, _sgm, _depth in SDXL_GROUP_TABLE)
SDXL_GROUP_DEPTHS: dict[str, int] = {prefix: depth for prefix, _sgm, depth in SDXL_GROUP_TABLE}
