"""Data on stdout, everything else on stderr.

Commands print results (ids, paths, tables, JSON) with :func:`data`/:func:`emit_json` and talk
to the person with :func:`note` (silenced by ``-q``) and :func:`warn` (always shown).
Rich is imported only where a table or a progress bar is drawn.
"""

from __future__ import annotations

import json
import re
from typing import Any

import typer

# C0 and C1 controls, DEL, and the bidi overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with every control character written out (``\\x1b``): names and headers come from files."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


def data(line: str = "") -> None:
    """One line of real output on stdout."""
    typer.echo(line)


def emit_json(obj: Any) -> None:
    """JSON on stdout, nothing else: ``unzip list --json | jq`` must always parse."""
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def note(message: str, *, quiet: bool = False) -> None:
    """A message for the person at the terminal, on stderr; dropped with ``-q``."""
    if not quiet:
        typer.echo(message, err=True)


def warn(message: str) -> None:
    """A warning on stderr, shown even with ``-q``."""
    typer.echo(f"warning: {message}", err=True)


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def stderr_console() -> Any:
    """A rich Console on stderr (imported lazily: rich costs start-up time)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)
