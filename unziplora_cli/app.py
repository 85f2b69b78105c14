"""Wiring only: the root app, its global options, the command list, and the entry points."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from unziplora import __version__
from unziplora_cli import passthrough
from unziplora_cli._frame import GlobalOptions, make_app

# module under unziplora_cli.commands -> the command names it registers. The passthrough check
# reads these names without importing the modules; a test keeps them equal to what is registered.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "doctor": ("doctor",),
    "registry": ("list", "show", "rm", "init"),
    "train": ("train",),
    "generate": ("compose", "restyle"),
    "transfer": ("export", "import"),
    "gallery": ("gallery",),
    "evaluate": ("eval",),
}
COMMAND_NAMES: set[str] = {name for names in COMMAND_MODULES.values() for name in names}

HELP = (
    "Split one image into a content LoRA and a style LoRA on SDXL (UnZipLoRA), keep them in a "
    "local registry, generate with them and export them."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unziplora {__version__}")
        raise typer.Exit(0)


def _root(
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


def build_app(prog: str = "unzip") -> typer.Typer:
    """The root app with every command registered."""
    app = make_app(name=prog, help=HELP)
    app.callback()(_root)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"unziplora_cli.commands.{module_name}")
        module.register(app)
    return app


def main() -> None:
    """Console script ``unzip``: ours, unless the call is meant for Info-ZIP's unzip."""
    argv = sys.argv[1:]
    if passthrough.wants_passthrough(argv, COMMAND_NAMES):
        other = passthrough.other_unzip()
        if other is not None:
            passthrough.exec_other(other, argv)
        word = passthrough.first_word(argv)
        typer.echo(
            f"error: '{word}' is not an unzip command (see 'unzip --help'); to extract zip archives, "
            "install Info-ZIP unzip (e.g. apt-get install unzip).",
            err=True,
        )
        sys.exit(2)
    build_app("unzip")(prog_name="unzip")


def main_unziplora() -> None:
    """Console script ``unziplora``: always this tool."""
    build_app("unziplora")(prog_name="unziplora")
