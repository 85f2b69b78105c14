"""Reading a (fake) official UnZipLoRA output laid out as ALGORITHM.md 8 documents it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unziplora.errors import ImportFormatError
from unziplora.formats import official, peft
from unziplora.formats._keys import split_pairs
from unziplora.formats.io import read_safetensors, write_safetensors
from unziplora.formats.sgm import sdxl_attention_projections

MODULES = sdxl_attention_projections(depth=2)[:16]
OUT = 6


class Foo:
    """A custom class: weights_only loading must refuse it."""


def fake_official(tmp_path, *, with_style_merges=True):
    """Write X_content/, X_style/ (``unet.unet.`` keys, fp32, {"format": "pt"}) and the merger .pth files."""
    stem = tmp_path / "models" / "sketch_cat" / "sketch_cat"
    stem.mkdir(parents=True)  # X itself only holds logs
    g = torch.Generator().manual_seed(0)
    truth = {}
    for part in ("content", "style"):
        tensors, merges, factors = {}, {}, {}
        for m in MODULES:
            down, up = torch.randn(4, 8, generator=g), torch.randn(OUT, 4, generator=g)
            up[0] = 0.0  # a column masked out by the trainer (mask baked into up rows)
            tensors[f"unet.unet.{m}.lora.down.weight"] = down
            tensors[f"unet.unet.{m}.lora.up.weight"] = up
            merges[f"unet.{m}.lora.merge_{part}"] = torch.nn.Parameter(torch.rand(OUT, generator=g))
            factors[m] = (down, up)
        write_safetensors(
            tmp_path / "models" / "sketch_cat" / f"sketch_cat_{part}" / peft.DIFFUSERS_WEIGHT_NAME,
            tensors,
            {"format": "pt"},
        )
        if part == "content" or with_style_merges:
            torch.save(merges, f"{stem}_merger_{part}.pth")
        truth[part] = (factors, merges)
    return stem, truth


def test_fake_official_output_converts(tmp_path):
    stem, truth = fake_official(tmp_path)
    tensors, _ = read_safetensors(f"{stem}_content/{peft.DIFFUSERS_WEIGHT_NAME}")
    assert peft.detect_format(tensors) == "official"
    loaded = official.load_official(stem)
    assert loaded.paths.stem == stem
    for part in ("content", "style"):
        factors, merges = truth[part]
        pairs = split_pairs(getattr(loaded, part))
        assert set(pairs) == set(MODULES)
        for m, (down, up) in pairs.items():
            assert torch.equal(down, factors[m][0]) and torch.equal(up, factors[m][1])
            vec = loaded.merges[f"{m}.merge_{part}"]
            assert type(vec) is torch.Tensor and vec.dtype == torch.float32  # plain tensor, not a Parameter
            assert torch.equal(vec, merges[f"unet.{m}.lora.merge_{part}"].detach())
    assert len(loaded.merges) == 2 * len(MODULES)
    masks = official.infer_column_masks(loaded.content)
    assert all(not mask[0] and mask[1:].all() for mask in masks.values())


@pytest.mark.parametrize(
    "given",
    [
        "{X}",
        "{X}/",
        "{X}_content",
        "{X}_style/",
        "{X}_content/pytorch_lora_weights.safetensors",
        "{X}_style/pytorch_lora_weights.safetensors",
        "{X}_merger_content.pth",
        "{X}_merger_style.pth",
    ],
)
def test_any_piece_locates_all_four(tmp_path, given):
    stem, _ = fake_official(tmp_path)
    paths = official.locate_official(given.format(X=stem))
    assert paths.stem == stem
    assert paths.merger_style == stem.with_name("sketch_cat_merger_style.pth")
    assert paths.content == stem.with_name("sketch_cat_content") / "pytorch_lora_weights.safetensors"


def test_missing_piece_is_named(tmp_path):
    stem, _ = fake_official(tmp_path, with_style_merges=False)
    with pytest.raises(ImportFormatError, match="style merge vectors .*sketch_cat_merger_style.pth is missing") as exc:
        official.locate_official(f"{stem}_content")
    assert "\n" not in str(exc.value)
    with pytest.raises(ImportFormatError, match="not an official UnZipLoRA output"):
        official.locate_official(tmp_path / "nothing-here")


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"unet.m.lora.merge_content": "a string"}, "str"),
        ({"unet.m.lora.merge_content": Foo()}, "other than tensors"),
        ({"unet.m.lora.merge_content": {"nested": torch.ones(2)}}, "dict"),
        ({"unet.m.lora.merge_content": torch.ones(2, 2)}, "2-D"),
        ([torch.ones(2)], "expected a dict"),
        ({"unet.m.lora.merge_style": torch.ones(2)}, "not a content merge"),
        ({}, "no merge vectors"),
    ],
)
def test_unsafe_or_odd_pth_is_refused(tmp_path, payload, match):
    path = tmp_path / "x_merger_content.pth"
    torch.save(payload, path)
    with pytest.raises(ImportFormatError, match=match):
        official.load_merges(path, "content")


def test_non_torch_file_is_refused(tmp_path):
    path = tmp_path / "x_merger_content.pth"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ImportFormatError, match="not a readable"):
        official.load_merges(path, "content")


def test_merges_must_fit_the_loras(tmp_path):
    stem, truth = fake_official(tmp_path)
    merges = dict(truth["style"][1])
    merges[f"unet.{MODULES[0]}.lora.merge_style"] = torch.nn.Parameter(torch.ones(OUT + 1))
    torch.save(merges, f"{stem}_merger_style.pth")
    with pytest.raises(ImportFormatError, match="entries"):
        official.load_official(stem)
    del merges[f"unet.{MODULES[0]}.lora.merge_style"]
    torch.save(merges, f"{stem}_merger_style.pth")
    with pytest.raises(ImportFormatError, match="no merge vector"):
        official.load_official(stem)
