"""Where our training step's time goes, phase by phase, next to the floor's forward and backward.

Diagnostic, not part of the table: it replays the body of :func:`unziplora.train.loop.train_loop`
with a timer between the phases (on a UNet set up by the real trainer code and brought into the
MASKED phase by three real loop steps), alternating with the floor, and reports medians. It
also times AdamW's implementations on the same parameters (``foreach``/``fused`` against the
default, which on a CPU is one small-op loop per tensor).

    python -m benchmarks.profile_step [--size medium] [--repeats 9]
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.common import Clock, median
from benchmarks.sizes import SIZES, build_unet, build_vae, size_spec

PHASES = ("data", "forward", "loss+ortho", "backward", "column hooks", "clip", "AdamW step", "zero_grad+clamp")


def phase_times(size: str, repeats: int, device: str = "cpu") -> tuple[dict[str, list[float]], list[Any]]:
    """Seconds per phase of our step (``ours: ...``) and of the floor (``floor: ...``), and our
    step's trainable tensors."""
    import torch
    import torch.nn.functional as F

    from benchmarks.bench_train import FloorStep, OursRun, _sharing_copy, place

    spec = size_spec(size)
    placed = place(spec, device)
    base = build_unet(spec)
    ours = OursRun(_sharing_copy(base), build_vae(spec), placed)  # one set of base weights
    ours.run(3)  # RESET, SELECT, one MASKED step: the state of 597 of 600 steps
    floor = FloorStep(base, placed)
    clock = Clock(placed.device)
    cond, scheduler = placed.cond, placed.noise_scheduler
    extra = {"content_encoder_hidden_states": cond.content, "style_encoder_hidden_states": cond.style}
    added = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
    params = [
        p for layer in ours.layers.values() for d in (layer.lora_A, layer.lora_B, layer.merge) for p in d.values()
    ]
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {f"ours: {p}": [] for p in PHASES}
    times.update({"ours: total": [], "floor: forward": [], "floor: backward": [], "floor: total": []})
    step = 3
    for round_index in range(repeats + 1):
        marks = [clock.now()]
        latents = ours.posterior.sample(0, generator).to(placed.device)
        noise = torch.randn(latents.shape, generator=generator).to(placed.device)
        t = torch.randint(0, 1000, (1,), generator=generator).to(placed.device)
        noisy = scheduler.add_noise(latents, noise, t)
        marks.append(clock.now())
        pred = ours.unet(
            noisy,
            t,
            encoder_hidden_states=cond.combined,
            added_cond_kwargs=added,
            cross_attention_kwargs=extra,
            return_dict=False,
        )[0]
        marks.append(clock.now())
        loss = F.mse_loss(pred.float(), noise.float())
        ortho = ours.columns.ortho_loss(ours.layers)
        total = loss + ortho if ortho is not None else loss
        float(total.detach())
        marks.append(clock.now())
        total.backward()
        marks.append(clock.now())
        ours.columns.after_backward(step)
        marks.append(clock.now())
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], ours.config.max_grad_norm)
        marks.append(clock.now())
        ours.optimizer.step()
        marks.append(clock.now())
        ours.optimizer.zero_grad(set_to_none=True)
        ours.columns.after_optimizer_step(step)
        marks.append(clock.now())
        step += 1
        x = torch.randn(noisy.shape, generator=generator).to(placed.device, placed.dtype).requires_grad_(True)
        f0 = clock.now()
        out = floor.unet(x, t, encoder_hidden_states=cond.combined, added_cond_kwargs=added, return_dict=False)[0]
        f1 = clock.now()
        F.mse_loss(out.float(), noise.float()).backward()
        f2 = clock.now()
        if round_index == 0:
            continue
        for name, a, b in zip(PHASES, marks, marks[1:]):
            times[f"ours: {name}"].append(b - a)
        times["ours: total"].append(marks[-1] - marks[0])
        times["floor: forward"].append(f1 - f0)
        times["floor: backward"].append(f2 - f1)
        times["floor: total"].append(f2 - f0)
    return times, params


def adamw_times(size: str, repeats: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds of one AdamW step over our trainable tensors, per implementation."""
    import torch

    from unziplora.method import BRANCHES, inject_unziplora, param_groups

    spec = size_spec(size)
    layers = inject_unziplora(build_unet(spec).to(device), spec.rank)
    params = [p for layer in layers.values() for d in (layer.lora_A, layer.lora_B, layer.merge) for p in d.values()]
    for layer in layers.values():
        for b in BRANCHES:
            layer.merge[b].requires_grad_(True)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    clock = Clock(device)
    optimizers: dict[str, Any] = {}
    for name, kw in (("default", {}), ("foreach=True", {"foreach": True}), ("fused=True", {"fused": True})):
        try:
            optimizers[name] = torch.optim.AdamW(param_groups(layers, 5e-5, 5e-5, 5e-3), weight_decay=1e-4, **kw)
        except (RuntimeError, ValueError):  # an implementation this build or device lacks
            continue
    samples: dict[str, list[float]] = {name: [] for name in optimizers}
    for round_index in range(repeats + 2):
        for name, opt in optimizers.items():
            took = clock(opt.step)
            if round_index >= 2:
                samples[name].append(took)
    result = {name: median(v) for name, v in samples.items()}
    result["tensors"] = float(len(params))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=SIZES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--no-adamw", action="store_true", help="skip the AdamW comparison (it builds a second UNet: not for sdxl256)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_flush_denormal(True)
    times, trainable = phase_times(args.size, args.repeats, args.device)
    floor_total = median(times["floor: total"])
    print(f"size={args.size} device={args.device} threads={torch.get_num_threads()} timer={Clock(args.device).kind}")
    for name, values in times.items():
        print(f"{name:26s} {median(values) * 1e3:8.1f} ms  ({median(values) / floor_total:5.3f} of the floor)")
    print(f"ours/floor (median totals) {median(times['ours: total']) / floor_total:.3f}")
    params = sum(p.numel() for p in trainable)
    print(f"trainable: {len(trainable)} tensors, {params / 1e6:.1f} M parameters")
    if args.no_adamw:
        return
    opt = adamw_times(args.size, args.repeats, args.device)
    tensors = int(opt.pop("tensors"))
    print(f"AdamW step over {tensors} tensors: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in opt.items()))


if __name__ == "__main__":
    main()
