"""Start-up cost of the light commands with a 1,000-entry registry.

``unzip --help``, ``list``, ``list --json``, ``list --runs``, ``show ID``, ``rm ID --dry-run`` and
a bash TAB completion of ``unzip show <TAB>`` (all 1,000 ids), and ``unzip -v`` handed on to
Info-ZIP's unzip when that is installed. Each runs as a real subprocess (the
installed ``unzip`` console script), alternating with ``python -c pass`` as the reference so both
see the same machine load; we report medians of wall time and of CPU time (user + system), which
is what wall time would be on an idle machine: these commands are single-threaded. Issue 14's
goal: each under 0.3 s on an idle machine, with no torch import.

Byte-code caching is left on (``PYTHONDONTWRITEBYTECODE`` is dropped for the subprocesses): an
installed package has its ``.pyc`` files, and timing the compiler would measure nothing of ours.

    python benchmarks/bench_cli_start.py [--entries 1000] [--repeats 15]

``run()`` returns the rows for a combined benchmark runner.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GOAL_S = 0.3  # issue 14: every light command under 0.3 s with 1,000 entries
SUBJECTS = ("cat", "dog", "lighthouse", "rose", "teapot", "bicycle", "owl", "castle")
STYLES = ("pencil sketch", "watercolor", "pop art", "oil painting", "ukiyo-e", "pixel art", "charcoal")


@dataclass(frozen=True)
class Row:
    name: str
    ours_s: float  # median wall time
    reference_s: float  # median wall time of `python -c pass`
    ratio: float  # of the wall times
    goal: str
    ours_cpu_s: float = 0.0  # median user+sys CPU time: what wall time would be on an idle machine
    reference_cpu_s: float = 0.0  # the same for `python -c pass`

    @property
    def met(self) -> bool:
        """The goal holds for an idle machine: judged on CPU time, which other load does not inflate."""
        return self.ours_cpu_s < GOAL_S


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


def _children_cpu() -> float:
    """User + system seconds of every waited-for child so far (getrusage: finer than os.times' clock ticks)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one run."""
    before = _children_cpu()
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    return wall, _children_cpu() - before


def light_commands(unzip: str, entry_id: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (argv, extra environment) of every light command measured."""
    completion = {"_UNZIP_COMPLETE": "complete_bash", "COMP_WORDS": "unzip show ", "COMP_CWORD": "2"}
    commands = {
        "unzip --help": ([unzip, "--help"], {}),
        "unzip list": ([unzip, "list"], {}),
        "unzip list --json": ([unzip, "list", "--json"], {}),
        "unzip list --runs": ([unzip, "list", "--runs"], {}),
        "unzip show ID": ([unzip, "show", entry_id], {}),
        "unzip rm ID --dry-run": ([unzip, "rm", entry_id, "--dry-run"], {}),
        "unzip show <TAB>": ([unzip], completion),
    }
    info_zip = shutil.which("unzip", path="/usr/bin:/bin")
    if info_zip:  # `unzip -v` handed to Info-ZIP: what this tool adds to every archive command
        path = os.pathsep.join([str(Path(unzip).parent), str(Path(info_zip).parent)])
        commands["unzip -v (to Info-ZIP)"] = ([unzip, "-v"], {"PATH": path})
    return commands


def run(entries: int = 1000, repeats: int = 15) -> list[Row]:
    """Medians of each command against ``python -c pass``, alternating, after one warm-up run each."""
    from unziplora.registry import Registry

    unzip = str(Path(sys.executable).with_name("unzip"))
    reference = [sys.executable, "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="unziplora-bench-") as tmp:
        env = dict(
            os.environ, UNZIPLORA_HOME=str(Path(tmp) / "registry"), UNZIPLORA_CONFIG=str(Path(tmp) / "none.toml")
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        make_entries(Path(tmp) / "registry", entries)
        entry_id = Registry(Path(tmp) / "registry").ids()[entries // 2]
        rows = []
        for name, (argv, extra) in light_commands(unzip, entry_id).items():
            command_env = dict(env, **extra)
            _time(argv, command_env), _time(reference, env)  # warm the page cache, the stat and byte-code caches
            ours, cpu, ref, ref_cpu = [], [], [], []
            for _ in range(repeats):
                wall, used = _time(argv, command_env)
                ours.append(wall)
                cpu.append(used)
                wall, used = _time(reference, env)
                ref.append(wall)
                ref_cpu.append(used)
            o, r = statistics.median(ours), statistics.median(ref)
            rows.append(Row(name, o, r, o / r, f"< {GOAL_S} s", statistics.median(cpu), statistics.median(ref_cpu)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = run(args.entries, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.entries} entries, {args.repeats} runs each, {os.cpu_count()} CPUs, load average {load:.1f}")
    print("goal judged on CPU seconds (user + sys): what wall time would be on an idle machine")
    print(f"{'command':<22} {'wall s':>7} {'cpu s':>6} {'python -c pass cpu s':>21} {'cpu ratio':>9}  goal")
    for row in rows:
        verdict = "ok" if row.met else "MISSED"
        ratio = row.ours_cpu_s / row.reference_cpu_s if row.reference_cpu_s else float("nan")
        print(
            f"{row.name:<22} {row.ours_s:>7.3f} {row.ours_cpu_s:>6.3f} {row.reference_cpu_s:>21.3f} {ratio:>9.1f}  {row.goal} {verdict}"
        )


if __name__ == "__main__":
    main()
