"""The probe set of ``unzip eval``: which images are generated for each entry, with which prompts.

A probe is a kind (which LoRAs draw it) and a prompt template. Kinds:

``content``   content LoRA alone, the subject recontextualised ("{content} on a beach")
``style``     style LoRA alone, new subjects in the style ("a lighthouse in {style} style")
``recon``     both LoRAs on the source prompt ("{combined}"): the reconstruction
``combined``  both LoRAs, the subject recontextualised in the style. Its ``prompt`` is a *context*
              ("on a beach"), used exactly as ``unzip compose --content ID --style ID "on a beach"``
              uses it: all three prompts (combined, content branch, style branch) are built around it,
              so each branch also sees the new context.

Template fields come from the entry's prompts: ``{content}`` (e.g. "A monadikos cat"),
``{combined}``, ``{style_prompt}``, ``{subject}`` ("cat"), ``{style}`` ("sketch"). Image ``i`` of
probe ``p`` uses seed ``seed + 1000 * p + i``, so two runs give the same images and numbers.

``--probes FILE`` replaces :data:`DEFAULT_PROBES` with a TOML file of the same shape::

    seed = 0                     # optional
    [[probe]]
    kind = "content"
    prompt = "{content} on a beach"

This module is light: it imports no torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from unziplora.errors import ConfigError
from unziplora.prompts import PromptSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

KINDS = ("content", "style", "recon", "combined")
FIELDS = ("content", "combined", "style_prompt", "subject", "style")


@dataclass(frozen=True)
class Probe:
    kind: str
    prompt: str  # a template

    def render(self, prompts: PromptSet) -> str:
        values = {
            "content": prompts.content,
            "combined": prompts.combined,
            "style_prompt": prompts.style,
            "subject": prompts.subject or prompts.content,
            "style": prompts.style_words or prompts.style,
        }
        return self.prompt.format(**values)


DEFAULT_SEED = 0
DEFAULT_PROBES: tuple[Probe, ...] = (
    Probe("content", "{content} on a beach"),
    Probe("content", "{content} in the snow"),
    Probe("content", "{content} in a busy city street"),
    Probe("content", "{content} on a wooden table"),
    Probe("style", "a lighthouse in {style} style"),
    Probe("style", "a bicycle in {style} style"),
    Probe("style", "a bowl of fruit in {style} style"),
    Probe("style", "a mountain village in {style} style"),
    Probe("recon", "{combined}"),
    Probe("combined", "on a beach"),  # a context: see the module docstring
    Probe("combined", "in the snow"),
)


def probe_seed(seed: int, probe_index: int, image_index: int) -> int:
    return seed + 1000 * probe_index + image_index


def _check_template(where: str, template: str) -> None:
    import string

    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in FIELDS:
            raise ConfigError(
                f"{where}: unknown field {{{name}}} in the prompt; use {', '.join('{' + f + '}' for f in FIELDS)}."
            )


def _check_context(where: str, context: str) -> None:
    if "{" in context or "}" in context:
        raise ConfigError(
            f"{where}: a combined probe's prompt is a context such as 'on a beach' (the prompts are built around it "
            "as unzip compose builds them), not a template with fields."
        )


def read_probes(path: str | Path) -> tuple[list[Probe], int]:
    """Probes and seed from a TOML file; one-line ConfigError naming the file and the probe."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"probe file {path} does not exist.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"probe file {path} cannot be read: {exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"probe file {path} is not valid TOML: {exc}.") from exc
    seed = data.get("seed", DEFAULT_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"probe file {path}: seed must be an integer, got {seed!r}.")
    raw = data.get("probe")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"probe file {path} has no [[probe]] tables.")
    probes = []
    for number, item in enumerate(raw, start=1):
        where = f"probe file {path}, probe {number}"
        if not isinstance(item, dict) or set(item) - {"kind", "prompt"}:
            raise ConfigError(f"{where}: a probe has exactly the keys kind and prompt.")
        kind, prompt = item.get("kind"), item.get("prompt")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{where}: prompt must be non-empty text.")
        if kind == "combined":
            _check_context(where, prompt)
        else:
            _check_template(where, prompt)
        probes.append(Probe(kind, prompt))
    return probes, seed
