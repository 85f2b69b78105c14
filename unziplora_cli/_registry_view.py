"""How registry entries look on a terminal: the ``list`` table and the ``show`` page.

Kept apart from the commands so each stays small. Plain text only: no markup is interpreted, so
a name like ``[bold]`` prints as itself.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from unziplora.entry_files import EVALUATION_KEY, MOVEMENT_KEY, movement_summary
from unziplora.registry.schema import STANDARD_KEYS
from unziplora_cli._output import data as _data
from unziplora_cli._output import human_bytes, visible


def data(line: str = "") -> None:
    """One line of output with every control character made visible."""
    _data(visible(line))


_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``3 hours ago``; ``-`` when unknown."""
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    if seconds < -60:
        return when.strftime("%Y-%m-%d %H:%M")
    for unit, size in _UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def short_base(entry: Any) -> str:
    base = entry.record.get("base")
    ref = str(base.get("ref") or base.get("id") or base.get("path") or "") if isinstance(base, dict) else ""
    return ref.rstrip("/").rsplit("/", 1)[-1] or "-"


def _setting(entry: Any, key: str, *sections: str) -> str:
    for section in sections:
        value = entry.record.get(section)
        if isinstance(value, dict) and value.get(key) is not None:
            return str(value[key])
    return "-"


def headline_score(entry: Any, score: str) -> float | None:
    """One mean score of the entry's last ``unzip eval`` from entry.json; None when not evaluated."""
    from unziplora.eval.save import recorded_score

    return recorded_score(entry.record, score)


def table_rows(entries: list[Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of ``unzip list``; status and score columns appear only when some entry needs them."""
    from unziplora.eval.metrics import HEADLINE

    header = ["ID", "NAME", "SUBJECT", "STYLE", "BASE", "RANK", "STEPS", "SIZE", "CREATED"]
    evaluated = any(headline_score(e, s) is not None for e in entries for s in HEADLINE.values())
    if evaluated:
        header += [label.upper() for label in HEADLINE]
    any_damaged = any(e.damaged for e in entries)
    if any_damaged:
        header.append("STATUS")
    now = datetime.now(timezone.utc)
    rows = []
    for e in entries:
        row = [
            e.id,
            e.name,
            e.subject or "-",
            e.style or "-",
            short_base(e),
            _setting(e, "rank", "settings"),
            _setting(e, "steps", "figures", "settings"),
            human_bytes(e.size_bytes),
            ago(e.created, now),
        ]
        if evaluated:
            values = [headline_score(e, s) for s in HEADLINE.values()]
            row += ["-" if v is None else f"{v:.3f}" for v in values]
        if any_damaged:
            row.append(f"DAMAGED: {e.damaged}" if e.damaged else "ok")
        rows.append(row)
    return header, rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A borderless, aligned table on stdout.

    Drawn by hand rather than with rich: rich's Table measures every cell and took seconds for a
    thousand rows, against a 0.5 s budget for ``unzip list``. Long cells are cut on a terminal.
    """
    right = {"RANK", "STEPS", "SIZE"}
    cap = 28 if sys.stdout.isatty() else 10_000
    cells = [[visible(c) for c in row] for row in rows]
    cells = [[c if len(c) <= cap else c[: cap - 1] + "~" for c in row] for row in cells]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(row, widths, header)]
        return "  ".join(parts).rstrip()

    _data("\n".join([line(header)] + [line(r) for r in cells]))


def _kv(key: str, value: Any, indent: int = 0) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    data(f"{' ' * indent}{key + ':':<12} {text}")


def show_page(entry: Any) -> None:
    """Every field of an entry as ``key: value`` lines on stdout."""
    r = entry.record
    _kv("id", entry.id)
    _kv("name", entry.name)
    _kv("status", f"DAMAGED: {entry.damaged}" if entry.damaged else "ok")
    _kv("kind", str(r.get("kind", "-")))
    created = entry.created
    _kv("created", f"{r.get('created', '-')} ({ago(created)})" if created else str(r.get("created", "-")))
    _kv("path", str(entry.path))
    _kv("written by", f"unziplora {r.get('tool_version', '?')} (entry schema {r.get('schema_version', '?')})")
    _kv("subject", entry.subject or "-")
    _kv("style", entry.style or "-")
    _kv("rare token", str(r.get("rare_token") or "-"))
    base = r.get("base") if isinstance(r.get("base"), dict) else {}
    extra = ", ".join(f"{k} {v}" for k, v in base.items() if k != "ref" and v is not None)
    _kv("base", f"{base.get('ref', '-')}" + (f" ({extra})" if extra else ""))
    for section in ("prompts", "settings", "figures"):
        values = r.get(section)
        if isinstance(values, dict) and values:
            data(f"{section}:")
            for key, value in values.items():
                if section != "figures" or key != MOVEMENT_KEY:
                    _kv(str(key), value, indent=2)
    _kv("moved", movement_summary(r))  # changes with training even where the images cannot (tiny-sdxl)
    sources = r.get("sources") if isinstance(r.get("sources"), list) else []
    if sources:
        data("sources:")
        for s in sources:
            s = s if isinstance(s, dict) else {"name": str(s)}
            pixels = f"{s['width']}x{s['height']}" if "width" in s and "height" in s else "?x?"
            size = human_bytes(s["bytes"]) if isinstance(s.get("bytes"), int) else "?"
            data(f"  {s.get('name', '?')}  {pixels}  {size}  sha256 {str(s.get('sha256', '?'))[:16]}")
    if r.get("provenance"):
        _kv("provenance", r["provenance"])
    known = set(STANDARD_KEYS)
    block = r.get(EVALUATION_KEY)
    if isinstance(block, dict):  # the last 'unzip eval': its settings on one line, then one row per score
        known.add(EVALUATION_KEY)
        _kv("evaluation", ", ".join(f"{k} {v}" for k, v in block.items() if k != "scores"))
        values = block.get("scores") if isinstance(block.get("scores"), dict) else {}
        for key, value in values.items():
            _kv(str(key), "-" if value is None else value, indent=2)
    for key in (k for k in r if k not in known):
        text = r[key] if isinstance(r[key], str) else json.dumps(r[key], ensure_ascii=False)
        _kv(str(key), text if len(text) <= 200 else text[:197] + "... (full value in --json)")
    files = entry.files
    if files:
        data("files:")
        width = max(len(n) for n in files)
        for name, info in files.items():
            data(
                f"  {name:<{width}}  {human_bytes(int(info.get('bytes', 0))):>10}  sha256 {str(info.get('sha256'))[:16]}"
            )
    _kv("size", f"{human_bytes(entry.size_bytes)} on disk")
    if entry.preview:
        _kv("preview", entry.preview)
