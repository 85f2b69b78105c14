"""Forward+backward of the UnZipLoRA wrapper against the official dense-materialising formulation.

The official layer builds ``M = A^T B^T`` (``in x out``) per branch on every call, scales its
columns by the gate and multiplies ``x @ M`` (ALGORITHM.md 1.3, 9 #1). Ours applies the
factorised ``(x A^T)(B g)^T``. Both run at SDXL layer shapes, rank 64, two branches, with
trainable A, B and merges, masks on (the training-time configuration); the two sides alternate
inside one run so both see the same machine load, and we report medians.

    python benchmarks/bench_lora_wrapper.py [--device cpu|cuda] [--repeats 9] [--amp] [--threads N]

``run_benchmark()`` returns rows ``(name, ours_seconds, reference_seconds, ratio)``, ratio = ours / reference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unziplora.method import UnZipLoRALinear

# (name, tokens, in_features, out_features, separate branch inputs)
SHAPES: tuple[tuple[str, int, int, int, bool], ...] = (
    ("attn 64x64 latents, 4096 x 640 -> 640", 4096, 640, 640, False),
    ("attn 32x32 latents, 1024 x 1280 -> 1280", 1024, 1280, 1280, False),
    ("cross-attn k/v, 77 x 2048 -> 1280", 77, 2048, 1280, True),
)


def dense_reference(layer: UnZipLoRALinear, x: torch.Tensor, xc: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The official arithmetic: a dense ``[in, out]`` matrix per branch, column-gated, then ``x @ M``."""
    y = F.linear(x, layer.base_layer.weight, layer.base_layer.bias)
    for branch, inp in (("content", xc), ("style", xs)):
        dense = layer.lora_A[branch].T @ layer.lora_B[branch].T  # [in, out]
        dense = dense * layer.merge[branch] * layer.mask(branch).to(dense.dtype)
        y = y + (inp @ dense).to(y.dtype)
    return y


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def measure(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return measure


def _time_shape(
    tokens: int,
    inp: int,
    out: int,
    separate: bool,
    *,
    device: torch.device,
    rank: int,
    repeats: int,
    warmup: int,
    amp: bool,
    batch: int,
) -> tuple[float, float]:
    """Median seconds of one forward+backward at one shape: (ours, dense reference)."""
    dtype = torch.bfloat16 if amp else torch.float32
    torch.manual_seed(0)
    base = nn.Linear(inp, out).to(device, dtype).requires_grad_(False)
    layer = UnZipLoRALinear(base, rank, separate_inputs=separate)
    for b in ("content", "style"):
        layer.merge[b].requires_grad_(True)
        layer.set_mask(b, torch.rand(out) < 0.5)
        layer.set_mask_active(b, True)
    x, xc, xs = (torch.randn(batch, tokens, inp, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    if not separate:
        xc = xs = x
    grad_out = torch.randn(batch, tokens, out, device=device, dtype=dtype)

    def step(formulation: str) -> None:
        layer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if formulation == "ours":
                y = layer(x, content_input=xc if separate else None, style_input=xs if separate else None)
            else:
                y = dense_reference(layer, x, xc, xs)
        y.backward(grad_out.to(y.dtype))

    measure = _timer(device)
    for _ in range(warmup):
        step("ours")
        step("reference")
    ours, ref = [], []
    for _ in range(repeats):  # alternate so both sides see the same load
        ours.append(measure(lambda: step("ours")))
        ref.append(measure(lambda: step("reference")))
    return statistics.median(ours), statistics.median(ref)


def run_benchmark(
    device: str = "cpu", *, rank: int = 64, repeats: int = 9, warmup: int = 2, amp: bool = False, batch: int = 1
) -> list[tuple[str, float, float, float]]:
    """Median seconds of one forward+backward, ours vs the dense reference, per SDXL shape."""
    rows: list[tuple[str, float, float, float]] = []
    for name, tokens, inp, out, separate in SHAPES:
        o, r = _time_shape(
            tokens,
            inp,
            out,
            separate,
            device=torch.device(device),
            rank=rank,
            repeats=repeats,
            warmup=warmup,
            amp=amp,
            batch=batch,
        )
        rows.append((name, o, r, o / r))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument(
        "--amp", action="store_true", help="bf16 autocast with a bf16 base weight (GPU training setting)"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_benchmark(args.device, rank=args.rank, repeats=args.repeats, amp=args.amp)
    threads = torch.get_num_threads()
    print(f"device={args.device} rank={args.rank} amp={args.amp} torch={torch.__version__} threads={threads}")
    print(f"{'shape':44s} {'ours ms':>9s} {'dense ms':>9s} {'ours/dense':>10s}")
    for name, o, r, ratio in rows:
        print(f"{name:44s} {o * 1e3:9.2f} {r * 1e3:9.2f} {ratio:10.3f}")


if __name__ == "__main__":
    main()
