"""``unzip compose`` and ``unzip restyle``: images from registry entries.

Options become a :class:`~unziplora.generate.options.GenerationOptions` (checked before anything
heavy loads), ids are resolved and checked for a shared base, then one library call samples.
Written paths go to stdout one per line (``--json``: records); progress and notes go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unziplora.generate.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH, sampler_help
from unziplora_cli._complete import entry_ids
from unziplora_cli._frame import BaseOpt, DeviceOpt, JsonOpt, PrecisionOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, note, warn

TINY_NOTE = "note: tiny-sdxl is a toy base with random weights; its images are noise."

COMPOSE_EXAMPLES = epilog(
    'unzip compose --content cat-sketch-3f2a --style rose-popart-91c0 "on a beach"',
    'unzip compose --content cat-sketch-3f2a "on a skateboard" -n 4 --seed 7 --sheet',
    "unzip compose --content cat-sketch-3f2a --style cat-sketch-3f2a --single-prompt --sampler dpmpp --steps 25",
)
RESTYLE_EXAMPLES = epilog(
    'unzip restyle --style rose-popart-91c0 --subject "a lighthouse" --context "on a cliff"',
    "unzip restyle --style rose-popart-91c0 --subject dog --image dog.jpg --strength 0.5 -o out/",
    'unzip restyle --style rose-popart-91c0 --subject "a chair" -n 4 --sheet --json | jq -r ".images[].path"',
)

# Options shared by both commands, declared once so names and help cannot drift.
StyleScaleOpt = Annotated[float, typer.Option("--style-scale", help="Multiplier of the style LoRA.")]
NumOpt = Annotated[int, typer.Option("-n", "--num", help="Number of images.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the first image; image i uses seed+i.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Sampling steps.")]
GuidanceOpt = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")]
NegativeOpt = Annotated[str | None, typer.Option("--negative", metavar="TEXT", help="Negative prompt.")]
WidthOpt = Annotated[int | None, typer.Option("--width", help="Image width [default: the base's native size].")]
HeightOpt = Annotated[int | None, typer.Option("--height", help="Image height [default: the base's native size].")]
SamplerOpt = Annotated[str | None, typer.Option("--sampler", metavar="NAME", help=sampler_help())]
OutOpt = Annotated[
    Path | None, typer.Option("-o", "--out", metavar="DIR", help="Output folder [default: ./unzip-out/<time>-<ids>/].")
]
SheetOpt = Annotated[bool, typer.Option("--sheet", help="Also write sheet.png, all images in one grid.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite images already in the output folder.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", metavar="TEXT", help="Use this prompt instead of the built one.")
]


def _options(**fields: Any) -> Any:
    from unziplora.generate.options import GenerationOptions

    return GenerationOptions(**fields)


def _run(
    ctx: typer.Context,
    run: Any,
    content: str | None,
    style: str | None,
    base: str | None,
    device: str | None,
    precision: str | None,
    out: Path | None,
    sheet: bool,
    call: Any,
    seeds: list[int],
    force: bool,
) -> None:
    """Resolve entries and base, load the studio, call ``call(studio, request, progress, on_image)``, print.

    Each image is written as soon as it is drawn, so an interruption keeps what was made.
    """
    from unziplora.generate.api import open_studio, resolve
    from unziplora.generate.output import default_out_dir, planned_names, prepare_out_dir, save_image, save_results
    from unziplora.registry import Registry
    from unziplora.settings import load_settings

    settings = load_settings(registry=run.registry, device=device, precision=precision)
    request = resolve(content, style, base=base, registry=Registry(settings.registry))
    for line in request.notes:
        warn(line)
    if request.base.is_tiny:
        note(TINY_NOTE, quiet=run.quiet)
    ids = [e.id for e in (request.content, request.style) if e is not None]
    out_dir = (out if out is not None else default_out_dir(ids)).expanduser().absolute()  # printed absolute
    created = prepare_out_dir(out_dir, planned_names(seeds, sheet=sheet), force=force)
    written: list[Path] = []
    try:
        studio = open_studio(request.base, device=settings.device, precision=settings.precision)
        from unziplora_cli.progress import SamplingProgress

        progress = SamplingProgress(run.quiet)
        try:
            results = call(studio, request, progress, lambda result: written.append(save_image(result, out_dir)))
        finally:
            progress.close()
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif written:
            warn(f"{len(written)} image(s) written to {out_dir} before the stop")
        raise
    saved = save_results(results, out_dir, sheet=sheet, written=written)
    if run.json:
        emit_json({"images": saved.records(results), "sheet": str(saved.sheet) if saved.sheet else None})
        return
    for path in saved.paths:
        data(str(path))
    if saved.sheet is not None:
        data(str(saved.sheet))


def compose(
    ctx: typer.Context,
    context: Annotated[str, typer.Argument(help="Where or how, e.g. 'on a beach'.", show_default=False)] = "",
    content: Annotated[
        str | None,
        typer.Option("--content", metavar="ID", help="Entry whose subject to draw.", autocompletion=entry_ids),
    ] = None,
    style: Annotated[
        str | None,
        typer.Option("--style", metavar="ID", help="Entry whose style to draw in.", autocompletion=entry_ids),
    ] = None,
    prompt: PromptOpt = None,
    content_prompt: Annotated[
        str | None, typer.Option("--content-prompt", metavar="TEXT", help="Prompt of the content LoRA.")
    ] = None,
    style_prompt: Annotated[
        str | None, typer.Option("--style-prompt", metavar="TEXT", help="Prompt of the style LoRA.")
    ] = None,
    single_prompt: Annotated[
        bool,
        typer.Option(
            "--single-prompt", help="One prompt for base and both LoRAs (what an exported combined LoRA gives)."
        ),
    ] = False,
    content_scale: Annotated[float, typer.Option("--content-scale", help="Multiplier of the content LoRA.")] = 1.0,
    style_scale: StyleScaleOpt = 1.0,
    num: NumOpt = 1,
    seed: SeedOpt = 0,
    steps: StepsOpt = DEFAULT_STEPS,
    guidance: GuidanceOpt = DEFAULT_GUIDANCE,
    negative: NegativeOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    sampler: SamplerOpt = None,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    sheet: SheetOpt = False,
    force: ForceOpt = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw an entry's subject in a new context, in another entry's style, or both.

    With --content and --style, the content and style prompts drive their own LoRA (prompt
    separation with the learned merge vectors); prompts are built from the entries' words around
    CONTEXT unless --prompt/--content-prompt/--style-prompt say otherwise.
    """
    run = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if content is None and style is None:
        typer.echo(
            "error: nothing to generate: pass --content ID, --style ID, or both. See 'unzip compose --help'.", err=True
        )
        raise typer.Exit(2)
    options = _options(
        num=num,
        seed=seed,
        steps=steps,
        guidance=guidance,
        negative=negative,
        width=width,
        height=height,
        sampler=sampler,
        content_scale=content_scale,
        style_scale=style_scale,
        prompt_separation=not single_prompt,
    )

    def call(studio: Any, request: Any, progress: Any, on_image: Any) -> Any:
        return studio.compose(
            request.content,
            request.style,
            context,
            prompt=prompt,
            content_prompt=content_prompt,
            style_prompt=style_prompt,
            options=options,
            on_step=progress,
            on_image=on_image,
            on_note=warn,
        )

    _run(ctx, run, content, style, base, device, precision, out, sheet, call, options.seeds(), force)


def restyle(
    ctx: typer.Context,
    style: Annotated[
        str,
        typer.Option(
            "--style", metavar="ID", help="Entry whose style to use.", show_default=False, autocompletion=entry_ids
        ),
    ],
    subject: Annotated[
        str, typer.Option("--subject", metavar="TEXT", help="What to draw, e.g. 'a lighthouse'.", show_default=False)
    ],
    context: Annotated[str, typer.Option("--context", metavar="TEXT", help="Where or how, e.g. 'on a cliff'.")] = "",
    prompt: PromptOpt = None,
    image: Annotated[
        Path | None, typer.Option("--image", metavar="PHOTO", help="Restyle this picture (img2img).")
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option(
            "--strength", metavar="S", help=f"How much of --image to redraw, 0-1 [default: {DEFAULT_STRENGTH}]."
        ),
    ] = None,
    style_scale: StyleScaleOpt = 1.0,
    num: NumOpt = 1,
    seed: SeedOpt = 0,
    steps: StepsOpt = DEFAULT_STEPS,
    guidance: GuidanceOpt = DEFAULT_GUIDANCE,
    negative: NegativeOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    sampler: SamplerOpt = None,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    sheet: SheetOpt = False,
    force: ForceOpt = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Put an entry's style on a new subject, or on an existing picture with --image."""
    run = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if strength is not None and image is None:
        warn("--strength only applies with --image; ignored.")
    options = _options(
        num=num,
        seed=seed,
        steps=steps,
        guidance=guidance,
        negative=negative,
        width=width,
        height=height,
        sampler=sampler,
        style_scale=style_scale,
        strength=DEFAULT_STRENGTH if strength is None else strength,
    )
    picture = None
    if image is not None:  # refuse a broken picture before loading the base model
        from unziplora.generate.picture import open_picture

        picture = open_picture(image)

    def call(studio: Any, request: Any, progress: Any, on_image: Any) -> Any:
        return studio.restyle(
            request.style,
            subject,
            context,
            prompt=prompt,
            image=picture,
            image_name=image.name if image is not None else None,
            options=options,
            on_step=progress,
            on_image=on_image,
            on_note=warn,
        )

    _run(ctx, run, None, style, base, device, precision, out, sheet, call, options.seeds(), force)


def register(app: typer.Typer) -> None:
    app.command("compose", epilog=COMPOSE_EXAMPLES)(compose)
    app.command("restyle", epilog=RESTYLE_EXAMPLES)(restyle)
