"""Keep ``unzip archive.zip`` working after this tool is installed.

Info-ZIP's extractor owns the name ``unzip`` on most systems. When our ``unzip`` is called with a
first word that is not one of our commands (after skipping our global options), and another
``unzip`` executable is on PATH, we ``exec`` that one with the arguments unchanged. The
``unziplora`` entry point never passes through.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Global options of ours that may stand before the command; value-taking ones listed separately.
FLAG_OPTIONS = {"--json", "-q", "--quiet", "--debug", "--version", "-h", "--help", "--install-completion"}
VALUE_OPTIONS = {"--registry", "--show-completion"}


def first_word(argv: Sequence[str]) -> str | None:
    """The first argument that is not one of our global options (or their values)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in FLAG_OPTIONS:
            continue
        if arg in VALUE_OPTIONS:
            skip = True
            continue
        if any(arg.startswith(opt + "=") for opt in VALUE_OPTIONS):
            continue
        return arg
    return None


def wants_passthrough(argv: Sequence[str], commands: set[str]) -> bool:
    """True when the call is not addressed to us: a first word that is no command of ours."""
    if any(key.endswith("_COMPLETE") and key.startswith("_UNZIP") for key in os.environ):
        return False  # shell completion for our own command
    word = first_word(argv)
    if word is None or word in commands:
        return False
    return not _looks_like_our_typo(word, commands)


def _looks_like_our_typo(word: str, commands: set[str]) -> bool:
    """``unzip trian x.png``: a near-miss of a command of ours, and no archive of that name here.

    Info-ZIP would answer "cannot find or open trian, trian.zip or trian.ZIP"; ours suggests
    ``train``. An existing file (``trian`` or ``trian.zip``) still goes to Info-ZIP.
    """
    if word.startswith("-"):  # an Info-ZIP option (`unzip -l x.zip`): never one of our commands
        return False
    from unziplora_cli._usage import near_command

    if near_command(word, commands) is None:
        return False
    return not any(Path(word + suffix).exists() for suffix in ("", ".zip", ".ZIP"))


def _is_ours(path: Path) -> bool:
    try:
        if path.resolve() == Path(sys.argv[0]).resolve():
            return True
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return True  # unreadable: do not exec it
    return b"unziplora_cli" in head


def other_unzip() -> str | None:
    """The first ``unzip`` on PATH that is not this program."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder:
            continue
        candidate = Path(folder) / "unzip"
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_ours(candidate):
            return str(candidate)
    return None


def exec_other(path: str, argv: Sequence[str]) -> None:
    """Replace this process with the other ``unzip`` (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, ["unzip", *argv])
