"""``unzip export`` and ``unzip import``: LoRA files out of and into the registry.

Options are parsed here; :mod:`unziplora.transfer` does the work. ``export`` prints the written path
on stdout (``--json``: a record); ``import`` prints the new entry id (``--json``: the entry). Notes
(the one-prompt caveat of ``--part both``, the rank-reduction error) go to stderr. Light: no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from unziplora_cli._complete import entry_ids
from unziplora_cli._frame import BaseOpt, JsonOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, note, warn

EXPORT_EXAMPLES = epilog(
    "unzip export cat-sketch-3f2a --format kohya --part style -o sketch_style.safetensors",
    "unzip export cat-sketch-3f2a --format diffusers --part both --rank 32 -o exports/cat/",
    "unzip export cat-sketch-3f2a --part both --style-from rose-popart-91c0 --dtype bf16 --json",
)
IMPORT_EXAMPLES = epilog(
    'unzip import models/sketch_cat/sketch_cat --subject cat --style "pencil sketch"',
    "unzip import models/sketch_cat/sketch_cat_merger_content.pth --subject cat --style sketch --base ./sdxl-base",
    "unzip import cat-content.safetensors sketch-style/pytorch_lora_weights.safetensors --name cat-sketch",
)


def _registry(path: Path | None) -> object:
    from unziplora.registry import Registry

    return Registry.from_settings(path)


def export(
    ctx: typer.Context,
    entry_id: Annotated[
        str, typer.Argument(metavar="ID", help="Entry id, unique id prefix, or name.", autocompletion=entry_ids)
    ],
    fmt: Annotated[
        str, typer.Option("-f", "--format", metavar="FORMAT", help="kohya (also: a1111, comfyui) or diffusers.")
    ] = "kohya",
    part: Annotated[
        str, typer.Option("-p", "--part", metavar="PART", help="content, style, or both (exact sum with merges).")
    ] = "both",
    style_from: Annotated[
        str | None,
        typer.Option(
            "--style-from",
            metavar="ID2",
            help="Take the style (and its merges) from another entry.",
            autocompletion=entry_ids,
        ),
    ] = None,
    rank: Annotated[
        int | None, typer.Option("--rank", metavar="R", help="Reduce to rank R by SVD; prints the relative error.")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", metavar="DTYPE", help="fp16, bf16 or fp32 tensors.")] = "fp16",
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="PATH",
            help="File (*.safetensors) or folder [default: ./ID-PART.safetensors; diffusers: ./ID-PART/].",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write an entry's LoRA as one kohya/A1111/ComfyUI or diffusers file; print its path."""
    from unziplora.transfer.export import ONE_PROMPT_NOTE, describe, export_entry, resolve_format

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    resolve_format(fmt)  # refuse a bad format before anything is read
    reg = _registry(opts.registry)
    entry = reg.get(entry_id)  # type: ignore[attr-defined]
    other = reg.get(style_from) if style_from is not None else None  # type: ignore[attr-defined]
    result = export_entry(entry, fmt=fmt, part=part, out=out, style_from=other, rank=rank, dtype=dtype, force=force)
    if result.part == "both":
        note(ONE_PROMPT_NOTE, quiet=opts.quiet)
    if result.rank_error is not None:
        note(f"rank {rank}: relative Frobenius error {result.rank_error:.6g}", quiet=opts.quiet)
    note(f"wrote {describe(result)}", quiet=opts.quiet)
    if opts.json:
        emit_json(result.to_dict())
    else:
        data(str(result.path))


def _interactive() -> bool:
    return sys.stdin.isatty()


def _asker() -> object:
    """``typer.prompt`` on a terminal; None (refuse with a one-line error) otherwise."""
    if not _interactive():
        return None
    examples = {"subject": "cat", "style": "pencil sketch"}

    def ask(what: str) -> str:
        return str(typer.prompt(f"{what.capitalize()} words (e.g. {examples.get(what, what)})", err=True))

    return ask


def import_(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH [STYLE]",
            show_default=False,
            help="An official output (X, X_content/, X_style/ or X_merger_*.pth), or a content and a style LoRA file.",
        ),
    ],
    subject: Annotated[
        str | None, typer.Option("--subject", help="Subject words, e.g. 'cat' [asked if unknown].")
    ] = None,
    style: Annotated[
        str | None, typer.Option("--style", help="Style words, e.g. 'pencil sketch' [asked if unknown].")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label for the entry (default: from the id).")] = None,
    skip_text_encoders: Annotated[
        bool, typer.Option("--skip-text-encoders", help="Drop text-encoder modules instead of refusing the file.")
    ] = False,
    attention_only: Annotated[
        bool,
        typer.Option(
            "--attention-only",
            help="Drop UNet modules other than attention projections (proj_in, proj_out, ff) and give "
            "projections the file lacks a zero delta, instead of refusing the file.",
        ),
    ] = False,
    base: BaseOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import LoRAs made elsewhere as a new entry (marked imported); print its id."""
    from unziplora.errors import UsageError
    from unziplora.transfer.importer import import_files, import_official

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if len(paths) > 2:
        raise UsageError(f"import takes one official output or a content and a style file, not {len(paths)} paths")
    from unziplora.registry import Registry
    from unziplora.settings import load_settings

    settings = load_settings(registry=opts.registry, base_model=base)
    reg, base = Registry(settings.registry), settings.base_model
    ask = _asker()
    if len(paths) == 1:
        entry = import_official(paths[0], reg, subject=subject, style=style, name=name, base=base, ask=ask)  # type: ignore[arg-type]
    else:
        entry = import_files(
            paths[0],
            paths[1],
            reg,
            subject=subject,
            style=style,
            name=name,
            base=base,
            ask=ask,  # type: ignore[arg-type]
            skip_text_encoders=skip_text_encoders,
            attention_only=attention_only,
            on_note=warn,
        )
    fmt = (entry.record.get("provenance") or {}).get("format", "?")
    note(f"imported {fmt} LoRAs as {entry.id} (subject '{entry.subject}', style '{entry.style}')", quiet=opts.quiet)
    if opts.json:
        emit_json(entry.to_dict())
    else:
        data(entry.id)


def register(app: typer.Typer) -> None:
    app.command("export", epilog=EXPORT_EXAMPLES)(export)
    app.command("import", epilog=IMPORT_EXAMPLES)(import_)
