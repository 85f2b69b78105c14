"""One loaded base pipeline that serves many compose / restyle calls.

Loading SDXL costs far more than sampling a few images, so :class:`Studio` loads the base once,
injects UnZipLoRA layers once, and per call only loads the entries' tensors (skipped when they are
the ones already loaded), folds, samples and unfolds. Notebook use::

    from unziplora.generate import Studio
    from unziplora.registry import Registry
    studio = Studio.load("tiny-sdxl", registry=Registry.from_settings())
    images = studio.compose("cat-sketch-3f2a", "rose-popart-91c0", "on a beach", num=2)

Entries may be given as Entry objects or, with a registry, as ids; the Studio never reads settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from unziplora import __version__
from unziplora.base_model import BaseSpec, fingerprint, load_pipeline, parse_base
from unziplora.device import Placement, resolve_placement
from unziplora.generate.options import GenerationOptions
from unziplora.generate.prompting import compose_prompts, mode_for
from unziplora.generate.sampling import PromptPlan, StepCallback, native_size, plan_prompts, sample_images


@dataclass
class Generated:
    """One generated image and the record written into its PNG."""

    image: Image.Image
    index: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)


def _identity(entry: Any | None, part: str) -> tuple[str, ...] | None:
    """Where an entry's tensors come from and their recorded hashes: equal means already loaded."""
    if entry is None:
        return None
    from unziplora.entry_files import payload_hashes

    return (str(entry.path), *payload_hashes(entry, part))


class Studio:
    """A base pipeline on a device, ready to compose and restyle with registry entries."""

    def __init__(
        self, pipe: Any, spec: BaseSpec, placement: Placement, base_fingerprint: str, registry: Any = None
    ) -> None:
        self.pipe = pipe
        self.spec = spec
        self.placement = placement
        self.fingerprint = base_fingerprint
        self.registry = registry
        self._loaded: tuple[Any, ...] | None = None

    @classmethod
    def load(
        cls, base: str | BaseSpec, *, device: str = "auto", precision: str = "auto", registry: Any = None
    ) -> Studio:
        """Load ``base`` (a ``--base`` string or a parsed spec) onto ``device`` in ``precision``."""
        spec = base if isinstance(base, BaseSpec) else parse_base(base)
        placement = resolve_placement(device, precision, purpose="generate")
        from unziplora.activity import phase

        with phase(f"loading the base model {spec.ref}"):
            pipe = load_pipeline(spec, dtype=placement.dtype, device=placement.device)
        return cls(pipe, spec, placement, fingerprint(spec), registry)

    @property
    def native_size(self) -> int:
        return native_size(self.pipe)

    def _entry(self, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        if self.registry is None:
            raise ValueError(f"entry {value!r} given by id, but this Studio has no registry; pass registry= to load()")
        return self.registry.get(value)

    def _use(self, content: Any | None, style: Any | None) -> None:
        """Put the entries' tensors into the UNet, unless they are already there."""
        from unziplora.generate.assemble import assemble

        key = (_identity(content, "content"), _identity(style, "style"))
        if key != self._loaded:
            from unziplora.activity import phase

            self._loaded = None
            ids = " and ".join(dict.fromkeys(e.id for e in (content, style) if e is not None))
            with phase(f"loading the LoRAs of {ids}"):
                assemble(self.pipe.unet, content, style, base_ref=self.spec.ref)
            self._loaded = key

    def compose(
        self,
        content: Any | None = None,
        style: Any | None = None,
        context: str = "",
        *,
        prompt: str | None = None,
        content_prompt: str | None = None,
        style_prompt: str | None = None,
        subject: str | None = None,
        options: GenerationOptions | None = None,
        on_step: StepCallback | None = None,
        on_image: Callable[[Generated], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        **option_fields: Any,
    ) -> list[Generated]:
        """Content only, style only, or both (entries or ids), in ``context`` such as ``"on a beach"``.

        Both = prompt separation with the learned merge vectors; ``prompt_separation=False`` is plain
        addition under the combined prompt. ``option_fields`` override fields of ``options``.
        """
        content, style = self._entry(content), self._entry(style)
        opts = replace(options or GenerationOptions(), **option_fields)
        prompts = compose_prompts(
            content,
            style,
            context,
            subject=subject,
            prompt=prompt,
            content_prompt=content_prompt,
            style_prompt=style_prompt,
        )
        prompts = self._fit(prompts, on_note)
        plan = plan_prompts(prompts, mode_for(content, style), opts.prompt_separation)
        return self._run(plan, content, style, opts, on_step=on_step, on_image=on_image)

    def restyle(
        self,
        style: Any,
        subject: str,
        context: str = "",
        *,
        prompt: str | None = None,
        image: str | Path | Image.Image | None = None,
        image_name: str | None = None,
        options: GenerationOptions | None = None,
        on_step: StepCallback | None = None,
        on_image: Callable[[Generated], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        **option_fields: Any,
    ) -> list[Generated]:
        """The style of entry ``style`` on a new ``subject``; with ``image`` (a path or an opened
        picture, then named ``image_name`` in the records), that picture restyled (SDXL img2img at
        ``options.strength``)."""
        from unziplora.generate.picture import fit_picture, open_picture, target_size

        style = self._entry(style)
        opts = replace(options or GenerationOptions(), **option_fields)
        picture = source_name = None
        if image is not None:
            picture = image.convert("RGB") if isinstance(image, Image.Image) else open_picture(image)
            source_name = image_name if isinstance(image, Image.Image) else Path(image).name
            size = target_size(picture.size, self.native_size, opts.width, opts.height)
            opts = replace(opts, width=size[0], height=size[1])
            picture = fit_picture(picture, size)
        prompts = self._fit(compose_prompts(None, style, context, subject=subject, prompt=prompt), on_note)
        plan = plan_prompts(prompts, "style")
        return self._run(
            plan, None, style, opts, init_image=picture, source_name=source_name, on_step=on_step, on_image=on_image
        )

    def _fit(self, prompts: Any, on_note: Callable[[str], None] | None) -> Any:
        """The prompts cut to what CLIP reads (77 tokens), each cut reported through ``on_note``.

        The images' PNG records then name the text that was really used, not the text given.
        """
        import warnings

        from unziplora.prompts import fit_prompts

        fitted, notes = fit_prompts(prompts, self.pipe.tokenizer, use="the images use (and record)")
        for line in notes:
            if on_note is not None:
                on_note(line)
            else:
                warnings.warn(line, UserWarning, stacklevel=3)
        return fitted

    def _run(
        self,
        plan: PromptPlan,
        content: Any | None,
        style: Any | None,
        opts: GenerationOptions,
        *,
        init_image: Image.Image | None = None,
        source_name: str | None = None,
        on_step: StepCallback | None = None,
        on_image: Callable[[Generated], None] | None = None,
    ) -> list[Generated]:
        """Sample; ``on_image`` gets each :class:`Generated` as soon as it is drawn."""
        from unziplora.errors import ConfigError
        from unziplora.generate.sampling import denoising_steps
        from unziplora.method.inject import set_scales

        if init_image is not None and denoising_steps(opts.steps, opts.strength) < 1:
            raise ConfigError(
                f"--strength {opts.strength} with --steps {opts.steps} leaves no denoising step; raise --steps or --strength."
            )
        self._use(content, style)
        set_scales(self.pipe.unet, content=opts.content_scale, style=opts.style_scale)
        width = opts.width or self.native_size
        height = opts.height or self.native_size
        sampler = opts.sampler_for(plan.mode)
        entries = {"content": content.id if content else None, "style": style.id if style else None}
        scales = {part: getattr(opts, f"{part}_scale") for part, eid in entries.items() if eid}
        base_meta = {
            "tool": f"unziplora {__version__}",
            "mode": plan.mode,
            "prompts": {k: v for k, v in plan.to_dict().items() if k != "mode"},
            "prompt_separation": plan.separated,
            "negative": opts.negative,
            "entries": entries,
            "scales": scales,
            "sampler": sampler,
            "steps": opts.steps,
            "guidance": opts.guidance,
            "width": width,
            "height": height,
            "base": {"ref": self.spec.ref, "fingerprint": self.fingerprint},
        }
        if init_image is not None:
            base_meta.update(strength=opts.strength, source_image=source_name)
        seeds = opts.seeds()

        def made(i: int, img: Image.Image) -> None:
            if on_image is not None:
                on_image(Generated(img, i, seeds[i], {**base_meta, "seed": seeds[i], "index": i}))

        images = sample_images(
            self.pipe,
            plan,
            seeds=opts.seeds(),
            steps=opts.steps,
            guidance=opts.guidance,
            width=width,
            height=height,
            sampler=sampler,
            negative=opts.negative,
            init_image=init_image,
            strength=opts.strength if init_image is not None else None,
            on_step=on_step,
            on_image=made,
        )
        return [
            Generated(img, i, seed, {**base_meta, "seed": seed, "index": i})
            for i, (img, seed) in enumerate(zip(images, seeds))
        ]

    def close(self) -> None:
        """Take the UnZipLoRA layers out of the UNet (the pipeline is plain SDXL again)."""
        from unziplora.method.inject import remove_unziplora

        remove_unziplora(self.pipe.unet)
        self._loaded = None
