"""Prompts: ALGORITHM.md section 10 templates, file-name parsing, generation prompts, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unziplora.errors import PromptError
from unziplora.prompts import (
    DEFAULT_TOKEN,
    PromptSet,
    build_generation_prompts,
    build_training_prompts,
    parse_filename,
    resolve_training_prompts,
)

EXAMPLE = '(e.g. --subject cat --style "pencil sketch")'


def _triple(prompts: PromptSet) -> tuple[str, str, str]:
    return prompts.combined, prompts.content, prompts.style


# ---------------------------------------------------------------- training prompts


def test_training_prompts_match_train_sh() -> None:
    prompts = build_training_prompts("cat", "sketch")
    assert _triple(prompts) == ("A monadikos cat in sketch style", "A monadikos cat", "A cat in sketch style")
    assert (prompts.token, prompts.subject, prompts.style_words) == (DEFAULT_TOKEN, "cat", "sketch")
    assert DEFAULT_TOKEN == "monadikos"


def test_training_prompts_from_prompt_txt_examples() -> None:
    prompts = build_training_prompts("rose", "melting golden 3d rendering")
    assert _triple(prompts) == (
        "A monadikos rose in melting golden 3d rendering style",
        "A monadikos rose",
        "A rose in melting golden 3d rendering style",
    )


@pytest.mark.parametrize("style", ["pencil sketch style", "pencil sketch Style", "  pencil   sketch  style "])
def test_trailing_style_not_doubled(style: str) -> None:
    prompts = build_training_prompts("cat", style)
    assert prompts.combined == "A monadikos cat in pencil sketch style"
    assert prompts.style == "A cat in pencil sketch style"
    assert prompts.style_words == "pencil sketch"


def test_style_word_inside_words_is_kept() -> None:
    assert build_training_prompts("cat", "lifestyle").style_words == "lifestyle"


@pytest.mark.parametrize("subject", ["a cat", "An cat", "the cat", "  a   cat ", "monadikos cat", "A monadikos cat"])
def test_subject_article_and_token_dropped(subject: str) -> None:
    assert build_training_prompts(subject, "sketch").content == "A monadikos cat"


@pytest.mark.parametrize("subject", ["another cat", "theater", "antelope"])
def test_words_starting_like_articles_are_kept(subject: str) -> None:
    assert build_training_prompts(subject, "sketch").subject == subject


def test_custom_token() -> None:
    prompts = build_training_prompts("dog", "watercolor", "sks")
    assert _triple(prompts) == ("A sks dog in watercolor style", "A sks dog", "A dog in watercolor style")


def test_each_override_replaces_only_its_own_prompt() -> None:
    assert _triple(build_training_prompts("cat", "sketch", prompt="a monadikos cat, sketch")) == (
        "a monadikos cat, sketch",
        "A monadikos cat",
        "A cat in sketch style",
    )
    assert _triple(build_training_prompts("cat", "sketch", content_prompt="photo of monadikos cat")) == (
        "A monadikos cat in sketch style",
        "photo of monadikos cat",
        "A cat in sketch style",
    )
    assert _triple(build_training_prompts("cat", "sketch", style_prompt="a sketch")) == (
        "A monadikos cat in sketch style",
        "A monadikos cat",
        "a sketch",
    )


def test_all_overrides_need_no_words() -> None:
    prompts = build_training_prompts(None, None, prompt="p", content_prompt="c", style_prompt="s")
    assert _triple(prompts) == ("p", "c", "s")
    assert prompts.subject is None and prompts.style_words is None


def test_content_override_alone_still_needs_style() -> None:
    with pytest.raises(PromptError) as info:
        build_training_prompts("cat", None, content_prompt="c")
    assert str(info.value) == f"no style given; pass --style {EXAMPLE}"
    # ... but not when the prompts that use the style are overridden too.
    assert build_training_prompts("cat", None, prompt="p", style_prompt="s").content == "A monadikos cat"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": None, "style": "sketch"}, f"no subject given; pass --subject and --style {EXAMPLE}"),
        ({"subject": "cat", "style": None}, f"no style given; pass --style {EXAMPLE}"),
        (
            {"subject": " ", "style": "sketch"},
            "the subject is empty; pass --subject with a few words (e.g. --subject cat)",
        ),
        ({"subject": "a", "style": "sketch"}, None),
        ({"subject": "the ", "style": "sketch"}, None),
        (
            {"subject": "cat", "style": ""},
            'the style is empty; pass --style with a few words (e.g. --style "pencil sketch")',
        ),
        (
            {"subject": "cat", "style": "style"},
            'the style is empty; pass --style with a few words (e.g. --style "pencil sketch")',
        ),
        (
            {"subject": "cat", "style": "x", "token": "two words"},
            "the subject token must be one word without spaces, e.g. 'monadikos'; got 'two words'",
        ),
        (
            {"subject": "cat", "style": "x", "token": ""},
            "the subject token must be one word without spaces, e.g. 'monadikos'; got ''",
        ),
        (
            {"subject": "cat", "style": "x", "prompt": "  "},
            "the --prompt text is empty; leave --prompt out or give it some words",
        ),
        (
            {"subject": "cat", "style": "x", "content_prompt": ""},
            "the --content-prompt text is empty; leave --content-prompt out or give it some words",
        ),
        (
            {"subject": "cat", "style": "x", "style_prompt": "\t"},
            "the --style-prompt text is empty; leave --style-prompt out or give it some words",
        ),
    ],
)
def test_training_refusals(kwargs: dict, message: str | None) -> None:
    with pytest.raises(PromptError) as info:
        build_training_prompts(**kwargs)
    if message is None:  # an article alone is no subject
        message = "the subject is empty; pass --subject with a few words (e.g. --subject cat)"
    assert str(info.value) == message


def test_style_prompt_must_not_name_the_token() -> None:
    with pytest.raises(PromptError) as info:
        build_training_prompts("cat", "sketch", style_prompt="A Monadikos cat, sketched")
    assert str(info.value) == (
        "the style prompt must not contain the subject token 'monadikos' (the style LoRA would learn the subject); "
        "remove it from the style prompt: 'A Monadikos cat, sketched'"
    )


def test_promptset_round_trip() -> None:
    prompts = build_training_prompts("cat", "sketch")
    data = prompts.to_dict()
    assert data == {
        "combined": "A monadikos cat in sketch style",
        "content": "A monadikos cat",
        "style": "A cat in sketch style",
        "token": "monadikos",
        "subject": "cat",
        "style_words": "sketch",
    }
    assert PromptSet.from_dict(data) == prompts
    assert PromptSet.from_dict({"combined": "a", "content": "b", "style": "c"}) == PromptSet("a", "b", "c")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"content": "b", "style": "c"}, "stored prompts are incomplete: 'combined' is missing or not text"),
        (
            {"combined": "a", "content": 3, "style": "c"},
            "stored prompts are incomplete: 'content' is missing or not text",
        ),
        (
            {"combined": "a", "content": "b", "style": "c", "subject": 1},
            "stored prompts are invalid: 'subject' is not text",
        ),
        (
            {"combined": "a", "content": "b", "style": "c", "token": None},
            "stored prompts are invalid: 'token' is not text",
        ),
    ],
)
def test_promptset_from_bad_dict(data: dict, message: str) -> None:
    with pytest.raises(PromptError) as info:
        PromptSet.from_dict(data)
    assert str(info.value) == message


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("A_fox_in_chalk_art_style.png", ("fox", "chalk art")),
        ("fox in chalk art style.jpg", ("fox", "chalk art")),
        ("a-fox-in-watercolor-style.webp", ("fox", "watercolor")),
        ("AN_owl_IN_pop_art_STYLE.jpeg", ("owl", "pop art")),
        ("The Eiffel Tower in Pop Art style.png", ("Eiffel Tower", "Pop Art")),
        ("a_man_in_a_hat_in_oil_paint_style.png", ("man in a hat", "oil paint")),
        ("a_cat_in_sketch_style_2.png", ("cat", "sketch")),
        ("a cat in sketch style (3).png", ("cat", "sketch")),
        ("photos/a_cat_in_sketch_style.png", ("cat", "sketch")),
        ("a_cat_in_sketch_style", ("cat", "sketch")),
        ("cat.jpg", None),
        ("a_cat_sketch.png", None),
        ("a_cat_in_sketch.png", None),
        ("in_sketch_style.png", None),
        ("a_in_sketch_style.png", None),
        ("a_cat_in_style.png", None),
        ("IMG_1234.JPG", None),
    ],
)
def test_parse_filename(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_filename(name) == expected


def test_parse_filename_accepts_paths() -> None:
    assert parse_filename(Path("/data/a_rose_in_pop_art_style.png")) == ("rose", "pop art")


def test_resolve_from_file_name() -> None:
    prompts = resolve_training_prompts([Path("in/A_fox_in_chalk_art_style.png")], None, None)
    assert _triple(prompts) == ("A monadikos fox in chalk art style", "A monadikos fox", "A fox in chalk art style")


def test_resolve_explicit_words_win_over_file_name() -> None:
    files = [Path("a_fox_in_chalk_art_style.png")]
    assert resolve_training_prompts(files, "cat", "sketch").combined == "A monadikos cat in sketch style"
    assert resolve_training_prompts(files, "cat", None).combined == "A monadikos cat in chalk art style"
    assert resolve_training_prompts(files, None, "ink").combined == "A monadikos fox in ink style"


def test_resolve_needs_no_names_with_explicit_words() -> None:
    prompts = resolve_training_prompts([Path("IMG_1.jpg")], "dog", "watercolor", "sks")
    assert prompts.combined == "A sks dog in watercolor style"


def test_resolve_several_agreeing_names() -> None:
    files = [Path("a_cat_in_sketch_style_1.png"), Path("A Cat in Sketch style (2).jpg")]
    assert resolve_training_prompts(files, None, None).content == "A monadikos cat"


def test_resolve_passes_overrides_through() -> None:
    prompts = resolve_training_prompts([Path("cat.jpg")], None, None, prompt="p", content_prompt="c", style_prompt="s")
    assert _triple(prompts) == ("p", "c", "s")


def test_resolve_cannot_tell() -> None:
    with pytest.raises(PromptError) as info:
        resolve_training_prompts([Path("cat.jpg")], None, None)
    assert str(info.value) == (
        "cannot tell the subject and style of cat.jpg: pass --subject and --style "
        "(e.g. --subject cat --style \"pencil sketch\") or name the file like 'a_cat_in_pencil_sketch_style.jpg'"
    )


def test_resolve_cannot_tell_one_of_them() -> None:
    with pytest.raises(PromptError) as info:
        resolve_training_prompts([Path("a_cat_in_sketch_style.png"), Path("IMG_2.PNG")], "cat", None)
    assert str(info.value) == (
        'cannot tell the style of IMG_2.PNG (file 2 of 2): pass --style (e.g. --style "pencil sketch") '
        "or name the file like 'a_cat_in_pencil_sketch_style.png'"
    )
    with pytest.raises(
        PromptError, match=r"^cannot tell the subject of cat\.webp: pass --subject \(e\.g\. --subject cat\)"
    ):
        resolve_training_prompts([Path("cat.webp")], None, "sketch")


def test_resolve_disagreeing_names() -> None:
    files = [Path("a_cat_in_sketch_style.png"), Path("a_dog_in_sketch_style.png")]
    with pytest.raises(PromptError) as info:
        resolve_training_prompts(files, None, None)
    assert str(info.value) == (
        "the file names describe different subjects or styles ('cat in sketch style' vs 'dog in sketch style'); "
        f"pass --subject and --style {EXAMPLE}"
    )


def test_resolve_without_files_or_words() -> None:
    with pytest.raises(PromptError) as info:
        resolve_training_prompts([], None, None)
    assert str(info.value) == f"no subject or style given; pass --subject and --style {EXAMPLE}"


# ---------------------------------------------------------------- generation prompts


def test_generation_content_and_style_with_context() -> None:
    prompts = build_generation_prompts("cat", "sketch", "on a beach")
    assert _triple(prompts) == (
        "A monadikos cat on a beach in sketch style",
        "A monadikos cat on a beach",
        "A cat on a beach in sketch style",
    )
    assert (prompts.subject, prompts.style_words) == ("cat", "sketch")


def test_generation_without_context_equals_training_prompts() -> None:
    assert _triple(build_generation_prompts("rose", "pop art")) == _triple(build_training_prompts("rose", "pop art"))
    assert _triple(build_generation_prompts("rose", "pop art", "   ")) == _triple(
        build_training_prompts("rose", "pop art")
    )


def test_generation_content_only() -> None:
    prompts = build_generation_prompts("cat", None, "on a beach")
    assert _triple(prompts) == ("A monadikos cat on a beach", "A monadikos cat on a beach", "A cat on a beach")
    assert prompts.style_words is None


def test_generation_style_only_new_subject() -> None:
    prompts = build_generation_prompts(None, "sketch style", subject="a lighthouse")
    assert _triple(prompts) == ("A lighthouse in sketch style", "A lighthouse", "A lighthouse in sketch style")
    prompts = build_generation_prompts(None, "sketch", "on a cliff", subject="lighthouse")
    assert _triple(prompts) == (
        "A lighthouse on a cliff in sketch style",
        "A lighthouse on a cliff",
        "A lighthouse on a cliff in sketch style",
    )
    assert DEFAULT_TOKEN not in prompts.combined + prompts.content + prompts.style


def test_generation_custom_token() -> None:
    assert build_generation_prompts("dog", "ink", "asleep", "sks").combined == "A sks dog asleep in ink style"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((None, None, "on a beach"), {}, "nothing to generate: give a content entry, a style entry, or both"),
        ((None, "sketch"), {}, 'restyling needs a subject to draw; pass --subject (e.g. --subject "a lighthouse")'),
        (
            ("cat", "sketch"),
            {"subject": "dog"},
            "pass either a content entry or a new --subject, not both: the content entry is the subject",
        ),
        (
            (None, "sketch"),
            {"subject": " a "},
            "the subject is empty; pass --subject with a few words (e.g. --subject cat)",
        ),
        (("", "sketch"), {}, "the content entry has no subject words to prompt with"),
        (("cat", " "), {}, 'the style is empty; pass --style with a few words (e.g. --style "pencil sketch")'),
        (("cat", "x", "", "a b"), {}, "the subject token must be one word without spaces, e.g. 'monadikos'; got 'a b'"),
    ],
)
def test_generation_refusals(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError) as info:
        build_generation_prompts(*args, **kwargs)
    assert str(info.value) == message


def test_module_is_light() -> None:
    code = "import sys, unziplora.prompts; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
