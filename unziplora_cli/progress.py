"""Signs of life on stderr: the training bar, the sampling bar and phase lines. Silent with ``-q``.

On a terminal these are rich displays (a bar, a spinner naming the phase). When stderr is not a
terminal (a log file, ``nohup``, a batch job) a live display would print nothing until the end,
so every piece says the same in plain lines instead: each phase when it starts and when it ends
with its duration, and the training/sampling steps at most every :data:`PLAIN_EVERY_S` seconds
(and the last one).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

PLAIN_EVERY_S = 10.0
_DONE = ": done in "


def is_status_line(line: str) -> bool:
    """Whether ``line`` is one of :class:`PhaseReporter`'s plain lines (``label...``, ``label: done in 1.2 s``)."""
    return line.endswith("...") or (_DONE in line and line.endswith(" s"))


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # closed or replaced by something without isatty
        return False


def _plain(line: str) -> None:
    typer.echo(line, err=True)


class PhaseReporter:
    """The :class:`unziplora.activity.Listener` of a command: a spinner on a terminal, else lines."""

    def __init__(self) -> None:
        self.terminal = stderr_is_terminal()
        self._status: Any = None
        self._labels: list[str] = []

    def begin(self, label: str) -> None:
        if not self.terminal:
            _plain(f"{label}...")
            return
        self._labels.append(label)
        if self._status is None:
            from unziplora_cli._output import stderr_console

            self._status = stderr_console().status(label)
            self._status.start()
        else:
            self._status.update(label)

    def end(self, label: str, seconds: float) -> None:
        if not self.terminal:
            _plain(f"{label}{_DONE}{seconds:.1f} s")
            return
        if label in self._labels:
            self._labels.remove(label)
        if self._status is None:
            return
        if self._labels:
            self._status.update(self._labels[-1])
        else:
            self._status.stop()
            self._status = None
        if seconds >= 1.0:
            from unziplora_cli._output import stderr_console

            stderr_console().print(f"{label}: {seconds:.1f} s")

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        self._labels.clear()


class _PlainSteps:
    """Step lines for a non-terminal stderr: at most one per PLAIN_EVERY_S seconds, plus the last."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = 0.0

    def __call__(self, done: int, total: int, extra: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._last < PLAIN_EVERY_S:
            return
        self._last = now
        _plain(f"{self.what} {done}/{total}{extra}")


class TrainProgress:
    """Callbacks for :func:`unziplora.train.api.train_requests`, drawing one rich bar per entry."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.terminal = stderr_is_terminal()
        self._progress: Any = None
        self._task: Any = None
        self._plain: _PlainSteps | None = None

    def _ensure(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from unziplora_cli._output import stderr_console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} it/s"),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
            )
            self._progress.start()
        return self._progress

    def start(self, request: Any, index: int, total: int, first_step: int = 0) -> None:
        if self.quiet:
            return
        label = request.prompts.subject or "entry"
        if request.prompts.style_words:
            label += f" / {request.prompts.style_words}"
        if total > 1:
            label = f"[{index + 1}/{total}] {label}"
        if not self.terminal:
            self._plain = _PlainSteps(f"training {label}: step")
            return
        progress = self._ensure()
        self._task = progress.add_task(label, total=request.config.steps, completed=first_step, loss="-", rate="-")

    def step(self, report: Any) -> None:
        if self.quiet:
            return
        if self._plain is not None:
            self._plain(report.step, report.total, f", loss {report.loss:.4f}, {report.seconds:.2f} s/step")
            return
        if self._task is None:
            return
        rate = f"{1 / report.seconds:.2f}" if report.seconds > 0 else "-"
        self._progress.update(self._task, completed=report.step, loss=f"{report.loss:.4f}", rate=rate)

    def done(self, entry: Any) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(f"saved {entry.id}")
        else:
            _plain(f"saved {entry.id}")
        from unziplora.entry_files import PREVIEW_IMAGE

        if entry.has_file(PREVIEW_IMAGE):
            _plain(f"preview: {entry.file(PREVIEW_IMAGE)}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class SamplingProgress:
    """A rich bar on stderr fed by the library's ``on_step(done, total)`` (plain lines off a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.terminal = stderr_is_terminal()
        self._bar: Any = None
        self._task: Any = None
        self._plain = _PlainSteps("sampling: step")

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self.terminal:
            self._plain(done, total)
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from unziplora_cli._output import stderr_console

            self._bar = Progress(
                TextColumn("sampling"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
            )
            self._bar.start()
            self._task = self._bar.add_task("sampling", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
