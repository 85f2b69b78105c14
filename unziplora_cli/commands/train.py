"""``unzip train``: images in, one content/style entry (or one per image with --each) out."""

from __future__ import annotations

import inspect
import shlex
from inspect import Parameter
from pathlib import Path
from typing import Annotated, Any

import typer

from unziplora.prompts import DEFAULT_TOKEN
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


def _option_help(name: str, opt: Any, default: Any) -> str:
    """The option's help with its default; a config-file option names its [train] key."""
    shown = opt.default_text or (
        {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
    )
    text = opt.help
    if opt.multiple_of:  # the bounds are stated where a user could not guess them
        text += f" A multiple of {opt.multiple_of} from {opt.low:g} to {opt.high:g}."
    if shown is None:
        return text
    if opt.config_file:
        return f"{text} [config train.{name}, else {shown}]"
    return f"{text} [default: {shown}]"


def _training_params() -> list[inspect.Parameter]:
    """One Typer option per training option, derived from ``TrainConfig``'s fields (never re-declared here).

    Every default is None, so the command knows which flags were given (a config-file default
    or the dataclass default applies otherwise, and ``--resume`` can refuse what was given).
    """
    from unziplora.train.config import defaults, flag_name, kinds, options

    params = []
    for name, opt in options().items():
        if not opt.cli:
            continue
        kind, flag = kinds()[name], flag_name(name)
        decl = opt.flag or (f"{flag}/--no-{flag[2:]}" if kind is bool else flag)
        extra = {"metavar": opt.metavar} if opt.metavar else {}
        typer_opt = typer.Option(decl, help=_option_help(name, opt, defaults()[name]), show_default=False, **extra)
        params.append(
            inspect.Parameter(name, Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, typer_opt])
        )
        for old in opt.old_names:  # the flag's earlier spelling keeps working, unlisted
            alias = typer.Option(flag_name(old), help=f"Old name of {flag}.", hidden=True, show_default=False)
            params.append(
                inspect.Parameter(old, Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, alias])
            )
    return params


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The training options given on the command line, old flag names mapped to the current ones."""
    from unziplora.errors import UsageError
    from unziplora.train.config import flag_name, renamed

    given = {k: v for k, v in options.items() if v is not None}
    for name, old in renamed().items():
        if old in given:
            if name in given:
                raise UsageError(f"{flag_name(old)} is the old name of {flag_name(name)}; give only {flag_name(name)}.")
            given[name] = given.pop(old)
    return given


def train(
    ctx: typer.Context,
    images: Annotated[list[Path] | None, typer.Argument(help="Image files and/or folders.", show_default=False)] = None,
    subject: Annotated[str | None, _opt("--subject", help="Subject words, e.g. 'cat'.")] = None,
    style: Annotated[str | None, _opt("--style", help="Style words, e.g. 'pencil sketch'.")] = None,
    token: Annotated[
        str | None, _opt("--token", help=f"Rare token that marks the subject. [default: {DEFAULT_TOKEN}]")
    ] = None,
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
            help="Finish an interrupted run (see 'unzip list --runs') with its own settings; only "
            "--checkpoint-every, --preview-every and --preview-steps may change.",
            autocompletion=run_ids,
        ),
    ] = None,
    base: BaseOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    *,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    **options: Any,  # the training options: see _training_params
) -> None:
    """Split images into a content LoRA and a style LoRA; print the new entry id."""
    from dataclasses import asdict, replace

    from unziplora.base_model import native_resolution
    from unziplora.errors import ConfigError, TrainingError, UsageError
    from unziplora.registry import Registry
    from unziplora.settings import load_settings
    from unziplora.train.api import distributed, prepare_requests, request_from_run, train_requests
    from unziplora.train.config import TrainConfig

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    given = _given(options)
    settings = load_settings(registry=opts.registry, base_model=base, device=device, precision=precision)
    rank_index, world = distributed(settings.device)
    progress = TrainProgress(quiet=opts.quiet or rank_index != 0)
    words = dict(
        subject=subject,
        style=style,
        token=token,
        prompt=prompt,
        content_prompt=content_prompt,
        style_prompt=style_prompt,
    )
    if resume:
        from unziplora.train.run import claim_for_resume, open_run

        if world > 1:
            raise ConfigError("--resume continues one run in one process; run it without torchrun/accelerate launch.")
        if images:
            raise UsageError("--resume continues a run with its own images; do not pass images with it.")
        run = open_run(settings.registry, resume)
        safe = _refuse_resume_changes(run, given, words, name=name, each=each, base=base, precision=precision)
        claim_for_resume(
            run, Registry.from_settings(settings.registry)
        )  # one line if in use, unrecorded or already an entry
        request = request_from_run(run)
        request.config = replace(request.config, **safe)
        if request.config.faithful:
            settings = _faithful(request.config, settings, [request])[0]
        base_ref = run.record["base"]["ref"]
        _tiny_note(base_ref, opts.quiet)
        requests, runs = [request], [run]
    else:
        if not images:
            raise UsageError("no images given; pass one or more image files or folders (see 'unzip train --help').")
        from_file = {k: v for k, v in asdict(settings.train).items() if v is not None}
        config = TrainConfig(**{**from_file, **given})
        base_ref = settings.base_model
        spec = _check_base_and_device(base_ref, settings)  # cheap refusals before any image is read
        config = config.with_resolution(native_resolution(spec))
        command = _command_line(images, words, name, each, base_ref, config)
        prepared = prepare_requests(images, config=config, each=each, name=name, command=command, **words)
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


def _refuse_resume_changes(
    run: Any, given: dict[str, Any], words: dict[str, Any], *, name: Any, each: bool, base: Any, precision: Any
) -> dict[str, Any]:
    """The resume-safe options given; refuse (exit 2) any other flag that would change the run.

    A resumed run must end where the uninterrupted one would: its rank, learning rates and steps
    are fixed by its first start (the column-selection period is ``ceil(steps / sample-times)``,
    so even more steps would change the schedule already followed). Only options that decide
    when files are written may change. Values equal to the run's own are accepted.
    """
    from unziplora.base_model import parse_base
    from unziplora.errors import UsageError
    from unziplora.train.config import TrainConfig, flag_name, options

    stored = run.record.get("config")
    if not isinstance(stored, dict):
        return {}  # claim_for_resume refuses a run without a readable config
    own = TrainConfig.from_dict(stored).to_dict()
    changed = [flag_name(k) for k, v in given.items() if v != own[k] and not options()[k].resume_safe]
    changed += [flag_name(k) for k, v in words.items() if v is not None]
    changed += ["--name"] if name is not None else []
    changed += ["--each"] if each else []
    recorded_base = (run.record.get("base") or {}).get("ref")
    if base is not None and parse_base(base).ref != recorded_base:
        changed.append("--base")
    if precision not in (None, "auto") and precision != run.record.get("precision"):
        changed.append("--precision")
    if changed:
        raise UsageError(
            f"--resume finishes run {run.id} with the settings it started with; {', '.join(changed)} would change "
            f"them: drop {'it' if len(changed) == 1 else 'them'}, or discard the run with 'unzip rm --run {run.id}' "
            "and train again."
        )
    return {k: v for k, v in given.items() if options()[k].resume_safe}


def _check_base_and_device(base_ref: str, settings: Any) -> Any:
    from unziplora.base_model import parse_base
    from unziplora.device import resolve_placement

    spec = parse_base(base_ref)
    if spec.kind == "file":
        from unziplora.base_model import check_file_base

        check_file_base(spec.ref)  # the header alone: a LoRA or a wrong file is refused before torch is imported
    resolve_placement(settings.device, settings.precision)
    return spec


def _tiny_note(base_ref: str, quiet: bool) -> None:
    if base_ref == "tiny-sdxl":
        note("note: tiny-sdxl is a toy base with random weights; its LoRAs and images are noise.", quiet=quiet)


def _command_line(images: list[Path], words: dict[str, Any], name: Any, each: bool, base: str, config: Any) -> str:
    """The exact command-line equivalent, recorded in entry.json.

    Options that a config file may set (steps, rank, resolution, faithful) are always written,
    so the line repeats the run whatever the config file says; others only when not the default.
    """
    from unziplora.train.config import defaults, flag_name, options

    words_out = ["unzip", "train", *[str(p) for p in images]]
    for key, value in (*words.items(), ("name", name)):
        if value is not None and not (key == "token" and value == DEFAULT_TOKEN):
            words_out += [flag_name(key), str(value)]
    if each:
        words_out.append("--each")
    words_out += ["--base", base]
    for key, value in config.to_dict().items():
        opt = options()[key]
        if not opt.cli or value is None or (value == defaults()[key] and not opt.config_file):
            continue
        if isinstance(value, bool):
            words_out.append(flag_name(key) if value else f"--no-{flag_name(key)[2:]}")
        else:
            words_out += [flag_name(key), str(value)]
    return shlex.join(words_out)


def _signature() -> inspect.Signature:
    """``train``'s own parameters with the derived training options in place of ``**options`` (after --precision)."""
    own = [
        p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind is not Parameter.VAR_KEYWORD
    ]
    at = [p.name for p in own].index("registry")
    return inspect.Signature([*own[:at], *_training_params(), *own[at:]])


train.__signature__ = _signature()  # type: ignore[attr-defined]  # what Typer reads to build the command


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EXAMPLES)(train)
