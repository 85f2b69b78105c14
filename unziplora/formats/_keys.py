"""Our internal LoRA key scheme, split into and rebuilt from per-module (down, up) pairs.

Why: every converter works per module; keeping the key grammar in one place means the exporters
and importers cannot drift apart. Internal keys are diffusers/PEFT names
(``unet.<module>.lora_A.weight`` = down ``[r, in]``, ``unet.<module>.lora_B.weight`` = up ``[out, r]``).
No torch import: tensors are only passed through (shape checks use ``.shape``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "unet."
DOWN_SUFFIX = ".lora_A.weight"
UP_SUFFIX = ".lora_B.weight"


def peft_key(module: str, which: str) -> str:
    """``peft_key("down_blocks...to_q", "down")`` -> ``unet.down_blocks...to_q.lora_A.weight``."""
    return UNET_PREFIX + module + (DOWN_SUFFIX if which == "down" else UP_SUFFIX)


def split_pairs(
    state_dict: Mapping[str, torch.Tensor], *, error: type[Exception] = ValueError
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{unet.<m>.lora_A.weight, unet.<m>.lora_B.weight}`` -> ``{<m>: (down, up)}``, checked.

    Raises:
        error: a key outside the scheme, a module with only one factor, or mismatched shapes.
    """
    downs: dict[str, Any] = {}
    ups: dict[str, Any] = {}
    for key, value in state_dict.items():
        if not key.startswith(UNET_PREFIX):
            raise error(f"LoRA key {key!r} does not start with {UNET_PREFIX!r}")
        if key.endswith(DOWN_SUFFIX):
            downs[key[len(UNET_PREFIX) : -len(DOWN_SUFFIX)]] = value
        elif key.endswith(UP_SUFFIX):
            ups[key[len(UNET_PREFIX) : -len(UP_SUFFIX)]] = value
        else:
            raise error(f"LoRA key {key!r} is neither {DOWN_SUFFIX!r} nor {UP_SUFFIX!r}")
    lonely = sorted(set(downs) ^ set(ups))
    if lonely:
        raise error(f"LoRA module {lonely[0]!r} has only one of its two factors ({len(lonely)} such modules)")
    pairs: dict[str, tuple[Any, Any]] = {}
    for module, down in downs.items():
        up = ups[module]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise error(
                f"LoRA module {module!r} has factors of shapes {tuple(down.shape)} and {tuple(up.shape)}; "
                "expected [r, in] and [out, r]"
            )
        if down.shape[0] == 0 or down.numel() == 0 or up.numel() == 0:
            raise error(
                f"LoRA module {module!r} has empty factors of shapes {tuple(down.shape)} and {tuple(up.shape)} (rank 0)"
            )
        pairs[module] = (down, up)
    return pairs


def join_pairs(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_pairs`."""
    out: dict[str, Any] = {}
    for module, (down, up) in pairs.items():
        out[peft_key(module, "down")] = down
        out[peft_key(module, "up")] = up
    return out


def module_ranks(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Rank of each module (rows of its down factor)."""
    return {m: int(d.shape[0]) for m, (d, _u) in split_pairs(state_dict).items()}
