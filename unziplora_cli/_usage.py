"""Usage mistakes in words a user of LoRA tools understands.

Click's own wording is kept where it is clear ("No such option: --x"), its punctuation fixed
("Did you mean 'train'?." read badly), and options people bring from other trainers (Kohya's
sd-scripts, diffusers' example scripts) point at ours instead of at whatever is spelled alike
(``--lr`` used to suggest ``--mask-lr``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

# Options of other LoRA trainers -> ours. Only hints whose targets the command has are shown.
FOREIGN_OPTIONS: dict[str, tuple[str, ...]] = {
    "--lr": ("--content-lr", "--style-lr"),
    "--learning-rate": ("--content-lr", "--style-lr"),
    "--unet-lr": ("--content-lr", "--style-lr"),
    "--network-dim": ("--rank",),
    "--lora-rank": ("--rank",),
    "--dim": ("--rank",),
    "--max-train-steps": ("--steps",),
    "--num-train-steps": ("--steps",),
    "--iterations": ("--steps",),
    "--pretrained-model-name-or-path": ("--base",),
    "--model": ("--base",),
    "--ckpt": ("--base",),
    "--mixed-precision": ("--precision",),
    "--instance-prompt": ("--prompt",),
    "--checkpointing-steps": ("--checkpoint-every",),
    "--save-every-n-steps": ("--checkpoint-every",),
    "--output-dir": ("--registry",),
    "--output-name": ("--name",),
    "--num-images": ("-n",),
    "--num-inference-steps": ("--steps",),
    "--guidance-scale": ("--guidance",),
    "--cfg": ("--guidance",),
}


def _normalise(option: str) -> str:
    """``--network_dim`` and ``--network-dim`` are the same mistake."""
    head, _, _ = option.partition("=")
    return head.replace("_", "-").lower()


def option_hint(option: str, known: Iterable[str]) -> str | None:
    """What to say after "No such option: OPTION" for a command whose options are ``known``."""
    known = sorted(set(known))
    wanted = _normalise(option)
    if wanted in known and wanted != option:
        return f"did you mean {wanted}?"
    targets = [t for t in FOREIGN_OPTIONS.get(wanted, ()) if t in known]
    if targets:
        return f"unziplora calls it {' or '.join(targets)}"
    close = difflib.get_close_matches(wanted, [k for k in known if k.startswith("--")], n=3, cutoff=0.7)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return None


def command_options(ctx: Any) -> list[str]:
    """Every option spelling of the command in ``ctx`` (Click context), hidden aliases included."""
    command = getattr(ctx, "command", None)
    names: list[str] = []
    for param in getattr(command, "params", ()):
        names.extend(getattr(param, "opts", ()))
        names.extend(getattr(param, "secondary_opts", ()))
    return names


def usage_message(exc: Any) -> str:
    """The text after ``error: `` for a Click usage exception, without the trailing advice."""
    option = getattr(exc, "option_name", None)
    if type(exc).__name__ == "NoSuchOption" and option:
        base = str(getattr(exc, "message", "") or f"No such option: {option}")
        hint = option_hint(option, command_options(getattr(exc, "ctx", None)))
        return f"{base} ({hint})" if hint else base
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return " ".join(text.split())


def with_full_stop(text: str) -> str:
    """End a sentence once: no "?." or "..", whatever Click ended it with."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def near_command(word: str, commands: Iterable[str]) -> str | None:
    """The command ``word`` is probably a typo of (``trian`` -> ``train``), or None."""
    close = difflib.get_close_matches(word.lower(), sorted(commands), n=1, cutoff=0.75)
    return close[0] if close else None
