"""Settings are read at the front doors only: the CLI and the notebook functions, never deep inside.

The library below the doors takes a Registry and a base; the doors (``unzip ...``, and the notebook
functions ``unziplora.train.api.train`` and ``unziplora.generate.api.generate``) resolve them from
flags, the environment and the config file.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PACKAGE = Path(__file__).resolve().parent.parent / "unziplora"
READERS = {"load_settings", "from_settings"}
# (file, enclosing function) allowed to read settings: the definitions and the notebook doors.
DOORS = {
    ("registry/store.py", "from_settings"),
    ("train/api.py", "train"),
    ("generate/api.py", "generate"),
}


def settings_reads(package: Path) -> list[tuple[str, str, int]]:
    """(file, enclosing function, line) of every call of load_settings / from_settings in ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel == "settings.py":
            continue

        def visit(node: ast.AST, func: str, rel: str = rel) -> None:
            for child in ast.iter_child_nodes(node):
                name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
                if isinstance(child, ast.Call):
                    target = child.func
                    called = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
                    if called in READERS:
                        found.append((rel, func, child.lineno))
                visit(child, name)

        visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def test_only_the_front_doors_read_settings() -> None:
    reads = settings_reads(PACKAGE)
    assert {(rel, func) for rel, func, _ in reads} <= DOORS, [r for r in reads if r[:2] not in DOORS]
    assert ("train/api.py", "train") in {(rel, func) for rel, func, _ in reads}  # the check sees calls


def test_the_check_sees_a_deep_read(tmp_path: Path) -> None:
    (tmp_path / "deep.py").write_text(
        "def helper():\n    return Registry.from_settings()\n\nx = load_settings()\n", encoding="utf-8"
    )
    assert settings_reads(tmp_path) == [("deep.py", "helper", 2), ("deep.py", "<module>", 4)]


def test_library_lookups_by_id_need_a_registry() -> None:
    from unziplora.generate.api import resolve

    with pytest.raises(ValueError, match="no registry to look it up in"):
        resolve("cat-sketch-1a2b", None)


def test_notebook_train_takes_base_and_registry_from_the_settings(isolated_env: Path, tmp_path: Path, monkeypatch):
    """``train()`` without ``base`` uses the configured base (here tiny-sdxl from the environment),
    not a hard-coded SDXL id, and writes into the configured registry."""
    from unziplora.train.api import train

    monkeypatch.setenv("UNZIPLORA_BASE_MODEL", "tiny-sdxl")
    image = tmp_path / "owl.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(image)
    entry = train([image], subject="owl", style="ink", steps=2, resolution=64, preview_steps=1, sample_times=1)
    assert entry.path.parent == isolated_env / "entries"
    record = json.loads((entry.path / "entry.json").read_text(encoding="utf-8"))
    assert record["base"]["ref"] == "tiny-sdxl" and record["base"]["kind"] == "tiny"
