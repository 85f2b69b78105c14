"""Training runs in progress: ``<registry>/runs/<run-id>/``.

A run directory exists from the first training step until its entry lands in the registry; only
interrupted runs (Ctrl-C, or a crash after a checkpoint) outlive their command, and
``unzip train --resume RUN`` finishes them. The registry's entry list never reads ``runs/``.

Layout::

    runs/<run-id>/
        run.json              what to train: config, prompts, base, images, name, command line
        inputs/000.png ...    the prepared training images (square, at the training resolution),
                              so a resume does not need the original files
        checkpoint.json       pointer to the newest complete checkpoint (see train.checkpoint)
        ckpt-<token>/         checkpoint tensors and state
        previews/             samples written by --preview-every

This module is light (no torch).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unziplora.errors import AmbiguousEntryError, EntryNotFoundError, InvalidEntryIdError
from unziplora.registry.entry import read_plain

RUNS = "runs"
RUN_FILE = "run.json"
_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass
class Run:
    id: str
    path: Path
    record: dict[str, Any]

    @property
    def step(self) -> int:
        from unziplora.train.checkpoint import MANIFEST

        if not (self.path / MANIFEST).is_file():
            return 0
        return int(self.record.get("checkpoint_step", 0))

    def update(self, **fields: Any) -> None:
        """Rewrite run.json atomically with ``fields`` changed."""
        self.record.update(fields)
        write_json_atomic(self.path / RUN_FILE, self.record)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def runs_dir(root: Path) -> Path:
    """``<root>/runs``; refused when it is a symlink or a file (the registry never follows links)."""
    path = root / RUNS
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        from unziplora.errors import RegistryError

        raise RegistryError(f"{path} is not a plain folder; the registry never follows links inside itself. Replace it with a plain folder")
    return path


def create_run(root: Path, slug: str, record: dict[str, Any]) -> Run:
    """A new run directory with a fresh id ``<slug>-run-<hex4>`` and its run.json."""
    from unziplora.registry import Registry

    Registry(root).ensure_dirs()  # refuses a folder that is not a registry before anything is made in it
    base = runs_dir(root)
    base.mkdir(exist_ok=True)
    while True:
        run_id = f"{slug}-run-{secrets.token_hex(2)}"
        path = base / run_id
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    record = dict(record, run_id=run_id, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json_atomic(path / RUN_FILE, record)
    return Run(run_id, path, record)


def list_runs(root: Path) -> list[Run]:
    """Every run directory with a readable run.json, oldest first."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            raw, _ = read_plain(str(path / RUN_FILE))
            record = json.loads((raw or b"").decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        found.append(Run(path.name, path, record))
    return sorted(found, key=lambda r: r.record.get("created", ""))


def open_run(root: Path, ref: str) -> Run:
    """Find a run by id, unique id prefix, or path to its directory."""
    candidate = Path(ref).expanduser()
    if candidate.is_dir() and (candidate / RUN_FILE).is_file():
        return Run(candidate.name, candidate, json.loads((candidate / RUN_FILE).read_text(encoding="utf-8")))
    if not _RUN_ID.match(ref):
        raise InvalidEntryIdError(f"'{ref}' is not a run id or run directory (see 'unzip list --runs').")
    runs = list_runs(root)
    exact = [r for r in runs if r.id == ref]
    matches = exact or [r for r in runs if r.id.startswith(ref)]
    if not matches:
        raise EntryNotFoundError(f"no resumable run matches '{ref}' (see 'unzip list --runs').")
    if len(matches) > 1:
        names = ", ".join(r.id for r in matches[:8])
        raise AmbiguousEntryError(f"'{ref}' matches {len(matches)} runs: {names}; give more characters.")
    return matches[0]
