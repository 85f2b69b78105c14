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
    runs/<run-id>.lock        flock-ed by the process training the run (the kernel drops it when
                              that process dies), so a run in use is never resumed twice, and a
                              run whose lock nobody holds belongs to a dead process

A dead run with a checkpoint stays resumable; a dead run without one (or killed before its
inputs were recorded) holds nothing worth keeping and is swept by the next ``create_run``.
A finished run's entry records ``figures.run_id``, so a run left behind after its commit is
refused instead of being resumed into a second entry.

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

from unziplora.errors import AmbiguousEntryError, EntryNotFoundError, InvalidEntryIdError, TrainingError
from unziplora.fileio import write_json
from unziplora.registry.entry import read_plain
from unziplora.registry.fsutil import try_lock

RUNS = "runs"
RUN_FILE = "run.json"
LOCK_SUFFIX = ".lock"
_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass
class Run:
    id: str
    path: Path
    record: dict[str, Any]
    lock: Any = None  # the open, flock-ed lock file while this process owns the run

    @property
    def step(self) -> int:
        from unziplora.train.checkpoint import MANIFEST

        if not (self.path / MANIFEST).is_file():
            return 0
        return int(self.record.get("checkpoint_step", 0))

    def to_dict(self) -> dict[str, Any]:
        """The run for ``list --runs --json``, in the key names and shapes of an entry's record
        (``settings``, ``subject``, ``style``, ``prompts``, ``rare_token``, ``sources``, ``base``,
        ``path``) plus where it stands (``step`` of ``steps``). run.json keeps its own layout (it is
        what ``--resume`` reads); only this view is shaped like an entry."""
        from unziplora.entry_files import prompt_fields
        from unziplora.prompts import PromptSet

        record = self.record
        settings = record.get("config") if isinstance(record.get("config"), dict) else {}
        raw = record.get("prompts") if isinstance(record.get("prompts"), dict) else {}
        try:
            words = prompt_fields(PromptSet.from_dict(raw))
        except ValueError:  # an unreadable run.json still lists, with what it has
            words = {"subject": "", "style": "", "prompts": {}, "rare_token": None}
        return {
            "id": self.id,
            "name": record.get("name") or self.id,
            "kind": record.get("kind") or "train-run",
            "created": record.get("created"),
            **words,
            "sources": record.get("sources") if isinstance(record.get("sources"), list) else [],
            "base": record.get("base") if isinstance(record.get("base"), dict) else {},
            "settings": settings,
            "command": record.get("command"),
            "path": str(self.path),
            "step": self.step,
            "steps": settings.get("steps"),
        }

    def update(self, **fields: Any) -> None:
        """Rewrite run.json atomically with ``fields`` changed."""
        self.record.update(fields)
        write_json(self.path / RUN_FILE, self.record)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f"{self.id}{LOCK_SUFFIX}")

    @property
    def complete_inputs(self) -> bool:
        """Whether run.json names every prepared input and they are on disk (else nothing can resume)."""
        inputs, sources = self.record.get("inputs"), self.record.get("sources")
        if not isinstance(inputs, list) or not isinstance(sources, list) or not inputs or len(inputs) != len(sources):
            return False
        return all(isinstance(n, str) and (self.path / "inputs" / n).is_file() for n in inputs)

    def acquire(self) -> bool:
        """Take the run's lock without waiting; False when another process holds it."""
        handle = open(self.lock_path, "a+b")  # noqa: SIM115 - kept open while the run is owned
        if not try_lock(handle):
            handle.close()
            return False
        self.lock = handle
        return True

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def remove(self) -> None:
        """Delete the run folder, then its lock file (its lock is dropped last)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        self.release()


def runs_dir(root: Path) -> Path:
    """``<root>/runs``; refused when it is a symlink or a file (the registry never follows links)."""
    path = root / RUNS
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        from unziplora.errors import RegistryError

        raise RegistryError(
            f"{path} is not a plain folder; the registry never follows links inside itself. Replace it with a plain folder"
        )
    return path


def create_run(root: Path, slug: str, record: dict[str, Any]) -> Run:
    """A new run directory with a fresh id ``<slug>-run-<hex4>`` and its run.json."""
    from unziplora.registry import Registry

    Registry(root).ensure_dirs()  # refuses a folder that is not a registry before anything is made in it
    base = runs_dir(root)
    base.mkdir(exist_ok=True)
    sweep_runs(root)
    while True:
        run_id = f"{slug}-run-{secrets.token_hex(2)}"
        run = Run(run_id, base / run_id, {})
        if os.path.lexists(run.path) or not run.acquire():  # lock first: a sweeper never sees an unlocked new run
            continue
        try:
            run.path.mkdir()
            break
        except FileExistsError:
            run.release()
            continue
    run.record = dict(record, run_id=run_id, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(run.path / RUN_FILE, run.record)
    return run


def _read_record(path: Path) -> dict[str, Any] | None:
    """A run's record, read as a bounded regular file (never a FIFO or a link); None if unusable."""
    try:
        raw, _ = read_plain(str(path / RUN_FILE))
        record = json.loads((raw or b"").decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def sweep_runs(root: Path) -> list[str]:
    """Remove dead runs that cannot be resumed (no checkpoint, or inputs never recorded); return their ids.

    A run is dead when no process holds its lock. Runs with a checkpoint are kept for --resume.
    """
    from unziplora.train.checkpoint import MANIFEST

    base = runs_dir(root)
    swept: list[str] = []
    if not base.is_dir():
        return swept
    for path in sorted(base.iterdir()):
        if path.is_symlink() or not path.is_dir() or not _RUN_ID.match(path.name):
            continue
        run = Run(path.name, path, _read_record(path) or {})
        if (path / MANIFEST).is_file() and run.complete_inputs:
            continue  # resumable: kept (and not even its lock file is created)
        if not run.acquire():
            continue  # its process is alive (a new run has no checkpoint yet)
        run.remove()
        swept.append(run.id)
    return swept


def list_runs(root: Path) -> list[Run]:
    """Every run directory with a readable run.json, oldest first."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        record = _read_record(path)
        if record is None:
            continue
        found.append(Run(path.name, path, record))
    return sorted(found, key=lambda r: r.record.get("created", ""))


def open_run(root: Path, ref: str) -> Run:
    """Find a run by id, unique id prefix, or path to its directory."""
    candidate = Path(ref).expanduser()
    if candidate.is_dir() and (candidate / RUN_FILE).is_file():
        record = _read_record(candidate)
        if record is None:
            raise TrainingError(
                f"run {candidate.name} has an unreadable run.json; remove it with 'unzip rm --run {candidate.name}'"
            )
        return Run(candidate.name, candidate, record)
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


def claim_for_resume(run: Run, registry: Any) -> None:
    """Lock ``run`` for this process, or refuse with one line: in use, never recorded, or already an entry."""
    from unziplora.train.checkpoint import MANIFEST

    if not run.acquire():
        raise TrainingError(
            f"run {run.id} is in use by another unzip process (still training or being resumed); wait for it to finish"
        )
    try:
        if not run.path.is_dir():
            raise EntryNotFoundError(f"run {run.id} was removed meanwhile (see 'unzip list --runs')")
        if (
            not run.complete_inputs
            or not isinstance(run.record.get("config"), dict)
            or not isinstance(run.record.get("prompts"), dict)
        ):
            raise TrainingError(
                f"run {run.id} was interrupted before its inputs were recorded; nothing to resume: "
                f"remove it with 'unzip rm --run {run.id}' and train again"
            )
        for entry in registry.list():
            figures = entry.record.get("figures")
            if isinstance(figures, dict) and figures.get("run_id") == run.id:
                raise TrainingError(
                    f"run {run.id} already became entry {entry.id}; nothing to resume (remove the run with 'unzip rm --run {run.id}')"
                )
        if not (run.path / MANIFEST).is_file():
            raise TrainingError(
                f"run {run.id} stopped before its first checkpoint; nothing to resume: "
                f"remove it with 'unzip rm --run {run.id}' and train again"
            )
    except BaseException:
        run.release()
        raise


def remove_run(root: Path, ref: str) -> Run:
    """``unzip rm --run``: delete an interrupted run; refused while a process is training it."""
    run = open_run(root, ref)
    if not run.acquire():
        raise TrainingError(f"run {run.id} is in use by another unzip process; wait for it to finish")
    run.remove()
    return run
