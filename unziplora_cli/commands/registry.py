"""``unzip list``, ``unzip show``, ``unzip rm``: the registry verbs. Light: no torch, ever."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Any

import typer

from unziplora.eval.metrics import HEADLINE, LOWER_IS_BETTER
from unziplora_cli._complete import entry_ids
from unziplora_cli._frame import JsonOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, human_bytes, note, visible, warn

# created, name, size, then one key per headline evaluation score (owned by unziplora.eval.metrics).
SortKey = Enum("SortKey", {k.replace("-", "_"): k for k in ("created", "name", "size", *HEADLINE)}, type=str)  # type: ignore[misc]


def _registry(path: Any) -> Any:
    from unziplora.registry import Registry

    return Registry.from_settings(path)


def _matches(entry: Any, needle: str) -> bool:
    base = entry.record.get("base")
    ref = base.get("ref", "") if isinstance(base, dict) else ""
    hay = (entry.id, entry.name, entry.subject, entry.style, str(ref), str(entry.record.get("kind", "")))
    return any(needle in str(h).lower() for h in hay)


def _sorted(entries: list[Any], key: SortKey, reverse: bool) -> list[Any]:
    # Natural orders: newest first, A to Z, largest first; --reverse flips each. Ties break by id.
    entries = sorted(entries, key=lambda e: e.id)
    if key.value in HEADLINE:  # best first (highest, or lowest for a leak); unevaluated entries last
        from unziplora_cli._registry_view import headline_score

        score = HEADLINE[key.value]
        scored = [e for e in entries if headline_score(e, score) is not None]
        rest = [e for e in entries if headline_score(e, score) is None]
        best_high = score not in LOWER_IS_BETTER
        return sorted(scored, key=lambda e: headline_score(e, score), reverse=best_high != reverse) + rest
    if key is SortKey.name:
        return sorted(entries, key=lambda e: e.name.lower(), reverse=reverse)
    if key is SortKey.size:
        return sorted(entries, key=lambda e: e.size_bytes, reverse=not reverse)
    return sorted(entries, key=lambda e: str(e.record.get("created", "")), reverse=not reverse)


def list_entries(
    ctx: typer.Context,
    sort: Annotated[
        SortKey,
        typer.Option(
            "--sort",
            help="created (newest first), name (A-Z), size (largest first), or an 'unzip eval' headline score (best first; unevaluated last).",
        ),
    ] = SortKey.created,
    reverse: Annotated[bool, typer.Option("--reverse", help="Reverse the sort order.")] = False,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter", metavar="TEXT", help="Only entries whose id, name, subject, style or base contains TEXT."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", min=1, help="Show at most N entries.")] = None,
    runs: Annotated[
        bool, typer.Option("--runs", help="List interrupted training runs (resume with 'unzip train --resume RUN').")
    ] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the entries in the registry (damaged ones are marked)."""
    from unziplora_cli._registry_view import print_table, table_rows

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    reg = _registry(opts.registry)
    if runs:
        _list_runs(reg.root, opts)
        return
    everything = reg.list()
    entries = everything
    if filter_text:
        entries = [e for e in entries if _matches(e, filter_text.lower())]
    entries = _sorted(entries, sort, reverse)[:limit]
    if opts.json:
        # One compact object per line: json.dumps(indent=...) falls back to the pure-Python encoder,
        # which alone took 0.25 s for 1,000 entries; this stays a valid JSON array.
        import json as json_mod

        data("[" + ",\n".join(json_mod.dumps(e.to_dict(), ensure_ascii=False) for e in entries) + "]")
        return
    if not entries:
        if not everything:
            note(
                f"No entries yet in {reg.root}. Make one with: unzip train IMAGE --subject WORDS --style WORDS",
                quiet=opts.quiet,
            )
        else:
            note(f"No entries match '{filter_text}' ({len(everything)} in the registry).", quiet=opts.quiet)
        return
    if opts.quiet:
        for e in entries:
            data(e.id)
    else:
        print_table(*table_rows(entries))
    damaged = [e.id for e in entries if e.damaged]
    if damaged:
        warn(f"{len(damaged)} damaged: {', '.join(damaged)}; see 'unzip show ID --verify' or 'unzip doctor'")


def _list_runs(root: Any, opts: Any) -> None:
    """Interrupted training runs: id, what they train, how far they got."""
    from unziplora.train.run import list_runs

    found = list_runs(root)
    if opts.json:
        emit_json([{"id": r.id, "path": str(r.path), "step": r.step, **r.record} for r in found])
        return
    if not found:
        note("No interrupted training runs.", quiet=opts.quiet)
        return
    for r in found:
        if opts.quiet:
            data(r.id)
            continue
        prompts = r.record.get("prompts") if isinstance(r.record.get("prompts"), dict) else {}
        config = r.record.get("config") if isinstance(r.record.get("config"), dict) else {}
        total = config.get("steps", "?")
        data(
            visible(
                f"{r.id}  {prompts.get('subject') or '-'} / {prompts.get('style_words') or '-'}  step {r.step}/{total}  {r.record.get('created', '')}"
            )
        )
    note("resume with: unzip train --resume RUN", quiet=opts.quiet)


def show(
    ctx: typer.Context,
    entry_id: Annotated[
        str, typer.Argument(metavar="ID", help="Entry id, unique id prefix, or name.", autocompletion=entry_ids)
    ],
    verify: Annotated[
        bool, typer.Option("--verify", help="Rehash every payload file and report what differs.")
    ] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show everything an entry records: prompts, base, settings, training figures, files."""
    from unziplora.entry_files import PREVIEW_FILE
    from unziplora.errors import DamagedEntryError
    from unziplora_cli._registry_view import show_page

    opts = run_options(ctx, registry=registry, json=json)
    entry = _registry(opts.registry).get(entry_id, allow_damaged=True)
    preview_path = entry.path / PREVIEW_FILE
    preview = str(preview_path) if preview_path.is_file() else None
    problems = entry.verify() if verify else None
    if opts.json:
        out = entry.to_dict()
        out["preview"] = preview
        if problems is not None:
            out["verify"] = {"ok": not problems, "problems": problems}
        emit_json(out)
    else:
        show_page(entry, preview)
        if problems is not None:
            if problems:
                data("verify:      FAILED")
                for p in problems:
                    data(f"  - {p}")
            else:
                data(
                    f"verify:      OK ({len(entry.files)} files, {human_bytes(sum(int(i['bytes']) for i in entry.files.values()))} rehashed)"
                )
    if problems:
        raise DamagedEntryError(
            f"entry {entry.id} failed verification: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    if entry.damaged and not opts.json and not verify:
        warn(visible(f"entry {entry.id} is damaged: {entry.damaged}"))


def _interactive() -> bool:
    """Whether a person can answer the confirmation (tests patch this)."""
    return sys.stdin.isatty()


def remove(
    ctx: typer.Context,
    entry_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID", help="Entry ids, unique prefixes or names.", show_default=False, autocompletion=entry_ids
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")] = False,
    runs: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            metavar="RUN",
            help="Discard an interrupted training run instead (see 'unzip list --runs'); repeatable.",
        ),
    ] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove entries and free their disk space (or, with --run, discard interrupted training runs)."""
    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if runs:
        _remove_runs(opts, runs, entry_ids, dry_run)
        return
    if not entry_ids:
        if yes:  # like `rm -f` with no operands, so `unzip rm $(unzip list -q --filter x) --yes` is fine when nothing matches
            note("Nothing to remove.", quiet=opts.quiet)
            return
        typer.echo("error: Missing argument 'ID...'. See 'unzip rm --help'.", err=True)
        raise typer.Exit(2)
    plan = _registry(opts.registry).plan_removal(entry_ids)
    count = f"{len(plan.items)} entr{'y' if len(plan.items) == 1 else 'ies'}"
    size = human_bytes(plan.total_bytes)
    if not opts.json and not opts.quiet:
        width = max(len(i.id) for i in plan.items)
        for item in plan.items:
            data(
                f"{item.id:<{width}}  {human_bytes(item.bytes):>10}  {visible(item.name)}"
                + ("  (damaged)" if item.damaged else "")
            )

    def report(removed: list[str], freed: int) -> dict[str, Any]:
        items = [
            {"id": i.id, "name": i.name, "path": str(i.path), "bytes": i.bytes} for i in plan.items if i.id in removed
        ]
        return {"dry_run": dry_run, "removed": items, "bytes_freed": freed}

    if dry_run:
        if opts.json:
            emit_json(report([i.id for i in plan.items], plan.total_bytes))
        note(f"Dry run: would remove {count} ({size}); nothing changed.", quiet=opts.quiet)
        return
    if not yes:
        if not _interactive():
            typer.echo(
                f"error: not removing {count} without confirmation: stdin is not a terminal; pass --yes.", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"Remove {count} ({size})? [y/N] ", err=True, nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            note("Nothing removed.")
            raise typer.Exit(1)
    plan.execute()
    if opts.json:
        emit_json(report(plan.removed, plan.freed_bytes))
    removed = len(plan.removed)
    note(
        f"Removed {removed} entr{'y' if removed == 1 else 'ies'}, freed {human_bytes(plan.freed_bytes)}.",
        quiet=opts.quiet,
    )


def init(
    ctx: typer.Context,
    folder: Annotated[
        str | None,
        typer.Argument(
            metavar="DIR", help="Folder to make a registry (default: the configured registry).", show_default=False
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Make a folder a registry, also one that already holds other files (they are never touched)."""
    from unziplora.errors import RegistryError
    from unziplora.registry import Registry
    from unziplora.registry.marker import MARKER

    opts = run_options(ctx, quiet=quiet)
    reg = Registry(folder) if folder is not None else _registry(opts.registry)
    if reg.root.expanduser().resolve() == reg.root.expanduser().resolve().parent:
        raise RegistryError(f"refusing to make the file-system root {reg.root} a registry; choose a folder")
    existed = (reg.root / MARKER).is_file()
    reg.ensure_dirs(adopt=True)
    note(f"{reg.root} is {'already' if existed else 'now'} an unziplora registry.", quiet=opts.quiet)


def _remove_runs(opts: Any, refs: list[str], entry_ids: list[str] | None, dry_run: bool) -> None:
    """``unzip rm --run RUN``: no confirmation needed, a run is not an entry (nothing else refers to it)."""
    from unziplora.errors import ConfigError
    from unziplora.train.run import open_run, remove_run

    if entry_ids:
        raise ConfigError("--run removes training runs; remove entries in a separate 'unzip rm ID' call.")
    root = _registry(opts.registry).root
    found = [open_run(root, ref) for ref in refs]  # every ref checked before anything is removed
    for run in found:
        if dry_run:
            note(f"Dry run: would discard run {run.id}.", quiet=opts.quiet)
            continue
        remove_run(root, run.id)
        if opts.quiet:
            data(run.id)
        else:
            note(f"Discarded run {run.id}.")


def register(app: typer.Typer) -> None:
    app.command(
        "list",
        epilog=epilog("unzip list", "unzip list --sort size --limit 5", "unzip list --filter cat --json | jq '.[].id'"),
    )(list_entries)
    app.command(
        "show",
        epilog=epilog(
            "unzip show cat-sketch-3f2a", "unzip show cat --verify", "unzip show cat-sketch --json | jq .prompts"
        ),
    )(show)
    app.command(
        "rm",
        epilog=epilog(
            "unzip rm cat-sketch-3f2a",
            "unzip rm cat dog --dry-run",
            "unzip rm $(unzip list -q --filter cat) --yes",
            "unzip rm --run cat-sketch-run-1a2b    # discard an interrupted training run",
        ),
    )(remove)
    app.command("init", epilog=epilog("unzip init ~/loras", "unzip init"))(init)
