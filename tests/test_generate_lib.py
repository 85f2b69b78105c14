"""Generation library on tiny-sdxl (CPU): determinism, parity with stock diffusers, cross-entry
assembly, prompt separation, weight restoration and training previews (issue 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from generate_helpers import make_entry, random_layers
from PIL import Image

from unziplora.errors import ConfigError, IncompatibleEntriesError
from unziplora.generate import GenerationOptions, Studio, preview_sheet, read_png_meta, sample_with_layers, save_results
from unziplora.generate.assemble import check_same_base
from unziplora.generate.sampling import PromptPlan, sample_images
from unziplora.method import fold, load_unziplora_state, read_lora_file, remove_unziplora, set_mode, unziplora_layers
from unziplora.prompts import build_generation_prompts
from unziplora.registry import Registry

FAST = {"steps": 2, "width": 64, "height": 64}


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def tiny_env(tiny_cache: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNZIPLORA_CACHE", str(tiny_cache))
        yield


@pytest.fixture(scope="module")
def studio(tiny_env) -> Studio:
    return Studio.load("tiny-sdxl", device="cpu")


@pytest.fixture(scope="module")
def fresh_pipe(tiny_env):
    """A second, plain tiny pipeline for references; every test leaves it plain again."""
    from unziplora.base_model import load_pipeline, parse_base

    return load_pipeline(parse_base("tiny-sdxl"), device="cpu")


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(tmp_path_factory.mktemp("gen-registry"), durable=False)


@pytest.fixture(scope="module")
def entry_a(reg: Registry):
    return make_entry(reg, subject="cat", style="sketch", seed=1)


@pytest.fixture(scope="module")
def entry_b(reg: Registry):
    return make_entry(reg, subject="rose", style="pop art", seed=2)


def test_same_seed_same_images_and_seeds_differ(studio, entry_a, entry_b):
    first = studio.compose(entry_a, entry_b, "on a beach", num=2, seed=11, **FAST)
    again = studio.compose(entry_a, entry_b, "on a beach", num=2, seed=11, **FAST)
    alone = studio.compose(entry_a, entry_b, "on a beach", num=1, seed=12, **FAST)
    assert [r.seed for r in first] == [11, 12]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(first, again))
    assert max_diff(first[0].image, first[1].image) > 10
    assert np.array_equal(np.asarray(first[1].image), np.asarray(alone[0].image))  # image i = seed + i, alone or not


def test_content_only_matches_stock_pipeline_with_load_lora_weights(studio, fresh_pipe, entry_a):
    from diffusers import EulerDiscreteScheduler

    ours = studio.compose(entry_a, None, "on a beach", seed=5, steps=3, width=64, height=64)[0]
    assert ours.meta["sampler"] == "euler" and ours.meta["prompts"]["prompt"] == "A monadikos cat on a beach"
    pipe = fresh_pipe
    original = pipe.scheduler
    pipe.scheduler = EulerDiscreteScheduler.from_config(original.config)

    def stock() -> Image.Image:
        gen = torch.Generator("cpu").manual_seed(5)
        return pipe(
            "A monadikos cat on a beach", num_inference_steps=3, guidance_scale=5.0, generator=gen, width=64, height=64
        ).images[0]

    try:
        plain = stock()
        pipe.load_lora_weights(str(entry_a.path), weight_name="content.safetensors")
        with_lora = stock()
    finally:
        pipe.unload_lora_weights()
        pipe.scheduler = original
    assert max_diff(ours.image, with_lora) <= 1
    assert max_diff(ours.image, plain) > 10  # the LoRA matters, so the comparison means something


def test_cross_entry_compose_uses_content_of_a_and_style_of_b(studio, fresh_pipe, entry_a, entry_b):
    result = studio.compose(entry_a, entry_b, "on a beach", seed=3, **FAST)[0]
    assert result.meta["entries"] == {"content": entry_a.id, "style": entry_b.id}
    a_content, b_style = (
        read_lora_file(entry_a.file("content.safetensors"))[0],
        read_lora_file(entry_b.file("style.safetensors"))[0],
    )
    a_masks, b_masks = (
        read_lora_file(entry_a.file("masks.safetensors"))[0],
        read_lora_file(entry_b.file("masks.safetensors"))[0],
    )
    for name, layer in unziplora_layers(studio.pipe.unet).items():
        assert torch.equal(layer.lora_A["content"], a_content[f"unet.{name}.lora_A.weight"])
        assert torch.equal(layer.lora_B["content"], a_content[f"unet.{name}.lora_B.weight"])
        assert torch.equal(layer.lora_A["style"], b_style[f"unet.{name}.lora_A.weight"])
        assert torch.equal(layer.lora_B["style"], b_style[f"unet.{name}.lora_B.weight"])
        assert torch.equal(layer.merge["content"], a_masks[f"{name}.merge_content"])
        assert torch.equal(layer.merge["style"], b_masks[f"{name}.merge_style"])
        assert not layer.mask_active("content") and not layer.mask_active("style")  # masks are baked into B
    # Manual assembly on a separate pipeline gives the same image.
    from unziplora.method import inject_unziplora

    layers = inject_unziplora(fresh_pipe.unet, 4, init="zero")
    try:
        load_unziplora_state(layers, a_content, b_style, a_masks, style_merges_sd=b_masks)
        p = result.meta["prompts"]
        plan = PromptPlan("both", p["prompt"], p["content_prompt"], p["style_prompt"])
        manual = sample_images(fresh_pipe, plan, seeds=[3], guidance=5.0, sampler="ddpm", **FAST)[0]
    finally:
        remove_unziplora(fresh_pipe.unet)
    # Another pipeline object (with its own history of loads and requires_grad flags) may run other
    # CPU kernels: the same image means the same to within one 8-bit level, not bit for bit.
    assert max_diff(result.image, manual) <= 1


def test_entries_of_different_ranks_combine(studio, reg, entry_a):
    low = make_entry(reg, subject="owl", style="ink", seed=6, rank=2)
    result = studio.compose(entry_a, low, seed=1, steps=1, width=64, height=64)[0]
    layer = next(iter(unziplora_layers(studio.pipe.unet).values()))
    assert (layer.rank("content"), layer.rank("style")) == (4, 2) and result.meta["entries"]["style"] == low.id


def test_equal_branch_prompts_make_separation_equal_single_prompt(studio, entry_a, entry_b):
    text = "A monadikos cat in pop art style"
    kw = dict(prompt=text, content_prompt=text, style_prompt=text, seed=4, **FAST)
    separated = studio.compose(entry_a, entry_b, **kw)[0]
    single = studio.compose(entry_a, entry_b, prompt_separation=False, **kw)[0]
    assert separated.meta["prompt_separation"] and not single.meta["prompt_separation"]
    assert max_diff(separated.image, single.image) <= 1
    built = studio.compose(entry_a, entry_b, seed=4, **FAST)[0]  # different branch prompts do matter
    built_single = studio.compose(entry_a, entry_b, seed=4, prompt_separation=False, **FAST)[0]
    assert max_diff(built.image, built_single.image) > 2


def test_base_weights_restored_bit_exactly_and_layers_unfolded(studio, entry_a, entry_b):
    studio.compose(entry_a, entry_b, seed=0, steps=1, width=64, height=64)
    layers = unziplora_layers(studio.pipe.unet)
    before = {n: layer.base_layer.weight.detach().clone() for n, layer in layers.items()}
    for mode_args in (
        {"content": entry_a},
        {"style": entry_b},
        {"content": entry_a, "style": entry_b, "prompt_separation": False},
    ):
        studio.compose(seed=1, steps=1, width=64, height=64, **mode_args)
        for name, layer in layers.items():
            assert torch.equal(layer.base_layer.weight, before[name]), name
            assert layer.folded == () and layer.mode == "both"
            assert "_fold_fix_index" not in layer._buffers


def test_cross_kv_cache_changes_nothing_but_speed(studio, entry_a, entry_b, monkeypatch: pytest.MonkeyPatch):
    from contextlib import nullcontext

    from unziplora.generate import sampling

    cached = studio.compose(entry_a, entry_b, "on a beach", seed=8, steps=3, width=64, height=64)[0]
    monkeypatch.setattr(sampling, "cached_cross_kv", lambda unet: nullcontext(0))
    uncached = studio.compose(entry_a, entry_b, "on a beach", seed=8, steps=3, width=64, height=64)[0]
    assert np.array_equal(np.asarray(cached.image), np.asarray(uncached.image))
    assert all("forward" not in vars(layer) for layer in unziplora_layers(studio.pipe.unet).values())  # patches undone


def test_restyle_image_and_subject(studio, entry_b, tmp_path: Path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(photo)
    out = studio.restyle(entry_b, "a lighthouse", "on a cliff", image=photo, steps=4, strength=0.5, seed=2)[0]
    assert out.image.size == (96, 32)  # aspect kept at about the native area, multiples of 32
    assert out.meta["prompts"]["prompt"] == "A lighthouse on a cliff in pop art style"
    assert out.meta["source_image"] == "photo.png" and out.meta["strength"] == 0.5 and out.meta["sampler"] == "euler"
    with pytest.raises(ConfigError, match="leaves no denoising step"):
        studio.restyle(entry_b, "a dog", image=photo, steps=1, strength=0.5)


def test_sample_with_layers_leaves_trained_layers_as_found(fresh_pipe, studio, reg):
    from unziplora.method import lora_state_dict, merge_state_dict, write_lora_file

    pipe = fresh_pipe
    layers = random_layers(pipe.unet, seed=9)  # masks active, as right after training
    try:
        prompts = build_generation_prompts("owl", "ink wash")
        set_mode(layers, "style")
        fold(layers)  # some state the trainer might be in
        pipe.unet.train()
        weights = {n: layer.base_layer.weight.detach().clone() for n, layer in layers.items()}
        folded = {n: layer.folded for n, layer in layers.items()}
        scheduler = pipe.scheduler
        sample_with_layers(pipe, prompts, mode="both", seed=7, steps=2, guidance=5.0, width=64, height=64)
        assert all(layer.mode == "style" and layer.folded == folded[n] for n, layer in layers.items())
        assert all(torch.equal(layer.base_layer.weight, weights[n]) for n, layer in layers.items())
        assert pipe.unet.training and pipe.scheduler is scheduler
        for layer in layers.values():
            layer.unfold()
            layer.mode = "both"
        # The preview equals what users get from the saved entry.
        with reg.new_entry(subject="owl", style="ink wash") as st:
            write_lora_file(st.path("content.safetensors"), lora_state_dict(layers, "content"))
            write_lora_file(st.path("style.safetensors"), lora_state_dict(layers, "style"))
            write_lora_file(st.path("masks.safetensors"), merge_state_dict(layers))
            st.record = {
                "subject": "owl",
                "style": "ink wash",
                "base": {"ref": "tiny-sdxl", "fingerprint": "tiny-sdxl-v1"},
            }
        saved = reg.get(st.id)
        for mode, kw in (("both", {"content": saved, "style": saved}), ("content", {"content": saved})):
            preview = sample_with_layers(pipe, prompts, mode=mode, seed=7, steps=2, guidance=5.0, width=64, height=64)
            served = studio.compose(seed=7, **FAST, **kw)[0]
            assert max_diff(preview, served.image) <= 1, mode
    finally:
        pipe.unet.eval()
        remove_unziplora(pipe.unet)


def test_preview_sheet_and_grid_sizes():
    tiles = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    sheet = preview_sheet(Image.new("RGB", (300, 200), "white"), tiles, ["content", "style", "combined"])
    assert sheet.width == 4 * 64 + 5 * 4 and sheet.height > 64
    with pytest.raises(ValueError, match="labels"):
        preview_sheet(tiles[0], tiles, ["a"])


def test_png_records_and_sheet(studio, entry_a, tmp_path: Path):
    results = studio.compose(entry_a, None, "in snow", num=2, seed=20, negative="blurry", content_scale=0.5, **FAST)
    saved = save_results(results, tmp_path / "out", sheet=True)
    assert [p.name for p in saved.paths] == ["00-seed20.png", "01-seed21.png"] and saved.sheet.name == "sheet.png"
    meta = read_png_meta(saved.paths[1])
    assert meta["seed"] == 21 and meta["entries"] == {"content": entry_a.id, "style": None}
    assert meta["scales"] == {"content": 0.5} and meta["negative"] == "blurry" and meta["sampler"] == "euler"
    with Image.open(saved.paths[0]) as img:
        assert img.text["parameters"].startswith(
            "A monadikos cat in snow\nNegative prompt: blurry\nSteps: 2, Sampler: euler"
        )
    assert read_png_meta(saved.sheet)["seeds"] == [20, 21]


def test_entries_of_different_bases_or_shapes_are_refused(studio, reg, entry_a):
    other = make_entry(
        reg,
        subject="dog",
        style="oil",
        seed=3,
        base={"ref": "stabilityai/stable-diffusion-xl-base-1.0", "fingerprint": "abc"},
    )
    with pytest.raises(IncompatibleEntriesError) as info:
        check_same_base(entry_a, other)
    assert str(info.value) == (
        f"cannot combine {entry_a.id} and {other.id}: they were trained on different base models "
        "(tiny-sdxl vs stabilityai/stable-diffusion-xl-base-1.0); pick a content and a style entry trained on the same base"
    )
    broken = make_entry(reg, subject="fox", style="chalk", seed=4, shrink=True)
    with pytest.raises(IncompatibleEntriesError, match=f"^entry {broken.id}: "):
        studio.compose(broken, None, seed=0, steps=1, width=64, height=64)
    # After a refusal the studio still works.
    assert studio.compose(entry_a, None, seed=0, steps=1, width=64, height=64)[0].image.size == (64, 64)


def test_options_are_validated():
    assert GenerationOptions().sampler_for("both") == "ddpm" and GenerationOptions().sampler_for("style") == "euler"
    assert GenerationOptions(sampler="Euler_A").sampler == "euler-a"
    with pytest.raises(ConfigError, match=r"^unknown sampler 'heun'; use one of ddpm, euler, euler-a, dpmpp, ddim\.$"):
        GenerationOptions(sampler="heun")
    with pytest.raises(ConfigError, match=r"^--width must be a multiple of 8"):
        GenerationOptions(width=100)
    with pytest.raises(ConfigError, match=r"^--num must be between 1 and 1000; got 0\.$"):
        GenerationOptions(num=0)
