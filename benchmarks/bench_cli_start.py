"""Start-up cost of the CLI with a 1,000-entry registry: ``unzip --help``, ``unzip list``, ``unzip list --json``.

Each command runs as a real subprocess (the installed ``unzip`` console script), alternating with
``python -c pass`` as the reference so both see the same machine load; we report medians.
DESIGN.md's goal: under 0.5 s with 1,000 entries and no torch import.

    python benchmarks/bench_cli_start.py [--entries 1000] [--repeats 15]

``run()`` returns the rows for a combined benchmark runner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GOAL_S = 0.5
SUBJECTS = ("cat", "dog", "lighthouse", "rose", "teapot", "bicycle", "owl", "castle")
STYLES = ("pencil sketch", "watercolor", "pop art", "oil painting", "ukiyo-e", "pixel art", "charcoal")


@dataclass(frozen=True)
class Row:
    name: str
    ours_s: float  # median wall time
    reference_s: float  # median wall time of `python -c pass`
    ratio: float
    goal: str
    ours_cpu_s: float = 0.0  # median user+sys CPU time: what wall time would be on an idle machine


def make_entries(root: Path, count: int) -> None:
    """``count`` synthetic entries with small payloads, written through the real registry API."""
    from unziplora.registry import Registry

    reg = Registry(root, durable=False)  # fsync off: this measures reading, not writing
    for i in range(count):
        subject, style = SUBJECTS[i % len(SUBJECTS)], STYLES[(i // len(SUBJECTS)) % len(STYLES)]
        with reg.new_entry(subject=subject, style=style) as st:
            for name in ("content.safetensors", "style.safetensors", "masks.safetensors", "source.png"):
                st.path(name).write_bytes(os.urandom(2048))
            st.record = {
                "prompts": {
                    "combined": f"a sks {subject} in {style} style",
                    "content": f"a sks {subject}",
                    "style": f"in {style} style",
                },
                "rare_token": "sks",
                "sources": [
                    {"name": f"{subject}.jpg", "sha256": "0" * 64, "bytes": 51234, "width": 1024, "height": 1024}
                ],
                "base": {
                    "ref": "stabilityai/stable-diffusion-xl-base-1.0",
                    "kind": "hub",
                    "fingerprint": "0123456789abcdef",
                },
                "settings": {"steps": 600, "rank": 64, "learning_rate": 5e-5, "resolution": 1024, "seed": i},
                "figures": {"steps": 600, "seconds": 812.4, "final_loss": 0.083, "device": "cuda", "precision": "bf16"},
            }


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one run."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def run(entries: int = 1000, repeats: int = 15) -> list[Row]:
    """Medians of each command against ``python -c pass``, alternating, after one warm-up run each."""
    unzip = str(Path(sys.executable).with_name("unzip"))
    commands = {
        "unzip --help": [unzip, "--help"],
        "unzip list": [unzip, "list"],
        "unzip list --json": [unzip, "list", "--json"],
    }
    reference = [sys.executable, "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="unziplora-bench-") as tmp:
        env = dict(
            os.environ, UNZIPLORA_HOME=str(Path(tmp) / "registry"), UNZIPLORA_CONFIG=str(Path(tmp) / "none.toml")
        )
        make_entries(Path(tmp) / "registry", entries)
        rows = []
        for name, argv in commands.items():
            _time(argv, env), _time(reference, env)  # warm the page cache and the stat caches
            ours, cpu, ref = [], [], []
            for _ in range(repeats):
                wall, used = _time(argv, env)
                ours.append(wall)
                cpu.append(used)
                ref.append(_time(reference, env)[0])
            o, r = statistics.median(ours), statistics.median(ref)
            rows.append(Row(name, o, r, o / r, f"< {GOAL_S} s", statistics.median(cpu)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = run(args.entries, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.entries} entries, {args.repeats} runs each, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'command':<20} {'wall s':>7} {'cpu s':>6} {'python -c pass':>15} {'ratio':>6}  goal")
    for row in rows:
        verdict = "ok" if row.ours_s < GOAL_S else "MISSED"
        print(
            f"{row.name:<20} {row.ours_s:>7.3f} {row.ours_cpu_s:>6.3f} {row.reference_s:>15.3f} {row.ratio:>6.1f}  {row.goal} {verdict}"
        )


if __name__ == "__main__":
    main()
