"""``unzip doctor``'s registry check: every damaged entry, by id, with what to do about it.

Importing this module adds the check to :data:`unziplora.diagnostics.EXTRA_CHECKS` (once).
"""

from __future__ import annotations

from unziplora.diagnostics import EXTRA_CHECKS, Check
from unziplora.errors import UnZipLoRAError
from unziplora.settings import Settings


def entries_check(settings: Settings) -> list[Check]:
    """One ``entries`` line: how many entries, or which ones are damaged (status fail)."""
    from unziplora.registry.store import Registry

    try:
        entries = Registry(settings.registry).list()
    except (UnZipLoRAError, OSError) as exc:
        return [Check("entries", "fail", f"cannot list {settings.registry}: {exc}")]
    damaged = [e for e in entries if e.damaged]
    if not damaged:
        return [Check("entries", "ok", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, none damaged")]
    shown = "; ".join(f"{e.id} ({e.damaged})" for e in damaged[:10])
    more = f"; and {len(damaged) - 10} more" if len(damaged) > 10 else ""
    return [
        Check(
            "entries",
            "fail",
            f"{len(damaged)} of {len(entries)} damaged: {shown}{more}. "
            "Inspect with 'unzip show ID --verify'; remove with 'unzip rm ID'",
        )
    ]


if entries_check not in EXTRA_CHECKS:
    EXTRA_CHECKS.append(entries_check)
