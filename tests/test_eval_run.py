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

    trained = cli("train", str(make_image(tmp_path / "cat.png")), "--subject", "cat", "--style", "sketch", "--steps", "4",
                  "--sample-times", "1", *TINY)
    assert trained.exit_code == 0, trained.stderr
    entry = Registry(isolated_env).get(trained.stdout.strip())
    probes = [Probe("content", "{content} on a beach"), Probe("style", "a boat in {style} style"), Probe("recon", "{combined}")]
    studio = Studio.load("tiny-sdxl", device="cpu")
    embedders = Embedders.load(*map(str, tiny_eval_models))
    options = GenerationOptions(steps=2, width=64, height=64)
    count = []
    first = evaluate(studio, entry, embedders, probes, seed=3, num=2, options=options, on_image=lambda: count.append(1))
    again = evaluate(studio, entry, embedders, probes, seed=3, num=2, options=options)
    assert len(count) == 6 and [im.seed for im in first.images] == [3, 4, 1003, 1004, 2003, 2004]
    assert [im.prompt for im in first.images][::2] == ["A monadikos cat on a beach", "a boat in sketch style", "A monadikos cat in sketch style"]
    assert first.scores == again.scores
    assert all(math.isfinite(v) for k, v in first.scores.items())
    # the command on the same entry: a table on stdout, --json records, the same numbers as the library
    (tmp_path / "probes.toml").write_text(
        'seed = 3\n[[probe]]\nkind = "content"\nprompt = "{content} on a beach"\n'
        '[[probe]]\nkind = "style"\nprompt = "a boat in {style} style"\n[[probe]]\nkind = "recon"\nprompt = "{combined}"\n'
    )
    clip, dino = map(str, tiny_eval_models)
    args = ["eval", entry.id, "--probes", str(tmp_path / "probes.toml"), "-n", "2", "--steps", "2", "--size", "64",
            "--clip", clip, "--dino", dino, "--device", "cpu"]
    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["SCORE", entry.id] and len(lines) == 10
    assert lines[1].split() == ["clip_t", f"{first.scores['clip_t']:.4f}"]
    records = json.loads(cli(*args, "--json").stdout)
    assert records["id"] == entry.id and records["scores"] == pytest.approx(first.scores, abs=1e-6)
    missing = cli("eval", entry.id, "--clip", str(tmp_path / "no-clip"), "--dino", dino)
    assert missing.exit_code == 1 and missing.stderr.strip() == f"error: CLIP model folder {tmp_path / 'no-clip'} does not exist."
