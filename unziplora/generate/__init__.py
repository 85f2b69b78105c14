"""Generation with registry entries: compose content and style, restyle, training previews.

Importing this package is cheap (no torch); the names below load their module on first use::

    from unziplora.generate import generate, save_results
    results = generate("cat-sketch-3f2a", "rose-popart-91c0", "on a beach", num=2)
    save_results(results, "out/")

* :func:`generate` / :func:`resolve` / :func:`open_studio` (:mod:`.api`): ids in, images out;
* :class:`Studio` / :class:`Generated` (:mod:`.engine`): one loaded base serving many calls;
* :class:`GenerationOptions`, :data:`SAMPLERS` (:mod:`.options`): validated settings;
* :func:`sample_with_layers`, :func:`preview_sheet` (:mod:`.preview`): samples for training;
* :func:`save_results` (:mod:`.output`), :func:`read_png_meta` (:mod:`.pngmeta`), :func:`grid` (:mod:`.sheet`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES: dict[str, str] = {
    "generate": "api",
    "resolve": "api",
    "open_studio": "api",
    "Request": "api",
    "Studio": "engine",
    "Generated": "engine",
    "GenerationOptions": "options",
    "SAMPLERS": "options",
    "DEFAULT_SAMPLERS": "options",
    "sample_with_layers": "preview",
    "preview_sheet": "preview",
    "save_results": "output",
    "default_out_dir": "output",
    "read_png_meta": "pngmeta",
    "grid": "sheet",
}

__all__ = [
    "DEFAULT_SAMPLERS",
    "SAMPLERS",
    "Generated",
    "GenerationOptions",
    "Request",
    "Studio",
    "default_out_dir",
    "generate",
    "grid",
    "open_studio",
    "preview_sheet",
    "read_png_meta",
    "resolve",
    "sample_with_layers",
    "save_results",
]

if TYPE_CHECKING:  # for editors and type checkers; at run time the names load lazily
    from unziplora.generate.api import Request, generate, open_studio, resolve
    from unziplora.generate.engine import Generated, Studio
    from unziplora.generate.options import DEFAULT_SAMPLERS, SAMPLERS, GenerationOptions
    from unziplora.generate.output import default_out_dir, save_results
    from unziplora.generate.pngmeta import read_png_meta
    from unziplora.generate.preview import preview_sheet, sample_with_layers
    from unziplora.generate.sheet import grid


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'unziplora.generate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"unziplora.generate.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
