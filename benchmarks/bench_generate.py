"""Seconds per generated image: compose (content + style) against plain SDXL without LoRA.

Three sides on one SDXL-architecture pipeline with random weights (same size, steps, sampler,
guidance and device), alternating, repeated, medians:

* **separated** — :meth:`unziplora.generate.Studio.compose` with a content and a style entry read
  from a registry, prompt separation on: per call it encodes three prompts, folds every branch
  whose input is the base input into the weights, samples with the cross-attention K/V branches
  live, and restores the weights;
* **single** — the same with ``prompt_separation=False`` (``--single-prompt``): everything folded;
* **style** — :meth:`~unziplora.generate.Studio.compose` with only the style entry (mode "style",
  everything folded);
* **plain** — the stock ``StableDiffusionXLPipeline.__call__`` on an untouched copy of the UNet.

DESIGN.md's goal: generation with content + style costs at most 1.05x plain SDXL per image.
Each call makes one image, so the per-call work (encoding, folding, unfolding) is included.

    python -m benchmarks.bench_generate [--size tiny|medium|sdxl] [--repeats 5] [--device auto]

``run()`` returns :class:`benchmarks.common.Row` rows (name, ours, reference, ratio, goal).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Clock, Row, alternate, median, ratio_goal, spread
from benchmarks.sizes import SizeSpec, build_pipeline, size_spec

GOAL = 1.05
SAMPLER = "euler"  # the same sampler on every side; the sampler's own cost is negligible anyway
GUIDANCE = 5.0
PROMPT = "A monadikos cat on a beach in pencil sketch style"


def _write_entry(reg: Any, unet: Any, rank: int, seed: int, subject: str, style: str, base_ref: str) -> Any:
    """A registry entry from random UnZipLoRA layers (masks on, random merges), real file format."""
    import torch

    from unziplora.method import inject_unziplora, lora_state_dict, merge_state_dict, remove_unziplora, write_lora_file

    gen = torch.Generator().manual_seed(seed)
    layers = inject_unziplora(unet, rank, generator=gen)
    with torch.no_grad():
        for layer in layers.values():
            for branch in ("content", "style"):
                layer.merge[branch].copy_(torch.rand(layer.out_features, generator=gen) * 0.7 + 0.3)
                layer.set_mask(branch, torch.rand(layer.out_features, generator=gen) > 0.5)
                layer.set_mask_active(branch, True)
    files = {
        "content.safetensors": lora_state_dict(layers, "content"),
        "style.safetensors": lora_state_dict(layers, "style"),
        "masks.safetensors": merge_state_dict(layers),
    }
    remove_unziplora(unet)
    with reg.new_entry(subject=subject, style=style) as staging:
        for name, sd in files.items():
            write_lora_file(staging.path(name), sd)
        staging.record = {
            "subject": subject,
            "style": style,
            "base": {"ref": base_ref, "fingerprint": base_ref},
            "settings": {"rank": rank},
        }
    return reg.get(staging.id)


def time_generation(spec: SizeSpec, device: str, repeats: int, steps: int | None = None) -> dict[str, list[float]]:
    """Seconds per image of each side, alternating (one warm-up round)."""
    import torch

    from unziplora.base_model import BaseSpec
    from unziplora.device import resolve_placement
    from unziplora.generate import Studio
    from unziplora.hf_env import prepare_hf
    from unziplora.registry import Registry

    prepare_hf()  # before diffusers is imported: quiet logs, no progress bars
    from diffusers import EulerDiscreteScheduler

    placement = resolve_placement(device, "auto")
    steps = steps or spec.gen_steps
    ours = build_pipeline(spec)
    plain_unet = copy.deepcopy(ours.unet)  # same weights, never touched by our layers
    cast = {} if placement.precision == "fp32" else {"dtype": placement.dtype}  # fp32 is what build_pipeline made
    ours.to(placement.device, **cast)
    plain = type(ours)(**{**ours.components, "unet": plain_unet.to(placement.device, **cast)})
    plain.scheduler = EulerDiscreteScheduler.from_config(ours.scheduler.config)
    for pipe in (ours, plain):
        pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp), durable=False)
        ref = f"bench-{spec.name}"
        content = _write_entry(reg, ours.unet, spec.rank, 1, "cat", "pencil sketch", ref)
        style = _write_entry(reg, ours.unet, spec.rank, 2, "rose", "pop art", ref)
        studio = Studio(ours, BaseSpec("folder", ref), placement, ref)
        kw = {
            "num": 1,
            "seed": 0,
            "steps": steps,
            "guidance": GUIDANCE,
            "width": spec.resolution,
            "height": spec.resolution,
            "sampler": SAMPLER,
        }

        def plain_call() -> Any:
            gen = torch.Generator("cpu").manual_seed(0)
            return plain(
                PROMPT,
                num_inference_steps=steps,
                guidance_scale=GUIDANCE,
                width=spec.resolution,
                height=spec.resolution,
                generator=gen,
            ).images

        sides = {
            "separated": lambda: studio.compose(content, style, "on a beach", **kw),
            "single": lambda: studio.compose(content, style, "on a beach", prompt_separation=False, **kw),
            "style": lambda: studio.compose(None, style, "on a beach", subject="dog", **kw),
            "plain": plain_call,
        }
        with torch.no_grad():
            return alternate(sides, repeats=repeats, warmup=1, clock=Clock(placement.device))


def rows_from(times: dict[str, list[float]], spec: SizeSpec, steps: int) -> list[Row]:
    """One row per side, each against the plain pipeline."""
    plain = median(times["plain"])
    notes: dict[str, Any] = {f"{k}_s": [round(v, 4) for v in vals] for k, vals in times.items()}
    notes.update(size=spec.name, px=spec.resolution, steps=steps, plain_spread_s=spread(times["plain"]))
    out = []
    labels = (
        ("separated", "compose content+style, prompt-separated"),
        ("single", "compose --single-prompt"),
        ("style", "compose style only"),
    )
    for side, label in labels:
        ours = median(times[side])
        # On a shared machine other processes only ever add time, so the ratio of the fastest runs
        # is the steadier figure; it goes in the notes next to the row's median ratio.
        row_notes = dict(notes, ratio_of_fastest=round(min(times[side]) / min(times["plain"]), 3))
        out.append(
            Row(
                f"generate: {label}",
                ours,
                plain,
                "s",
                f"<= {GOAL}x",
                ratio_goal(ours / plain, GOAL),
                f"unziplora {label}",
                "stock SDXL pipeline, no LoRA",
                "generate",
                row_notes,
            )
        )
    return out


def run(size: str = "medium", device: str = "auto", *, repeats: int = 5, steps: int | None = None) -> list[Row]:
    """Rows for the benchmark runner: (name, ours seconds/image, plain seconds/image, ratio, goal)."""
    from unziplora.device import resolve_device

    spec = size_spec(size)
    return rows_from(time_generation(spec, resolve_device(device), repeats, steps), spec, steps or spec.gen_steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("tiny", "medium", "sdxl"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps per image [default: per size]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = run(args.size, args.device, repeats=args.repeats, steps=args.steps)
    print(
        f"size {args.size}, {rows[0].notes['px']} px, {rows[0].notes['steps']} steps, CFG {GUIDANCE}, one image per call"
    )
    print(f"{'plain SDXL pipeline, no LoRA (reference)':44s} {rows[0].reference:8.4f} s/image")
    for row in rows:
        print(
            f"{row.name:44s} {row.ours:8.4f} s/image  ours/plain {row.ratio:6.3f} (fastest runs "
            f"{row.notes['ratio_of_fastest']:.3f})  goal {row.goal} {'met' if row.met else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
