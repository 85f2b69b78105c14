"""The toy world: deterministic pictures with known factors, its captions and its tokenizer."""

from __future__ import annotations

import numpy as np

from unziplora.toy import world
from unziplora.toy.base import make_tokenizers, words


def test_same_scene_same_pixels_and_factors_change_them() -> None:
    scene = world.random_scene(np.random.default_rng(3), "star", "stripes")
    a, b = world.render(scene), world.render(scene)
    assert a.shape == (world.SIZE, world.SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    for other in (
        world.Scene(**{**scene.__dict__, "shape": "circle"}),
        world.Scene(**{**scene.__dict__, "style": "dots"}),
    ):
        assert np.abs(world.render(other).astype(int) - a).mean() > 5


def test_dataset_is_deterministic_for_its_seed_and_keeps_held_out_styles_out() -> None:
    p1, s1 = world.dataset(12, seed=4)
    p2, s2 = world.dataset(12, seed=4)
    assert np.array_equal(p1, p2) and s1 == s2
    assert not np.array_equal(p1, world.dataset(12, seed=5)[0])
    assert all(s.style in world.TRAIN_STYLES for s in world.dataset(200, seed=1)[1])
    assert set(world.HELD_OUT_STYLES).isdisjoint(world.TRAIN_STYLES)
    assert world.downsample(p1, 32).shape == (12, 32, 32, 3)


def test_captions() -> None:
    assert world.caption("star", "dots") == "a star in dots style"
    assert world.caption("star", None) == "a star"
    assert world.caption(None, "dots") == "an image in dots style"


def test_tokenizer_keeps_world_words_whole_and_spells_unknown_ones() -> None:
    tok, _ = make_tokenizers()
    for word in words():
        assert tok.convert_ids_to_tokens(tok(word).input_ids) == ["<|startoftext|>", word + "</w>", "<|endoftext|>"]
    pieces = tok.convert_ids_to_tokens(tok("A monadikos star in zigzag style").input_ids)
    assert "star</w>" in pieces and "style</w>" in pieces and "in</w>" in pieces
    assert "zigzag</w>" not in pieces and "g</w>" in pieces  # the held-out style is spelled out
    # CLIP's unknown token is its end token: an unknown piece would show up as one more of those.
    assert tok.convert_ids_to_tokens(tok("a qxj heart on a zzz in checker style").input_ids).count("<|endoftext|>") == 1


def test_shipped_classifiers_read_fresh_world_images() -> None:
    from unziplora.toy.classify import classify, held_out_accuracy, load_classifiers

    accuracy = held_out_accuracy(load_classifiers(), n=300, seed=4242)
    assert accuracy["shape"] >= 0.97 and accuracy["style"] >= 0.97, accuracy
    scene = world.random_scene(np.random.default_rng(8), "heart", "checker")
    assert classify(world.render(scene)[None]) == {"shape": ["heart"], "style": ["checker"]}


def test_shipped_toy_base_draws_the_shape_and_style_it_is_asked_for() -> None:
    """The committed weights load into SDXL's classes and draw the prompt (36 combinations, one seed).

    The shipped run measures 0.972 / 0.965 over four seeds; the floors leave room for another CPU's
    rounding in 20 sampler steps while still failing a base that ignores its prompt (chance is 1/6).
    """
    import torch

    from unziplora.toy.base import build_toy_sdxl_pipeline
    from unziplora.toy.classify import classify

    pipe = build_toy_sdxl_pipeline()
    want = [(shape, style) for shape in world.SHAPES for style in world.TRAIN_STYLES]
    out = pipe(
        [f"a {shape} in {style} style" for shape, style in want],
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(5000),
        output_type="np",
    )
    pred = classify((out.images * 255).round().astype(np.uint8))
    shape_acc = np.mean([p == w for p, (w, _) in zip(pred["shape"], want)])
    style_acc = np.mean([p == w for p, (_, w) in zip(pred["style"], want)])
    assert shape_acc >= 0.8 and style_acc >= 0.7, (shape_acc, style_acc)
