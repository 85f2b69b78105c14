"""The training progress bar on stderr: step, loss, it/s, ETA. Silent with ``-q``."""

from __future__ import annotations

from typing import Any


class TrainProgress:
    """Callbacks for :func:`unziplora.train.api.train_requests`, drawing one rich bar per entry."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

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
        progress = self._ensure()
        self._task = progress.add_task(label, total=request.config.steps, completed=first_step, loss="-", rate="-")

    def step(self, report: Any) -> None:
        if self.quiet or self._task is None:
            return
        rate = f"{1 / report.seconds:.2f}" if report.seconds > 0 else "-"
        self._progress.update(self._task, completed=report.step, loss=f"{report.loss:.4f}", rate=rate)

    def done(self, entry: Any) -> None:
        if self.quiet or self._progress is None:
            return
        self._progress.console.print(f"saved {entry.id}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
