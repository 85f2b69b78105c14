"""``unzip train``: images in, one content/style entry (or one per image with --each) out."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from unziplora_cli._complete import run_ids
from unziplora_cli._frame import BaseOpt, DeviceOpt, JsonOpt, PrecisionOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, note, warn
from unziplora_cli.progress import TrainProgress

EXAMPLES = epilog(
    'unzip train cat.jpg --subject cat --style "pencil sketch"',
    'id=$(unzip train photos/fox.png --subject fox --style "chalk art" --base tiny-sdxl --steps 8 --resolution 64 -q)',
    "unzip train photos/ --each --subject dog --style watercolor    # one entry per image, base loaded once",
)


def _opt(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, **kw)


def train(
    ctx: typer.Context,
    images: Annotated[list[Path] | None, typer.Argument(help="Image files and/or folders.", show_default=False)] = None,
    subject: Annotated[str | None, _opt("--subject", help="Subject words, e.g. 'cat'.")] = None,
    style: Annotated[str | None, _opt("--style", help="Style words, e.g. 'pencil sketch'.")] = None,
    token: Annotated[str, _opt("--token", help="Rare token that marks the subject.")] = "monadikos",
    prompt: Annotated[str | None, _opt("--prompt", help="Override the combined prompt.")] = None,
    content_prompt: Annotated[str | None, _opt("--content-prompt", help="Override the content prompt.")] = None,
    style_prompt: Annotated[str | None, _opt("--style-prompt", help="Override the style prompt.")] = None,
    name: Annotated[str | None, _opt("--name", help="A label for the entry (default: from the id).")] = None,
    each: Annotated[bool, _opt("--each", help="One entry per image (the base is loaded once).")] = False,
    resume: Annotated[
        str | None,
        _opt(
            "--resume",
            metavar="RUN",
            help="Finish an interrupted run (see 'unzip list --runs').",
            autocompletion=run_ids,
        ),
    ] = None,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    steps: Annotated[int | None, _opt("--steps", help="Optimizer steps [config, else 600].")] = None,
    rank: Annotated[int | None, _opt("--rank", help="LoRA rank of each branch [config, else 64].")] = None,
    resolution: Annotated[int | None, _opt("--resolution", help="Training size in pixels [config, else 1024].")] = None,
    content_lr: Annotated[float, _opt("--content-lr", help="Content LoRA learning rate.")] = 5e-5,
    style_lr: Annotated[float, _opt("--style-lr", help="Style LoRA learning rate.")] = 5e-5,
    mask_lr: Annotated[float, _opt("--mask-lr", help="Merge-vector learning rate.")] = 5e-3,
    similarity_lambda: Annotated[
        float, _opt("--similarity-lambda", help="Weight of the merge orthogonality loss.")
    ] = 0.5,
    sample_times: Annotated[int, _opt("--sample-times", help="Column-selection rounds.")] = 3,
    column_ratio: Annotated[float, _opt("--column-ratio", help="Share of columns selected per round.")] = 0.1,
    no_prompt_separation: Annotated[
        bool, _opt("--no-prompt-separation", help="Ablation: one prompt for all branches.")
    ] = False,
    no_column_separation: Annotated[
        bool, _opt("--no-column-separation", help="Ablation: no column masks or merges.")
    ] = False,
    no_block_separation: Annotated[
        bool, _opt("--no-block-separation", help="Ablation: every block both-sparse.")
    ] = False,
    optimizer: Annotated[str, _opt("--optimizer", help="adamw or adamw8bit (needs the 8bit extra).")] = "adamw",
    seed: Annotated[int, _opt("--seed", help="Random seed.")] = 0,
    min_snr_gamma: Annotated[
        float | None, _opt("--min-snr-gamma", help="Min-SNR loss weighting (off by default).")
    ] = None,
    noise_offset: Annotated[float, _opt("--noise-offset", help="Offset noise strength (off by default).")] = 0.0,
    gradient_checkpointing: Annotated[
        bool | None,
        _opt("--gradient-checkpointing/--no-gradient-checkpointing", help="[default: on for GPU]", show_default=False),
    ] = None,
    save_precision: Annotated[str, _opt("--save-precision", help="fp16, bf16 or fp32 payloads.")] = "fp16",
    preview_every: Annotated[
        int, _opt("--preview-every", metavar="N", help="Write preview samples every N steps.")
    ] = 0,
    preview_steps: Annotated[int, _opt("--preview-steps", help="Sampling steps for previews.")] = 25,
    checkpoint_every: Annotated[
        int, _opt("--checkpoint-every", metavar="N", help="Checkpoint every N steps (Ctrl-C also does).")
    ] = 0,
    faithful: Annotated[
        bool | None,
        _opt(
            "--faithful/--no-faithful",
            help="The official code's numerics: its column rule, unmasked RESET merge grads, fp16 + 8-bit AdamW [config train.faithful, else off].",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Split images into a content LoRA and a style LoRA; print the new entry id."""
    from unziplora.errors import ConfigError, TrainingError, UsageError
    from unziplora.registry import Registry
    from unziplora.settings import load_settings
    from unziplora.train.api import distributed, prepare_requests, request_from_run, train_requests
    from unziplora.train.config import TrainConfig

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    settings = load_settings(registry=opts.registry, base_model=base, device=device, precision=precision)
    rank_index, world = distributed(settings.device)
    progress = TrainProgress(quiet=opts.quiet or rank_index != 0)
    if resume:
        from unziplora.train.run import open_run

        if world > 1:
            raise ConfigError("--resume continues one run in one process; run it without torchrun/accelerate launch.")
        if images:
            raise UsageError("--resume continues a run with its own images; do not pass images with it.")
        from unziplora.train.run import claim_for_resume

        run = open_run(settings.registry, resume)
        claim_for_resume(
            run, Registry.from_settings(settings.registry)
        )  # one line if in use, unrecorded or already an entry
        request = request_from_run(run)
        if request.config.faithful:
            settings = _faithful(request.config, settings, [request])[0]
        base_ref = run.record["base"]["ref"]
        _tiny_note(base_ref, opts.quiet)
        requests, runs = [request], [run]
    else:
        if not images:
            raise UsageError("no images given; pass one or more image files or folders (see 'unzip train --help').")
        config = TrainConfig(
            steps=settings.train.steps if steps is None else steps,
            rank=settings.train.rank if rank is None else rank,
            resolution=settings.train.resolution if resolution is None else resolution,
            content_lr=content_lr,
            style_lr=style_lr,
            mask_lr=mask_lr,
            similarity_lambda=similarity_lambda,
            sample_times=sample_times,
            column_ratio=column_ratio,
            prompt_separation=not no_prompt_separation,
            column_separation=not no_column_separation,
            block_separation=not no_block_separation,
            optimizer=optimizer,
            seed=seed,
            min_snr_gamma=min_snr_gamma,
            noise_offset=noise_offset,
            gradient_checkpointing=gradient_checkpointing,
            save_precision=save_precision,
            preview_every=preview_every,
            preview_steps=preview_steps,
            checkpoint_every=checkpoint_every,
            faithful=settings.train.faithful if faithful is None else faithful,
        )
        base_ref = settings.base_model
        _check_base_and_device(base_ref, settings)  # cheap refusals before any image is read
        command = _command_line(
            images, subject, style, token, prompt, content_prompt, style_prompt, name, each, base_ref, config
        )
        prepared = prepare_requests(
            images,
            config=config,
            each=each,
            subject=subject,
            style=style,
            token=token,
            prompt=prompt,
            content_prompt=content_prompt,
            style_prompt=style_prompt,
            name=name,
            command=command,
        )
        for line in prepared.notes:
            if "smaller than" in line:
                warn(line)
            else:
                note(line, quiet=opts.quiet or rank_index != 0)
        if config.faithful:
            settings, config = _faithful(config, settings, prepared.requests)
        for req in prepared.requests[:1]:
            message = config.selection_warning(len(req.images))
            if message and rank_index == 0:
                warn(message)
        _tiny_note(base_ref, opts.quiet)
        requests, runs = prepared.requests, []
    reg = Registry.from_settings(settings.registry)  # only now: a refused call must not touch the registry
    from unziplora.train.trainer import TrainingStopped  # torch: only once every option was checked

    finished: list[Any] = []

    def done(entry: Any) -> None:
        finished.append(entry)
        progress.done(entry)

    try:
        if runs:
            entries = _resume(runs[0], requests[0], base_ref, reg, settings, progress)
        else:
            entries = train_requests(
                requests,
                base=base_ref,
                registry=reg,
                device=settings.device,
                precision=settings.precision,
                on_start=progress.start,
                on_step=progress.step,
                on_done=done,
                on_note=warn,
            )
    except TrainingStopped as stopped:
        progress.close()
        if opts.json and each:  # entries completed earlier in an --each batch are kept: still an array
            emit_json([entry.to_dict() for entry in finished])
        else:
            for entry in finished:
                data(entry.id)
        saved = (
            f"; {len(finished)} earlier entr{'y was' if len(finished) == 1 else 'ies were'} saved" if finished else ""
        )
        if stopped.step >= stopped.total:
            note(
                f"interrupted after the last step ({stopped.total}); the trained LoRAs are kept in the run, not yet an entry{saved}."
            )
        else:
            note(f"interrupted after step {stopped.step} of {stopped.total}; this run is not an entry yet{saved}.")
        note(f"resume with: unzip train --resume {stopped.run.id}")
        raise typer.Exit(130) from None
    except TrainingError:
        progress.close()
        raise
    progress.close()
    _report(entries, world, rank_index, opts.json, each=each and not resume)


def _resume(run: Any, request: Any, base_ref: str, reg: Any, settings: Any, progress: Any) -> list[Any]:
    from unziplora.train.trainer import Trainer

    trainer = Trainer(base_ref, device=settings.device, precision=settings.precision)
    progress.start(request, 0, 1, first_step=run.step)
    entry = trainer.train(request, reg, run=run, on_step=progress.step, on_note=warn)
    progress.done(entry)
    return [entry]


def _faithful(config: Any, settings: Any, requests: list[Any]) -> tuple[Any, Any]:
    """Switch the requests to the official precision recipe; warn where this machine cannot follow it."""
    from dataclasses import replace

    from unziplora.device import resolve_device
    from unziplora.train.faithful import faithful_recipe

    recipe = faithful_recipe(resolve_device(settings.device), settings.precision, config.optimizer)
    for line in recipe.notes:
        warn(f"--faithful: {line}")
    config = replace(config, optimizer=recipe.optimizer)
    for req in requests:
        req.config = replace(req.config, optimizer=recipe.optimizer)
        req.extra["faithful"] = recipe.record()
    return replace(settings, precision=recipe.precision), config


def _report(entries: list[Any], world: int, rank_index: int, as_json: bool, *, each: bool) -> None:
    """Ids (or records) on stdout, from the main process only when several processes ran.

    The JSON shape follows the options, never the number of images: an array of entries with
    ``--each``, one entry object without it.
    """
    records = [e.to_dict() for e in entries]
    if world > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
        if rank_index != 0:
            return
    if as_json:
        emit_json(records if each else records[0])
    else:
        for record in records:
            data(record["id"])


def _check_base_and_device(base_ref: str, settings: Any) -> None:
    from unziplora.base_model import parse_base
    from unziplora.device import resolve_placement

    parse_base(base_ref)
    resolve_placement(settings.device, settings.precision)


def _tiny_note(base_ref: str, quiet: bool) -> None:
    if base_ref == "tiny-sdxl":
        note("note: tiny-sdxl is a toy base with random weights; its LoRAs and images are noise.", quiet=quiet)


def _command_line(
    images: list[Path],
    subject: Any,
    style: Any,
    token: str,
    prompt: Any,
    content_prompt: Any,
    style_prompt: Any,
    name: Any,
    each: bool,
    base: str,
    config: Any,
) -> str:
    """The exact command-line equivalent, recorded in entry.json."""
    words = ["unzip", "train", *[str(p) for p in images]]
    for flag, value in (
        ("--subject", subject),
        ("--style", style),
        ("--prompt", prompt),
        ("--content-prompt", content_prompt),
        ("--style-prompt", style_prompt),
        ("--name", name),
    ):
        if value is not None:
            words += [flag, str(value)]
    if token != "monadikos":
        words += ["--token", token]
    if each:
        words.append("--each")
    words += ["--base", base]
    defaults = type(config)()
    for key, value in config.to_dict().items():
        if key in ("prompt_separation", "column_separation", "block_separation"):
            if not value:
                words.append(f"--no-{key.replace('_', '-')}")
        elif key == "faithful":
            if value:
                words.append("--faithful")
        elif key == "gradient_checkpointing":
            if value is not None:
                words.append("--gradient-checkpointing" if value else "--no-gradient-checkpointing")
        elif key in ("init", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"):
            continue
        elif (key in ("steps", "rank", "resolution") or value != getattr(defaults, key)) and value is not None:
            words += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(words)


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EXAMPLES)(train)
