"""Counted, not timed: FLOPs and dispatched operators of one training step, on meta tensors.

No GPU is needed to know what a step at full SDXL shapes asks of one: the UNet runs on PyTorch's
``meta`` device (shapes only, no data, no compute) under a FLOP counter and an operator counter.
Three sides, as in :mod:`benchmarks.bench_train`: the floor (frozen UNet, forward + backward to
the input latents), ours (UnZipLoRA layers injected, prompt separation, masks on, merges
trainable) and the official-style step (dense LoRA layers, plus one VAE encode per step).

FLOPs bound what a fast accelerator can do; the operator count is what the host must dispatch
(each non-view operator is roughly one kernel launch on a GPU), which decides whether an eager
step is compute-bound or launch-bound. The optimizer, clipping and hooks are not counted.

    python -m benchmarks.count_ops [--size sdxl]
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Row
from benchmarks.sizes import SIZES, SizeSpec, size_spec

SIDES = ("floor", "ours", "official")
LAUNCH_GOAL = 1.6  # issue 15: non-view operators per eager step at full SDXL shapes, against the floor
# Operators that only re-describe memory (no kernel launch on a GPU).
VIEW_OPS = frozenset(
    [
        "view",
        "_unsafe_view",
        "t",
        "transpose",
        "expand",
        "permute",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "as_strided",
        "alias",
        "detach",
        "reshape",
        "split",
        "unbind",
        "split_with_sizes",
        "chunk",
        "lift_fresh",
        "_reshape_alias",
    ]
)


@dataclass
class Counts:
    flops: float
    ops: int
    kernel_ops: int  # non-view operators
    wrapped_layers: int


@contextmanager
def _meta_autocast_query() -> Iterator[None]:
    """``torch.is_autocast_enabled("meta")`` raises; answer False for meta while counting."""
    import torch

    original = torch.is_autocast_enabled

    def patched(*args: Any) -> bool:
        if args and args[0] == "meta":
            return False
        return original(*args)

    torch.is_autocast_enabled = patched
    try:
        yield
    finally:
        torch.is_autocast_enabled = original


def _op_counter() -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: collections.Counter[str] = collections.Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.counts[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    return OpCounter()


def count_side(spec: SizeSpec, side: str) -> Counts:
    """FLOPs and operators of one forward + backward of ``side`` at the spec's shapes."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.official_step import enter_masked_phase, inject_dense
    from unziplora.method import BRANCHES, inject_unziplora

    with _meta_autocast_query():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**spec.unet)
        unet.requires_grad_(False)
        layers: dict[str, Any] = {}
        if side == "ours":
            layers = inject_unziplora(unet, spec.rank)
        elif side == "official":
            layers = inject_dense(unet, spec.rank)
        if layers:
            enter_masked_phase(layers)  # masks on, merges trainable (typical step)
            for layer in layers.values():
                for b in BRANCHES:
                    layer.merge[b].requires_grad_(True)
        unet.train()
        side_px, cross = spec.latent_side, spec.cross_dim
        flops = FlopCounterMode(display=False)
        ops = _op_counter()
        with torch.device("meta"):
            latents = torch.randn(1, 4, side_px, side_px, requires_grad=side == "floor")
            cond = {
                "encoder_hidden_states": torch.randn(1, 77, cross),
                "added_cond_kwargs": {"text_embeds": torch.randn(1, spec.pooled_dim), "time_ids": torch.randn(1, 6)},
            }
            extra = None
            if side != "floor":
                extra = {
                    "content_encoder_hidden_states": torch.randn(1, 77, cross),
                    "style_encoder_hidden_states": torch.randn(1, 77, cross),
                }
            with flops, ops:
                if side == "official":
                    vae = AutoencoderKL(**spec.vae)
                    with torch.no_grad():
                        vae.encode(torch.randn(1, 3, spec.resolution, spec.resolution))
                pred = unet(latents, torch.tensor([500]), cross_attention_kwargs=extra, return_dict=False, **cond)[0]
                pred.float().pow(2).mean().backward()
    total = sum(ops.counts.values())
    kernels = sum(n for name, n in ops.counts.items() if name not in VIEW_OPS)
    return Counts(float(flops.get_total_flops()), total, kernels, len(layers))


def count(spec: SizeSpec) -> dict[str, Counts]:
    return {side: count_side(spec, side) for side in SIDES}


def rows_from(spec: SizeSpec, counts: dict[str, Counts]) -> list[Row]:
    floor, ours, official = (counts[s] for s in SIDES)
    where = f"{spec.name} shapes, {spec.resolution} px, rank {spec.rank}"
    notes = {f"{s}_{k}": getattr(c, k) for s, c in counts.items() for k in ("flops", "ops", "kernel_ops")}
    notes["wrapped_layers"] = ours.wrapped_layers
    tf = 1e12
    return [
        Row(
            f"counted: train FLOPs vs floor ({where})",
            ours.flops / tf,
            floor.flops / tf,
            "TFLOP",
            "<= 1.15x",
            ours.flops / floor.flops <= 1.15,
            "UnZipLoRA UNet fwd+bwd",
            "frozen UNet fwd+bwd (floor)",
            "counted",
            notes,
        ),
        Row(
            f"counted: train FLOPs vs official-style ({where})",
            ours.flops / tf,
            official.flops / tf,
            "TFLOP",
            "< 1x",
            ours.flops < official.flops,
            "UnZipLoRA UNet fwd+bwd",
            "dense-LoRA UNet fwd+bwd + VAE encode",
            "counted",
        ),
        Row(
            f"counted: kernel launches per step vs floor ({where})",
            float(ours.kernel_ops),
            float(floor.kernel_ops),
            "ops",
            f"<= {LAUNCH_GOAL}x (eager)" if spec.name == "sdxl" else "- (info)",
            ours.kernel_ops / floor.kernel_ops <= LAUNCH_GOAL if spec.name == "sdxl" else None,
            "UnZipLoRA UNet fwd+bwd",
            "frozen UNet fwd+bwd (floor)",
            "counted",
            {"ours_ops_with_views": ours.ops, "floor_ops_with_views": floor.ops},
        ),
    ]


def run(size: str = "sdxl") -> list[Row]:
    spec = size_spec(size)
    return rows_from(spec, count(spec))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="sdxl", choices=SIZES)
    args = parser.parse_args(argv)
    for row in run(args.size):
        print(f"{row.name:70s} ours {row.ours:10.4g} ref {row.reference:10.4g} {row.unit:5s} ours/ref {row.ratio:.3f}")


if __name__ == "__main__":
    main()
