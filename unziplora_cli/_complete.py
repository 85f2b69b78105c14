"""Dynamic TAB completion of entry and run ids.

The shell runs ``unzip`` on every TAB, so these functions only list directory names of the
registry (no torch, no JSON parsing) and never raise: a broken config or registry simply
completes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _registry_root(ctx: Any) -> Path | None:
    from unziplora.settings import load_settings

    given = None
    node = ctx
    while node is not None:
        value = (node.params or {}).get("registry")
        if value:
            given = value
            break
        node = node.parent
    return load_settings(registry=given).registry


def entry_ids(ctx: Any, incomplete: str) -> list[str]:
    """Entry ids starting with what was typed."""
    try:
        root = _registry_root(ctx)
        folder = root / "entries"
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(incomplete))
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def run_ids(ctx: Any, incomplete: str) -> list[str]:
    """Interrupted training run ids starting with what was typed."""
    try:
        root = _registry_root(ctx)
        folder = root / "runs"
        return sorted(p.name for p in folder.iterdir() if (p / "run.json").is_file() and p.name.startswith(incomplete))
    except Exception:  # noqa: BLE001
        return []
