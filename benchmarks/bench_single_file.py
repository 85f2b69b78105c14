"""``python -m benchmarks.bench_single_file [--full FOLDER]``: single-file loading and weights fingerprints.

On the tiny base (written as SGM-layout files with the tests' helper, in a temporary folder):
seconds to load the folder, the fp32 file and the fp16 file, side by side (median of 3), and
milliseconds per weights fingerprint (median of 20) for ``tiny-sdxl``, a folder copy and both
files, which must all be equal. ``--full FOLDER`` adds the fingerprint of a full-size diffusers
folder (for example the random full-size base), to show it does not grow with the weights.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, help="a full-size diffusers SDXL folder to fingerprint too")
    args = parser.parse_args()

    import torch

    from tests.sgm_layout import write_sgm_file
    from unziplora.base_model import fingerprint, load_pipeline, parse_base
    from unziplora.tiny_sdxl import tiny_sdxl_dir

    folder = tiny_sdxl_dir()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipe = load_pipeline(parse_base("tiny-sdxl"), dtype=torch.float32)
        files = {
            "fp32 file": write_sgm_file(pipe, root / "tiny-fp32.safetensors"),
            "fp16 file": write_sgm_file(pipe, root / "tiny-fp16.safetensors", dtype=torch.float16),
        }
        copy = root / "copy"
        shutil.copytree(folder, copy)
        refs = {"tiny-sdxl": "tiny-sdxl", "folder copy": str(copy)} | {k: str(v) for k, v in files.items()}
        print("load (tiny, s, median of 3)")
        loads = {"folder": str(folder)} | {k: str(v) for k, v in files.items()}
        for name, ref in loads.items():
            seconds, _ = _median(lambda ref=ref: load_pipeline(parse_base(ref), dtype=torch.float32), 3)
            print(f"  {name:12} {seconds:6.2f}")
        if args.full:
            refs["full-size folder"] = str(args.full)
        print("weights fingerprint (ms, median of 20)")
        for name, ref in refs.items():
            spec = parse_base(ref)
            seconds, value = _median(lambda spec=spec: fingerprint(spec), 20)
            print(f"  {name:16} {seconds * 1000:7.2f}  {value}")


if __name__ == "__main__":
    main()
