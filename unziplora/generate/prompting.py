"""Which prompts a compose or restyle call uses: built from the entries' words, or overridden.

Light module (no torch). Built prompts follow ALGORITHM.md 10 with the context after the subject
(``A monadikos cat on a beach in sketch style`` / ``A monadikos cat on a beach`` /
``A cat on a beach in sketch style``); ``--prompt``, ``--content-prompt`` and ``--style-prompt``
replace any of them. Entries without subject or style words (imports) work when the prompts they
would need are given explicitly.
"""

from __future__ import annotations

from typing import Any

from unziplora.errors import PromptError
from unziplora.prompts import DEFAULT_TOKEN, PromptSet, build_generation_prompts


def _override(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    cleaned = " ".join(text.split())
    if not cleaned:
        raise PromptError(f"the {flag} text is empty; leave {flag} out or give it some words")
    return cleaned


def entry_token(entry: Any | None) -> str:
    token = entry.record.get("rare_token") if entry is not None else None
    return token if isinstance(token, str) and token.strip() else DEFAULT_TOKEN


def mode_for(content: Any | None, style: Any | None) -> str:
    if content is not None and style is not None:
        return "both"
    if content is not None:
        return "content"
    if style is not None:
        return "style"
    raise PromptError("nothing to generate: pass --content ID, --style ID, or both (see 'unzip list')")


def compose_prompts(
    content: Any | None,
    style: Any | None,
    context: str = "",
    *,
    subject: str | None = None,
    prompt: str | None = None,
    content_prompt: str | None = None,
    style_prompt: str | None = None,
) -> PromptSet:
    """The three prompts for entries ``content``/``style`` (either may be None) around ``context``.

    Without a content entry the subject is ``subject`` (restyle) or else the style entry's own
    subject. In content-only mode ``prompt`` also overrides the content prompt, in style-only mode
    the style prompt, since those modes read a single prompt.
    """
    mode = mode_for(content, style)
    prompt = _override(prompt, "--prompt")
    content_prompt = _override(content_prompt, "--content-prompt")
    style_prompt = _override(style_prompt, "--style-prompt")
    if mode == "content":
        content_prompt = content_prompt or prompt
    if mode == "style":
        style_prompt = style_prompt or prompt
    needed = {"both": (prompt, content_prompt, style_prompt), "content": (content_prompt,), "style": (style_prompt,)}[
        mode
    ]
    built: PromptSet | None = None
    try:
        if content is not None:
            built = build_generation_prompts(
                content.subject, style.style if style else None, context, entry_token(content)
            )
        else:
            words = subject if subject is not None else (style.subject or None)
            if not style.style:
                raise PromptError(f"style entry {style.id} records no style words")
            if words is None:
                raise PromptError(f"style entry {style.id} records no subject words; pass --subject")
            built = build_generation_prompts(None, style.style or None, context, subject=words)
    except PromptError as exc:
        if None in needed:
            flags = {
                "both": "--prompt, --content-prompt and --style-prompt",
                "content": "--prompt",
                "style": "--prompt",
            }[mode]
            raise PromptError(f"{str(exc).rstrip('.')}; or give the prompt text with {flags}") from None
    token = entry_token(content)
    return PromptSet(
        combined=prompt or (built.combined if built else content_prompt or style_prompt or ""),
        content=content_prompt or (built.content if built else prompt or ""),
        style=style_prompt or (built.style if built else prompt or ""),
        token=token,
        subject=built.subject if built else None,
        style_words=built.style_words if built else None,
    )
