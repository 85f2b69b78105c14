"""Generation settings: one validated dataclass shared by compose, restyle, previews and notebooks.

Light module (no torch), so the CLI can build and check options before paying for imports.
Defaults follow the official inference (ALGORITHM.md 7): guidance 5.0, 50 steps, DDPM for the
combined (content + style) mode and Euler for content-only and style-only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from unziplora.errors import UsageError

# name -> (diffusers scheduler class, one-line description for --help)
SAMPLERS: dict[str, tuple[str, str]] = {
    "ddpm": ("DDPMScheduler", "DDPM, the official sampler for content + style"),
    "euler": ("EulerDiscreteScheduler", "Euler, the official sampler for content or style alone"),
    "euler-a": ("EulerAncestralDiscreteScheduler", "Euler ancestral"),
    "dpmpp": ("DPMSolverMultistepScheduler", "DPM-Solver++ multistep, good at 20-30 steps"),
    "ddim": ("DDIMScheduler", "DDIM"),
}
# The official defaults per mode (ALGORITHM.md 7.1-7.3, 9 #18).
DEFAULT_SAMPLERS: dict[str, str] = {"both": "ddpm", "content": "euler", "style": "euler"}
MODES: tuple[str, ...] = ("both", "content", "style")

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0
DEFAULT_STRENGTH = 0.6
MAX_IMAGES = 1000


def sampler_help() -> str:
    """The ``--sampler`` help text, listing every name and the per-mode defaults."""
    names = ", ".join(SAMPLERS)
    return f"Sampler: {names} [default: ddpm with content and style, euler with only one of them]."


def default_sampler(mode: str) -> str:
    if mode not in DEFAULT_SAMPLERS:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return DEFAULT_SAMPLERS[mode]


def check_sampler(name: str | None) -> str | None:
    """Normalise a sampler name (case, ``_``); None stays None (meaning: the mode's default)."""
    if name is None:
        return None
    key = name.strip().lower().replace("_", "-")
    aliases = {"euler-ancestral": "euler-a", "euler_a": "euler-a", "dpm++": "dpmpp", "dpm-solver": "dpmpp"}
    key = aliases.get(key, key)
    if key not in SAMPLERS:
        raise UsageError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}.")
    return key


@dataclass(frozen=True)
class GenerationOptions:
    """How to sample; every field maps one-to-one onto a CLI flag.

    ``width``/``height`` None mean the base model's native size (1024 for SDXL, 64 for tiny-sdxl;
    with ``--image`` the picture's aspect at that area). ``sampler`` None means the mode's official
    default. ``prompt_separation`` False is ``--single-prompt``: the combined prompt drives every
    branch, as a combined exported LoRA would. ``strength`` only matters when restyling a picture.
    """

    num: int = 1
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    content_scale: float = 1.0
    style_scale: float = 1.0
    prompt_separation: bool = True
    strength: float = DEFAULT_STRENGTH

    def __post_init__(self) -> None:
        if not 1 <= self.num <= MAX_IMAGES:
            raise UsageError(f"--num must be between 1 and {MAX_IMAGES}; got {self.num}.")
        if not 0 <= self.seed < 2**63 - MAX_IMAGES:
            raise UsageError(f"--seed must be a non-negative integer below 2**63; got {self.seed}.")
        if self.steps < 1 or self.steps > 1000:
            raise UsageError(f"--steps must be between 1 and 1000; got {self.steps}.")
        if not 0.0 <= self.guidance <= 100.0:
            raise UsageError(f"--guidance must be between 0 and 100; got {self.guidance}.")
        for flag, size in (("--width", self.width), ("--height", self.height)):
            if size is not None and (size < 8 or size > 8192 or size % 8):
                raise UsageError(f"{flag} must be a multiple of 8 between 8 and 8192; got {size}.")
        for flag, scale in (("--content-scale", self.content_scale), ("--style-scale", self.style_scale)):
            if not -10.0 <= scale <= 10.0:
                raise UsageError(f"{flag} must be between -10 and 10; got {scale}.")
        if not 0.0 < self.strength <= 1.0:
            raise UsageError(f"--strength must be above 0 and at most 1; got {self.strength}.")
        object.__setattr__(self, "sampler", check_sampler(self.sampler))
        if self.negative is not None and not self.negative.strip():
            object.__setattr__(self, "negative", None)

    def sampler_for(self, mode: str) -> str:
        """The sampler actually used in ``mode``."""
        return self.sampler or default_sampler(mode)

    def seeds(self) -> list[int]:
        """Image ``i`` uses ``seed + i``, so any single image can be re-made alone."""
        return [self.seed + i for i in range(self.num)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
