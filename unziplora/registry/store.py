"""The registry: create, read, resolve and remove entries, safely under concurrency.

:class:`Registry` is the one object callers hold; each reason to change has its own module:

* :mod:`.folders` — the layout under the root, the writer lock, sweeping what dead writers left;
* :mod:`.staging` — writing a new entry (staged in ``.tmp/``, committed by one rename);
* :mod:`.update` — adding files to a committed entry (``unzip eval``);
* :mod:`.lookup` — listing, resolving ids, prefixes and names;
* :mod:`.removal` — removal plans (shown first, executed per entry atomically).

Why it is crash safe: an entry is written in ``.tmp/<id>`` and appears under ``entries/`` by one
``rename``; removal renames it into ``.trash/`` before deleting anything. So ``entries/`` only ever
holds whole entries, whatever moment a process dies at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unziplora.registry import lookup, staging, update
from unziplora.registry.entry import Entry
from unziplora.registry.folders import Folders
from unziplora.registry.removal import RemovalPlan, plan_removal
from unziplora.registry.staging import Staging

__all__ = ["Registry", "Staging"]


class Registry(Folders):
    """The local store of decomposed images. Reading needs no lock; writing takes ``.lock`` briefly."""

    @classmethod
    def from_settings(cls, registry: str | Path | None = None) -> Registry:
        """The registry chosen by --registry > $UNZIPLORA_HOME > config.toml > the user data dir."""
        from unziplora.settings import load_settings

        return cls(load_settings(registry=registry).registry)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def new_entry(self, *, subject: str, style: str, name: str | None = None) -> Iterator[Staging]:
        """``with reg.new_entry(subject=..., style=...) as st:`` write files under ``st.dir`` and set
        ``st.record``; the entry lands atomically (:func:`unziplora.registry.staging.new_entry`)."""
        with staging.new_entry(self, subject=subject, style=style, name=name) as staged:
            yield staged

    def create(
        self,
        record: dict[str, Any],
        write_payload: Callable[[Path], None] | None = None,
        *,
        subject: str | None = None,
        style: str | None = None,
        name: str | None = None,
    ) -> Entry:
        """One-call form of :meth:`new_entry`: ``write_payload(dir)`` writes the files, ``record`` the fields."""
        subject = subject if subject is not None else str(record.get("subject", ""))
        style = style if style is not None else str(record.get("style", ""))
        with self.new_entry(subject=subject, style=style, name=name) as staged:
            if write_payload is not None:
                write_payload(staged.dir)
            staged.record = dict(record)
        assert staged.entry is not None
        return staged.entry

    def add_files(self, text: str, payloads: dict[str, bytes], fields: dict[str, Any]) -> Entry:
        """Add (or replace) files in a committed entry and set top-level ``fields`` of its record
        (:func:`unziplora.registry.update.add_files`)."""
        return update.add_files(self, text, payloads, fields)

    # -- reading -------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Ids of every entry folder, sorted; unaddressable folder names are ignored."""
        return lookup.entry_ids(self)

    def list(self) -> list[Entry]:
        """Every entry, damaged ones included (``entry.damaged`` says why), sorted by id."""
        return lookup.list_entries(self)

    def resolve(self, text: str) -> str:
        """The id meant by ``text``: an exact id, a unique id prefix, or a unique entry name."""
        return lookup.resolve(self, text)

    def get(self, text: str, *, allow_damaged: bool = False) -> Entry:
        """The entry for an id, prefix or name. Damaged entries raise unless ``allow_damaged``."""
        return lookup.get(self, text, allow_damaged=allow_damaged)

    # -- removing ------------------------------------------------------------------------------

    def plan_removal(self, texts: Iterable[str]) -> RemovalPlan:
        """Resolve every id first (any error removes nothing), with the bytes each would free."""
        return plan_removal(self, texts)

    def remove(self, texts: Iterable[str], dry_run: bool = False) -> RemovalPlan:
        """Remove entries (renamed out of ``entries/`` first, then deleted); returns the plan carried out."""
        plan = self.plan_removal(texts)
        return plan if dry_run else plan.execute()
