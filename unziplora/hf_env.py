"""Quiet, predictable Hugging Face libraries.

Call :func:`prepare_hf` before importing diffusers or transformers. It drops transformers'
"requires torchvision" fallback warning (this project deliberately has no torchvision: there is
no CPU build of it) and turns off the libraries' own loading progress bars, which would
otherwise interleave with our progress output on stderr. The hub's *download* progress bars are
turned off too, but only programmatically (not through HF_HUB_DISABLE_PROGRESS_BARS, which could
not be undone): :func:`download_progress` turns them back on while a real download runs on a
terminal. :func:`quiet_hf_logs` keeps the libraries' log lines off stderr while we load a base:
their failures reach the user as our one-line errors instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_done = False
HF_LOGGERS = ("diffusers", "transformers", "huggingface_hub")


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def _user_set_bars() -> str | None:
    """HF_HUB_DISABLE_PROGRESS_BARS as the user set it (it has priority over any call of ours)."""
    value = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    return None if value is None else value.strip().lower()


def prepare_hf() -> None:
    """Idempotently configure logging and progress bars of transformers/diffusers/hub."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionNotice())
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    hub_utils.logging.set_verbosity_error()
    if _user_set_bars() is None:
        hub_utils.disable_progress_bars()


def download_shows_bars() -> bool:
    """Whether a download should draw the hub's progress bars: stderr is a terminal, and the user did not say no."""
    setting = _user_set_bars()
    if setting is not None:
        return setting not in {"1", "true", "yes", "on"}
    return sys.stderr.isatty()


@contextmanager
def download_progress() -> Iterator[bool]:
    """The hub's download bars on (when :func:`download_shows_bars`) for the block; yields whether they are."""
    prepare_hf()
    import huggingface_hub.utils as hub_utils

    bars = download_shows_bars()
    if not bars or _user_set_bars() is not None:
        yield bars
        return
    hub_utils.enable_progress_bars()
    try:
        yield True
    finally:
        hub_utils.disable_progress_bars()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def quiet_hf_logs() -> Iterator[list[logging.LogRecord]]:
    """Collect (instead of print) what diffusers, transformers and the hub log during the block.

    Yields the list of records; with UNZIPLORA_DEBUG set they are printed after the block.
    """
    collector = _Collect()
    saved = []
    for name in HF_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [collector]
        logger.propagate = False
    try:
        yield collector.records
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        if os.environ.get("UNZIPLORA_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}:
            for record in collector.records:
                print(f"[{record.name}] {record.getMessage()}", file=sys.stderr)


@contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face offline mode for the duration of the block, whatever the environment says.

    ``HF_HUB_OFFLINE`` is read once, when huggingface_hub is imported, so setting the variable
    is not enough inside a running process: the library's constant is switched too. With it on,
    any attempt to reach the hub fails at once instead of waiting on the network.
    """
    import huggingface_hub.constants as hub_constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
