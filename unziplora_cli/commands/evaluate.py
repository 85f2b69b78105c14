"""``unzip eval``: generate each entry's probe set and print its decomposition scores.

The scores are defined in :mod:`unziplora.eval.metrics`, the probe set in :mod:`unziplora.eval.probes`.
Several ids give one comparison table (one column per entry). Progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unziplora_cli._complete import entry_ids
from unziplora_cli._frame import DeviceOpt, JsonOpt, PrecisionOpt, QuietOpt, RegistryOpt, epilog, run_options
from unziplora_cli._output import data, emit_json, note

EXAMPLES = epilog(
    "unzip eval cat-sketch-3f2a",
    "unzip eval full-3f2a no-columns-91c0 no-blocks-77aa --json    # an ablation in one table",
    "unzip eval cat-sketch-3f2a --probes probes.toml -n 4 --clip ./clip-folder --dino facebook/dinov2-small",
)


def evaluate_command(
    ctx: typer.Context,
    ids: Annotated[
        list[str], typer.Argument(help="Entries to evaluate.", autocompletion=entry_ids, show_default=False)
    ],
    probes: Annotated[
        Path | None, typer.Option("--probes", metavar="FILE", help="TOML probe set replacing the built-in one.")
    ] = None,
    num: Annotated[int, typer.Option("-n", "--num", help="Images per probe.")] = 1,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the probe set [default: the probe file's, else 0].")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps per image.")] = 30,
    size: Annotated[int | None, typer.Option("--size", help="Image size [default: the base's native size].")] = None,
    clip: Annotated[
        str, typer.Option("--clip", metavar="MODEL", help="CLIP model: Hugging Face id or folder.")
    ] = "openai/clip-vit-large-patch14",
    dino: Annotated[
        str, typer.Option("--dino", metavar="MODEL", help="DINOv2 model: Hugging Face id or folder.")
    ] = "facebook/dinov2-base",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score how well entries split content from style (CLIP-T, CLIP-I, DINO, leakage, reconstruction).

    The result is saved with each entry (eval.json, the sheet eval.png, scores in entry.json; a
    re-run replaces them), so 'unzip list --sort subject-fidelity' can rank entries.
    """
    from unziplora.errors import IncompatibleEntriesError, UsageError
    from unziplora.eval.probes import DEFAULT_PROBES, DEFAULT_SEED, read_probes
    from unziplora.generate.options import GenerationOptions
    from unziplora.registry import Registry
    from unziplora.settings import load_settings

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if num < 1 or num > 64:
        raise UsageError(f"-n must be between 1 and 64; got {num}.")
    probe_list, file_seed = read_probes(probes) if probes is not None else (list(DEFAULT_PROBES), DEFAULT_SEED)
    seed = file_seed if seed is None else seed
    options = GenerationOptions(steps=steps, width=size, height=size)
    settings = load_settings(registry=opts.registry, device=device, precision=precision)
    reg = Registry(settings.registry)
    entries = [_usable(reg, i) for i in ids]
    from unziplora.base_model import same_base

    records = [e.record.get("base") or {} for e in entries]
    if not all(same_base(records[0], other) for other in records[1:]):
        bases = {str(r.get("ref")) for r in records}
        raise IncompatibleEntriesError(
            f"the entries were trained on different base models ({', '.join(sorted(bases))}); evaluate them separately."
        )
    from unziplora.eval.models import Embedders
    from unziplora.eval.run import evaluate
    from unziplora.generate import Studio

    embedders = Embedders.load(clip, dino)
    base_ref = str(records[0].get("ref"))
    note(
        "note: tiny-sdxl is a toy base with random weights; its scores measure nothing.",
        quiet=opts.quiet or base_ref != "tiny-sdxl",
    )
    studio = Studio.load(base_ref, device=settings.device, precision=settings.precision, registry=reg)
    total = len(entries) * len(probe_list) * num
    bar = _Bar(quiet=opts.quiet or opts.json, total=total)
    try:
        results = [
            evaluate(studio, e, embedders, probe_list, seed=seed, num=num, options=options, on_image=bar.advance)
            for e in entries
        ]
    finally:
        bar.close()
    from unziplora.entry_files import EVAL_FILE, EVAL_SHEET
    from unziplora.eval.save import plain_scores, save_evaluation

    run = {"seed": seed, "num": num, "steps": steps, "probes": len(probe_list), "clip": clip, "dino": dino}
    saved = [save_evaluation(reg, r, run) for r in results]
    records = [
        {
            "id": r.entry_id,
            "scores": plain_scores(r.scores),
            **run,
            "file": str(e.path / EVAL_FILE),
            "sheet": str(e.path / EVAL_SHEET),
        }
        for r, e in zip(results, saved)
    ]
    if opts.json:
        emit_json(records)  # an array for one id as for three: the shape never depends on the count
        return
    if opts.quiet:  # only where the results were saved, one entry per line
        for record in records:
            data(record["file"])
        return
    for line in _table(records):
        data(line)
    for record in records:
        note(f"saved {record['file']} and {record['sheet']}", quiet=False)


def _table(records: list[dict[str, Any]]) -> list[str]:
    from unziplora.eval.metrics import LOWER_IS_BETTER, SCORES

    width = max(18, *(len(r["id"]) + 2 for r in records))
    lines = [f"{'SCORE':40}" + "".join(f"{r['id']:>{width}}" for r in records)]
    for key in SCORES:
        label = key + (" (lower better)" if key in LOWER_IS_BETTER else "")
        lines.append(f"{label:40}" + "".join(f"{_cell(r['scores'][key]):>{width}}" for r in records))
    return lines


def _usable(reg: Any, text: str) -> Any:
    """The entry for ``text``; damaged only in its saved evaluation is fine (this run replaces it)."""
    from unziplora.entry_files import EVAL_FILE, EVAL_SHEET

    entry = reg.get(text, allow_damaged=True)
    if entry.damaged and not all(p.startswith((f"{EVAL_FILE} ", f"{EVAL_SHEET} ")) for p in entry.problems):
        reg.get(text)  # raises the usual one-line damaged-entry error
    return entry


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class _Bar:
    """A rich progress bar over images on stderr; silent with -q or --json."""

    def __init__(self, *, quiet: bool, total: int) -> None:
        self._bar: Any = None
        if quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from unziplora_cli._output import stderr_console

        self._bar = Progress(
            TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr_console()
        )
        self._bar.start()
        self._task = self._bar.add_task("evaluating", total=total)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def register(app: typer.Typer) -> None:
    app.command("eval", epilog=EXAMPLES)(evaluate_command)
