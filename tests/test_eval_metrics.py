"""The evaluation scores against hand-computed cosines on fixed embeddings, and a broken-metric catch."""

from __future__ import annotations

import math

import pytest
import torch

from unziplora.eval.metrics import SCORES, KindEmbeddings, Reference, cosine, scores

R2 = 1 / math.sqrt(2)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


REF = Reference(
    clip=torch.tensor([1.0, 0, 0]),
    dino=torch.tensor([1.0, 0]),
    style_text=torch.tensor([0, 1.0, 0]),
    subject_text=torch.tensor([0, 0, 1.0]),
)
CONTENT = KindEmbeddings(clip=t([3, 0, 4]), dino=t([1, 1]), prompt_text=t([0, 0, 1]))
STYLE = KindEmbeddings(clip=t([0, 1, 1]), dino=t([0, 2]), prompt_text=t([0, 1, 0]))
RECON = KindEmbeddings(clip=t([1, 1, 0]), dino=t([2, 0]), prompt_text=t([1, 0, 0]))


def test_cosine_is_scale_free_and_row_wise():
    torch.testing.assert_close(cosine(t([3, 4], [0, 2]), torch.tensor([1.0, 0])), torch.tensor([0.6, 0.0]))


def test_scores_match_hand_computed_cosines():
    got = scores({"content": CONTENT, "style": STYLE, "recon": RECON}, REF)
    assert set(got) == set(SCORES)
    expected = {
        "clip_t": (0.8 + R2 + R2) / 3,
        "content_clip_i": 0.6,  # (3,0,4)/5 . (1,0,0)
        "content_dino": R2,
        "style_clip_i": 0.0,
        "style_text": R2,
        "style_leak_into_content": 0.0 - 0.8,  # cos to "in <style> style" minus cos to the bare subject
        "subject_leak_into_style": 0.0,
        "recon_clip_i": R2,
        "recon_dino": 1.0,
    }
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_swapping_content_and_style_images_raises_both_leak_scores():
    good = scores({"content": CONTENT, "style": STYLE}, REF)
    swapped = scores({"content": STYLE, "style": CONTENT}, REF)
    assert swapped["style_leak_into_content"] == pytest.approx(0.0, abs=1e-6)  # R2 - R2
    assert swapped["subject_leak_into_style"] == pytest.approx(R2, abs=1e-6)
    assert swapped["style_leak_into_content"] > good["style_leak_into_content"] + 0.5
    assert swapped["subject_leak_into_style"] > good["subject_leak_into_style"] + 0.5


def test_a_kind_without_images_gives_nan_not_zero():
    got = scores({"content": CONTENT}, REF)
    assert math.isnan(got["style_text"]) and math.isnan(got["recon_dino"])
    assert got["clip_t"] == pytest.approx(0.8)
