"""``python -m benchmarks.memory_load``: peak RSS of loading ``sdxl-random`` in fp32 on CPU, stock
``StableDiffusionXLPipeline.from_pretrained`` vs unziplora's ``load_pipeline``, each in its own child
(``ru_maxrss``), run one after the other (never two at once: each needs ~18 GiB).

Issue 13: tells whether compose's load peak is ours or diffusers'. ``ru_maxrss`` counts the
safetensors files' mmap pages that are resident, so the figure depends on the page cache (run it
twice; the first, cold, call is also the slow one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import sys, torch
if sys.argv[1] == "stock":
    from diffusers import StableDiffusionXLPipeline
    from unziplora.sdxl_random import sdxl_random_dir
    StableDiffusionXLPipeline.from_pretrained(sdxl_random_dir(), torch_dtype=torch.float32).to("cpu")
else:
    from unziplora.base_model import load_pipeline, parse_base
    load_pipeline(parse_base("sdxl-random"), dtype=torch.float32, device="cpu")
"""


def peak_gib(which: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, which], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"memory_load: the {which} load failed")
    return usage.ru_maxrss / 2**20


def main() -> None:
    stock, ours = peak_gib("stock"), peak_gib("ours")
    print(f"load peak RSS: stock {stock:.2f} GiB, unziplora {ours:.2f} GiB, ratio {ours / stock:.3f}")


if __name__ == "__main__":
    main()
