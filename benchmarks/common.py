"""What every benchmark shares: the result row, alternating timing, and the environment line."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the table: our figure against a reference figure measured in the same run.

    ``ratio`` is always ``ours / reference`` (below 1: ours is faster or smaller). ``met`` is
    whether ``goal`` holds (None when the row has no goal of its own).
    """

    name: str
    ours: float
    reference: float
    unit: str  # "s", "ms", "MiB"
    goal: str
    met: bool | None
    ours_side: str  # what "ours" is, e.g. "unziplora train step"
    reference_side: str  # what the reference is, e.g. "frozen UNet fwd+bwd (floor)"
    group: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["ratio_means"] = "ours / reference"
        return data


def ratio_goal(ratio: float, limit: float, *, strict: bool = False) -> bool:
    """Whether ``ratio`` meets ``<= limit`` (``< limit`` when ``strict``)."""
    return ratio < limit if strict else ratio <= limit


class Clock:
    """Times a call: wall clock on an accelerator (synchronised before and after), CPU time of
    this process on a CPU running one intra-op thread.

    Why CPU time there: on a CPU shared with other work, a single-threaded process loses whole
    time slices to its neighbours, which wall time counts and CPU time does not; with one
    thread the process's CPU time is what its wall time would be on an idle machine. With more
    threads, OpenMP's spin-waiting would count as work, so wall time is used then.
    """

    def __init__(self, device: str = "cpu", kind: str = "auto") -> None:
        self.device = device
        if kind == "auto":
            kind = "cpu" if device.startswith("cpu") and _torch_threads() == 1 else "wall"
        if kind not in ("cpu", "wall"):
            raise ValueError(f"kind must be auto, cpu or wall; got {kind!r}")
        self.kind = kind

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def now(self) -> float:
        """The current reading (after waiting for queued accelerator work)."""
        self._sync()
        return time.process_time() if self.kind == "cpu" else time.perf_counter()

    def __call__(self, fn: Callable[[], Any]) -> float:
        start = self.now()
        fn()
        return self.now() - start


def _torch_threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0


def alternate(
    sides: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1, clock: Clock | None = None
) -> dict[str, list[float]]:
    """Run every side once per round, ``warmup`` untimed rounds then ``repeats`` timed ones.

    The order rotates each round, so no side always runs right after the same other side and
    every side sees the same machine load over the run. Returns seconds per side.
    """
    clock = clock or Clock()
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            took = clock(sides[name])
            if round_index >= warmup:
                times[name].append(took)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    """``min..max`` of a sample, for the notes (shows how noisy a shared machine was)."""
    return f"{min(values):.4g}..{max(values):.4g}" if values else ""


def environment() -> dict[str, Any]:
    """Hardware and load, for the header of the table and the JSON output."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None
