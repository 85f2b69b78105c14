"""Schedulers by name, each built from the base pipeline's own scheduler config.

Building from ``pipe.scheduler.config`` keeps the base's noise schedule (SDXL: scaled-linear
betas, leading spacing, steps offset 1), which is exactly what the official code did when it
plugged ``DDPMScheduler`` into SDXL (ALGORITHM.md 7.1). A fresh scheduler per call also means no
state leaks between calls that share one pipeline.
"""

from __future__ import annotations

from typing import Any

from unziplora.generate.options import SAMPLERS, check_sampler


def make_scheduler(config: Any, name: str) -> Any:
    """A new diffusers scheduler ``name`` (see :data:`SAMPLERS`) from a scheduler ``config``."""
    import diffusers

    key = check_sampler(name)
    assert key is not None
    cls = getattr(diffusers, SAMPLERS[key][0])
    return cls.from_config(config)
