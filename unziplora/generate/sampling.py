"""Sampling with UnZipLoRA layers through the stock diffusers SDXL pipelines (ALGORITHM.md 7).

No forked pipeline: prompt separation rides on ``cross_attention_kwargs`` (the content and style
prompt embeddings), which the UNet forwards to :class:`~unziplora.method.UnZipLoRAAttnProcessor`.

Speed (DESIGN.md: generation within 1.05x of plain SDXL): before sampling every branch whose
input equals the base input is folded into the base weights, so those projections cost exactly
what plain SDXL costs. Only with separated prompts do the cross-attention key/value branches stay
live; they act on the 77 text tokens only, and since those are the same at every step each K/V
projection is computed once per image (:func:`cached_cross_kv`). Afterwards the weights are restored
bit-exactly and every layer gets back the mode and fold state it had, so one loaded pipeline
serves many calls (and a training run can sample previews mid-run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from unziplora import activity
from unziplora.activity import phase
from unziplora.generate.sampler import make_scheduler
from unziplora.method.inject import unziplora_layers
from unziplora.prompts import PromptSet

StepCallback = Callable[[int, int], None]  # (steps done so far in this call, total steps of the call)


@dataclass(frozen=True)
class PromptPlan:
    """Which prompt each part of the UNet reads.

    ``prompt`` drives the frozen base weights (the combined prompt in mode ``both``, else the one
    prompt of the mode). ``content``/``style`` are set only for prompt separation in mode ``both``.
    """

    mode: str
    prompt: str
    content: str | None = None
    style: str | None = None

    @property
    def separated(self) -> bool:
        return self.content is not None or self.style is not None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "prompt": self.prompt, "content_prompt": self.content, "style_prompt": self.style}


def plan_prompts(prompts: PromptSet, mode: str, prompt_separation: bool = True) -> PromptPlan:
    """The plan for ``mode`` from a prompt set: content/style alone read their own prompt."""
    if mode == "content":
        return PromptPlan("content", prompts.content)
    if mode == "style":
        return PromptPlan("style", prompts.style)
    if mode != "both":
        raise ValueError(f"mode must be both, content or style; got {mode!r}")
    if not prompt_separation:
        return PromptPlan("both", prompts.combined)
    return PromptPlan("both", prompts.combined, prompts.content, prompts.style)


@contextmanager
def prepared_layers(unet: torch.nn.Module, mode: str, *, fold_separate: bool) -> Iterator[int]:
    """Run the UNet's UnZipLoRA layers in ``mode``, folded for speed; restore everything on exit.

    ``fold_separate`` folds the cross-attention K/V branches too (one prompt for everything).
    Restores each layer's mode and fold state, the base weights (bit-exactly, from the copies the
    layers keep while folded) and the UNet's train/eval flag. Yields how many layers were folded.
    """
    layers = list(unziplora_layers(unet).values())
    saved = [(layer, layer.mode, bool(layer.folded)) for layer in layers]
    was_training = unet.training
    if was_training:  # walking every module costs milliseconds; skip it when already in eval mode
        unet.eval()  # no dropout, no gradient checkpointing while sampling
    try:
        with phase("folding the LoRAs into the base weights") if layers else nullcontext():
            for layer in layers:
                layer.unfold()
                layer.mode = mode
            folded = sum(bool(layer.fold(include_separate=fold_separate)) for layer in layers)
        yield folded
    finally:
        with phase("restoring the base weights") if layers else nullcontext():
            for layer, old_mode, was_folded in saved:
                layer.unfold()
                layer.mode = old_mode
                if was_folded:  # a folded layer with separate inputs had been folded with include_separate
                    layer.fold(include_separate=True)
        if was_training:
            unet.train()


def _is_cross_kv(name: str) -> bool:
    return ".attn2." in f".{name}" and name.endswith((".to_k", ".to_v"))


@contextmanager
def cached_cross_kv(unet: torch.nn.Module) -> Iterator[int]:
    """Compute each cross-attention key/value projection once per generation, not once per step.

    Cross-attention K/V read only the prompt embeddings, which are the same tensors at every
    denoising step (ALGORITHM.md Appendix B), so their outputs, live LoRA branches included, are
    the same too. While active, every ``attn2.to_k``/``to_v`` wrapper returns its previous output
    when called again with the very same input tensors (same objects, not modified since); any
    other input is computed as usual. Yields how many projections are cached.
    """
    patched: list[Any] = []
    for name, layer in unziplora_layers(unet).items():
        if not _is_cross_kv(name):
            continue
        original = layer.forward
        memo: dict[str, Any] = {}

        def forward(
            x: torch.Tensor, content_input: Any = None, style_input: Any = None, *, _f: Any = original, _m: Any = memo
        ) -> torch.Tensor:
            inputs = (x, content_input, style_input)
            versions = tuple(t._version if t is not None else None for t in inputs)
            hit = _m.get("inputs")
            if hit is not None and all(a is b for a, b in zip(hit, inputs)) and _m["versions"] == versions:
                return _m["output"]
            out = _f(x, content_input, style_input)
            _m.update(inputs=inputs, versions=versions, output=out)
            return out

        layer.forward = forward  # instance attribute: nn.Module.__call__ finds it before the class method
        patched.append((layer, memo))
    try:
        yield len(patched)
    finally:
        for layer, memo in patched:
            del layer.forward
            memo.clear()


@dataclass
class Conditioning:
    """Everything the stock pipeline call needs besides latents and the sampler."""

    kwargs: dict[str, Any]


@torch.no_grad()
def encode_plan(pipe: Any, plan: PromptPlan, *, negative: str | None, guidance: float) -> Conditioning:
    """Encode the plan's prompts once per call (not per image).

    Base path: the pipeline's own ``encode_prompt`` with its negative-prompt handling (zeros for
    an empty negative, because SDXL sets ``force_zeros_for_empty_prompt``). Branch prompts: under
    classifier-free guidance their unconditional rows are zeros, as in the official pipeline
    (ALGORITHM.md 7.1), so the K/V LoRA terms vanish in the unconditional pass.
    """
    device = pipe._execution_device
    cfg = guidance > 1.0 and pipe.unet.config.time_cond_proj_dim is None
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(
        prompt=plan.prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=cfg,
        negative_prompt=plan_negative(negative, cfg),
    )
    kwargs: dict[str, Any] = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if cfg:
        kwargs.update(negative_prompt_embeds=neg_embeds, negative_pooled_prompt_embeds=neg_pooled)
    if plan.separated:
        branch, _, _, _ = pipe.encode_prompt(
            prompt=[plan.content or plan.prompt, plan.style or plan.prompt],
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        content, style = branch[0:1], branch[1:2]
        if cfg:  # rows follow the pipeline's [unconditional, conditional] order
            content = torch.cat([torch.zeros_like(content), content])
            style = torch.cat([torch.zeros_like(style), style])
        kwargs["cross_attention_kwargs"] = {
            "content_encoder_hidden_states": content,
            "style_encoder_hidden_states": style,
        }
    return Conditioning(kwargs)


def plan_negative(negative: str | None, cfg: bool) -> str | None:
    return negative if cfg and negative else None


def _img2img(pipe: Any) -> Any:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    if isinstance(pipe, StableDiffusionXLImg2ImgPipeline):
        return pipe
    other = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)  # shares every module, copies nothing
    other.set_progress_bar_config(disable=True)
    return other


def denoising_steps(steps: int, strength: float | None) -> int:
    """How many sampler steps a call runs (img2img skips the first ``1 - strength`` of them)."""
    return steps if strength is None else min(int(steps * strength), steps)


@torch.no_grad()
def sample_images(
    pipe: Any,
    plan: PromptPlan,
    *,
    seeds: list[int],
    steps: int,
    guidance: float,
    width: int,
    height: int,
    sampler: str,
    negative: str | None = None,
    init_image: Image.Image | None = None,
    strength: float | None = None,
    on_step: StepCallback | None = None,
    on_image: Callable[[int, Image.Image], None] | None = None,
    cond: Conditioning | None = None,
) -> list[Image.Image]:
    """Sample one image per seed with the UNet's UnZipLoRA layers in ``plan.mode``.

    Works on any SDXL pipeline, with or without UnZipLoRA layers (without, it is plain SDXL).
    Each image gets its own CPU generator seeded with its seed, so image ``i`` does not depend on
    how many images the call makes, and results do not depend on the device's RNG.
    ``cond``: the plan already encoded (:func:`encode_plan`, same ``negative`` and ``guidance``).
    """
    runner = _img2img(pipe) if init_image is not None else pipe
    per_image = denoising_steps(steps, strength if init_image is not None else None)
    total = per_image * len(seeds)
    original_scheduler = pipe.scheduler
    images: list[Image.Image] = []
    with prepared_layers(pipe.unet, plan.mode, fold_separate=not plan.separated), cached_cross_kv(pipe.unet):
        if cond is None:
            with phase("encoding the prompts"):
                cond = encode_plan(pipe, plan, negative=negative, guidance=guidance)
        try:
            for index, seed in enumerate(seeds):
                runner.scheduler = make_scheduler(original_scheduler.config, sampler)
                done = index * per_image
                decoding: list[float] = []

                def step_end(
                    _pipe: Any, step: int, _t: Any, tensors: dict[str, Any], done: int = done, decoding: Any = decoding
                ) -> dict[str, Any]:
                    if on_step is not None:
                        on_step(min(done + step + 1, total), total)
                    if step + 1 >= per_image and not decoding:  # the pipeline decodes right after the last step
                        decoding.append(activity.begin("decoding the image"))
                    return tensors

                call: dict[str, Any] = dict(
                    cond.kwargs,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=torch.Generator("cpu").manual_seed(int(seed)),
                    callback_on_step_end=step_end,
                    output_type="pil",
                )
                if init_image is not None:
                    call.update(image=init_image.resize((width, height), Image.Resampling.LANCZOS), strength=strength)
                else:
                    call.update(width=width, height=height)
                images.append(runner(**call).images[0])
                if decoding:
                    activity.end("decoding the image", decoding[0])
                if on_image is not None:  # e.g. written at once, so an interruption keeps what was drawn
                    on_image(index, images[-1])
        finally:
            pipe.scheduler = original_scheduler
            runner.scheduler = original_scheduler
    return images


def native_size(pipe: Any) -> int:
    """The base's native image side: SDXL 1024, tiny-sdxl 64."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
