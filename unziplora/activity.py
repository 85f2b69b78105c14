"""What the library is doing right now, for whoever shows signs of life (the CLI's stderr).

Long phases (loading the base, encoding prompts, caching latents, the preview, saving, folding
LoRAs, decoding) are wrapped in :func:`phase`. Without a listener that costs nothing; the CLI
installs one per command (:func:`set_listener`) that prints a line or a spinner on stderr and
stays silent with ``-q``. One process-wide listener rather than a callback argument on every
function, because the phases sit several calls deep (a pipeline load inside a trainer inside a
batch) and each would otherwise have to thread the callback through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Listener(Protocol):
    def begin(self, label: str) -> None: ...

    def end(self, label: str, seconds: float) -> None: ...


_listener: Listener | None = None


def set_listener(listener: Listener | None) -> Listener | None:
    """Install ``listener`` (None: nobody listens); return the previous one."""
    global _listener
    previous, _listener = _listener, listener
    return previous


@contextmanager
def phase(label: str) -> Iterator[None]:
    """Tell the listener that ``label`` (e.g. ``"loading the base model"``) starts and how long it took.

    The end is reported only when the phase completes (an exception passes through unreported:
    the error line says what happened).
    """
    listener = _listener
    if listener is None:
        yield
        return
    listener.begin(label)
    start = time.perf_counter()
    yield
    listener.end(label, time.perf_counter() - start)


def begin(label: str) -> float:
    """Start ``label`` where a ``with`` block does not fit (it ends in a callback); pair with :func:`end`."""
    if _listener is not None:
        _listener.begin(label)
    return time.perf_counter()


def end(label: str, started: float) -> None:
    if _listener is not None:
        _listener.end(label, time.perf_counter() - started)
