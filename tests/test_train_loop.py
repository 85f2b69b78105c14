"""The training loop's one scaler: its loss scale survives a checkpoint; other precisions carry none."""

from __future__ import annotations

from pathlib import Path

import torch

from unziplora.method import ColumnSeparation
from unziplora.train import checkpoint as ckpt
from unziplora.train.trainer import _restore, _snapshot


def _state() -> tuple[ColumnSeparation, torch.optim.Optimizer, torch.Generator]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    return ColumnSeparation({}, steps=4), optimizer, torch.Generator().manual_seed(1)


def test_the_loss_scale_is_checkpointed_and_restored(tmp_path: Path) -> None:
    columns, optimizer, generator = _state()
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    ckpt.save_checkpoint(tmp_path, _snapshot({}, columns, optimizer, generator, scaler, 3))
    resumed = torch.amp.GradScaler("cpu", enabled=True)  # starts at 65536
    columns, optimizer, generator = _state()
    _restore({}, columns, optimizer, generator, resumed, ckpt.load_checkpoint(tmp_path))
    assert resumed.get_scale() == 1024.0


def test_a_disabled_scaler_stores_nothing_and_older_checkpoints_load(tmp_path: Path) -> None:
    columns, optimizer, generator = _state()
    off = torch.amp.GradScaler("cpu", enabled=False)
    state = _snapshot({}, columns, optimizer, generator, off, 2)
    assert state["scaler"] == {}
    for stored in ({}, None):  # None: what versions with an optional scaler wrote
        _restore({}, columns, optimizer, generator, off, dict(state, scaler=stored))
        assert not off.is_enabled() and off.get_scale() == 1.0
