"""``python -m benchmarks.realsize``: the whole product at SDXL's full size, through the real CLI.

On the builtin ``sdxl-random`` base (SDXL base 1.0's architecture, random weights; built into the
user cache dir on first use, about 7 GB) it runs, each as its own ``python -m unziplora_cli``
process on a temporary registry: ``train`` (enough steps for a column-SELECT step), ``show
--verify``, ``compose`` (the entry's content and style LoRAs, prompt-separated), ``restyle
--image``, six ``export`` calls (kohya and diffusers; content, style, both; ``--rank 32``),
``import`` of the exported content/style pair, and a check that diffusers' own
``load_lora_weights`` of every export injects all 560 attention projections with the entry's
deltas (delta weights compared, not images).

It prints one table of seconds and peak memory per phase: the child's peak RSS (``wait4``'s
``ru_maxrss``) and, on a GPU, its ``torch.cuda.max_memory_allocated``. The table goes to
``benchmarks/RESULTS.md`` with the date, machine and load; the children's stderr goes to
``benchmarks/realsize.log``.

Restartable: each finished phase is recorded in ``<work>/state.json`` and skipped on the next
call (``--redo PHASE`` or ``--fresh`` to run again); ``--only`` runs a subset. On CPU the
defaults are smaller than SDXL's 1024 px (train at 512 px, compose/restyle at 512 px with two
sampler steps) because a 1024-px UNet pass takes minutes on a few cores; the table says which
sizes ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import environment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOG = HERE / "realsize.log"
RESULTS = HERE / "RESULTS.md"
PROJECTIONS = 560  # SDXL base 1.0's attention projections (tests/test_single_file.py holds the count)
EXPORT_RANK = 32
PARTS = ("content", "style", "both")
FORMATS = ("kohya", "diffusers")

# Run inside the child: the real CLI entry point, plus a line with the CUDA peak at exit.
_CLI = (
    "import atexit, os, sys\n"
    "def _peak():\n"
    "    torch = sys.modules.get('torch')\n"
    "    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():\n"
    "        with open(os.environ['REALSIZE_PEAK'], 'w') as f: f.write(str(torch.cuda.max_memory_allocated()))\n"
    "atexit.register(_peak)\n"
    "sys.argv = ['unziplora', *sys.argv[1:]]\n"
    "from unziplora_cli.app import main_unziplora\n"
    "main_unziplora()\n"
)


@dataclass
class Phase:
    name: str
    what: str  # the command as a user would type it
    seconds: float = 0.0
    rss_mib: float = 0.0
    cuda_mib: float | None = None
    rc: int | None = None
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Runs children, measures them, records finished phases in ``state.json``."""

    def __init__(self, work: Path, device: str, redo: set[str], log: Path = LOG) -> None:
        self.work = work
        self.log = log
        self.device = device
        self.redo = redo
        self.registry = work / "registry"
        self.state_path = work / "state.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    def done(self, name: str) -> dict[str, Any] | None:
        record = self.state.get(name)
        if record and record.get("rc") == 0 and name not in self.redo:
            return record
        return None

    def _save(self, phase: Phase) -> None:
        if self.state_path.is_file():  # read-modify-write: another call may have recorded phases meanwhile
            self.state = {**json.loads(self.state_path.read_text()), **self.state}
        self.state[phase.name] = phase.__dict__
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def child(self, name: str, argv: list[str], what: str, *, python: bool = False) -> Phase:
        """Run one child (``unzip`` args, or a Python snippet when ``python``) as phase ``name``."""
        previous = self.done(name)
        if previous is not None:
            say(f"[{name}] done before: {previous['seconds']:.1f} s, skipped")
            return Phase(**previous)
        peak_file = self.work / f".peak-{name}"
        peak_file.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT), REALSIZE_PEAK=str(peak_file), UNZIPLORA_HOME=str(self.registry))
        command = [sys.executable, "-c", argv[0]] if python else [sys.executable, "-c", _CLI, *argv]
        say(f"[{name}] {what}")
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n===== {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC [{name}] {what}\n")
            log.flush()
            start = time.perf_counter()
            proc = subprocess.Popen(
                command, cwd=self.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None and proc.stderr is not None
            watch = _Watch(proc.pid, proc.stderr, log)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            watch.join()
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - start
            log.write(f"----- [{name}] exit {proc.returncode} after {seconds:.1f} s\n{out}")
        phase = Phase(name, what, seconds=seconds, rss_mib=usage.ru_maxrss / 1024, rc=proc.returncode, stdout=out)
        phase.extra["parts"] = watch.parts
        if peak_file.is_file():
            phase.cuda_mib = int(peak_file.read_text()) / 2**20
            peak_file.unlink()
        say(f"[{name}] exit {phase.rc}, {seconds:.1f} s, peak RSS {phase.rss_mib / 1024:.2f} GiB")
        if phase.rc != 0:
            self._save(phase)
            raise SystemExit(f"realsize: phase {name} failed (exit {phase.rc}); see {self.log}")
        self._save(phase)
        return phase


class _Watch:
    """Copies a child's stderr into the log and splits its run into the phases it reports there
    (``label...`` / ``label: done in X s``, and runs of ``what: step i/n`` lines), with the peak
    RSS seen during each (``/proc`` polled every 0.2 s; outer phases include their inner ones)."""

    def __init__(self, pid: int, stream: Any, log: Any) -> None:
        import threading

        self.pid, self.stream, self.log = pid, stream, log
        self.parts: dict[str, dict[str, float]] = {}
        self._open: list[str] = []
        self._steps: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._read), threading.Thread(target=self._poll)]
        for thread in self._threads:
            thread.start()

    def _part(self, label: str) -> dict[str, float]:
        return self.parts.setdefault(label, {"seconds": 0.0, "rss_mib": 0.0})

    def _read(self) -> None:
        import re

        for line in self.stream:
            self.log.write(line)
            self.log.flush()
            text = line.rstrip("\n")
            with self._lock:
                steps = re.match(r"^(.+): step \d+/\d+", text)
                done = re.match(r"^(.+): done in (\d+\.\d) s$", text)
                if steps and self._steps is None:
                    self._steps = (f"{steps.group(1)}: steps", time.perf_counter())
                    self._open.append(self._steps[0])
                    self._part(self._steps[0])
                elif (text.endswith("...") or done) and self._steps is not None:
                    self._part(self._steps[0])["seconds"] = round(time.perf_counter() - self._steps[1], 1)
                    self._open.remove(self._steps[0])
                    self._steps = None
                if text.endswith("..."):
                    self._open.append(text[:-3])
                    self._part(text[:-3])
                elif done:
                    self._part(done.group(1))["seconds"] = float(done.group(2))
                    if done.group(1) in self._open:
                        self._open.remove(done.group(1))
        self._done.set()

    def _poll(self) -> None:
        while not self._done.wait(0.2):
            try:
                with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
                    kib = next(int(x.split()[1]) for x in handle if x.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
            with self._lock:
                for label in self._open:
                    part = self._part(label)
                    part["rss_mib"] = max(part["rss_mib"], kib / 1024)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def say(line: str) -> None:
    print(f"{datetime.now(timezone.utc):%H:%M:%S} {line}", file=sys.stderr, flush=True)


def _images(work: Path) -> tuple[Path, Path]:
    """A drawn 1024-px 'cat' picture to train on and a 'photo' to restyle (no data set needed)."""
    from PIL import Image, ImageDraw

    cat, photo = work / "cat.png", work / "photo.png"
    if not cat.is_file():
        im = Image.new("RGB", (1024, 1024), (235, 225, 200))
        d = ImageDraw.Draw(im)
        d.ellipse((300, 380, 720, 860), fill=(90, 90, 95))
        d.ellipse((380, 180, 640, 440), fill=(100, 100, 105))
        d.polygon([(390, 250), (420, 120), (480, 220)], fill=(100, 100, 105))
        d.polygon([(540, 220), (600, 120), (630, 250)], fill=(100, 100, 105))
        im.save(cat)
    if not photo.is_file():
        im = Image.new("RGB", (1024, 1024), (120, 170, 220))
        d = ImageDraw.Draw(im)
        d.rectangle((0, 700, 1024, 1024), fill=(60, 120, 60))
        d.rectangle((460, 300, 560, 700), fill=(240, 240, 240))
        im.save(photo)
    return cat, photo


def _base_dir(base: str) -> Path:
    """The folder of a builtin base, built on first use."""
    if base == "tiny-sdxl":
        from unziplora.tiny_sdxl import tiny_sdxl_dir

        return tiny_sdxl_dir()
    from unziplora.sdxl_random import sdxl_random_dir

    return sdxl_random_dir()


def _build_snippet(base: str) -> str:
    return f"from benchmarks.realsize import _base_dir; print(_base_dir({base!r}))"


def _check_snippet(base: str, registry: Path, entry_id: str, files: list[tuple[str, str, str]]) -> str:
    """Python run in a child: diffusers' load_lora_weights of each export vs the entry's deltas."""
    args = json.dumps({"base": base, "registry": str(registry), "entry": entry_id, "files": files, "rank": EXPORT_RANK})
    return f"import json; from benchmarks.realsize import check_exports; check_exports(json.loads({args!r}))"


def stock_compose(base: str, device: str, precision: str, size: int, steps: int) -> None:
    """The reference for compose's memory and time: the stock diffusers SDXL pipeline, same base,
    size, sampler steps and guidance, no LoRA (run in a child like every phase)."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    pipe = StableDiffusionXLPipeline.from_pretrained(_base_dir(base), torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a photo of a cat on a beach",
        width=size,
        height=size,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]
    print(image.size)


def check_exports(args: dict[str, Any]) -> None:
    """For each exported file: load it with diffusers into the fp16 UNet of sdxl-random; every
    injected projection's delta (``scaling * B @ A``) must equal the entry's delta of that part
    reduced to the export rank (relative Frobenius error under 1e-2: fp16 factors), and the
    projections must be all of the entry's (560 on sdxl-random). Prints one JSON line per file; exits 1 on any mismatch."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from peft.tuners.lora import LoraLayer

    from unziplora.formats._keys import split_pairs
    from unziplora.formats.combine import reduce_rank_state_dict
    from unziplora.registry import Registry
    from unziplora.transfer.export import lora_for

    folder = _base_dir(args["base"])
    projections = PROJECTIONS if args["base"] == "sdxl-random" else None
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float16)
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
    )
    entry = Registry(Path(args["registry"])).get(args["entry"])
    failed = False
    for fmt, part, path in args["files"]:
        exact = lora_for(entry, part)
        reduced, _ = reduce_rank_state_dict({k: v.float() for k, v in exact.items()}, int(args["rank"]))
        expected = split_pairs(reduced)  # factors only: dense deltas are made one module at a time
        full = split_pairs(exact)
        pipe.load_lora_weights(path, adapter_name="check")
        worst = 0.0
        injected = 0
        num = den = 0.0
        for module_name, module in unet.named_modules():
            if not isinstance(module, LoraLayer) or "check" not in module.lora_A:
                continue
            injected += 1
            a = module.lora_A["check"].weight.detach().float()
            b = module.lora_B["check"].weight.detach().float()
            with torch.no_grad():
                delta = module.scaling["check"] * (b @ a)
                down, up = expected[module_name]
                want = up.float() @ down.float()
                worst = max(worst, float((delta - want).norm() / want.norm().clamp_min(1e-30)))
                down, up = full[module_name]
                exact_delta = up.float() @ down.float()
                num += float((delta - exact_delta).norm() ** 2)
                den += float(exact_delta.norm() ** 2)
            del delta, want, exact_delta
        pipe.unload_lora_weights()
        ok = injected == len(expected) == (projections or injected) and worst < 1e-2
        failed |= not ok
        print(
            json.dumps(
                {
                    "format": fmt,
                    "part": part,
                    "injected": injected,
                    "max_rel_error_vs_rank_reduced": worst,
                    "rel_error_vs_full_rank": (num / den) ** 0.5 if den else 0.0,
                    "ok": ok,
                }
            ),
            flush=True,
        )
    if failed:
        raise SystemExit(1)


def run(args: argparse.Namespace) -> list[Phase]:
    work = Path(args.work).resolve()
    if args.fresh and work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work, args.device, set(args.redo), Path(args.log))
    cat, photo = _images(work)
    only = set(args.only.split(",")) if args.only else None
    wanted = lambda name: only is None or name.split(":")[0] in only
    common = ["--base", args.base, "--device", args.device, "--precision", args.precision]
    phases: list[Phase] = []

    if wanted("build"):
        phases.append(
            runner.child(
                "build",
                [_build_snippet(args.base)],
                f"build {args.base} (first use only)",
                python=True,
            )
        )
    train_args = [
        "train",
        str(cat),
        "--subject",
        "cat",
        "--style",
        "pencil sketch",
        *common,
        "--resolution",
        str(args.train_resolution),
        "--steps",
        str(args.steps),
        "--sample-times",
        str(args.sample_times),
        "--gradient-checkpointing",
        "--preview-steps",
        str(args.preview_steps),
        "--json",
    ]
    if wanted("train"):
        phases.append(runner.child("train", train_args, "unzip " + shlex.join(train_args)))
    record = runner.done("train")
    if record is None:
        return phases
    entry_id = json.loads(record["stdout"])["id"]
    size = str(args.size)
    steps = [
        ("show", ["show", entry_id, "--verify"]),
        (
            "compose",
            [
                "compose",
                "on a beach",
                "--content",
                entry_id,
                "--style",
                entry_id,
                "--width",
                size,
                "--height",
                size,
                "--steps",
                str(args.sample_steps),
                *common,
                "-o",
                str(work / "compose"),
                "--force",
            ],
        ),
        (
            "restyle",
            [
                "restyle",
                "--style",
                entry_id,
                "--subject",
                "a lighthouse",
                "--image",
                str(photo),
                "--strength",
                "0.5",
                "--width",
                size,
                "--height",
                size,
                "--steps",
                str(args.sample_steps * 2),  # strength 0.5 runs half of them
                *common,
                "-o",
                str(work / "restyle"),
                "--force",
            ],
        ),
    ]
    exports: list[tuple[str, str, str]] = []
    for fmt in FORMATS:
        for part in PARTS:
            out = work / "exports" / (f"{part}.safetensors" if fmt == "kohya" else f"{part}-diffusers")
            argv = ["export", entry_id, "--format", fmt, "--part", part, "--rank", str(EXPORT_RANK)]
            argv += ["-o", str(out), "--force", "--json"]
            name = f"export:{fmt}:{part}"
            if wanted(name):
                (work / "exports").mkdir(exist_ok=True)
                phases.append(runner.child(name, argv, "unzip " + shlex.join(argv)))
            done = runner.done(name)
            if done is not None:
                exports.append((fmt, part, json.loads(done["stdout"])["path"]))
    kohya = {part: path for fmt, part, path in exports if fmt == "kohya"}
    if wanted("import") and {"content", "style"} <= set(kohya):
        argv = ["import", kohya["content"], kohya["style"], "--subject", "cat", "--style", "pencil sketch"]
        argv += ["--base", args.base, "--json"]
        phases.append(runner.child("import", argv, "unzip " + shlex.join(argv)))
    if wanted("diffusers") and len(exports) == len(FORMATS) * len(PARTS):
        phase = runner.child(
            "diffusers",
            [_check_snippet(args.base, runner.registry, entry_id, exports)],
            f"diffusers load_lora_weights of the {len(exports)} exports: every projection's delta",
            python=True,
        )
        phases.append(phase)
    for name, argv in steps:
        if wanted(name):
            phases.append(runner.child(name, argv, "unzip " + shlex.join(argv)))
        if name == "compose" and wanted("stock"):
            call = f"{args.base!r}, {args.device!r}, {args.precision!r}, {args.size}, {args.sample_steps}"
            phases.append(
                runner.child(
                    "stock",
                    [f"from benchmarks.realsize import stock_compose; stock_compose({call})"],
                    f"reference: stock diffusers StableDiffusionXLPipeline, {args.size} px, {args.sample_steps} steps",
                    python=True,
                )
            )
    return phases


def table(phases: list[Phase], work: Path) -> str:
    gpu = any(p.cuda_mib is not None for p in phases)
    head = "| phase | seconds | peak RSS GiB |" + (" peak CUDA GiB |" if gpu else "") + " command |"
    lines = [head, "|---|---:|---:|" + ("---:|" if gpu else "") + "---|"]
    for p in phases:
        cuda = f" {p.cuda_mib / 1024:.2f} |" if p.cuda_mib is not None else (" - |" if gpu else "")
        what = p.what.replace(f"{work}/", "").replace("|", "\\|")
        lines.append(f"| {p.name} | {p.seconds:.1f} | {p.rss_mib / 1024:.2f} |{cuda} `{what}` |")
        for label, part in (p.extra.get("parts") or {}).items():
            if part["seconds"] >= 1.0:
                label = label.replace(f"{work}/", "").replace("|", "\\|")
                lines.append(
                    f"| ↳ | {part['seconds']:.1f} | {part['rss_mib'] / 1024:.2f} |{' |' if gpu else ''} {label} |"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realsize", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.environ.get("REALSIZE_WORK", "/tmp/unziplora-realsize"))
    parser.add_argument("--base", default="sdxl-random", help="sdxl-random (default); tiny-sdxl to try the script")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", default=None, help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--train-resolution", type=int, default=None, help="default: 512 on CPU, 1024 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="compose/restyle side; default 512 on CPU, 1024 on CUDA")
    parser.add_argument("--steps", type=int, default=2, help="training steps (default 2: RESET, then SELECT)")
    parser.add_argument("--sample-times", type=int, default=1)
    parser.add_argument("--preview-steps", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, default=2, help="compose sampler steps (default 2)")
    parser.add_argument("--only", default=None, help="comma-separated phases: build,train,show,compose,...")
    parser.add_argument("--redo", action="append", default=[], help="run this finished phase again")
    parser.add_argument("--fresh", action="store_true", help="forget every finished phase (new registry)")
    parser.add_argument("--log", default=str(LOG), help="where the children's stderr goes (appended)")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if gpu else "fp32")
    args.train_resolution = args.train_resolution or (1024 if gpu else 512)
    args.size = args.size or (1024 if gpu else 512)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    phases = run(args)
    env = environment()
    sizes = (
        f"train {args.train_resolution} px, {args.steps} steps, {args.sample_times} selection round(s), "
        f"preview {args.preview_steps} sampler steps; compose/restyle {args.size} px, {args.sample_steps} "
        f"sampler steps; {args.device} {args.precision}"
    )
    text = table(phases, Path(args.work).resolve())
    print(text)
    checks = [line for p in phases if p.name == "diffusers" for line in p.stdout.splitlines()]
    if args.no_results or not phases:
        return
    load = ", ".join(f"{x:.2f}" for x in env.get("load_average") or [])
    header = (
        f"\n### {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — `python -m benchmarks.realsize` on sdxl-random\n\n"
        f"{env.get('cpu_model')}, {env.get('cpus')} CPUs, {env.get('memory_gib')} GiB"
        f"{', ' + env['gpu'] if env.get('gpu') else ''}; load average {load} at the end (shared machine). "
        f"{sizes}.\n\n"
    )
    body = text + ("\n\nDiffusers check:\n\n```\n" + "\n".join(checks) + "\n```\n" if checks else "\n")
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(header + body)


if __name__ == "__main__":
    main()
