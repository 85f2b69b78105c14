"""``unzip gallery`` over a 1,000-entry registry: a first build and an unchanged rebuild.

Entries are synthetic (written through the registry API, as in ``bench_cli_start``) and each
also keeps a real ``preview.png`` (the tiny-SDXL sheet in docs/), so every card has its two
images copied. The command runs as a real subprocess; medians of a few runs. Goal (issue 18):
under 2 s for 1,000 entries, no torch import.

    python benchmarks/bench_gallery.py [--entries 1000] [--repeats 3]
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
from pathlib import Path

from benchmarks.bench_cli_start import make_entries

GOAL_S = 2.0
PREVIEW = Path(__file__).resolve().parents[1] / "docs" / "preview-tiny-sdxl.png"


def _add_previews(root: Path) -> None:
    """Give every entry a real preview.png, recorded in its entry.json like training does."""
    import hashlib
    import json

    data = PREVIEW.read_bytes()
    info = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    for folder in (root / "entries").iterdir():
        (folder / "preview.png").write_bytes(data)
        record_path = folder / "entry.json"
        record = json.loads(record_path.read_text())
        record["files"]["preview.png"] = info
        record_path.write_text(json.dumps(record))


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run(entries: int = 1000, repeats: int = 3) -> dict[str, float]:
    unzip = [sys.executable, "-m", "unziplora_cli"]
    with tempfile.TemporaryDirectory(prefix="unziplora-bench-gallery-") as tmp:
        root = Path(tmp) / "registry"
        env = dict(os.environ, UNZIPLORA_HOME=str(root), UNZIPLORA_CONFIG=str(Path(tmp) / "none.toml"))
        make_entries(root, entries)
        _add_previews(root)
        site = root / "gallery"
        first = []
        for _ in range(repeats):
            shutil.rmtree(site, ignore_errors=True)
            first.append(_time([*unzip, "gallery", "-q"], env))
        again = [_time([*unzip, "gallery", "-q"], env) for _ in range(repeats)]
    return {"first build": statistics.median(first), "rebuild, nothing changed": statistics.median(again)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.entries, args.repeats)
    print(
        f"unzip gallery, {args.entries} entries, median of {args.repeats}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    for name, seconds in rows.items():
        print(f"  {name:<26} {seconds:6.3f} s  goal < {GOAL_S} s {'ok' if seconds < GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
