"""The ``entry.json`` schema: what an entry records, how it is checked, how old versions are read.

Schema version 1. Keys marked ``*`` are computed by the registry when an entry is committed; the
others come from the writer through ``staging.record``. Unknown extra keys are kept as they are::

    {
      "schema_version": 1,                     * int; newer than SCHEMA_VERSION -> refused
      "id": "cat-pencil-sketch-3f2a",          * equals the folder name under entries/
      "name": "cat-pencil-sketch",             * a label (default: the id without its suffix)
      "created": "2026-11-26T10:39:27+00:00",  * UTC, ISO 8601, seconds
      "tool_version": "0.1.0",                 * the unziplora version that wrote the entry
      "kind": "trained",                       "trained" | "imported"
      "imported": false,                       true exactly when kind == "imported"
      "subject": "cat",                        the subject words
      "style": "pencil sketch",                the style words
      "prompts": {"combined": "...", "content": "...", "style": "..."},
      "rare_token": "sks",                     or null
      "sources": [{"name": "cat.jpg", "sha256": "...", "bytes": 48213, "width": 1024, "height": 768}],
      "base": {"ref": "stabilityai/stable-diffusion-xl-base-1.0", "kind": "hub", "fingerprint": "..."},
      "settings": {"steps": 600, "rank": 64, "learning_rate": 5e-05, ...},   every training setting
      "figures": {"steps": 600, "seconds": 812.4, "final_loss": 0.083, "device": "cuda", "precision": "bf16",
                  "movement": {...}},       how far training moved each LoRA (unziplora.method.movement)
      "provenance": null,                      for imports: where the files came from (free-form object)
      "files": {"content.safetensors": {"sha256": "<64 hex>", "bytes": 1234567}, ...}   * every payload file
    }

``files`` keys are relative POSIX paths inside the entry folder (``previews/0001.png``); they never
contain ``..`` or start with ``/``. ``entry.json`` itself and dot-files are not listed.
Reading an older schema runs the steps in :data:`MIGRATIONS` (version N -> N+1) in memory; the file
on disk is left as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from unziplora.errors import RegistryError, SchemaVersionError

SCHEMA_VERSION = 1
KINDS = ("trained", "imported")
COMPUTED_KEYS = ("schema_version", "id", "name", "created", "tool_version", "files")
STANDARD_KEYS = (
    "schema_version",
    "id",
    "name",
    "created",
    "tool_version",
    "kind",
    "imported",
    "subject",
    "style",
    "prompts",
    "rare_token",
    "sources",
    "base",
    "settings",
    "figures",
    "provenance",
    "files",
)

# version N -> function turning an N record into an N+1 record. Empty until version 2 exists.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_OBJECT_KEYS = ("prompts", "base", "settings", "figures")
_TEXT_KEYS = ("id", "name", "created", "tool_version", "subject", "style")


def safe_relpath(text: object) -> bool:
    """True for a relative POSIX path that stays inside its folder (``previews/1.png`` yes, ``../x`` no)."""
    if not isinstance(text, str) or not text or text.startswith("/") or "\\" in text or "\x00" in text:
        return False
    return all(part not in ("", ".", "..") and ":" not in part for part in text.split("/"))


def problem(record: object) -> str | None:
    """What is wrong with a (current-version) record, as one phrase; None if it is usable."""
    if not isinstance(record, dict):
        return "entry.json is not a JSON object"
    for key in _TEXT_KEYS:
        if not isinstance(record.get(key), str):
            return f"entry.json: '{key}' is missing or not text"
    for key in _OBJECT_KEYS:
        if not isinstance(record.get(key, {}), dict):
            return f"entry.json: '{key}' is not an object"
    base_ref = (record.get("base") or {}).get("ref")
    if base_ref is not None and not isinstance(base_ref, str):
        return "entry.json: 'base.ref' is not text"
    if record.get("kind", "trained") not in KINDS:
        return f"entry.json: 'kind' must be one of {', '.join(KINDS)}"
    if not isinstance(record.get("sources", []), list):
        return "entry.json: 'sources' is not a list"
    files = record.get("files")
    if not isinstance(files, dict):
        return "entry.json: 'files' is missing or not an object"
    for name, info in files.items():
        if not safe_relpath(name):
            return f"entry.json: file name {name!r} points outside the entry"
        size = info.get("bytes") if isinstance(info, dict) else None
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("sha256"), str)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            return f"entry.json: file {name} lacks sha256 or bytes"
    return None


def upgrade(record: object, entry_id: str) -> dict[str, Any]:
    """Bring a parsed record to SCHEMA_VERSION; refuse newer versions (SchemaVersionError)."""
    if not isinstance(record, dict):
        raise ValueError("entry.json is not a JSON object")  # noqa: TRY004 - callers map ValueError to "damaged"
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"entry.json has no usable schema_version ({version!r})")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"entry {entry_id} was written by a newer unziplora (entry schema {version}; this version reads up to "
            f"{SCHEMA_VERSION}); upgrade with: pip install -U unziplora"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ValueError(f"entry.json schema {version} cannot be read by this version (no migration)")
        record = step(dict(record))
        version += 1
        record["schema_version"] = version
    return record


def complete(
    record: object,
    *,
    entry_id: str,
    name: str,
    created: str,
    tool_version: str,
    files: dict[str, dict[str, Any]],
    subject: str,
    style: str,
) -> dict[str, Any]:
    """The full record to write: the registry's own keys first, then the writer's, defaults filled in."""
    if not isinstance(record, dict):
        raise RegistryError(
            f"staging.record must be a dict of entry fields before the with-block ends, got {type(record).__name__}"
        )
    given = {k: v for k, v in record.items() if k not in COMPUTED_KEYS}
    kind = given.get("kind", "imported" if given.get("imported") else "trained")
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": entry_id,
        "name": name,
        "created": created,
        "tool_version": tool_version,
        "kind": kind,
        "imported": kind == "imported",
        "subject": given.pop("subject", subject),
        "style": given.pop("style", style),
        "prompts": given.pop("prompts", {}),
        "rare_token": given.pop("rare_token", None),
        "sources": given.pop("sources", []),
        "base": given.pop("base", {}),
        "settings": given.pop("settings", {}),
        "figures": given.pop("figures", {}),
        "provenance": given.pop("provenance", None),
    }
    given.pop("kind", None)
    given.pop("imported", None)
    out.update(given)
    out["files"] = files
    issue = problem(out)
    if issue:
        raise RegistryError(f"cannot write entry {entry_id}: {issue.removeprefix('entry.json: ')}")
    return out


def dumps(record: dict[str, Any]) -> bytes:
    """Stable, readable JSON; NaN and infinities are refused (they are not JSON)."""
    try:
        return (json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"cannot write entry {record.get('id')}: a field is not plain JSON ({exc})") from exc
