"""Every training option, declared once: its default, bounds and help text in one dataclass field.

Everything else is derived from :class:`TrainConfig`'s fields: the ``unzip train`` flags
(``unziplora_cli.commands.train``), the ``[train]`` keys of ``config.toml``
(:mod:`unziplora.settings`), the ``settings`` of ``entry.json`` and the ``config`` of a run's
``run.json`` (both :meth:`TrainConfig.to_dict`), and what ``--resume`` may change. A field's
name is the option's one name end to end: ``merge_lr`` is ``--merge-lr`` is ``settings.merge_lr``.
Records written by older versions under an old name (``mask_lr``) still load
(:meth:`TrainConfig.from_dict`), and the old flag stays a hidden alias.

Defaults are the paper's (ALGORITHM.md 0.1, train.sh at HEAD): 600 steps, rank 64, learning
rates 5e-5 / 5e-5 / 5e-3, similarity lambda 0.5, 3 sample rounds, column ratio 0.1, AdamW with
weight decay 1e-4, gradient clipping 1.0, constant learning rate. The resolution defaults to the
base's native size (1024 for SDXL, 64 for tiny-sdxl), resolved once the base is known.

This module is light (no torch).
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any

from unziplora.errors import UsageError

OPTIMIZERS = ("adamw", "adamw8bit")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
INITS = ("official", "zero")
# Seeds feed torch generators as seed, seed + 1 and seed * 1_000_003 + epoch (loop.image_order),
# which must stay below 2**64; 32 bits leave room for all three.
MAX_SEED = 2**32 - 1
# SDXL's VAE downsamples by 8, so a side must be a multiple of 8. Below 64 px SDXL's deepest UNet
# level is 2x2 latent pixels; 2048 px is twice SDXL's native 1024: four times its pixels and its
# activation memory per step, larger than any size the base was trained at. (65536 px, once
# accepted, loaded the base and trained for minutes until the kernel killed the process.)
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048


@dataclass(frozen=True)
class Option:
    """How one :class:`TrainConfig` field is offered, bounded and stored."""

    help: str
    low: float | None = None  # smallest allowed value (inclusive unless low_open)
    low_open: bool = False
    high: float | None = None  # largest allowed value (inclusive)
    multiple_of: int | None = None
    choices: tuple[str, ...] = ()
    why: str = ""  # said with a refusal of the bounds
    flag: str | None = None  # the Click declaration when it is not --<name> (boolean pairs)
    metavar: str | None = None
    default_text: str = ""  # the default in words, where it is not a value (None: decided later)
    cli: bool = True  # offered as a flag of unzip train
    config_file: bool = False  # may be set under [train] in config.toml
    resume_safe: bool = False  # may differ from the run's stored value with --resume
    old_names: tuple[str, ...] = ()  # names older versions wrote (read on load; hidden flag aliases)


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field carrying its :class:`Option` (the one place an option is declared)."""
    return field(default=default, metadata={"option": Option(help=help, **spec)})


@dataclass
class TrainConfig:
    steps: int = option(600, "Optimizer steps (the paper's 600, for every base).", low=1, config_file=True)
    rank: int = option(64, "LoRA rank of each branch.", low=1, config_file=True)
    resolution: int | None = option(
        None,
        "Training size in pixels.",
        default_text="the base's native size: 1024 for SDXL, 64 for tiny-sdxl",
        low=MIN_RESOLUTION,
        high=MAX_RESOLUTION,
        multiple_of=8,
        why="SDXL's VAE works in blocks of 8 px; 2048 is twice SDXL's native side, 4x its pixels and memory",
        config_file=True,
    )
    content_lr: float = option(5e-5, "Content LoRA learning rate.", low=0, low_open=True)
    style_lr: float = option(5e-5, "Style LoRA learning rate.", low=0, low_open=True)
    merge_lr: float = option(5e-3, "Merge-vector learning rate.", low=0, low_open=True, old_names=("mask_lr",))
    similarity_lambda: float = option(0.5, "Weight of the merge orthogonality loss.", low=0)
    sample_times: int = option(3, "Column-selection rounds.", low=1)
    column_ratio: float = option(0.1, "Share of columns selected per round.", low=0, low_open=True, high=1)
    prompt_separation: bool = option(True, "Ablation --no-prompt-separation: one prompt for all branches.")
    column_separation: bool = option(True, "Ablation --no-column-separation: no column masks or merges.")
    block_separation: bool = option(True, "Ablation --no-block-separation: every block both-sparse.")
    optimizer: str = option("adamw", "adamw or adamw8bit (needs the 8bit extra).", choices=OPTIMIZERS)
    weight_decay: float = option(1e-4, "AdamW weight decay.", low=0, cli=False)
    adam_beta1: float = option(0.9, "AdamW beta1.", low=0, high=1, cli=False)
    adam_beta2: float = option(0.999, "AdamW beta2.", low=0, high=1, cli=False)
    adam_epsilon: float = option(1e-8, "AdamW epsilon.", low=0, low_open=True, cli=False)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", low=0, low_open=True, cli=False)
    seed: int = option(0, "Random seed.", low=0, high=MAX_SEED)
    min_snr_gamma: float | None = option(None, "Min-SNR loss weighting (off by default).", low=0, low_open=True)
    noise_offset: float = option(0.0, "Offset noise strength (0: off).", low=0)
    gradient_checkpointing: bool | None = option(
        None, "Recompute activations in backward (less memory).", default_text="on for GPU, off on CPU"
    )
    save_precision: str = option("fp16", "fp16, bf16 or fp32 payloads.", choices=SAVE_PRECISIONS)
    init: str = option("official", "LoRA initialisation.", choices=INITS, cli=False)
    preview_every: int = option(
        0, "Write preview samples every N steps (0: never).", low=0, metavar="N", resume_safe=True
    )
    preview_steps: int = option(25, "Sampling steps for previews.", low=1, resume_safe=True)
    checkpoint_every: int = option(
        0, "Checkpoint every N steps (0: only on Ctrl-C).", low=0, metavar="N", resume_safe=True
    )
    faithful: bool = option(
        False,
        "The official code's numerics: its column rule, unmasked RESET merge grads, fp16 + 8-bit AdamW.",
        config_file=True,
    )  # ALGORITHM 9 #4/#7 as the official code, and its precision recipe

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UsageError naming the flag for any value training cannot use."""
        for f in fields(self):
            problem = value_problem(f.name, getattr(self, f.name))
            if problem:
                raise UsageError(f"{flag_name(f.name)} {problem}")

    def selection_warning(self, image_count: int) -> str | None:
        """The one line for the user when the schedule leaves no step for column selection.

        The scheduler (``method.columns.ColumnSeparation``) selects at step ``E`` of every period
        of ``P = ceil(steps / sample_times)`` steps, so with ``E >= P`` images it never selects.
        """
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
        """Build from a stored record (entry settings, run config), reading old key names too.

        Keys a newer version may have added are ignored.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, old in renamed().items():
            if old in data and name not in values:
                values[name] = data[old]
        return cls(**values)

    def with_resolution(self, native: int) -> TrainConfig:
        """This config with the base's native size where no resolution was chosen."""
        return self if self.resolution is not None else replace(self, resolution=native)


def options() -> dict[str, Option]:
    """Every training option by field name, in declaration order."""
    return {f.name: f.metadata["option"] for f in fields(TrainConfig)}


@cache
def kinds() -> dict[str, type]:
    """The value type of each option (``int`` for ``int | None``)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if args else hint
    return out


def defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(TrainConfig)}


def renamed() -> dict[str, str]:
    """Current name -> old name, for every option older versions stored under another name."""
    return {name: old for name, opt in options().items() for old in opt.old_names}


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be option ``name`` (text after the flag, e.g. "must be positive, got 0"), or None."""
    opt, kind = options()[name], kinds()[name]
    if value is None:
        return None if defaults()[name] is None else f"must be given, got {value!r}"
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind is str:
        if opt.choices and value not in opt.choices:
            return f"must be one of {', '.join(opt.choices)}, got {value!r}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return f"must be {'an integer' if kind is int else 'a number'}, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    low, high = opt.low, opt.high
    too_low = low is not None and (value <= low if opt.low_open else value < low)
    too_high = high is not None and value > high
    if not too_low and not too_high and not (opt.multiple_of and value % opt.multiple_of):
        return None
    why = f" ({opt.why})" if opt.why else ""
    if opt.multiple_of:
        return f"must be a multiple of {opt.multiple_of} from {_number(low)} to {_number(high)}, got {value}{why}"
    if kind is int and low is not None and high is not None:
        return f"must be an integer from {_number(low)} to {_number(high)}, got {value}"
    if kind is int and low == 1:
        return f"must be a positive integer, got {value}"
    if low is not None and high is not None:
        return f"must be in {'(' if opt.low_open else '['}{_number(low)}, {_number(high)}], got {value}"
    if low == 0:
        return f"must be positive, got {value}" if opt.low_open else f"must not be negative, got {value}"
    return f"must be at least {_number(low)}, got {value}" if low is not None else f"must be at most {high}"
