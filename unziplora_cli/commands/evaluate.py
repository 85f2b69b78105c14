"""``unzip eval``: generate each entry's probe set and print its decomposition scores.

The scores are defined in :mod:`unziplora.eval.metrics`, the probe set in :mod:`unziplora.eval.probes`.
Several ids give one comparison table (one column per entry). Progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

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
    ids: Annotated[list[str], typer.Argument(help="Entries to evaluate.", autocompletion=entry_ids, show_default=False)],
    probes: Annotated[Optional[Path], typer.Option("--probes", metavar="FILE", help="TOML probe set replacing the built-in one.")] = None,
    num: Annotated[int, typer.Option("-n", "--num", help="Images per probe.")] = 1,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the probe set [default: the probe file's, else 0].")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps per image.")] = 30,
    size: Annotated[Optional[int], typer.Option("--size", help="Image size [default: the base's native size].")] = None,
    clip: Annotated[str, typer.Option("--clip", metavar="MODEL", help="CLIP model: Hugging Face id or folder.")] = "openai/clip-vit-large-patch14",
    dino: Annotated[str, typer.Option("--dino", metavar="MODEL", help="DINOv2 model: Hugging Face id or folder.")] = "facebook/dinov2-base",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score how well entries split content from style (CLIP-T, CLIP-I, DINO, leakage, reconstruction)."""
    from unziplora.errors import ConfigError, IncompatibleEntriesError
    from unziplora.eval.probes import DEFAULT_PROBES, DEFAULT_SEED, read_probes
    from unziplora.generate.options import GenerationOptions
    from unziplora.registry import Registry
    from unziplora.settings import load_settings

    opts = run_options(ctx, registry=registry, json=json, quiet=quiet)
    if num < 1 or num > 64:
        raise ConfigError(f"-n must be between 1 and 64; got {num}.")
    probe_list, file_seed = read_probes(probes) if probes is not None else (list(DEFAULT_PROBES), DEFAULT_SEED)
    seed = file_seed if seed is None else seed
    options = GenerationOptions(steps=steps, width=size, height=size)
    settings = load_settings(registry=opts.registry, device=device, precision=precision)
    reg = Registry.from_settings(settings.registry)
    entries = [reg.get(i) for i in ids]
    bases = {e.record.get("base", {}).get("ref") for e in entries}
    if len(bases) != 1:
        raise IncompatibleEntriesError(f"the entries were trained on different base models ({', '.join(sorted(map(str, bases)))}); evaluate them separately.")
    from unziplora.eval.models import Embedders
    from unziplora.eval.run import evaluate
    from unziplora.generate import Studio

    embedders = Embedders.load(clip, dino)
    base_ref = bases.pop()
    note("note: tiny-sdxl is a toy base with random weights; its scores measure nothing.", quiet=opts.quiet or base_ref != "tiny-sdxl")
    studio = Studio.load(base_ref, device=settings.device, precision=settings.precision, registry=reg)
    total = len(entries) * len(probe_list) * num
    bar = _Bar(quiet=opts.quiet or opts.json, total=total)
    try:
        results = [evaluate(studio, e, embedders, probe_list, seed=seed, num=num, options=options, on_image=bar.advance) for e in entries]
    finally:
        bar.close()
    records = [{"id": r.entry_id, "scores": r.scores, "seed": seed, "num": num, "steps": steps,
                "probes": len(probe_list), "clip": clip, "dino": dino} for r in results]
    if opts.json:
        emit_json(records[0] if len(records) == 1 else records)
        return
    for line in _table(records):
        data(line)


def _table(records: list[dict[str, Any]]) -> list[str]:
    from unziplora.eval.metrics import LOWER_IS_BETTER, SCORES

    width = max(18, *(len(r["id"]) + 2 for r in records))
    lines = [f"{'SCORE':40}" + "".join(f"{r['id']:>{width}}" for r in records)]
    for key in SCORES:
        label = key + (" (lower better)" if key in LOWER_IS_BETTER else "")
        lines.append(f"{label:40}" + "".join(f"{r['scores'][key]:>{width}.4f}" for r in records))
    return lines


class _Bar:
    """A rich progress bar over images on stderr; silent with -q or --json."""

    def __init__(self, *, quiet: bool, total: int) -> None:
        self._bar: Any = None
        if quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from unziplora_cli._output import stderr_console

        self._bar = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr_console())
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
