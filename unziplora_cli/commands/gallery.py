"""``unzip gallery``: write the registry as a static site. Light: no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unziplora_cli._frame import JsonOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, note


def gallery(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="DIR", help="Site folder [default: gallery/ inside the registry]."),
    ] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the index in a web browser afterwards.")] = False,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter", metavar="TEXT", help="Only entries whose id, name, subject, style or base contains TEXT."
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images", metavar="DIR", help="Also list the generated images in DIR (found by their PNG records)."
        ),
    ] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the registry as a static site (cards, one page per entry, generated images); works from file://."""
    from unziplora.gallery import build_gallery, default_output
    from unziplora.registry import Registry
    from unziplora_cli.commands.registry import _matches

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    reg = Registry.from_settings(opts.registry)
    everything = sorted(reg.list(), key=lambda e: (str(e.record.get("created", "")), e.id), reverse=True)
    entries = [e for e in everything if _matches(e, filter_text.lower())] if filter_text else everything
    report = build_gallery(
        entries, output if output is not None else default_output(reg.root), total=len(everything), images_dir=images
    )
    index = report.path / "index.html"
    if opts.json:
        emit_json(
            {
                "path": str(report.path),
                "index": str(index),
                "entries": report.entries,
                "images": report.images,
                "written": report.written,
                "kept": report.kept,
            }
        )
    else:
        data(str(index))
        note(
            f"{report.entries} entries, {report.images} images; {report.written} files written, {report.kept} unchanged.",
            quiet=opts.quiet,
        )
    if open_page:
        import webbrowser

        if not webbrowser.open(index.as_uri()):
            note(f"no web browser found; open {index.as_uri()}", quiet=False)


def register(app: typer.Typer) -> None:
    app.command(
        "gallery",
        epilog=epilog("unzip gallery --open", "unzip gallery -o site --filter cat", "unzip gallery --images out/"),
    )(gallery)
