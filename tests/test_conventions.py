"""One convention for every command (README "Conventions"): -q, --json shapes and keys, -o, exit codes.

Each rule is checked across the commands it covers, through the real CLI in a temp registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from registry_helpers import PAYLOADS, record_for

from unziplora.registry import Registry
from unziplora_cli.app import build_app

# Commands whose result is not data for a script: init only says what it did.
WITHOUT_JSON = {"init"}


def _commands() -> dict:
    return typer.main.get_command(build_app("unzip")).commands  # type: ignore[attr-defined]


def _flags(command) -> set[str]:
    return {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}


def test_every_command_takes_q_and_json_after_its_name():
    commands = _commands()
    assert len(commands) >= 12
    for name, command in commands.items():
        flags = _flags(command)
        assert {"-q", "--quiet"} <= flags, name
        assert ("--json" in flags) == (name not in WITHOUT_JSON), name


@pytest.fixture
def reg(isolated_env: Path) -> Registry:
    return Registry.from_settings()


def _entry(reg: Registry, subject: str = "cat", style: str = "ink", *, preview: bool = True, **extra):
    names = PAYLOADS + (("preview.png",) if preview else ())

    def write(folder: Path) -> None:
        for name in names:
            (folder / name).write_bytes(name.encode())

    return reg.create(record_for(subject, style, **extra), write, subject=subject, style=style)


def test_show_q_prints_the_full_id_and_doctor_q_only_problems(cli, reg):
    entry = _entry(reg)
    shown = cli("show", entry.id[:5], "-q")
    assert shown.exit_code == 0 and shown.stdout == f"{entry.id}\n" and shown.stderr == ""
    assert cli("-q", "show", entry.id[:5]).stdout == f"{entry.id}\n"  # the global -q means the same
    checks = json.loads(cli("doctor", "--json").stdout)["checks"]
    quiet = cli("doctor", "-q")
    assert quiet.exit_code == (1 if any(c["status"] == "fail" for c in checks) else 0)
    rows = [line for line in quiet.stdout.splitlines() if line and not line[0].isspace()]  # not wrapped lines
    shown = [max((c for c in checks if row.startswith(c["name"] + " ")), key=lambda c: len(c["name"])) for row in rows]
    assert [c["name"] for c in shown] == [c["name"] for c in checks if c["status"] != "ok"]  # problems only
    assert json.loads(cli("doctor", "-q", "--json").stdout)["checks"] == checks  # -q leaves JSON alone


def test_rm_q_prints_ids_and_a_quiet_dry_run_still_prints_the_plan(cli, reg):
    a, b = _entry(reg, "cat", "ink"), _entry(reg, "dog", "oil")
    dry = cli("rm", a.id, b.id, "--dry-run", "-q")
    assert dry.exit_code == 0 and dry.stdout.split() == [a.id, b.id] and dry.stderr == ""
    assert len(reg.list()) == 2
    gone = cli("rm", a.id, "--yes", "-q")
    assert gone.exit_code == 0 and gone.stdout == f"{a.id}\n" and gone.stderr == ""
    assert [e.id for e in reg.list()] == [b.id]


def test_usage_mistakes_exit_2_with_one_line(cli, reg, tmp_path):
    entry = _entry(reg)
    before = sorted(p.relative_to(reg.root) for p in reg.root.rglob("*"))
    cases = [
        (
            ("rm", entry.id, "--run", "x-run-1a2b"),
            "error: --run removes training runs; remove entries in a separate 'unzip rm ID' call.",
        ),
        (
            ("import", "a", "b", "c"),
            "error: import takes one official output or a content and a style file, not 3 paths",
        ),
        (("eval", entry.id, "-n", "0"), "error: -n must be between 1 and 64; got 0."),
        (("rm", entry.id), "error: not removing 1 entry without confirmation: stdin is not a terminal; pass --yes."),
    ]
    for args, line in cases:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", line + "\n"), args
    assert sorted(p.relative_to(reg.root) for p in reg.root.rglob("*")) == before


def test_usage_mistakes_are_decided_before_torch_is_imported(reg, tmp_path):
    entry = _entry(reg)
    script = f"""
import sys
from typer.testing import CliRunner
from unziplora_cli.app import build_app
app = build_app("unzip")
for args in (["eval", {entry.id!r}, "-n", "0"], ["import", "a", "b", "c"], ["rm", {entry.id!r}, "--run", "r"]):
    result = CliRunner().invoke(app, args)
    print(result.exit_code, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:3] == ["2 False"] * 3, done.stderr[-2000:]


def test_entry_json_has_the_same_keys_in_list_show_and_runs(cli, reg):
    from unziplora.prompts import build_training_prompts
    from unziplora.train.config import TrainConfig
    from unziplora.train.run import create_run

    with_preview, without = _entry(reg, "cat", "ink"), _entry(reg, "dog", "oil", preview=False)
    listed = {r["id"]: r for r in json.loads(cli("list", "--json").stdout)}
    for entry in (with_preview, without):
        shown = json.loads(cli("show", entry.id, "--json").stdout)
        assert set(shown) == set(listed[entry.id]) and shown == listed[entry.id]
    assert listed[with_preview.id]["preview"] == str(with_preview.path / "preview.png")
    assert listed[without.id]["preview"] is None

    prompts = build_training_prompts("owl", "chalk art")
    record = {
        "kind": "train-run",
        "name": None,
        "prompts": prompts.to_dict(),
        "config": TrainConfig(steps=7).to_dict(),
        "base": {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": "tiny-sdxl-v1"},
        "command": "unzip train owl.png",
        "sources": [{"file_name": "owl.png"}],
        "inputs": [],
    }
    run = create_run(reg.root, "owl-chalk-art", record)
    run.release()
    (listed_run,) = json.loads(cli("list", "--runs", "--json").stdout)
    entry = listed[with_preview.id]
    shared = set(listed_run) & set(entry)
    assert shared >= {"id", "name", "kind", "created", "subject", "style", "prompts", "rare_token", "base", "settings"}
    assert {"config", "style_words"}.isdisjoint(listed_run) and "style_words" not in listed_run["prompts"]
    for key in shared:  # the same shape where the keys overlap
        assert type(listed_run[key]) is type(entry[key]), key
    assert set(listed_run["prompts"]) == set(entry["prompts"])
    assert (listed_run["subject"], listed_run["style"], listed_run["settings"]["steps"]) == ("owl", "chalk art", 7)
    assert (listed_run["step"], listed_run["steps"], listed_run["path"]) == (0, 7, str(run.path))
    text = cli("list", "--runs").stdout
    assert text.startswith(f"{run.id}  owl / chalk art  step 0/7  ")


def test_printed_paths_are_absolute_with_a_relative_registry(cli, reg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = Path("rel-registry")
    Registry(rel).ensure_dirs()
    entry = _entry(Registry(rel))
    assert json.loads(cli("show", entry.id, "--json", "--registry", str(rel)).stdout)["path"] == str(
        tmp_path / rel / "entries" / entry.id
    )
    (record,) = json.loads(cli("list", "--json", "--registry", str(rel)).stdout)
    assert Path(record["path"]).is_absolute() and Path(record["preview"]).is_absolute()
    assert (
        f"path:        {tmp_path / rel / 'entries' / entry.id}\n"
        in cli("show", entry.id, "--registry", str(rel)).stdout
    )


def test_show_says_dash_where_no_movement_was_recorded(cli, reg):
    entry = _entry(reg)
    assert "\nmoved:       -\n" in cli("show", entry.id).stdout


def test_train_each_json_is_an_array_for_one_image_and_records_how_far_the_loras_moved(cli, tmp_path):
    import numpy as np
    from PIL import Image

    image = tmp_path / "owl.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(image)
    tiny = ["--base", "tiny-sdxl", "--resolution", "64", "--preview-steps", "1", "--sample-times", "1"]
    args = ("train", str(image), "--subject", "owl", "--style", "ink", "--steps", "3", *tiny, "--json")
    result = cli(*args, "--each")
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)  # --each: an array, whatever the number of images
    shown = json.loads(cli("show", record["id"], "--json").stdout)
    assert set(record) == set(shown)  # the same entry record as show/list give
    moved = record["figures"]["movement"]
    for branch in ("content", "style"):  # training changed something even where the images are noise
        assert moved[branch]["moved"] > 0 and 0 < moved[branch]["relative"] < 1
        assert moved["merge"][branch]["min"] <= moved["merge"][branch]["mean"] <= moved["merge"][branch]["max"]
    line = next(x for x in cli("show", record["id"]).stdout.splitlines() if x.startswith("moved:"))
    relative = moved["content"]["relative"] * 100
    assert line.startswith(f"moved:       LoRA delta ||dW - dW0||: content {relative:.3g}% of its initial norm, style ")


def test_doctor_prints_the_registry_and_config_absolute(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNZIPLORA_CONFIG", "conf.toml")
    checks = {c["name"]: c["detail"] for c in json.loads(cli("doctor", "--json", "--registry", "rel").stdout)["checks"]}
    assert checks["registry"].startswith(f"{tmp_path / 'rel'} ")
    assert checks["config"].startswith(f"{tmp_path / 'conf.toml'} ")


def test_rm_json_has_one_shape_for_entries_and_runs(cli, reg):
    from unziplora.prompts import build_training_prompts
    from unziplora.train.config import TrainConfig
    from unziplora.train.run import create_run

    entry = _entry(reg)
    record = {"kind": "train-run", "prompts": build_training_prompts("owl", "ink").to_dict()}
    run = create_run(reg.root, "owl-ink", dict(record, config=TrainConfig().to_dict(), sources=[], inputs=[]))
    run.release()
    dry = cli("rm", "--run", run.id, "--dry-run", "-q")
    assert (dry.exit_code, dry.stdout, dry.stderr) == (0, f"{run.id}\n", "") and run.path.is_dir()
    entries = json.loads(cli("rm", entry.id, "--yes", "--json").stdout)
    runs = json.loads(cli("rm", "--run", run.id, "--json").stdout)
    assert set(runs) == set(entries) == {"dry_run", "removed", "bytes_freed"}
    assert set(runs["removed"][0]) == set(entries["removed"][0]) and runs["removed"][0]["id"] == run.id
    assert runs["bytes_freed"] == runs["removed"][0]["bytes"] > 0 and not run.path.exists()
