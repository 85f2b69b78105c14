"""``unzip doctor``: is this machine ready, and where do things live."""

from __future__ import annotations

import typer

from unziplora_cli._frame import BaseOpt, JsonOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import emit_json, stdout_console

MARK = {"ok": "ok", "warn": "warn", "fail": "FAIL"}


def doctor(
    ctx: typer.Context,
    base: BaseOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check versions, device and precision, config, registry and base model (the configured one, or --base).
    Exit 1 if something required is missing.

    With -q only the checks that warn or fail are printed (nothing when all is well).
    """
    from unziplora.diagnostics import Check, run_checks
    from unziplora.errors import ConfigError
    from unziplora.settings import load_settings

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    try:
        settings = load_settings(registry=opts.registry, base_model=base)
        checks = run_checks(settings)
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc))]
    failed = any(c.status == "fail" for c in checks)
    if opts.json:
        emit_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        for check in checks:
            if opts.quiet and check.status == "ok":
                continue
            table.add_row(check.name, MARK[check.status], check.detail)
        if table.row_count:
            stdout_console().print(table)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(
        "doctor",
        epilog=epilog(
            "unzip doctor", "unzip doctor --base ~/models/sdxl-finetune", "unzip doctor --base tiny-sdxl --json"
        ),
    )(doctor)
