"""Finding entries: listing ids, resolving an id, prefix or name, loading an entry. Reading takes no lock."""

from __future__ import annotations

import json
import os

from unziplora.errors import AmbiguousEntryError, DamagedEntryError, EntryNotFoundError
from unziplora.registry import entry as entry_mod
from unziplora.registry import ids
from unziplora.registry.entry import ENTRY_JSON, Entry
from unziplora.registry.folders import Folders


def entry_ids(folders: Folders) -> list[str]:
    """Ids of every entry folder, sorted; unaddressable folder names are ignored."""
    if folders.root_stat() is None:
        return []
    folders.check_ours()
    if not folders.own_folder(folders.entries_dir, create=False):
        return []
    try:
        with os.scandir(folders.entries_dir) as it:
            names = [d.name for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _addressable(n))


def list_entries(folders: Folders) -> list[Entry]:
    """Every entry, damaged ones included (``entry.damaged`` says why), sorted by id."""
    folder = folders.entries_dir
    loaded = (entry_mod.load(folder / entry_id) for entry_id in entry_ids(folders))
    return [e for e in loaded if e is not None]


def resolve(folders: Folders, text: str) -> str:
    """The id meant by ``text``: an exact id, a unique id prefix, or a unique entry name."""
    ids.check_lookup(text)
    known = entry_ids(folders)
    if text in known:
        return text
    matches = [i for i in known if i.startswith(text)]
    if not matches:
        names = _names(folders, known)
        matches = sorted(i for i, n in names.items() if n == text)
        if not matches:
            raise EntryNotFoundError(_not_found(folders, text, known, names))
    if len(matches) > 1:
        shown = ", ".join(matches[:8]) + (f", ... ({len(matches) - 8} more)" if len(matches) > 8 else "")
        raise AmbiguousEntryError(f"'{text}' matches {len(matches)} entries: {shown}; give more characters")
    return matches[0]


def _names(folders: Folders, known: list[str]) -> dict[str, str]:
    names = {}
    for entry_id in known:
        try:
            raw, _ = entry_mod.read_plain(str(folders.entries_dir / entry_id / ENTRY_JSON))
            name = json.loads(raw or b"{}").get("name")
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
        if isinstance(name, str):
            names[entry_id] = name
    return names


def _not_found(folders: Folders, text: str, known: list[str], names: dict[str, str]) -> str:
    if not known:
        return f"no entry matches '{text}'; the registry at {folders.root} is empty (see 'unzip train --help')"
    by_name = {n: i for i, n in names.items()}
    close = [by_name.get(c, c) for c in ids.nearest(text, known + sorted(set(by_name)))]
    close = list(dict.fromkeys(close))
    if not close:
        return f"no entry matches '{text}' (see 'unzip list')"
    return f"no entry matches '{text}'; did you mean {' or '.join(close)}? (see 'unzip list')"


def get(folders: Folders, text: str, *, allow_damaged: bool = False) -> Entry:
    """The entry for an id, prefix or name. Damaged entries raise unless ``allow_damaged``."""
    entry_id = resolve(folders, text)
    found = entry_mod.load(folders.entries_dir / entry_id)
    if found is None:
        raise EntryNotFoundError(f"entry {entry_id} was removed meanwhile (see 'unzip list')")
    if found.schema_error is not None:
        raise found.schema_error
    if found.damaged and not allow_damaged:
        raise DamagedEntryError(
            f"entry {entry_id} is damaged: {found.damaged}; check it with 'unzip show {entry_id} --verify' "
            f"or remove it with 'unzip rm {entry_id}'"
        )
    return found


def _addressable(name: str) -> bool:
    try:
        ids.validate_id(name)
    except ValueError:
        return False
    return True
