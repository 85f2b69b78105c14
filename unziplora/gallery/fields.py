"""The fields of an entry as ``unzip show`` prints them, as (label, text, indent) rows.

The gallery's entry page is the ``show`` page in HTML, so it reads the same keys in the same
order (see ``unziplora_cli._registry_view.show_page``); only the relative age is left out, so a
page does not change just because time passed (the index shows ages).
"""

from __future__ import annotations

import json
from typing import Any

from unziplora.entry_files import EVALUATION_KEY, MOVEMENT_KEY, movement_summary
from unziplora.registry.schema import STANDARD_KEYS

Row = tuple[str, str, int]


def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def short_base(record: dict[str, Any]) -> str:
    base = record.get("base")
    ref = str(base.get("ref") or base.get("id") or base.get("path") or "") if isinstance(base, dict) else ""
    return ref.rstrip("/").rsplit("/", 1)[-1] or "-"


def setting(record: dict[str, Any], key: str, *sections: str) -> str:
    for section in sections:
        value = record.get(section)
        if isinstance(value, dict) and value.get(key) is not None:
            return str(value[key])
    return "-"


def scores(record: dict[str, Any]) -> dict[str, Any]:
    """The headline scores of the entry's last ``unzip eval`` (entry.json's evaluation block), as card text."""
    from unziplora.eval.metrics import HEADLINE
    from unziplora.eval.save import recorded_score

    found = {label: recorded_score(record, key) for label, key in HEADLINE.items()}
    return {label: f"{value:.3f}" for label, value in found.items() if value is not None}


def show_rows(entry: Any) -> list[Row]:
    """Every field ``unzip show`` prints, in its order."""
    r = entry.record
    rows: list[Row] = [
        ("id", entry.id, 0),
        ("name", entry.name, 0),
        ("status", f"DAMAGED: {entry.damaged}" if entry.damaged else "ok", 0),
        ("kind", str(r.get("kind", "-")), 0),
        ("created", str(r.get("created", "-")), 0),
        ("path", str(entry.path), 0),
        ("written by", f"unziplora {r.get('tool_version', '?')} (entry schema {r.get('schema_version', '?')})", 0),
        ("subject", entry.subject or "-", 0),
        ("style", entry.style or "-", 0),
        ("rare token", str(r.get("rare_token") or "-"), 0),
    ]
    base = r.get("base") if isinstance(r.get("base"), dict) else {}
    extra = ", ".join(f"{k} {v}" for k, v in base.items() if k != "ref" and v is not None)
    rows.append(("base", f"{base.get('ref', '-')}" + (f" ({extra})" if extra else ""), 0))
    for section in ("prompts", "settings", "figures"):
        values = r.get(section)
        if isinstance(values, dict) and values:
            rows.append((section, "", 0))
            rows.extend((str(k), text(v), 1) for k, v in values.items() if section != "figures" or k != MOVEMENT_KEY)
    rows.append(("moved", movement_summary(r), 0))
    sources = r.get("sources") if isinstance(r.get("sources"), list) else []
    if sources:
        rows.append(("sources", "", 0))
        for s in sources:
            s = s if isinstance(s, dict) else {"name": str(s)}
            pixels = f"{s['width']}x{s['height']}" if "width" in s and "height" in s else "?x?"
            size = human_bytes(s["bytes"]) if isinstance(s.get("bytes"), int) else "?"
            rows.append((str(s.get("name", "?")), f"{pixels}  {size}  sha256 {s.get('sha256', '?')}", 1))
    if r.get("provenance"):
        rows.append(("provenance", text(r["provenance"]), 0))
    block = r.get(EVALUATION_KEY)
    if isinstance(block, dict):  # the last 'unzip eval': its settings on one line, then one row per score
        rows.append(("evaluation", ", ".join(f"{k} {text(v)}" for k, v in block.items() if k != "scores"), 0))
        values = block.get("scores") if isinstance(block.get("scores"), dict) else {}
        rows.extend((str(k), "-" if v is None else text(v), 1) for k, v in values.items())
    known = {*STANDARD_KEYS, EVALUATION_KEY} if isinstance(block, dict) else set(STANDARD_KEYS)
    rows.extend((str(k), text(r[k]), 0) for k in r if k not in known)
    rows.append(("size", f"{human_bytes(entry.size_bytes)} on disk", 0))
    return rows
