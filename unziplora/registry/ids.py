"""Entry ids and names: readable, unique, and never a path outside the registry.

An id is a slug of the subject and style words plus a short random suffix
(``cat-pencil-sketch-3f2a``). Ids become directory names under ``entries/``, so everything a user
types as an id or a name passes :func:`validate_id` / :func:`validate_name` before it is compared
with anything; lookups then only ever use directory names the registry itself listed.
"""

from __future__ import annotations

import difflib
import re
import secrets
import unicodedata

from unziplora.errors import InvalidEntryIdError

MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 64
SLUG_PART_LENGTH = 20  # each of subject and style; the whole slug stays under ~40 characters
SUFFIX_HEX = 4

# Filler words that make ids longer without making them easier to recognise.
_STOP_WORDS = {"a", "an", "the", "of", "in", "on", "with", "and", "style", "photo", "image", "picture"}
_ID_SHAPE = "ids look like cat-sketch-3f2a (see 'unzip list')"


def _words(text: str) -> list[str]:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return [w for w in re.split(r"[^a-z0-9]+", ascii_text) if w]


def _part(text: str) -> str:
    words = [w for w in _words(text) if w not in _STOP_WORDS] or _words(text)
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_PART_LENGTH:
            return slug or word[:SLUG_PART_LENGTH]
        slug = candidate
    return slug


def slug(subject: str, style: str) -> str:
    """``("a black cat", "pencil sketch")`` -> ``"black-cat-pencil-sketch"``; ``"entry"`` when nothing is left."""
    return "-".join(p for p in (_part(subject or ""), _part(style or "")) if p) or "entry"


def random_suffix(hex_digits: int = SUFFIX_HEX) -> str:
    """The random tail of an id; tests patch this to force collisions."""
    return secrets.token_hex((hex_digits + 1) // 2)[:hex_digits]


def make_id(subject: str, style: str, hex_digits: int = SUFFIX_HEX) -> str:
    """A fresh candidate id; the store checks it is unused under its writer lock."""
    return f"{slug(subject, style)}-{random_suffix(hex_digits)}"


# Exactly Unicode's Cc category, and exactly str.isspace: one regex search instead of a Python
# loop per character (ids are checked for every folder on every `unzip list`).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s")


def _unsafe_reason(text: str, max_length: int) -> str | None:
    if not text:
        return "it is empty"
    if "\x00" in text:
        return "it contains a NUL character"
    if _CONTROL.search(text):
        return "it contains a control character"
    if len(text) > max_length:
        return f"it is longer than {max_length} characters"
    if "/" in text or "\\" in text:
        return "it contains a path separator"
    if ".." in text:
        return "it contains '..'"
    if text.startswith((".", "~")):
        return f"it starts with '{text[0]}'"
    if ":" in text:  # Windows drive letters and alternate data streams
        return "it contains ':'"
    if text != text.strip():
        return "it starts or ends with a space"
    return None


def _shown(text: str) -> str:
    """The user's text, escaped so control characters cannot mangle the error line."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    return repr(shown)[1:-1]


def validate_id(text: str) -> str:
    """Return ``text`` if it may name an entry directory; raise InvalidEntryIdError otherwise."""
    if not isinstance(text, str):
        raise InvalidEntryIdError(f"entry id must be text, got {type(text).__name__}; {_ID_SHAPE}")
    reason = _unsafe_reason(text, MAX_ID_LENGTH)
    if reason is None and _SPACE.search(text):
        reason = "it contains a space"
    if reason:
        raise InvalidEntryIdError(f"'{_shown(text)}' is not a valid entry id: {reason}; {_ID_SHAPE}")
    return text


def check_lookup(text: str) -> str:
    """Return ``text`` if it is safe to look up as an id, id prefix or name (spaces allowed)."""
    if not isinstance(text, str):
        raise InvalidEntryIdError(f"entry id must be text, got {type(text).__name__}; {_ID_SHAPE}")
    reason = _unsafe_reason(text, MAX_NAME_LENGTH)
    if reason:
        raise InvalidEntryIdError(f"'{_shown(text)}' is not a valid entry id: {reason}; {_ID_SHAPE}")
    return text


def validate_name(text: str) -> str:
    """Return ``text`` if it is an acceptable entry name (a label; spaces allowed)."""
    if not isinstance(text, str):
        raise InvalidEntryIdError(f"entry name must be text, got {type(text).__name__}.")
    reason = _unsafe_reason(text, MAX_NAME_LENGTH)
    if reason:
        raise InvalidEntryIdError(
            f"'{_shown(text)}' is not a valid entry name: {reason}; use letters, digits, spaces, '-' and '_'."
        )
    return text


def nearest(text: str, candidates: list[str], n: int = 3) -> list[str]:
    """Close matches for a mistyped id or name, best first.

    Each candidate is scored against the text both whole and cut to the text's length, so a
    mistyped prefix (``cat-skecth``) still finds ``cat-sketch-3f2a``.
    """
    lowered = text.lower()
    scored = []
    for cand in candidates:
        low = cand.lower()
        score = max(
            difflib.SequenceMatcher(None, lowered, low).ratio(),
            difflib.SequenceMatcher(None, lowered, low[: len(lowered)]).ratio(),
        )
        if score >= 0.65:
            scored.append((-score, cand))
    return [cand for _, cand in sorted(scored)[:n]]
