"""The root command: its help text and the global options given before a command name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unziplora import __version__
from unziplora_cli._frame import GlobalOptions

HELP = (
    "Split one image into a content LoRA and a style LoRA on SDXL (UnZipLoRA), keep them in a "
    "local registry, generate with them and export them."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unziplora {__version__}")
        raise typer.Exit(0)


def root(
    ctx: typer.Context,
    registry: Annotated[
        Path | None, typer.Option("--registry", metavar="DIR", help="Registry directory for this call.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only essential output; no progress.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also UNZIPLORA_DEBUG=1).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(registry=registry, json=json, quiet=quiet, debug=debug)
