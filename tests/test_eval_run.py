"""Probe images of a tiny trained entry through the Studio, scored by tiny CLIP/DINOv2: deterministic, finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_eval_models import tiny_eval_models  # noqa: F401 - the shared module fixture


def test_evaluate_tiny_entry_is_deterministic(cli, isolated_env: Path, tmp_path: Path, tiny_eval_models) -> None:  # noqa: F811
    from tests.test_train_cli import TINY, make_image
    from unziplora.eval.models import Embedders
    from unziplora.eval.probes import Probe
    from unziplora.eval.run import evaluate
    from unziplora.generate import GenerationOptions, Studio
    from unziplora.registry import Registry

    trained = cli(
        "train",
        str(make_image(tmp_path / "cat.png")),
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--steps",
        "4",
        "--sample-times",
        "1",
        *TINY,
    )
    assert trained.exit_code == 0, trained.stderr
    entry = Registry(isolated_env).get(trained.stdout.strip())
    probes = [
        Probe("content", "{content} on a beach"),
        Probe("style", "a boat in {style} style"),
        Probe("recon", "{combined}"),
    ]
    studio = Studio.load("tiny-sdxl", device="cpu")
    embedders = Embedders.load(*map(str, tiny_eval_models))
    options = GenerationOptions(steps=2, width=64, height=64)
    count = []
    first = evaluate(studio, entry, embedders, probes, seed=3, num=2, options=options, on_image=lambda: count.append(1))
    again = evaluate(studio, entry, embedders, probes, seed=3, num=2, options=options)
    assert len(count) == 6 and [im.seed for im in first.images] == [3, 4, 1003, 1004, 2003, 2004]
    assert [im.prompt for im in first.images][::2] == [
        "A monadikos cat on a beach",
        "a boat in sketch style",
        "A monadikos cat in sketch style",
    ]
    assert first.scores == again.scores
    assert all(math.isfinite(v) for k, v in first.scores.items())
    # the command on the same entry: a table on stdout, --json records, the same numbers as the library
    (tmp_path / "probes.toml").write_text(
        'seed = 3\n[[probe]]\nkind = "content"\nprompt = "{content} on a beach"\n'
        '[[probe]]\nkind = "style"\nprompt = "a boat in {style} style"\n[[probe]]\nkind = "recon"\nprompt = "{combined}"\n'
    )
    clip, dino = map(str, tiny_eval_models)
    args = [
        "eval",
        entry.id,
        "--probes",
        str(tmp_path / "probes.toml"),
        "-n",
        "2",
        "--steps",
        "2",
        "--size",
        "64",
        "--clip",
        clip,
        "--dino",
        dino,
        "--device",
        "cpu",
    ]
    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["SCORE", entry.id] and len(lines) == 10
    assert lines[1].split() == ["clip_t", f"{first.scores['clip_t']:.4f}"]
    # saved with the entry: eval.json and the sheet recorded in files, the scores in entry.json, verified
    record = json.loads((entry.path / "entry.json").read_text())
    assert {"eval.json", "eval.png"} <= set(record["files"]) and f"saved {entry.path / 'eval.json'}" in table.stderr
    saved = json.loads((entry.path / "eval.json").read_text())
    assert saved["scores"] == pytest.approx(first.scores, abs=1e-6) == record["evaluation"]["scores"]
    assert record["evaluation"]["seed"] == 3 and record["evaluation"]["probes"] == 3 and len(saved["images"]) == 6
    assert saved["images"][0]["kind"] == "content" and set(saved["images"][0]["scores"]) >= {"content_dino", "clip_t"}
    from PIL import Image

    with Image.open(entry.path / "eval.png") as sheet:  # one row per probe, -n 2 columns of 256 px tiles
        strip = 21 + 2 * 4 + 2 * (21 + 2)  # three label lines: the probe, then two lines of scores
        assert sheet.size == (2 * 256 + 3 * 4, 3 * (256 + strip) + 4 * 4)
    assert cli("show", entry.id, "--verify").exit_code == 0
    (record,) = json.loads(cli(*args, "--json").stdout)  # an array, for one id as for several
    assert record["id"] == entry.id and record["scores"] == pytest.approx(first.scores, abs=1e-6)
    assert record["file"] == str(entry.path / "eval.json")
    # a re-run replaces the saved result (-q: only the path), leaving no temporary file behind
    (tmp_path / "one.toml").write_text('[[probe]]\nkind = "style"\nprompt = "a boat in {style} style"\n')
    quiet = cli(
        "eval",
        entry.id,
        "--probes",
        str(tmp_path / "one.toml"),
        "--steps",
        "1",
        "--size",
        "64",
        "--clip",
        clip,
        "--dino",
        dino,
        "--device",
        "cpu",
        "-q",
    )
    assert quiet.exit_code == 0 and quiet.stdout == f"{entry.path / 'eval.json'}\n"
    again_saved = json.loads((entry.path / "eval.json").read_text())
    assert again_saved["probes"] == 1 and again_saved["num"] == 1 and len(again_saved["images"]) == 1
    assert json.loads((entry.path / "entry.json").read_text())["evaluation"]["probes"] == 1
    assert sorted(p.name for p in entry.path.iterdir() if p.name.startswith(".")) == []
    assert cli("show", entry.id, "--verify").exit_code == 0
    missing = cli("eval", entry.id, "--clip", str(tmp_path / "no-clip"), "--dino", dino)
    assert (
        missing.exit_code == 1
        and missing.stderr.strip() == f"error: CLIP model folder {tmp_path / 'no-clip'} does not exist."
    )
    (entry.path / "eval.json").write_text((entry.path / "eval.json").read_text().replace('"probes": 1', '"probes": 9'))
    tampered = cli("show", entry.id, "--verify")
    assert tampered.exit_code == 1 and tampered.stderr.startswith(
        f"error: entry {entry.id} failed verification: eval.json differs"
    )
    # a damaged eval.json alone (a crash between the two renames) is repaired by evaluating again
    assert (
        cli(
            "eval",
            entry.id,
            "--probes",
            str(tmp_path / "one.toml"),
            "--steps",
            "1",
            "--size",
            "64",
            "--clip",
            clip,
            "--dino",
            dino,
            "--device",
            "cpu",
            "-q",
        ).exit_code
        == 0
    )
    assert cli("show", entry.id, "--verify").exit_code == 0
