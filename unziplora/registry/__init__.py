"""The local registry of decomposed images (light: imports no torch).

Typical use from other commands and notebooks::

    from unziplora.registry import Registry

    reg = Registry.from_settings()                      # or Registry(Path("~/unziplora"))
    with reg.new_entry(subject="cat", style="pencil sketch") as st:
        write_payload(st.dir, st.id, loras, masks, ...)   # unziplora.entry_files writes the LoRA files
        st.record = {"prompts": {...}, "base": {...}, "settings": {...}, "figures": {...}}
    entry = reg.get(st.id)                              # or any unique prefix, or the name
    entry.file(STYLE_FILE)                              # -> Path (names: unziplora.entry_files)
    reg.remove([entry.id])

Layout and crash safety: :mod:`unziplora.registry.store`; the ``entry.json`` fields:
:mod:`unziplora.registry.schema`.
"""

from __future__ import annotations

from unziplora.registry.entry import ENTRY_JSON, Entry
from unziplora.registry.ids import make_id, slug, validate_id, validate_name
from unziplora.registry.removal import RemovalItem, RemovalPlan
from unziplora.registry.schema import SCHEMA_VERSION
from unziplora.registry.store import Registry, Staging

__all__ = [
    "ENTRY_JSON",
    "SCHEMA_VERSION",
    "Entry",
    "Registry",
    "RemovalItem",
    "RemovalPlan",
    "Staging",
    "make_id",
    "slug",
    "validate_id",
    "validate_name",
]
