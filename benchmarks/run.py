"""Run every benchmark of the project and print one table (``python -m benchmarks``).

    python -m benchmarks [--size tiny|medium|wide|sdxl256|sdxl] [--quick] [--json] [--only cli,lora,train,generate,counted]

Every row times our code and a reference side in the same run, alternating, repeated, and
reports medians; ``ours/ref`` is always our figure divided by the reference's (below 1: ours is
faster or smaller). Columns: benchmark | ours | reference | ours/ref | goal | met.

``--size`` picks the UNet widths of the model benchmarks (:mod:`benchmarks.sizes`): ``tiny`` for
CI smoke runs, ``medium`` for CPU figures, ``sdxl`` (full SDXL shapes, random weights, 1024 px)
for a GPU only. ``--quick`` cuts repeats and steps to a smoke run that checks the suite runs,
not how fast. ``--json`` prints a list of records instead of the table.

CPU runs use one intra-op thread per process unless ``--threads`` says otherwise: on a machine
shared with other work, OpenMP's barrier waits made two threads up to 4x slower than one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Row, environment
from benchmarks.sizes import SIZES

BENCHMARKS = ("cli", "lora", "train", "generate", "counted")
WIDE_TRAIN_REPEATS = 3  # a full-width step takes tens of CPU seconds per side
# Goals of issue 15 that need hardware a run may not have: printed under the table as not measured.
GPU_GOALS = (
    ("train step vs floor (sdxl: 1024 px, rank 64, bf16, checkpointing)", "<= 1.10x"),
    ("train step vs official-style (sdxl: 1024 px, rank 64, bf16, checkpointing)", "<= 0.5x"),
    ("captured/compiled step: launches per step independent of the wrapped projections", "CUDA graphs"),
)


@dataclass(frozen=True)
class Plan:
    """Repeats and sizes of one run of the suite."""

    size: str
    device: str
    quick: bool

    @property
    def cli_entries(self) -> int:
        return 100 if self.quick else 1000

    @property
    def cli_repeats(self) -> int:
        return 1 if self.quick else 9

    @property
    def lora_repeats(self) -> int:
        return 1 if self.quick else 9

    @property
    def train_repeats(self) -> int:
        return 1 if self.quick else 9

    @property
    def memory_steps(self) -> int:
        return 1 if self.quick else 2

    @property
    def generate_repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def generate_steps(self) -> int | None:
        return 2 if self.quick else None  # None: the size's own step count


def cli_rows(plan: Plan) -> list[Row]:
    """Each light command (``--help``, ``list``, ``show``, ``rm``, ``list --runs``, TAB completion) with
    1,000 entries against ``python -c pass``, in CPU seconds: the goal is for an idle machine."""
    from benchmarks.bench_cli_start import GOAL_S, run

    rows = []
    for r in run(entries=plan.cli_entries, repeats=plan.cli_repeats):
        rows.append(
            Row(
                f"CLI start: {r.name} ({plan.cli_entries:,} entries)",
                r.ours_cpu_s,
                r.reference_cpu_s,
                "s",
                f"< {GOAL_S} s CPU",
                r.met,
                r.name,
                "python -c pass",
                "cli",
                {"ours_wall_s": round(r.ours_s, 4), "reference_wall_s": round(r.reference_s, 4)},
            )
        )
    return rows


def lora_rows(plan: Plan) -> list[Row]:
    """The LoRA wrapper against the dense formulation, forward + backward, at SDXL layer shapes."""
    from benchmarks.bench_lora_wrapper import run_benchmark

    gpu = plan.device.startswith("cuda")
    rows = []
    for name, ours, ref, ratio in run_benchmark(
        plan.device, repeats=plan.lora_repeats, warmup=0 if plan.quick else 2, amp=gpu
    ):
        rows.append(
            Row(
                f"LoRA fwd+bwd: {name}",
                ours * 1e3,
                ref * 1e3,
                "ms",
                "< 1x",
                ratio < 1.0,
                "UnZipLoRALinear (factorised)",
                "dense A^T B^T per call (official math)",
                "lora",
                {"rank": 64, "amp_bf16": gpu},
            )
        )
    return rows


def train_rows(plan: Plan) -> list[Row]:
    """Training step vs the floor and vs the official-style step; peak memory vs official-style.

    A medium run also times the step at full SDXL size, the figures issue 15 sets its CPU goals
    on (step rows only; the memory rows would build three such UNets at once): against the floor
    on the real SDXL UNet config (``sdxl256``: depths 1/2/10, 256 px, rank 64; about 16 GB of
    RAM), against the official-style step on ``wide`` (SDXL's projection shapes, depth 2 at the
    1280 level), since the official-style side does not fit next to the full UNet in 23 GB.
    """
    from benchmarks.bench_train import run

    rows = run(
        plan.size, plan.device, repeats=plan.train_repeats, memory_steps=plan.memory_steps, memory_floor=not plan.quick
    )
    if plan.size == "medium" and not plan.quick:
        rows += run("sdxl256", plan.device, repeats=WIDE_TRAIN_REPEATS, memory=False, sides=("ours", "floor"))
        rows += run("wide", plan.device, repeats=WIDE_TRAIN_REPEATS, memory=False, sides=("ours", "official"))
    return rows


def generate_rows(plan: Plan) -> list[Row]:
    """Seconds per generated image against the stock pipeline."""
    from benchmarks.bench_generate import run

    return run(plan.size, plan.device, repeats=plan.generate_repeats, steps=plan.generate_steps)


def counted_rows(plan: Plan) -> list[Row]:
    """FLOPs and kernel launches per training step, counted on meta tensors: at the run's size,
    and at full SDXL shapes too (no GPU needed) unless this is a quick run."""
    from benchmarks.count_ops import run

    sizes = [plan.size] if plan.quick or plan.size == "sdxl" else [plan.size, "sdxl"]
    return [row for size in sizes for row in run(size)]


RUNNERS: dict[str, Callable[[Plan], list[Row]]] = {
    "cli": cli_rows,
    "lora": lora_rows,
    "train": train_rows,
    "generate": generate_rows,
    "counted": counted_rows,
}


def _fmt(value: float, unit: str) -> str:
    if unit in ("ops", "TFLOP"):
        return f"{value:,.0f} ops" if unit == "ops" else f"{value:.4g} TFLOP"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    head = ["benchmark", "ours", "reference", "ours/ref", "goal", "met"]
    body = [
        [
            r.name,
            _fmt(r.ours, r.unit),
            f"{_fmt(r.reference, r.unit)} ({r.reference_side})",
            f"{r.ratio:.2f}x",
            r.goal,
            "yes" if r.met else ("no" if r.met is not None else "-"),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


_SDXL_ON_CPU = "--size sdxl needs a CUDA GPU (full SDXL shapes at 1024 px); on a CPU use --size medium."


def _refuse_sdxl_on_cpu(device: str) -> str | None:
    from unziplora.device import resolve_device

    if not resolve_device(device).startswith("cuda"):
        return _SDXL_ON_CPU
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="medium", help="UNet widths [medium]")
    parser.add_argument("--quick", action="store_true", help="fewest repeats and steps: checks that it runs")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records instead of the table")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON records to PATH")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] [auto]")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU intra-op threads per process; 0: torch's default [1]"
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.size == "sdxl" and args.device == "cpu":  # a usage refusal: decided before torch is imported
        print(_SDXL_ON_CPU, file=sys.stderr)
        raise SystemExit(2)
    if args.threads > 0:  # before torch is imported here, and inherited by the memory subprocesses
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from unziplora.hf_env import prepare_hf

    prepare_hf()  # quiet diffusers/transformers logs and progress bars
    import warnings

    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    from unziplora.device import resolve_device

    if args.size == "sdxl":
        refusal = _refuse_sdxl_on_cpu(args.device)
        if refusal:
            print(refusal, file=sys.stderr)
            raise SystemExit(2)
    plan = Plan(size=args.size, device=resolve_device(args.device), quick=args.quick)
    started = _dt.datetime.now(_dt.timezone.utc)
    rows: list[Row] = []
    failed: list[str] = []
    for name in args.only:
        if not args.json:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(RUNNERS[name](plan))
        except Exception:  # noqa: BLE001 - report, keep going, fail at the end
            failed.append(name)
            traceback.print_exc()
    env = environment()
    records: list[dict[str, Any]] = []
    for r in rows:
        record = r.to_dict()
        record.update(size=plan.size, device=plan.device, quick=plan.quick, date=started.isoformat(timespec="seconds"))
        records.append(record)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as handle:
            json.dump({"environment": env, "argv": sys.argv, "rows": records}, handle, indent=1)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        load = env.get("load_average") or []
        print(
            f"size={plan.size} device={plan.device} quick={plan.quick} threads={env.get('torch_threads')} "
            f"date={started:%Y-%m-%d %H:%M} UTC cpu={env.get('cpu_model')} x{env.get('cpus')} "
            f"load={'/'.join(f'{x:.1f}' for x in load)} torch={env.get('torch')}"
            + (f" gpu={env['gpu']}" if env.get("gpu") else "")
        )
        print(table(rows))
        if not plan.device.startswith("cuda") and not plan.quick:
            for name, goal in GPU_GOALS:
                print(f"not measured (needs a CUDA GPU): {name}, goal {goal}")
        print(
            "ours/ref = our figure / the reference figure measured in the same run (medians); below 1 = ours faster/smaller."
        )
        if plan.device == "cpu" and env.get("torch_threads") == 1:
            print("Model rows on CPU are timed in process CPU seconds (one thread).")
        print("CLI rows are CPU seconds (user + sys) of the subprocess: its wall time on an idle machine.")
    if failed:
        print(f"benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
