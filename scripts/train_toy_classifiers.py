"""Train the toy world's shape and style classifiers and report their held-out accuracy.

python scripts/train_toy_classifiers.py            # writes unziplora/toy/toy_classifiers.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unziplora.toy.classify import CLASSIFIERS_FILE, held_out_accuracy, save_classifiers, train_classifiers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=CLASSIFIERS_FILE)
    args = parser.parse_args()
    import time

    import torch

    torch.set_num_threads(1)
    wall, cpu = time.time(), time.process_time()
    net = train_classifiers(seed=args.seed, steps=args.steps)
    print("held-out accuracy (2000 fresh images):", held_out_accuracy(net))
    print("held-out accuracy, images blurred (half resolution):", held_out_accuracy(net, blur=True))
    print(f"wall {time.time() - wall:.0f}s cpu {time.process_time() - cpu:.0f}s (one thread, machine shared)")
    save_classifiers(net, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
