"""Pretrain the toy-sdxl base (see unziplora/toy/pretrain.py). Restartable: rerun to resume.

nice -n 10 python scripts/pretrain_toy.py --work /tmp/toy-pretrain --out unziplora/toy/toy_sdxl.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from unziplora.toy.base import WEIGHTS_FILE
from unziplora.toy.pretrain import PretrainConfig, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="checkpoints and the log")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel UNet processes (more only help on a CPU shared with others)",
    )
    for field in dataclasses.fields(PretrainConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = parser.parse_args()
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)})
    pretrain(cfg, args.work, args.out, workers=args.workers)


if __name__ == "__main__":
    main()
