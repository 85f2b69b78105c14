"""Park a module's weights in a safetensors file while it is not needed, freeing RAM and device memory.

Training needs SDXL's two text encoders and its VAE only to encode the prompts and cache the
latents; during the loop they are dead weight (3.6 GB in fp32 at full size). Moving them to the
CPU, as before, only moved the cost from device memory to RAM. Here every parameter and buffer
(non-persistent ones included: CLIP's ``position_ids``) is written to one file and the module is
moved to the ``meta`` device, which holds no memory; :func:`restore` loads them back bit-exactly
onto the device they came from. Works for any base (folder, hub snapshot, single file), since it
does not depend on where the weights were first read from.

Meant for frozen modules: the file is kept after a restore, so parking the same module again
(after the preview, between ``--each`` entries) frees it without writing 3.6 GB again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

_PARKED = "_unziplora_parked"  # attribute on a parked module: (file, device)
_FILE = "_unziplora_park_file"  # attribute once written: the file that still holds its tensors
# Below this many bytes parking does not hand memory back to the OS: a full gc pass walks every
# Python object (~450k once torch and diffusers are imported: 0.2-0.3 s, 6 per training), which
# costs more than a toy base's whole training step, to give back at most this much RSS.
RELEASE_MIN_BYTES = 64 * 2**20


def is_parked(module: nn.Module) -> bool:
    return getattr(module, _PARKED, None) is not None


def park(module: nn.Module, path: Path) -> None:
    """Write ``module``'s tensors to ``path`` and free them (the module is on ``meta`` until restored)."""
    if is_parked(module):
        return
    named = [*module.named_parameters(), *module.named_buffers()]
    device = named[0][1].device if named else torch.device("cpu")
    size = sum(t.numel() * t.element_size() for _, t in named)
    if getattr(module, _FILE, None) != path or not path.is_file():
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: t.detach().to("cpu").contiguous() for name, t in named}, str(path))
        setattr(module, _FILE, path)
    del named
    module.to("meta")
    setattr(module, _PARKED, (path, device))
    if size >= RELEASE_MIN_BYTES:
        release_freed_memory()


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``), so RSS really drops.

    CPU tensors under glibc's mmap threshold (which grows to 32 MiB as large blocks are freed)
    live on the heap; freeing them leaves the pages mapped. Without this, parking the text
    encoders on CPU freed them for Python but not for ``ps``. No-op where there is no glibc.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parking_dir(root: Path) -> Any:
    """A fresh ``parked-<pid>-*`` TemporaryDirectory under ``root`` (removed when it is collected or
    at exit); first removes those of processes that died without cleaning up (a kill, the OOM killer)."""
    import os
    import shutil
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("parked-*-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"parked-{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def restore(module: nn.Module) -> None:
    """Load a parked module's tensors back onto the device it was parked from; no-op if not parked."""
    parked = getattr(module, _PARKED, None)
    if parked is None:
        return
    path, device = parked
    from safetensors.torch import load_file

    loaded = load_file(str(path), device=str(device))
    for name, tensor in loaded.items():
        owner_name, _, attr = name.rpartition(".")
        owner: Any = module.get_submodule(owner_name) if owner_name else module
        if attr in owner._parameters:
            old = owner._parameters[attr]
            owner._parameters[attr] = nn.Parameter(tensor, requires_grad=bool(old is not None and old.requires_grad))
        else:
            owner._buffers[attr] = tensor
    setattr(module, _PARKED, None)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a tensor shared under two names (tied weights) would come back under one only
        raise RuntimeError(f"restoring {type(module).__name__} left {len(left)} tensors on meta, e.g. {left[0]}")


class FrozenParts:
    """A pipeline's frozen modules that training parks on disk while the loop runs.

    Once the prompts and latents are cached, the loop needs only the UNet; the text encoders and
    the VAE go to a file in the user cache dir and come back (bit-exactly) for previews.
    """

    NAMES = ("text_encoder", "text_encoder_2", "vae")

    def __init__(self, pipe: Any, device: str) -> None:
        self.pipe = pipe
        self.device = device
        self._dir: Any = None  # a TemporaryDirectory in the user cache dir, made on first park

    def park(self, *names: str) -> None:
        """Free the named modules (weights to a file; see :func:`park`)."""
        if self._dir is None:
            from unziplora.settings import user_cache_dir

            self._dir = parking_dir(user_cache_dir())
        for name in names:
            park(getattr(self.pipe, name), Path(self._dir.name) / f"{name}.safetensors")

    def unpark(self, *names: str, device: str | None = None) -> None:
        """Load the named modules back (onto ``device``, default the training device)."""
        for name in names:
            module = getattr(self.pipe, name)
            restore(module)
            module.to(device or self.device)
