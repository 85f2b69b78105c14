"""Every training setting in one validated dataclass, stored verbatim in each entry.

Defaults are the paper's (ALGORITHM.md 0.1, train.sh at HEAD): 600 steps, rank 64, learning
rates 5e-5 / 5e-5 / 5e-3, similarity lambda 0.5, 3 sample rounds, column ratio 0.1, AdamW with
weight decay 1e-4, gradient clipping 1.0, constant learning rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from unziplora.errors import UsageError

OPTIMIZERS = ("adamw", "adamw8bit")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
# Seeds feed torch generators as seed, seed + 1 and seed * 1_000_003 + epoch (loop.image_order),
# which must stay below 2**64; 32 bits leave room for all three.
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    steps: int = 600
    rank: int = 64
    content_lr: float = 5e-5
    style_lr: float = 5e-5
    mask_lr: float = 5e-3
    similarity_lambda: float = 0.5
    sample_times: int = 3
    column_ratio: float = 0.1
    prompt_separation: bool = True
    column_separation: bool = True
    block_separation: bool = True
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 0
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    resolution: int = 1024
    gradient_checkpointing: bool | None = None  # None: on for GPU, off on CPU
    save_precision: str = "fp16"
    init: str = "official"
    preview_every: int = 0
    preview_steps: int = 25
    checkpoint_every: int = 0
    faithful: bool = False  # ALGORITHM 9 #4/#7 as the official code, and its precision recipe

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the option for any value training cannot use."""

        def bad(option: str, why: str) -> None:
            raise UsageError(f"--{option.replace('_', '-')} {why}")

        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            bad("seed", f"must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        for name in ("steps", "rank", "sample_times", "resolution"):
            if int(getattr(self, name)) <= 0:
                bad(name, f"must be a positive integer, got {getattr(self, name)}")
        for name in ("content_lr", "style_lr", "mask_lr", "max_grad_norm"):
            if not float(getattr(self, name)) > 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
        if self.similarity_lambda < 0 or self.weight_decay < 0 or self.noise_offset < 0:
            bad("similarity_lambda" if self.similarity_lambda < 0 else "noise_offset", "must not be negative")
        if not 0 < self.column_ratio <= 1:
            bad("column_ratio", f"must be in (0, 1], got {self.column_ratio}")
        if self.resolution % 8:
            bad("resolution", f"must be a multiple of 8 (SDXL's VAE downsamples by 8), got {self.resolution}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            bad("min_snr_gamma", f"must be positive, got {self.min_snr_gamma}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.save_precision not in SAVE_PRECISIONS:
            bad("save_precision", f"must be one of {', '.join(SAVE_PRECISIONS)}, got {self.save_precision!r}")
        if self.init not in ("official", "zero"):
            bad("init", f"must be official or zero, got {self.init!r}")
        if self.preview_steps <= 0:
            bad("preview_steps", f"must be a positive integer, got {self.preview_steps}")
        if self.preview_every < 0 or self.checkpoint_every < 0:
            bad("preview_every" if self.preview_every < 0 else "checkpoint_every", "must not be negative")

    def selection_warning(self, image_count: int) -> str | None:
        """A line for the user when the schedule leaves no step for column selection."""
        period = -(-self.steps // self.sample_times)
        if self.column_separation and image_count >= period:
            return (
                f"--steps {self.steps} with --sample-times {self.sample_times} gives selection rounds of {period} step(s), "
                f"not more than the {image_count} image(s) per epoch: no columns will be selected, so content and style "
                "will not be separated; train for more steps"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a stored record, ignoring keys a newer version may have added."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
