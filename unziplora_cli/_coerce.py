"""Plain option values without pydantic: start-up time for every command, and our own wording.

Typer (0.26 and later) turns every command-line value into its annotated type through a
pydantic ``TypeAdapter``. Importing pydantic and building those adapters cost about 0.2 s of CPU
on every call — most of what ``unzip list`` or a TAB completion spent — to convert a handful of
strings, paths, numbers and choices. :func:`install_light_coercion` gives Typer a converter for
exactly those plain annotations (``str``, ``bool``, ``int``, ``float``, ``Path``, an ``Enum``, and lists
of them); anything else (custom parsers, tuples, dates, files, clamped numbers) still goes
through Typer's own pydantic path, unchanged.

Usage mistakes then read as ours (``'abc' is not a whole number``) instead of pydantic's
(``Input should be a valid integer, unable to parse string as an integer``).

This reaches into Typer's coercion hook (``typer.core.build_runtime_param``), which is not public
API: if a Typer release lacks it, nothing is installed and Typer converts as before (slower, same
results). ``tests/test_foundation_cli.py`` notices that, because it checks light commands do not
import pydantic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

_MARK = "_unziplora_light"

Convert = Callable[[Any, Any, Any], Any]  # (value, param, ctx) -> converted value; ValueError if bad


def _text(value: Any, param: Any, ctx: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"", "0", "false", "f", "no", "n", "off"}


def _flag(value: Any, param: Any, ctx: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{str(value)!r} is neither true nor false")


def _number(kind: type, low: float | None, high: float | None) -> Convert:
    word = "whole number" if kind is int else "number"

    def convert(value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = kind(str(value).strip())
            except ValueError:
                raise ValueError(f"{str(value)!r} is not a {word}") from None
        if kind is float and not math.isfinite(number):
            raise ValueError(f"{str(value)!r} is not a finite number")
        if low is not None and number < low:
            raise ValueError(f"{number} is below the minimum of {low}")
        if high is not None and number > high:
            raise ValueError(f"{number} is above the maximum of {high}")
        return number

    return convert


def _leaf(annotation: Any, info: Any) -> Convert | None:
    """A converter for one plain annotation, or None when Typer's own path must handle it."""
    from typer._param_types import coerce_cli_choice, coerce_cli_path, routes_to_path

    if getattr(info, "parser", None) is not None:
        return None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        choices = tuple(annotation)
        sensitive = info.case_sensitive
        return lambda value, param, ctx: coerce_cli_choice(value, choices=choices, case_sensitive=sensitive, ctx=ctx)
    if annotation is str:
        return _text
    if annotation is bool:
        return _flag
    if annotation in (int, float):
        if getattr(info, "clamp", False):
            return None
        return _number(annotation, info.min, info.max)
    if annotation is Path and routes_to_path(annotation, info):
        # Typer's own checks (exists, file_okay, readable...) run unchanged; given a Path, they skip pydantic.
        return lambda value, param, ctx: coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    return None


def light_converter(annotation: Any, info: Any) -> Convert | None:
    """The converter for a parameter's (Optional-stripped) annotation: a plain leaf or a list of one."""
    if get_origin(annotation) is list:
        args = get_args(annotation)
        item = _leaf(args[0], info) if len(args) == 1 else None
        if item is None:
            return None

        def each(value: Any, param: Any, ctx: Any) -> list[Any]:
            values = value if isinstance(value, (list, tuple)) else [value]
            return [item(v, param, ctx) for v in values]

        return each
    if get_origin(annotation) is not None:
        return None
    return _leaf(annotation, info)


def install_light_coercion() -> bool:
    """Route plain parameters around pydantic (idempotent); False when this Typer has no such hook."""
    try:
        import typer.core as typer_core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:
        return False
    original = getattr(typer_core, "build_runtime_param", None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    @dataclass(frozen=True)
    class LightRuntimeParam(RuntimeParam):  # type: ignore[misc, valid-type]
        convert: Convert | None = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            assert self.convert is not None
            try:
                return self.convert(value, param, ctx)
            except ValueError as exc:
                raise BadParameter(str(exc), ctx=ctx, param=param) from None

    def build_runtime_param(descriptor: Any) -> Any:
        convert = (
            None
            if descriptor.file_annotation is not None
            else light_converter(descriptor.annotation, descriptor.parameter_info)
        )
        if convert is None:
            return original(descriptor)
        return LightRuntimeParam(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, convert=convert
        )

    setattr(build_runtime_param, _MARK, True)
    typer_core.build_runtime_param = build_runtime_param
    return True
