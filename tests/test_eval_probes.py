"""The probe set of unzip eval: the documented defaults, rendering, TOML replacement and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from unziplora.errors import ConfigError
from unziplora.eval.probes import DEFAULT_PROBES, KINDS, probe_seed, read_probes
from unziplora.prompts import PromptSet

PROMPTS = PromptSet(
    "A monadikos cat in sketch style", "A monadikos cat", "A cat in sketch style", subject="cat", style_words="sketch"
)


def test_default_set_covers_every_kind_and_renders():
    assert {p.kind for p in DEFAULT_PROBES} == set(KINDS)
    rendered = [p.render(PROMPTS) for p in DEFAULT_PROBES]
    assert "A monadikos cat on a beach" in rendered
    assert "a lighthouse in sketch style" in rendered
    assert "A monadikos cat in sketch style" in rendered  # the reconstruction uses the source prompt
    assert probe_seed(7, 2, 1) == 2008


def test_probe_file_replaces_the_set(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('seed = 5\n[[probe]]\nkind = "style"\nprompt = "a {subject} boat in {style} style"\n')
    probes, seed = read_probes(path)
    assert seed == 5 and [p.render(PROMPTS) for p in probes] == ["a cat boat in sketch style"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[probe]]\nkind = 'x'\nprompt = 'a'\n", "probe 1: kind must be one of content, style, recon, combined"),
        ("[[probe]]\nkind = 'style'\nprompt = '{nope}'\n", "probe 1: unknown field {nope}"),
        ("seed = 'a'\n", "seed must be an integer"),
        ("x = 1\n", "has no [[probe]] tables"),
        ("[[probe\n", "is not valid TOML"),
    ],
)
def test_bad_probe_files_are_one_line_errors(tmp_path: Path, text: str, needle: str):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_probes(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
