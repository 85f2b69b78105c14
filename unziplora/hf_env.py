"""Quiet, predictable Hugging Face libraries.

Call :func:`prepare_hf` before importing diffusers or transformers. It drops transformers'
"requires torchvision" fallback warning (this project deliberately has no torchvision: there is
no CPU build of it) and turns off the libraries' own loading progress bars, which would
otherwise interleave with our progress output on stderr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

_done = False


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def prepare_hf() -> None:
    """Idempotently configure logging and progress bars of transformers/diffusers/hub."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionNotice())
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


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
