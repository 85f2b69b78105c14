"""Classifiers of the toy world's two factors: one small CNN trunk with a shape head and a style head.

Trained (:func:`train_classifiers`, ``scripts/train_toy_classifiers.py``) on freshly drawn world
images with blur, noise and brightness augmentation, so they also read images *drawn by a model*
(softer edges, a little noise), and shipped as :data:`CLASSIFIERS_FILE`. :func:`classify` returns
the predicted class names for a batch of RGB images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from unziplora.toy import world

CLASSIFIERS_FILE = Path(__file__).with_name("toy_classifiers.safetensors")
FACTORS: dict[str, tuple[str, ...]] = {"shape": world.SHAPES, "style": world.STYLES}
INPUT = 32  # px the nets read: the toy base's size (world images are area-averaged to it)


def make_net() -> Any:
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int, stride: int = 1) -> list[Any]:
                pool = [nn.MaxPool2d(2)] if stride == 1 else []
                return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU(), *pool]

            self.trunk = nn.Sequential(
                *block(3, 16, stride=2),
                *block(16, 32),
                *block(32, 64),
                *block(64, 64),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.heads = nn.ModuleDict({f: nn.Linear(64, len(c)) for f, c in FACTORS.items()})

        def forward(self, x: Any) -> dict[str, Any]:
            h = self.trunk(x)
            return {f: head(h) for f, head in self.heads.items()}

    return Net()


def to_input(images: np.ndarray) -> Any:
    """uint8 [N, H, W, 3] (any H, W; resized to INPUT) -> float tensor [N, 3, INPUT, INPUT] in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if x.shape[-1] != INPUT or x.shape[-2] != INPUT:
        x = F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", antialias=True, align_corners=False)
    return x


def _augment(x: Any, gen: Any) -> Any:
    """Blur (down/up-sample), noise and brightness jitter, each on a random half of the batch."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        small = F.interpolate(x[blur], scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
        x[blur] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    x = x + (torch.rand(n, 1, 1, 1, generator=gen) < 0.5) * 0.08 * torch.randn(x.shape, generator=gen)
    x = x * (1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)) + 0.1 * (
        torch.rand(n, 3, 1, 1, generator=gen) - 0.5
    )
    return x.clamp(-1.2, 1.2)


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    scenes = [world.random_scene(rng, styles=world.STYLES) for _ in range(n)]
    pixels = np.stack([world.render(s) for s in scenes])
    labels = {
        "shape": np.array([world.SHAPES.index(s.shape) for s in scenes]),
        "style": np.array([world.STYLES.index(s.style) for s in scenes]),
    }
    return pixels, labels


def train_classifiers(seed: int = 5, steps: int = 1500, batch: int = 32, log: Any = print) -> Any:
    """Train the net from ``seed`` on freshly drawn images (never the same twice)."""
    import torch

    torch.manual_seed(seed)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    t0, c0 = time.time(), time.process_time()
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        pixels, labels = _batch(rng, batch)
        x = _augment(to_input(pixels), gen)
        lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = net(x)
        loss = sum(torch.nn.functional.cross_entropy(logits[f], torch.from_numpy(labels[f])) for f in FACTORS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            log(
                f"step {step + 1}/{steps} loss {loss.item():.4f} wall {time.time() - t0:.0f}s cpu {time.process_time() - c0:.0f}s"
            )
    return net.eval()


def held_out_accuracy(net: Any, n: int = 2000, seed: int = 999_999, blur: bool = False) -> dict[str, float]:
    """Accuracy of each net on ``n`` fresh world images (never seen in training); ``blur`` halves their resolution first."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    pixels, labels = _batch(rng, n)
    x = to_input(pixels)
    if blur:
        x = F.interpolate(
            F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=x.shape[-2:], mode="bilinear"
        )
    with torch.no_grad():
        logits = [net(x[i : i + 256]) for i in range(0, n, 256)]
    return {f: float((torch.cat([lg[f] for lg in logits]).argmax(1).numpy() == labels[f]).mean()) for f in FACTORS}


def save_classifiers(net: Any, path: Path = CLASSIFIERS_FILE) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}, str(path))


_LOADED: dict[str, Any] = {}


def load_classifiers(path: Path = CLASSIFIERS_FILE) -> Any:
    """The shipped net (cached per process)."""
    key = str(path)
    if key not in _LOADED:
        from safetensors.torch import load_file

        net = make_net()
        net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        _LOADED[key] = net.eval()
    return _LOADED[key]


def classify(images: np.ndarray, net: Any = None) -> dict[str, list[str]]:
    """Predicted shape and style names of uint8 RGB images [N, H, W, 3]."""
    import torch

    net = net or load_classifiers()
    with torch.no_grad():
        logits = net(to_input(images))
    return {f: [FACTORS[f][int(i)] for i in logits[f].argmax(1)] for f in FACTORS}
