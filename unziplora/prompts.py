"""The three prompts UnZipLoRA trains and generates with, and where their words come from.

UnZipLoRA feeds three prompts at once (ALGORITHM.md section 10): the *combined* prompt to the
frozen model, the *content* prompt to the content LoRA and the *style* prompt to the style
LoRA. A rare token (``monadikos``) marks the trained subject; it appears in the combined and
content prompts and never in the style prompt, so the style LoRA cannot learn the subject's
identity. Templates::

    combined  A <token> <subject>[ <context>] in <style> style
    content   A <token> <subject>[ <context>]
    style     A <subject>[ <context>] in <style> style

Words are normalised the same way everywhere: whitespace collapsed, a leading article
(a/an/the) dropped from the subject (the template adds "A"), a trailing "style" dropped from
the style words (the template adds it). This module is light: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unziplora.errors import PromptError

DEFAULT_TOKEN = "monadikos"

_ARTICLE = re.compile(r"^(?:a|an|the)(?:\s+|$)", re.IGNORECASE)
_TRAILING_STYLE = re.compile(r"\s*\bstyle$", re.IGNORECASE)
# "<subject> in <style> style", optionally led by an article and followed by a copy counter
# ("_2", " (3)"). The subject is greedy so "a man in a hat in oil paint style" splits at the
# last " in ".
_NAME_SHAPE = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?P<subject>.+)\s+in\s+(?P<style>.+?)\s+style(?:\s*\(\d+\)|\s+\d+)?$",
    re.IGNORECASE,
)
_EXAMPLE = '(e.g. --subject cat --style "pencil sketch")'


@dataclass(frozen=True)
class PromptSet:
    """The combined/content/style prompts of one entry or one generation, with their words."""

    combined: str
    content: str
    style: str
    token: str = DEFAULT_TOKEN
    subject: str | None = None
    style_words: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form, as stored in ``entry.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSet:
        """Inverse of :meth:`to_dict`; refuses records whose prompts are missing or not text."""
        for key in ("combined", "content", "style"):
            if not isinstance(data.get(key), str):
                raise PromptError(f"stored prompts are incomplete: {key!r} is missing or not text")
        optional = {key: data.get(key) for key in ("subject", "style_words")}
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise PromptError(f"stored prompts are invalid: {key!r} is not text")
        token = data.get("token", DEFAULT_TOKEN)
        if not isinstance(token, str):
            raise PromptError("stored prompts are invalid: 'token' is not text")
        return cls(data["combined"], data["content"], data["style"], token, **optional)


# Far above what the text encoders read (77 tokens); refused before any work, since a huge text
# would also bloat every header and entry.json it is recorded in.
MAX_TEXT_CHARS = 2000


def _clean(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise PromptError(
            f"a subject, style or prompt text is {len(text)} characters long, over the limit of {MAX_TEXT_CHARS} "
            "(the text encoders read only about 77 words); shorten it"
        )
    return " ".join(text.split())


def _check_token(token: str) -> str:
    cleaned = _clean(token)
    if not cleaned or " " in cleaned:
        raise PromptError(f"the subject token must be one word without spaces, e.g. {DEFAULT_TOKEN!r}; got {token!r}")
    return cleaned


def _clean_subject(subject: str, token: str, empty: str = "") -> str:
    """Drop an article and a leading copy of the token: the templates add both."""
    words = _ARTICLE.sub("", _clean(subject))
    if words.split(" ", 1)[0].casefold() == token.casefold():
        words = words[len(token) :].strip()
    if not words:
        raise PromptError(empty or "the subject is empty; pass --subject with a few words (e.g. --subject cat)")
    return words


def _clean_style(style: str) -> str:
    words = _TRAILING_STYLE.sub("", _clean(style))
    if not words:
        raise PromptError('the style is empty; pass --style with a few words (e.g. --style "pencil sketch")')
    return words


def _override(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    cleaned = _clean(text)
    if not cleaned:
        raise PromptError(f"the {flag} text is empty; leave {flag} out or give it some words")
    return cleaned


def _check_style_prompt(style_prompt: str, token: str) -> None:
    if token.casefold() in style_prompt.casefold().split():
        raise PromptError(
            f"the style prompt must not contain the subject token {token!r} (the style LoRA would learn the "
            f"subject); remove it from the style prompt: {style_prompt!r}"
        )


def style_phrase(style: str) -> str:
    """``"in <style> style"``: how every prompt names the style."""
    return f"in {style} style"


def compose_prompt(subject: str, context: str, style: str | None, token: str | None) -> str:
    """The one prompt template: ``A [token] subject [context] [in style style]`` (empty parts left out)."""
    parts = ["A", token, subject, context, style_phrase(style) if style else None]
    return " ".join(part for part in parts if part)


def build_training_prompts(
    subject: str | None,
    style: str | None,
    token: str = DEFAULT_TOKEN,
    *,
    prompt: str | None = None,
    content_prompt: str | None = None,
    style_prompt: str | None = None,
) -> PromptSet:
    """The three training prompts (ALGORITHM.md section 10), each replaceable by an override.

    ``prompt``, ``content_prompt`` and ``style_prompt`` replace the combined, content and style
    prompt respectively; subject and style words are needed only for prompts not overridden.
    """
    token = _check_token(token)
    prompt = _override(prompt, "--prompt")
    content_prompt = _override(content_prompt, "--content-prompt")
    style_prompt = _override(style_prompt, "--style-prompt")
    need_subject = None in (prompt, content_prompt, style_prompt)
    need_style = None in (prompt, style_prompt)
    if need_subject and subject is None:
        raise PromptError(f"no subject given; pass --subject and --style {_EXAMPLE}")
    if need_style and style is None:
        raise PromptError(f"no style given; pass --style {_EXAMPLE}")
    subject_words = _clean_subject(subject, token) if subject is not None else None
    style_words = _clean_style(style) if style is not None else None
    combined = prompt or compose_prompt(subject_words or "", "", style_words, token)
    content = content_prompt or compose_prompt(subject_words or "", "", None, token)
    style_text = style_prompt or compose_prompt(subject_words or "", "", style_words, None)
    _check_style_prompt(style_text, token)
    return PromptSet(combined, content, style_text, token, subject_words, style_words)


def parse_filename(name: str | Path) -> tuple[str, str] | None:
    """``"A_fox_in_chalk_art_style.png"`` -> ``("fox", "chalk art")``; None if not that shape.

    Underscores and hyphens count as spaces, the article and the words "in"/"style" match in
    any case, and a trailing copy counter ("_2", " (3)") is ignored. The words keep their case.
    """
    stem = Path(name).stem
    match = _NAME_SHAPE.match(_clean(re.sub(r"[_\-]+", " ", stem)))
    if match is None:
        return None
    subject = _ARTICLE.sub("", match["subject"]).strip()
    style = match["style"].strip()
    if not subject or not style or subject.casefold() in ("a", "an", "the"):
        return None
    return subject, style


def _cannot_tell(file: Path, missing_subject: bool, missing_style: bool, index: int, total: int) -> PromptError:
    what = " and ".join(w for w, missing in (("subject", missing_subject), ("style", missing_style)) if missing)
    flags = " and ".join(f for f, missing in (("--subject", missing_subject), ("--style", missing_style)) if missing)
    example = " ".join(
        e for e, missing in (("--subject cat", missing_subject), ('--style "pencil sketch"', missing_style)) if missing
    )
    others = f" (file {index + 1} of {total})" if total > 1 else ""
    suffix = file.suffix.lower() or ".jpg"
    return PromptError(
        f"cannot tell the {what} of {file.name}{others}: pass {flags} (e.g. {example}) "
        f"or name the file like 'a_cat_in_pencil_sketch_style{suffix}'"
    )


def resolve_training_prompts(
    files: Sequence[Path],
    subject: str | None,
    style: str | None,
    token: str = DEFAULT_TOKEN,
    prompt: str | None = None,
    content_prompt: str | None = None,
    style_prompt: str | None = None,
) -> PromptSet:
    """Training prompts from explicit words, else from file names like ``a_cat_in_sketch_style.jpg``.

    What was passed always wins; a missing subject or style is read from the file names, which
    must then all have the ``<subject> in <style> style`` shape and agree (case-insensitively).
    """
    need_subject = subject is None and None in (prompt, content_prompt, style_prompt)
    need_style = style is None and None in (prompt, style_prompt)
    if need_subject or need_style:
        paths = [Path(f) for f in files]
        if not paths:
            raise PromptError(f"no subject or style given; pass --subject and --style {_EXAMPLE}")
        parsed: dict[tuple[str, str], tuple[str, str]] = {}
        for index, path in enumerate(paths):
            words = parse_filename(path.name)
            if words is None:
                raise _cannot_tell(path, need_subject, need_style, index, len(paths))
            parsed.setdefault((words[0].casefold(), words[1].casefold()), words)
        if len(parsed) > 1:
            seen = " vs ".join(f"'{s} in {st} style'" for s, st in list(parsed.values())[:2])
            raise PromptError(
                f"the file names describe different subjects or styles ({seen}); pass --subject and --style {_EXAMPLE}"
            )
        name_subject, name_style = next(iter(parsed.values()))
        subject = name_subject if need_subject else subject
        style = name_style if need_style else style
    return build_training_prompts(
        subject, style, token, prompt=prompt, content_prompt=content_prompt, style_prompt=style_prompt
    )


def build_generation_prompts(
    content_subject: str | None,
    style_words: str | None,
    context: str = "",
    token: str = DEFAULT_TOKEN,
    *,
    subject: str | None = None,
) -> PromptSet:
    """Prompts for compose/recontextualise/restyle, placing ``context`` right after the subject.

    * content + style (compose): ``A monadikos cat on a beach in sketch style`` /
      ``A monadikos cat on a beach`` / ``A cat on a beach in sketch style``.
    * content only (recontextualise): combined = content = ``A monadikos cat on a beach``;
      style = ``A cat on a beach`` (no style words; the style branch is absent or unused).
    * style only (restyle) with a new ``subject``: combined = style =
      ``A lighthouse on a cliff in sketch style``; content = ``A lighthouse on a cliff``
      (no token: there is no trained subject).
    """
    token = _check_token(token)
    context = _clean(context or "")
    style = _clean_style(style_words) if style_words is not None else None
    if content_subject is not None:
        if subject is not None:
            raise PromptError(
                "pass either a content entry or a new --subject, not both: the content entry is the subject"
            )
        words = _clean_subject(content_subject, token, "the content entry has no subject words to prompt with")
        content = compose_prompt(words, context, None, token)
        combined = compose_prompt(words, context, style, token) if style else content
        style_text = compose_prompt(words, context, style, None)
        return PromptSet(combined, content, style_text, token, words, style)
    if style is None:
        raise PromptError("nothing to generate: give a content entry, a style entry, or both")
    if subject is None:
        raise PromptError('restyling needs a subject to draw; pass --subject (e.g. --subject "a lighthouse")')
    words = _clean_subject(subject, token)
    style_text = compose_prompt(words, context, style, None)
    return PromptSet(style_text, compose_prompt(words, context, None, None), style_text, token, words, style)


# CLIP's context length, start and end tokens included: SDXL's text encoders ignore the rest.
MAX_PROMPT_TOKENS = 77


def fit_prompt(text: str, tokenizer: Any) -> str:
    """``text`` cut to the longest prefix of whole words that fits the tokenizer's context."""
    limit = int(getattr(tokenizer, "model_max_length", MAX_PROMPT_TOKENS) or MAX_PROMPT_TOKENS)

    def fits(candidate: str) -> bool:
        return len(tokenizer.tokenize(candidate)) + 2 <= limit  # + start and end tokens

    if fits(text):
        return text
    words = text.split()
    low, high = 0, len(words)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(" ".join(words[:mid])):
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def fit_prompts(
    prompts: PromptSet, tokenizer: Any, *, use: str = "training uses (and records)"
) -> tuple[PromptSet, list[str]]:
    """The prompts as the text encoders will see them, and one warning per prompt that was cut.

    ``use`` says who uses the cut text, in the warning ("training uses (and records)").
    """
    from dataclasses import replace

    changed: dict[str, str] = {}
    notes: list[str] = []
    for field_name in ("combined", "content", "style"):
        text = getattr(prompts, field_name)
        used = fit_prompt(text, tokenizer)
        if used != text:
            changed[field_name] = used
            notes.append(
                f"the {field_name} prompt is longer than {MAX_PROMPT_TOKENS} CLIP tokens; {use} "
                f"only its start: {used!r}"
            )
    return (replace(prompts, **changed) if changed else prompts), notes
