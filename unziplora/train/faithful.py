"""The official precision recipe that ``unzip train --faithful`` switches to (ALGORITHM.md 6.3, 9).

The official run trains under fp16 autocast with a GradScaler and 8-bit AdamW (bitsandbytes).
:func:`faithful_recipe` maps a request onto that recipe for the machine at hand and says, in
``notes``, every place where it cannot: fp16 autocast does not exist on CPU here (training then
runs in fp32, the selection and RESET rules still follow the official code), and without
bitsandbytes the optimizer stays torch's AdamW. The notes are shown to the user and stored in the
entry record, so an entry never claims a recipe it did not use.

This module is light: it imports no torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from unziplora.errors import ConfigError

OFFICIAL_PRECISION = "fp16"
OFFICIAL_OPTIMIZER = "adamw8bit"


@dataclass(frozen=True)
class FaithfulRecipe:
    """Precision and optimizer a faithful run uses on this machine, and why if not the official ones."""

    precision: str
    optimizer: str
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, object]:
        return {
            "selection": "official (strictly above the k-th score)",
            "reset_merge_grads": "unmasked",
            "precision": self.precision,
            "optimizer": self.optimizer,
            "official_precision": self.precision == OFFICIAL_PRECISION,
            "official_optimizer": self.optimizer == OFFICIAL_OPTIMIZER,
            "notes": list(self.notes),
        }


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def faithful_recipe(device: str, precision: str, optimizer: str, *, have_8bit: bool | None = None) -> FaithfulRecipe:
    """The recipe for a resolved ``device`` and the *requested* precision/optimizer.

    An explicit request that contradicts the official recipe (``--precision bf16``) is refused
    rather than silently overridden; ``auto`` and the default optimizer are mapped to it.
    """
    have_8bit = bitsandbytes_available() if have_8bit is None else have_8bit
    notes: list[str] = []
    on_cuda = device.startswith("cuda")
    if precision not in ("auto", OFFICIAL_PRECISION):
        raise ConfigError(
            f"--faithful trains with the official fp16 recipe; --precision {precision} contradicts it "
            "(drop --precision or pass fp16)."
        )
    if on_cuda:
        chosen_precision = OFFICIAL_PRECISION
    elif device.startswith("cpu"):
        if precision == OFFICIAL_PRECISION:
            raise ConfigError("--faithful --precision fp16 needs a GPU: fp16 autocast is not available on CPU here.")
        chosen_precision = "fp32"
        notes.append(
            "fp16 autocast with loss scaling is not available on CPU: trained in fp32; the official "
            "column-selection and RESET rules still apply, the official precision recipe does not"
        )
    else:  # mps: fp16 works, the scaler path is torch's
        chosen_precision = OFFICIAL_PRECISION
    chosen_optimizer = optimizer
    if optimizer == "adamw":
        if have_8bit and on_cuda:
            chosen_optimizer = OFFICIAL_OPTIMIZER
        elif not have_8bit:
            notes.append(
                "bitsandbytes is not installed: torch AdamW instead of the official 8-bit AdamW (pip install 'unziplora[8bit]')"
            )
        else:
            notes.append("8-bit AdamW needs CUDA: torch AdamW instead of the official 8-bit AdamW")
    return FaithfulRecipe(precision=chosen_precision, optimizer=chosen_optimizer, notes=notes)
