"""Block separation as data (ALGORITHM.md 5.3): which branch is column-sparse in each SDXL group.

The official code encodes this in two pattern dictionaries with a small grammar whose names read
inverted (ALGORITHM 5.1-5.2, 9 #9-#10). Expanded, they amount to the table below, keyed by the
diffusers attention-group prefix. A layer not covered by the table is both-sparse. Pass another
table to :func:`block_class` (or to ``ColumnSeparation``) to experiment.

Classes:
    ``"both"``           content takes top-k columns, style top-k avoiding content's;
    ``"content_sparse"`` content takes top-k columns, style keeps all columns;
    ``"style_sparse"``   style takes top-k columns, content keeps all columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from unziplora.unet_layout import PROJECTIONS, SDXL_ATTENTION_GROUPS, SDXL_GROUP_DEPTHS

BOTH = "both"
CONTENT_SPARSE = "content_sparse"
STYLE_SPARSE = "style_sparse"
BLOCK_CLASSES: tuple[str, ...] = (BOTH, CONTENT_SPARSE, STYLE_SPARSE)

# ALGORITHM 5.3: up_blocks.0.attentions.{0,2} restrict style (B-LoRA's content block keeps every
# content column), up_blocks.0.attentions.1 and up_blocks.1 restrict content; the rest split columns.
BLOCK_TABLE: dict[str, str] = {
    "down_blocks.1.attentions.0": BOTH,
    "down_blocks.1.attentions.1": BOTH,
    "down_blocks.2.attentions.0": BOTH,
    "down_blocks.2.attentions.1": BOTH,
    "mid_block.attentions.0": BOTH,
    "up_blocks.0.attentions.0": STYLE_SPARSE,
    "up_blocks.0.attentions.1": CONTENT_SPARSE,
    "up_blocks.0.attentions.2": STYLE_SPARSE,
    "up_blocks.1.attentions.0": CONTENT_SPARSE,
    "up_blocks.1.attentions.1": CONTENT_SPARSE,
    "up_blocks.1.attentions.2": CONTENT_SPARSE,
}


def validate_table(table: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the first entry whose class is unknown."""
    for prefix, cls in table.items():
        if cls not in BLOCK_CLASSES:
            raise ValueError(f"block table entry {prefix!r} has class {cls!r}; expected one of {BLOCK_CLASSES}")


def block_class(module_name: str, table: Mapping[str, str] | None = None) -> str:
    """Class of the layer ``module_name`` (a diffusers UNet path): the longest matching prefix
    of ``table`` wins; unlisted layers are both-sparse. A prefix matches whole path components
    (``up_blocks.1.attentions.1`` does not match ``up_blocks.1.attentions.10``)."""
    table = BLOCK_TABLE if table is None else table
    best, best_len = BOTH, -1
    for prefix, cls in table.items():
        stem = prefix.rstrip(".")
        if (module_name == stem or module_name.startswith(stem + ".")) and len(stem) > best_len:
            best, best_len = cls, len(stem)
    return best


def sdxl_attention_modules(depths: Mapping[str, int] | None = None) -> list[str]:
    """All wrapped projection paths of an SDXL UNet, in UNet order (560 for SDXL base)."""
    depths = SDXL_GROUP_DEPTHS if depths is None else depths
    return [
        f"{group}.transformer_blocks.{n}.{attn}.{proj}"
        for group in SDXL_ATTENTION_GROUPS
        for n in range(depths[group])
        for attn in ("attn1", "attn2")
        for proj in PROJECTIONS
    ]


def expand_block_table(module_names: Iterable[str], table: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Group ``module_names`` by block class: ``{"both": [...], "content_sparse": [...], ...}``."""
    out: dict[str, list[str]] = {cls: [] for cls in BLOCK_CLASSES}
    for name in module_names:
        out[block_class(name, table)].append(name)
    return out
