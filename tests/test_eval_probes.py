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


def test_combined_probes_are_contexts_built_as_compose_builds_them(tmp_path) -> None:
    assert [p.prompt for p in DEFAULT_PROBES if p.kind == "combined"] == ["on a beach", "in the snow"]
    good = tmp_path / "good.toml"
    good.write_text('[[probe]]\nkind = "combined"\nprompt = "at night"\n')
    assert read_probes(good)[0][0].prompt == "at night"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[probe]]\nkind = "combined"\nprompt = "{content} at night"\n')
    with pytest.raises(ConfigError, match="a combined probe's prompt is a context such as 'on a beach'"):
        read_probes(bad)


def test_combined_probe_gives_each_branch_the_context() -> None:
    """The images of a combined probe are compose's: its branches' prompts carry the context."""
    from types import SimpleNamespace

    from unziplora.eval.probes import Probe
    from unziplora.eval.run import generate_probes
    from unziplora.generate.options import GenerationOptions

    calls = []

    class Studio:
        def compose(self, content, style, context="", **kwargs):
            calls.append((context, kwargs))
            return [SimpleNamespace(image=None)]

    entry = SimpleNamespace(
        subject="cat",
        style="sketch",
        id="cat-sketch-0000",
        record={
            "prompts": {
                "combined": "A zxq cat in sketch style",
                "content": "A zxq cat",
                "style": "A cat in sketch style",
                "token": "zxq",
            }
        },
    )
    made = generate_probes(
        Studio(), entry, [Probe("combined", "on a beach")], seed=0, num=1, options=GenerationOptions()
    )
    assert calls[0][0] == "on a beach" and "content_prompt" not in calls[0][1]
    assert "on a beach" in made[0].prompt
