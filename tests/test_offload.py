"""Parking frozen modules on disk (issue 13 item 4): no memory while parked, bit-exact on return."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn

from unziplora import offload


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)
        self.register_buffer("position_ids", torch.arange(7), persistent=False)  # as CLIP has


def test_park_frees_every_tensor_and_restore_is_bit_exact(tmp_path: Path):
    module = Frozen().requires_grad_(False)
    before = {n: t.clone() for n, t in [*module.named_parameters(), *module.named_buffers()]}
    path = tmp_path / "frozen.safetensors"
    offload.park(module, path)
    assert offload.is_parked(module) and path.is_file()
    assert all(t.is_meta for t in [*module.parameters(), *module.buffers()])
    offload.restore(module)
    assert not offload.is_parked(module)
    after = dict([*module.named_parameters(), *module.named_buffers()])
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], before[n]) and not after[n].is_meta for n in before)
    assert not module.proj.weight.requires_grad
    mtime = path.stat().st_mtime_ns
    offload.park(module, path)  # parked again: the file still holds the weights, nothing is rewritten
    assert path.stat().st_mtime_ns == mtime and module.proj.weight.is_meta
    offload.restore(module)
    assert torch.equal(module.norm.weight, before["norm.weight"])


def test_parking_dir_sweeps_dirs_of_dead_processes(tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"parked-{dead.stdout.strip()}-abc"
    stale.mkdir()
    (stale / "vae.safetensors").write_bytes(b"x")
    live = tmp_path / f"parked-{os.getpid()}-def"
    live.mkdir()
    fresh = offload.parking_dir(tmp_path)
    try:
        assert not stale.exists() and live.is_dir()
        assert Path(fresh.name).name.startswith(f"parked-{os.getpid()}-")
    finally:
        fresh.cleanup()


def test_only_big_modules_pay_for_handing_memory_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A full gc pass costs 0.2-0.3 s; parking a module smaller than RELEASE_MIN_BYTES skips it."""
    calls = []
    monkeypatch.setattr(offload, "release_freed_memory", lambda: calls.append(1))
    size = sum(t.numel() * t.element_size() for t in [*Frozen().parameters(), *Frozen().buffers()])
    monkeypatch.setattr(offload, "RELEASE_MIN_BYTES", size + 1)
    offload.park(Frozen(), tmp_path / "small.safetensors")
    assert calls == []
    monkeypatch.setattr(offload, "RELEASE_MIN_BYTES", size)
    offload.park(Frozen(), tmp_path / "big.safetensors")
    assert calls == [1]
