"""The UnZipLoRA method on unmodified diffusers (ALGORITHM.md 1-5, 8).

Heavy module (imports torch): import it only inside functions of the light packages.

* :mod:`.layer` — :class:`UnZipLoRALinear`, the two-branch LoRA wrapper of one projection;
* :mod:`.processor` — prompt separation as an SDPA attention processor;
* :mod:`.inject` — wrap / unwrap a UNet, modes, folding, optimizer groups;
* :mod:`.blocks` — block separation as a table;
* :mod:`.selection` / :mod:`.columns` — column scores and the column-separation scheduler;
* :mod:`.state` — PEFT-named LoRA state dicts, merges/masks, safetensors I/O.
"""

from unziplora.method.blocks import (
    BLOCK_CLASSES,
    BLOCK_TABLE,
    SDXL_ATTENTION_GROUPS,
    SDXL_GROUP_DEPTHS,
    block_class,
    expand_block_table,
    sdxl_attention_modules,
)
from unziplora.method.columns import ColumnSeparation, Phase
from unziplora.method.inject import (
    fold,
    inject_unziplora,
    mode,
    param_groups,
    remove_unziplora,
    set_mode,
    set_prompt_separation,
    set_scales,
    unfold,
    unziplora_layers,
)
from unziplora.method.layer import BRANCHES, MODES, UnZipLoRALinear
from unziplora.method.processor import UnZipLoRAAttnProcessor
from unziplora.method.selection import (
    DEFAULT_THRESHOLD,
    column_scores,
    columns_per_round,
    official_columns,
    select_columns,
    top_k_columns,
)
from unziplora.method.state import (
    adapter_state_dict,
    load_adapter_state_dict,
    load_unziplora_state,
    lora_state_dict,
    merge_state_dict,
    read_lora_file,
    write_lora_file,
)

__all__ = [
    "BLOCK_CLASSES",
    "BLOCK_TABLE",
    "BRANCHES",
    "DEFAULT_THRESHOLD",
    "MODES",
    "SDXL_ATTENTION_GROUPS",
    "SDXL_GROUP_DEPTHS",
    "ColumnSeparation",
    "Phase",
    "UnZipLoRAAttnProcessor",
    "UnZipLoRALinear",
    "adapter_state_dict",
    "block_class",
    "column_scores",
    "columns_per_round",
    "expand_block_table",
    "fold",
    "inject_unziplora",
    "load_adapter_state_dict",
    "load_unziplora_state",
    "lora_state_dict",
    "merge_state_dict",
    "mode",
    "official_columns",
    "param_groups",
    "read_lora_file",
    "remove_unziplora",
    "sdxl_attention_modules",
    "select_columns",
    "set_mode",
    "set_prompt_separation",
    "set_scales",
    "top_k_columns",
    "unfold",
    "unziplora_layers",
    "write_lora_file",
]
