"""Wiring only: the command list, the app factory, and the entry points.

Light at import (no Typer): ``unzip archive.zip`` is decided and handed to Info-ZIP before
anything of the CLI frame loads, and a call naming one command builds only that command.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from unziplora_cli import passthrough

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


def build_app(prog: str = "unzip", *, only: str | None = None) -> Any:
    """The root app (a ``typer.Typer``) with every command registered, or only the command ``only``.

    ``only`` is for the console scripts: a call that names its command needs no other, and
    building each command's parameters costs start-up time on every call.
    """
    from unziplora_cli._coerce import install_light_coercion
    from unziplora_cli._frame import make_app
    from unziplora_cli._root import HELP, root

    install_light_coercion()
    app = make_app(name=prog, help=HELP)
    app.callback()(root)
    for module_name, names in COMMAND_MODULES.items():
        if only is not None and only not in names:
            continue
        module = importlib.import_module(f"unziplora_cli.commands.{module_name}")
        module.register(app)
    return app


def _completed_words() -> list[str] | None:
    """During shell completion, the words after the program name that are already typed out
    (the one being typed excluded, as Click and Typer split them); None when this is no completion."""
    if not any(key.startswith("_UNZIP") and key.endswith("_COMPLETE") for key in os.environ):
        return None
    import shlex

    try:
        if "COMP_WORDS" in os.environ:  # bash: the words, and the index of the one being typed
            words = shlex.split(os.environ["COMP_WORDS"])
            return words[1 : int(os.environ.get("COMP_CWORD", len(words)))]
        typed = os.environ.get("_TYPER_COMPLETE_ARGS", "")  # zsh, fish, powershell
        words = shlex.split(typed)[1:]
        return words if typed.endswith(" ") else words[:-1]
    except ValueError:
        return []


def command_named(argv: Sequence[str]) -> str | None:
    """The command a call names (``unzip --json list`` -> ``list``), or None: then every command is needed.

    During TAB completion the word being typed does not count: ``unzip li<TAB>`` needs them all.
    """
    words = _completed_words()
    word = passthrough.first_word(argv if words is None else words)
    return word if word in COMMAND_NAMES else None


def _run(prog: str, argv: list[str]) -> None:
    build_app(prog, only=command_named(argv))(prog_name=prog)


def main() -> None:
    """Console script ``unzip``: ours, unless the call is meant for Info-ZIP's unzip."""
    argv = sys.argv[1:]
    if passthrough.wants_passthrough(argv, COMMAND_NAMES):
        other = passthrough.other_unzip()
        if other is not None:
            passthrough.exec_other(other, argv)
        word = passthrough.first_word(argv)
        print(
            f"error: '{word}' is not an unzip command (see 'unzip --help'); to extract zip archives, "
            "install Info-ZIP unzip (e.g. apt-get install unzip).",
            file=sys.stderr,
        )
        sys.exit(2)
    _run("unzip", argv)


def main_unziplora() -> None:
    """Console script ``unziplora``: always this tool."""
    _run("unziplora", sys.argv[1:])
