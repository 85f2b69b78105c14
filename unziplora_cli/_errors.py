"""The one place that decides how a failure reaches the user.

Library errors (``unziplora.errors``) carry messages written for people: we print them as one
``error: ...`` line and exit 1. A few builtin failures that are really user input problems
(a file that vanished, a disk that is full) get the same treatment. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno

from unziplora.errors import UnZipLoRAError, UsageError


def _one_line(text: str) -> str:
    from unziplora_cli._output import visible

    return visible(" ".join(str(text).split()))


def _safetensors_io_error(exc: BaseException) -> bool:
    """safetensors reports a failed write (a full disk) as its own SafetensorError, not an OSError."""
    kind = type(exc)
    return kind.__name__ == "SafetensorError" and kind.__module__.startswith("safetensors") and "os error" in str(exc)


def exit_code_for(exc: BaseException) -> int | None:
    """Exit code for a mapped exception, or None for a bug (re-raise it)."""
    if isinstance(exc, UsageError):
        return 2  # the same code Click gives its own usage errors
    if isinstance(exc, UnZipLoRAError) or _safetensors_io_error(exc):
        return 1
    if isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.ENOENT, errno.EPERM}:
        return 1
    return None


def message_for(exc: BaseException) -> str:
    """The single line shown after ``error: ``."""
    if isinstance(exc, UnZipLoRAError):
        return _one_line(str(exc))
    if _safetensors_io_error(exc):
        text = str(exc).splitlines()[0]
        if "os error 28" in text or "No space left" in text:
            return "cannot write a safetensors file: no space left on the device; free some disk space and run the command again."
        return _one_line(f"cannot write a safetensors file: {text}")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        advice = {
            errno.ENOSPC: "free some disk space and run the command again",
            errno.EACCES: "check the file permissions",
            errno.EPERM: "check the file permissions",
            errno.EROFS: "choose a writable location",
            errno.ENOENT: "check the path",
        }.get(exc.errno or 0, "")
        return _one_line(f"{exc.strerror or exc}{where}; {advice}.")
    return _one_line(str(exc))
