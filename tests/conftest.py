"""Shared test setup: every test gets its own registry and config; the tiny base is built once.

Nothing here touches the real user dirs or the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# The tiny model's ops are so small that a second thread only adds synchronisation; one thread
# per process is faster and keeps parallel subprocesses (torchrun tests) from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session, so the tiny base is generated once."""
    return tmp_path_factory.mktemp("unziplora-cache")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """UNZIPLORA_HOME, config and cache point into temp dirs for every test."""
    home = tmp_path / "registry"
    monkeypatch.setenv("UNZIPLORA_HOME", str(home))
    monkeypatch.setenv("UNZIPLORA_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("UNZIPLORA_CACHE", str(tiny_cache))
    for name in ("UNZIPLORA_BASE_MODEL", "UNZIPLORA_DEVICE", "UNZIPLORA_PRECISION", "UNZIPLORA_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def cli():
    """Run the real ``unzip`` app in-process: ``cli("list", "--json")`` -> Result (stdout/stderr apart)."""
    from typer.testing import CliRunner

    from unziplora_cli.app import build_app

    app = build_app("unzip")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, prog_name="unzip")

    return invoke
