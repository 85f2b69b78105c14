"""The Typer frame every command hangs on: one app factory, global options, error mapping.

Why a custom group: Typer's standard mode prints Click's multi-line usage blocks and lets library
errors escape as tracebacks. ``UnzipGroup.main`` runs the command in non-standalone mode and turns
every known failure into one ``error: ...`` line on stderr with a fixed exit code — for the real
console script and for ``CliRunner`` tests alike, since both call ``main``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from unziplora_cli._errors import exit_code_for, message_for
from unziplora_cli._usage import usage_message, with_full_stop

DEBUG_ENV = "UNZIPLORA_DEBUG"


def debug_requested(args: Sequence[str] | None) -> bool:
    """``--debug`` anywhere before ``--``, or ``UNZIPLORA_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    for arg in args or ():
        if arg == "--":
            break
        if arg == "--debug":
            return True
    return False


def _say(line: str) -> None:
    typer.echo(line, err=True)


class UnzipGroup(TyperGroup):
    """A TyperGroup whose ``main`` maps errors to one line and an exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(argv)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Exit as exc:  # raised by our own commands
            code = exc.exit_code
        except typer.Abort:
            _say("error: aborted.")
            code = 1
        except KeyboardInterrupt:
            _say("error: interrupted.")
            code = 130
        except typer.TyperException as exc:  # Click's usage errors live under this public base
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                # `unzip` alone asks for help: give it, as help (stdout, exit 0), not as an error.
                # A command called without its arguments gets its help too, but that is a mistake (2).
                is_root = ctx.parent is None
                typer.echo(ctx.get_help(), err=not is_root)
                code = 0 if is_root else 2
            else:
                code = getattr(exc, "exit_code", 2)
                command = getattr(ctx, "command_path", prog_name or "unzip")
                _say(f"error: {with_full_stop(usage_message(exc))} See '{command} --help'.")
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:
                raise
            if debug:
                traceback.print_exc()
            _say(f"error: {message_for(exc)}")
        else:
            code = result if isinstance(result, int) else 0
        _listen_to_phases(quiet=True)  # CliRunner calls main many times in one process
        if standalone_mode:
            sys.exit(code)
        return code


def make_app(**kwargs: Any) -> typer.Typer:
    """Every Typer app of ours: plain (fast) help, -h, no pretty tracebacks, our error group."""
    settings: dict[str, Any] = dict(
        cls=UnzipGroup,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        suggest_commands=True,
    )
    settings.update(kwargs)
    return typer.Typer(**settings)


@dataclass
class GlobalOptions:
    """Options given before the command name (``unzip --registry DIR list``)."""

    registry: Path | None = None
    json: bool = False
    quiet: bool = False
    debug: bool = False


def global_options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    return root.obj


@dataclass(frozen=True)
class Run:
    """What a command needs from the options shared by all commands, merged with the globals."""

    registry: Path | None
    json: bool
    quiet: bool
    debug: bool


def run_options(ctx: typer.Context, *, registry: Path | None = None, json: bool = False, quiet: bool = False) -> Run:
    """Merge per-command ``--registry/--json/-q`` with the global ones (the command's win)."""
    g = global_options(ctx)
    run = Run(registry=registry or g.registry, json=json or g.json, quiet=quiet or g.quiet, debug=g.debug)
    _listen_to_phases(run.quiet)
    return run


def _listen_to_phases(quiet: bool) -> None:
    """Signs of life for this command's long phases (unziplora.activity); none with -q."""
    from unziplora import activity

    previous = activity.set_listener(None)
    if previous is not None and hasattr(previous, "close"):
        previous.close()
    if not quiet:
        from unziplora_cli.progress import PhaseReporter

        activity.set_listener(PhaseReporter())


# Shared option declarations, so a flag's name and help cannot drift between commands.
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry", metavar="DIR", help="Registry directory (default: $UNZIPLORA_HOME, config, or the user data dir)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print only the essential output (ids, paths).")]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        metavar="MODEL",
        help="Base model: Hugging Face id, diffusers folder, .safetensors file, or tiny-sdxl.",
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", metavar="P", help="auto, fp32, fp16 or bf16.")]


def epilog(*examples: str) -> str:
    """A help epilog listing real examples (Click keeps \\b blocks unwrapped)."""
    lines = ["\b", "Examples:"] + [f"  {e}" for e in examples]
    return "\n".join(lines)
