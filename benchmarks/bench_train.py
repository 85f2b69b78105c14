"""One training step: ours against the floor and against the official-style step, plus peak memory.

Three sides on one SDXL-architecture UNet (same random weights, same device and precision, same
gradient-checkpointing setting), measured in one process, alternating, medians:

* **ours** — the real loop, :func:`unziplora.train.loop.train_loop`, on a UNet prepared by the real
  ``trainer.prepare_unet`` (``inject_unziplora``, ``ColumnSeparation``, ``param_groups``, AdamW):
  a latent drawn from the cached posterior, noise, the UNet with prompt separation, the
  orthogonality term, backward, the column-separation hooks, clipping, the AdamW step. The timed
  steps are in the MASKED phase (597 of a default run's 600 steps; the SELECT step's time is in
  the notes);
* **floor** — the same UNet without any LoRA, frozen, forward + backward down to the input
  latents (so every activation gradient is computed), no optimizer;
* **official** — :mod:`benchmarks.official_step`, a re-implementation of the official step
  (dense LoRA products every forward, VAE encode every step, no caching).

The floor and official steps run inside the loop's per-step callback, so the three sides
alternate step by step. Peak memory runs each side in a fresh subprocess (peak RSS on CPU: the
process's ``VmHWM``, since ``ru_maxrss`` carries the parent's peak over fork+exec on Linux;
``max_memory_allocated`` on a GPU) so the sides cannot inflate each other.

    python -m benchmarks.bench_train [--size medium] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import Clock, Row, median, ratio_goal, spread
from benchmarks.sizes import SIZES, SizeSpec, build_unet, build_vae, random_conditioning, size_spec

# Issue 15's goals, per size: step / floor, and step / official-style (None: "< 1x").
FLOOR_GOALS = {"tiny": 1.20, "medium": 1.20, "wide": 1.10, "sdxl256": 1.10, "sdxl": 1.10}
OFFICIAL_GOALS: dict[str, float | None] = {"tiny": None, "medium": None, "wide": 0.55, "sdxl256": 0.55, "sdxl": 0.5}
SIDES = ("ours", "floor", "official")
WARMUP_STEPS = 3  # steps 0 (RESET) and 1 (SELECT) of our schedule, and one more for the allocator


@dataclass
class Placed:
    """Device, precision and the shared inputs of every side."""

    spec: SizeSpec
    device: str
    dtype: Any
    checkpointing: bool
    image: Any  # [1, 3, H, W] in [-1, 1]
    cond: Any  # unziplora.train.loop.Conditioning
    noise_scheduler: Any


def place(spec: SizeSpec, device: str) -> Placed:
    """Resolve the precision the trainer would use on ``device`` and build the shared inputs."""
    import torch
    from diffusers import DDPMScheduler

    from unziplora.device import resolve_placement
    from unziplora.tiny_sdxl import SDXL_SCHEDULER_CONFIG

    placement = resolve_placement(device, "auto")
    torch.set_flush_denormal(True)  # as train_loop does, for every side alike
    g = torch.Generator().manual_seed(4)
    image = (torch.rand(1, 3, spec.resolution, spec.resolution, generator=g) * 2 - 1).to(placement.device)
    return Placed(
        spec=spec,
        device=placement.device,
        dtype=placement.dtype,
        checkpointing=placement.is_gpu,  # the trainer's default: on for GPU, off on CPU
        image=image,
        cond=random_conditioning(spec, placement.device, placement.dtype),
        noise_scheduler=DDPMScheduler.from_config(SDXL_SCHEDULER_CONFIG),
    )


def _prepare(unet: Any, placed: Placed) -> Any:
    unet.to(placed.device, placed.dtype)
    unet.requires_grad_(False)
    if placed.checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return unet


class FloorStep:
    """Frozen UNet, no LoRA: forward + backward to the input latents."""

    def __init__(self, unet: Any, placed: Placed) -> None:
        import torch

        self.unet, self.placed = _prepare(unet, placed), placed
        self.generator = torch.Generator(device=placed.device).manual_seed(5)

    def __call__(self) -> None:
        import torch
        import torch.nn.functional as F

        p, side = self.placed, self.placed.spec.latent_side
        latents = torch.randn(1, 4, side, side, generator=self.generator, device=p.device, dtype=p.dtype)
        latents.requires_grad_(True)
        noise = torch.randn(latents.shape, generator=self.generator, device=p.device, dtype=p.dtype)
        t = torch.randint(0, 1000, (1,), generator=self.generator, device=p.device)
        with torch.autocast(p.device.split(":")[0], dtype=p.dtype, enabled=p.dtype != torch.float32):
            pred = self.unet(
                latents,
                t,
                encoder_hidden_states=p.cond.combined,
                added_cond_kwargs={"text_embeds": p.cond.pooled, "time_ids": p.cond.time_ids},
                return_dict=False,
            )[0]
        F.mse_loss(pred.float(), noise.float()).backward()


def official_side(unet: Any, vae: Any, placed: Placed) -> Any:
    """The official-style step on ``unet`` (dense layers injected, MASKED phase)."""
    from benchmarks.official_step import OfficialStep, enter_masked_phase, inject_dense

    _prepare(unet, placed)
    layers = inject_dense(unet, placed.spec.rank)
    enter_masked_phase(layers)
    vae.to(placed.device)  # fp32, as the official trainer keeps it
    return OfficialStep(
        unet=unet,
        layers=layers,
        vae=vae,
        image=placed.image,
        cond=placed.cond,
        noise_scheduler=placed.noise_scheduler,
        dtype=placed.dtype,
    )


class OursRun:
    """Our real training loop, set up through the trainer's own code, driven step by step."""

    def __init__(self, unet: Any, vae: Any, placed: Placed, *, keep_vae_on_device: bool = True) -> None:
        import torch

        from unziplora.device import resolve_placement
        from unziplora.sdxl import encode_latent_posterior
        from unziplora.train.config import TrainConfig
        from unziplora.train.trainer import prepare_unet

        self.placed = placed
        self.config = TrainConfig(
            steps=600,
            rank=placed.spec.rank,
            resolution=placed.spec.resolution,
            seed=0,
            gradient_checkpointing=placed.checkpointing,
        )
        placement = resolve_placement(placed.device, "auto")
        self.unet = unet.to(placed.device, placed.dtype)
        self.layers, self.columns, self.optimizer = prepare_unet(
            self.unet, self.config, 1, device=placement.device, is_gpu=placement.is_gpu
        )
        self.scaler = torch.amp.GradScaler(placement.device.split(":")[0], enabled=placed.dtype == torch.float16)
        self.posterior = encode_latent_posterior(vae, placed.image, device=placed.device)
        if not keep_vae_on_device:
            vae.to("cpu")  # what the trainer does once the posterior is cached
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)

    def run(self, steps: int, on_step: Callable[[Any], None] | None = None) -> None:
        """Run the real ``train_loop`` for ``steps`` optimizer steps (then stop it)."""
        from unziplora.train.loop import TrainingStopped, train_loop

        done = {"n": 0}

        def hook(report: Any) -> None:
            done["n"] = report.step
            if on_step is not None:
                on_step(report)

        try:
            train_loop(
                unet=self.unet,
                layers=self.layers,
                columns=self.columns,
                optimizer=self.optimizer,
                noise_scheduler=self.placed.noise_scheduler,
                cond=self.placed.cond,
                posterior=self.posterior,
                config=self.config,
                generator=self.generator,
                device=self.placed.device,
                dtype=self.placed.dtype,
                scaler=self.scaler,
                on_step=hook,
                stop_requested=lambda: done["n"] >= steps,
            )
        except TrainingStopped:
            pass


@dataclass
class StepTimes:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    select_step_s: float = float("nan")
    timer: str = "wall"  # Clock.kind: "cpu" (process CPU time) or "wall"
    peak_rss_mib: float = float("nan")  # this process's high-water mark after the run (CPU)


def _sharing_copy(module: Any) -> Any:
    """A deep copy of ``module`` whose parameters and buffers are the original tensors.

    Every side freezes the base weights and never writes them, so the three UNets can hold one
    set (one copy of SDXL-width weights instead of three).
    """
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def time_steps(spec: SizeSpec, device: str, repeats: int, sides: tuple[str, ...] = SIDES) -> StepTimes:
    """Median-ready step times of ``sides`` (always "ours"), alternating step by step.

    All sides share one set of base weights, built once (``sdxl256``: 10.3 GB in fp32).
    """
    placed = place(spec, device)
    base = build_unet(spec)
    ours = OursRun(_sharing_copy(base), build_vae(spec), placed)
    candidates: list[tuple[str, Callable[[], Any]]] = []
    if "official" in sides:
        candidates.append(("official", official_side(_sharing_copy(base), build_vae(spec), placed)))
    if "floor" in sides:
        candidates.append(("floor", FloorStep(base, placed)))
    clock = Clock(placed.device)
    result = StepTimes(timer=clock.kind)
    mark = {"t": clock.now()}

    def after_our_step(report: Any) -> None:
        took = clock.now() - mark["t"]  # from the end of the previous callback: the whole loop step
        index = report.step - 1
        if index == 1:
            result.select_step_s = took
        others = list(candidates)
        if index % 2:
            others.reverse()
        timed = {name: clock(fn) for name, fn in others}
        if index >= WARMUP_STEPS:
            result.seconds["ours"].append(took)
            for name, value in timed.items():
                result.seconds[name].append(value)
        mark["t"] = clock.now()

    ours.run(WARMUP_STEPS + repeats, after_our_step)
    if not placed.device.startswith("cuda"):
        result.peak_rss_mib = _peak_bytes(placed.device) / 1024.0**2
    return result


def step_rows(times: StepTimes, spec: SizeSpec) -> list[Row]:
    """The step rows of the sides measured: ours vs the floor, ours vs the official-style step."""
    measured = [s for s in SIDES if times.seconds[s]]
    values = {s: median(times.seconds[s]) for s in measured}
    ours = values["ours"]
    notes: dict[str, Any] = {f"{s}_s": [round(v, 4) for v in times.seconds[s]] for s in measured}
    notes["select_step_s"] = round(times.select_step_s, 4)
    notes["timer"] = times.timer
    notes["peak_rss_mib"] = round(times.peak_rss_mib, 1)
    where = f"{spec.name}: {spec.resolution} px, rank {spec.rank}"
    rows: list[Row] = []
    if "floor" in values:
        rows.append(_floor_row(where, ours, values["floor"], FLOOR_GOALS[spec.name], notes))
    if "official" in values:
        rows.append(_official_row(where, ours, values["official"], OFFICIAL_GOALS[spec.name], times))
    return rows


def _floor_row(where: str, ours: float, floor: float, floor_goal: float, notes: dict[str, Any]) -> Row:
    return Row(
        f"train step vs floor ({where})",
        ours,
        floor,
        "s",
        f"<= {floor_goal}x",
        ratio_goal(ours / floor, floor_goal),
        "unziplora train_loop step",
        "frozen UNet fwd+bwd, no LoRA (floor)",
        "train",
        notes,
    )


def _official_row(where: str, ours: float, official: float, official_goal: float | None, times: StepTimes) -> Row:
    return Row(
        f"train step vs official-style ({where})",
        ours,
        official,
        "s",
        "< 1x" if official_goal is None else f"<= {official_goal}x",
        ratio_goal(ours / official, 1.0, strict=True)
        if official_goal is None
        else ratio_goal(ours / official, official_goal),
        "unziplora train_loop step",
        "official-style step (dense LoRA, VAE every step)",
        "train",
        {"official_spread_s": spread(times.seconds["official"]), "timer": times.timer},
    )


# ------------------------------------------------------------------------------------ memory
def memory_side(side: str, spec: SizeSpec, device: str, steps: int) -> dict[str, float]:
    """Run ``steps`` steps of one side in this process; peak bytes after setup and after training."""

    placed = place(spec, device)
    unet = build_unet(spec)
    if side == "ours":
        run = OursRun(unet, build_vae(spec), placed, keep_vae_on_device=False)
        step: Callable[[], Any] = lambda: run.run(WARMUP_STEPS + steps)
    elif side == "official":
        official = official_side(unet, build_vae(spec), placed)
        step = lambda: [official() for _ in range(WARMUP_STEPS + steps)]
    elif side == "floor":
        floor = FloorStep(unet, placed)
        step = lambda: [floor() for _ in range(WARMUP_STEPS + steps)]
    else:
        raise ValueError(f"side must be one of {SIDES}; got {side!r}")
    setup = _peak_bytes(placed.device)
    step()
    return {"setup_peak_bytes": setup, "peak_bytes": _peak_bytes(placed.device)}


def _peak_bytes(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    try:  # this process image's own high-water mark; ru_maxrss would carry the parent's over fork+exec
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0  # KiB on Linux


def measure_memory(
    spec: SizeSpec, device: str, steps: int, sides: tuple[str, ...] = SIDES, *, parallel: bool | None = None
) -> dict[str, dict[str, float]]:
    """Each side in a fresh ``python -m benchmarks.bench_train --memory SIDE`` subprocess.

    On a CPU the subprocesses run at the same time (peak RSS does not depend on speed); on a GPU
    one after the other, so they never share the card's memory.
    """
    if parallel is None:
        parallel = not device.startswith("cuda")
    argv = [
        sys.executable,
        "-m",
        "benchmarks.bench_train",
        "--size",
        spec.name,
        "--device",
        device,
        "--steps",
        str(steps),
    ]
    running: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, dict[str, float]] = {}

    def collect(side: str, proc: subprocess.Popen[str]) -> None:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory run of {side} failed:\n{err[-4000:]}")
        results[side] = json.loads(out.strip().splitlines()[-1])

    for side in sides:
        proc = subprocess.Popen([*argv, "--memory", side], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if parallel:
            running[side] = proc
        else:
            collect(side, proc)
    for side, proc in running.items():
        collect(side, proc)
    return {side: results[side] for side in sides}


def memory_row(memory: dict[str, dict[str, float]], device: str) -> Row:
    mib = 1024.0**2
    what = "allocated GPU memory" if device.startswith("cuda") else "RSS"
    ours, official = memory["ours"]["peak_bytes"] / mib, memory["official"]["peak_bytes"] / mib
    notes = {f"{side}_setup_peak_mib": round(v["setup_peak_bytes"] / mib, 1) for side, v in memory.items()}
    notes.update({f"{side}_peak_mib": round(v["peak_bytes"] / mib, 1) for side, v in memory.items()})
    return Row(
        f"train peak {what}",
        ours,
        official,
        "MiB",
        "ours < official",
        ours < official,
        "unziplora train_loop",
        "official-style step",
        "memory",
        notes,
    )


def run(
    size: str = "medium",
    device: str = "auto",
    *,
    repeats: int = 5,
    memory_steps: int = 2,
    memory_floor: bool = True,
    memory: bool = True,
    sides: tuple[str, ...] = SIDES,
) -> list[Row]:
    """Step rows and the memory row for the benchmark runner (``memory_floor``: also measure the
    floor's peak, for the notes; ``memory=False``: step rows only; ``sides``: which references
    the step rows time next to ours)."""
    from unziplora.device import resolve_device

    spec = size_spec(size)
    device = resolve_device(device)
    rows = step_rows(time_steps(spec, device, repeats, sides), spec)
    if not memory:
        return rows
    measured = SIDES if memory_floor else ("ours", "official")
    rows.append(memory_row(measure_memory(spec, device, memory_steps, measured), device))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=SIZES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated sides to time (ours always); sdxl256: ours,floor"
    )
    parser.add_argument("--no-memory", action="store_true", help="step rows only (no memory subprocesses)")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per memory run")
    parser.add_argument("--memory", choices=SIDES, help=argparse.SUPPRESS)  # the subprocess of measure_memory
    args = parser.parse_args(argv)
    if args.memory:
        from unziplora.device import resolve_device

        print(json.dumps(memory_side(args.memory, size_spec(args.size), resolve_device(args.device), args.steps)))
        return
    sides = tuple(dict.fromkeys(["ours", *(s.strip() for s in args.sides.split(",") if s.strip())]))
    rows = run(
        args.size, args.device, repeats=args.repeats, memory_steps=args.steps, memory=not args.no_memory, sides=sides
    )
    for row in rows:
        print(
            f"{row.name:34s} ours {row.ours:9.4g} {row.unit:3s} ref {row.reference:9.4g}  ours/ref {row.ratio:6.3f}  "
            f"goal {row.goal} {'met' if row.met else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
