"""How often toy-sdxl draws the shape and the style its prompt asks for, read by the toy classifiers.

    python scripts/eval_toy_base.py [--weights FILE] [--seeds 2] [--steps 20] [--sheet out.png]

Prompts: every "a <shape> in <style> style" of the pretraining styles, and the same with the rare
word "monadikos" before the shape (a prompt never seen in pretraining); seeds 5000.. (noise never
seen). Sampler: the pipeline's own (SDXL's Euler), guidance 5 (``--guidance``).

Also printed: the ceiling the VAE sets, i.e. the classifiers' accuracy on fresh world images
(pretraining styles) after an encode/decode round trip through the base's VAE. The UNet cannot draw
better than its decoder can.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="a weights file instead of the shipped one")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0, help="the pipeline's guidance_scale")
    parser.add_argument("--sheet", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from unziplora.toy import world
    from unziplora.toy.base import WEIGHTS_FILE, build_toy_sdxl_pipeline
    from unziplora.toy.classify import classify
    from unziplora.toy.pretrain import round_trip_accuracy

    torch.set_num_threads(1)
    pipe = build_toy_sdxl_pipeline(args.weights or WEIGHTS_FILE)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for template in ("a {shape} in {style} style", "a monadikos {shape} in {style} style"):
        prompts, want = [], []
        for shape in world.SHAPES:
            for style in world.TRAIN_STYLES:
                prompts.append(template.format(shape=shape, style=style))
                want.append((shape, style))
        images = []
        for seed in range(5000, 5000 + args.seeds):
            gen = torch.Generator().manual_seed(seed)
            out = pipe(
                prompts, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen, output_type="np"
            )
            images.append((out.images * 255).round().astype(np.uint8))
        pixels = np.concatenate(images)
        pred = classify(pixels)
        want_all = want * args.seeds
        shape_acc = np.mean([p == w[0] for p, w in zip(pred["shape"], want_all)])
        style_acc = np.mean([p == w[1] for p, w in zip(pred["style"], want_all)])
        rows.append((template, len(pixels), shape_acc, style_acc))
        if args.sheet is not None and template.startswith("a {shape}"):
            n = len(world.TRAIN_STYLES)
            first = pixels[: len(prompts)]
            grid = np.concatenate(
                [np.concatenate(list(first[i * n : (i + 1) * n]), 1) for i in range(len(world.SHAPES))]
            )
            Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(
                args.sheet
            )
    shape_acc, style_acc = round_trip_accuracy(pipe.vae)
    rows.append(("VAE round trip of world images", 216, shape_acc, style_acc))
    for template, n, shape_acc, style_acc in rows:
        print(f"{template!r}: {n} images, shape accuracy {shape_acc:.3f}, style accuracy {style_acc:.3f}")


if __name__ == "__main__":
    main()
