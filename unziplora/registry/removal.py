"""Removing entries: a plan first (what goes, how many bytes), then an atomic-per-entry execution.

As huggingface_hub's cache deletion does, the plan is built and shown before anything changes.
Executing renames each entry folder into ``.trash/`` under the writer lock (one atomic step per
entry: listing sees it whole or not at all) and only then deletes the files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unziplora.fileio import fsync_dir
from unziplora.registry import entry as entry_mod
from unziplora.registry.folders import Folders
from unziplora.registry.fsutil import pause
from unziplora.registry.lookup import resolve


@dataclass(frozen=True)
class RemovalItem:
    """One entry a plan removes."""

    id: str
    path: Path
    bytes: int
    name: str
    damaged: str | None = None


@dataclass
class RemovalPlan:
    """What ``remove`` will do or did. ``removed`` lists the ids actually deleted by ``execute``.

    It holds the registry's :class:`Folders` (where the entries are, the lock), not the Registry.
    """

    folders: Folders
    items: list[RemovalItem]
    executed: bool = False
    removed: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def freed_bytes(self) -> int:
        return sum(item.bytes for item in self.items if item.id in self.removed)

    def execute(self) -> RemovalPlan:
        """Rename every entry into ``.trash/`` under the lock, then delete; entries already gone are skipped."""
        reg = self.folders
        reg.ensure_dirs()
        moved: list[Path] = []
        with reg.locked():
            pause("rm-locked")
            reg.sweep()
            for item in self.items:
                dest = reg.trash_dir / f"{item.id}.{os.urandom(4).hex()}"
                try:
                    os.rename(reg.entries_dir / item.id, dest)
                except FileNotFoundError:
                    continue  # removed by someone else since the plan was made
                moved.append(dest)
                self.removed.append(item.id)
            if reg.durable and moved:
                fsync_dir(reg.entries_dir)
        pause("rm-after-rename")
        for dest in moved:
            shutil.rmtree(dest, ignore_errors=True)  # leftovers are swept by the next writer
        self.executed = True
        return self


def plan_removal(reg: Folders, texts: Iterable[str]) -> RemovalPlan:
    """Resolve every id (raising before anything is removed) and measure what each frees."""
    items: list[RemovalItem] = []
    seen: set[str] = set()
    for text in texts:
        entry_id = resolve(reg, text)
        if entry_id in seen:
            continue
        seen.add(entry_id)
        found = entry_mod.load(reg.entries_dir / entry_id)
        path = reg.entries_dir / entry_id
        if found is None:
            continue
        items.append(RemovalItem(entry_id, path, entry_mod.disk_bytes(path), found.name, found.damaged))
    return RemovalPlan(reg, items)
