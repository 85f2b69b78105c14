"""Device and precision resolution.

``auto`` picks CUDA, then Apple MPS, then CPU. Precision ``auto`` picks fp32 on CPU; on a GPU it
picks bf16 for training when the GPU supports it (else fp16), and fp16 for generation: the
official inference precision, and bf16 gains nothing for SDXL sampling (``--precision bf16``
still gives it). An explicit request that this machine cannot
meet (``cuda`` without CUDA, ``bf16`` on a GPU without bf16, ``fp16`` on CPU) is an error, not a
silent fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from unziplora.dtypes import PRECISIONS, torch_dtype
from unziplora.errors import DeviceError
from unziplora.settings import ENV_THREADS

PURPOSES = ("train", "generate")


@dataclass(frozen=True)
class Placement:
    """Where and in which dtype the frozen model runs."""

    device: str  # e.g. "cpu", "cuda", "cuda:1", "mps"
    precision: str  # "fp32" | "fp16" | "bf16"

    @property
    def dtype(self) -> Any:
        return torch_dtype(self.precision)

    @property
    def is_gpu(self) -> bool:
        return not self.device.startswith("cpu")


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(request: str = "auto") -> str:
    """Turn ``auto``/``cpu``/``cuda[:N]``/``mps`` into a device this machine has."""
    import torch

    request = (request or "auto").strip().lower()
    if request == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
        return "cpu"
    if request == "cpu":
        return "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{request}' was requested but CUDA is not available here; use --device cpu or auto."
            )
        if ":" in request:
            index_text = request.split(":", 1)[1]
            if not index_text.isdigit():
                raise DeviceError(f"device '{request}' is not a valid CUDA device; write cuda or cuda:N.")
            if int(index_text) >= torch.cuda.device_count():
                raise DeviceError(
                    f"device '{request}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
                )
        return request
    if request == "mps":
        if not _mps_available(torch):
            raise DeviceError(
                "device 'mps' was requested but Apple MPS is not available here; use --device cpu or auto."
            )
        return "mps"
    raise DeviceError(f"unknown device '{request}': use auto, cpu, cuda, cuda:N or mps.")


def resolve_precision(device: str, request: str = "auto", *, purpose: str = "train") -> str:
    """Pick the compute precision for ``device`` and ``purpose`` (train or generate); refuse
    explicit requests it cannot run."""
    import torch

    request = (request or "auto").strip().lower()
    if request not in PRECISIONS:
        raise DeviceError(f"unknown precision '{request}': use {', '.join(PRECISIONS)}.")
    on_cuda = device.startswith("cuda")
    bf16_ok = on_cuda and torch.cuda.is_bf16_supported()
    if request == "auto":
        if device == "cpu":
            return "fp32"
        if purpose == "generate":
            return "fp16"
        if bf16_ok:
            return "bf16"
        return "fp16"
    if request == "fp32":
        return "fp32"
    if device == "cpu":
        raise DeviceError(
            f"precision {request} is not supported for training and generation on CPU here; use --precision fp32 (or auto)."
        )
    if request == "bf16" and on_cuda and not bf16_ok:
        raise DeviceError("this GPU does not support bf16; use --precision fp16 (or auto).")
    return request


def resolve_placement(device: str = "auto", precision: str = "auto", *, purpose: str = "train") -> Placement:
    """Resolve both at once."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}; got {purpose!r}")
    dev = resolve_device(device)
    return Placement(device=dev, precision=resolve_precision(dev, precision, purpose=purpose))


# Below this many UNet parameters (tiny-sdxl has ~2M, the medium benchmark UNet ~40M, SDXL 2.6B)
# the operators are too small to share across threads: a second thread only adds synchronisation,
# and on a busy machine OpenMP's spinning threads made a 12-step tiny run 4x slower (40 s vs 11 s
# with the other core loaded; equal when idle).
SMALL_MODEL_PARAMS = 100_000_000


def cpu_threads_for(param_count: int, environ: dict[str, str] | None = None) -> int | None:
    """Intra-op threads for a CPU run of a UNet with ``param_count`` parameters; None: leave torch's default.

    ``$UNZIPLORA_THREADS`` decides when set; an explicit ``$OMP_NUM_THREADS`` is the user's own
    choice and is left alone; otherwise small models get one thread.
    """
    env = os.environ if environ is None else environ
    text = env.get(ENV_THREADS, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise DeviceError(f"{ENV_THREADS}={text!r} is not a positive whole number of threads.")
        return int(text)
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    return 1 if param_count < SMALL_MODEL_PARAMS else None


def apply_cpu_threads(device: str, unet: Any) -> None:
    """Set torch's intra-op thread count for a CPU run by :func:`cpu_threads_for`."""
    if device is not None and not str(device).startswith("cpu"):
        return
    import torch

    threads = cpu_threads_for(sum(p.numel() for p in unet.parameters()))
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
