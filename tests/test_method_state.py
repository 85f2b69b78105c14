"""State I/O: PEFT LoRAs that diffusers loads, merges/masks, combined and cross-entry reloading."""

from __future__ import annotations

import copy

import pytest
import torch

from unziplora.errors import DamagedEntryError, IncompatibleEntriesError
from unziplora.method import (
    inject_unziplora,
    load_unziplora_state,
    lora_state_dict,
    merge_state_dict,
    mode,
    read_lora_file,
    write_lora_file,
)


@pytest.fixture(scope="module")
def pipe():
    from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline()


def inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(1, 4, 8, 8, generator=g),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(1, 77, 64, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, 32, generator=g),
            "time_ids": torch.randn(1, 6, generator=g),
        },
    }


def prompt_kwargs(seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "content_encoder_hidden_states": torch.randn(1, 77, 64, generator=g),
        "style_encoder_hidden_states": torch.randn(1, 77, 64, generator=g),
    }


def run(unet, kw=None) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs(), cross_attention_kwargs=kw).sample


def trained(pipe, rank: int = 8, seed: int = 0):
    """An injected UNet in the state training leaves behind: masks on, merges learned."""
    unet = copy.deepcopy(pipe.unet)
    layers = inject_unziplora(unet, rank, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in layers.values():
            for b in ("content", "style"):
                layer.merge[b].copy_(torch.rand(layer.out_features, generator=g))
                layer.set_mask(b, torch.rand(layer.out_features, generator=g) < 0.6)
                layer.set_mask_active(b, True)
    return unet, layers


@pytest.mark.parametrize("branch", ["content", "style"])
def test_saved_lora_loads_in_plain_diffusers_pipeline(pipe, tmp_path, branch):
    unet, layers = trained(pipe)
    with mode(unet, branch):
        ours = run(unet)
    sd = lora_state_dict(layers, branch)
    assert len(sd) == 2 * len(layers)
    name = next(iter(layers))
    assert sd[f"unet.{name}.lora_A.weight"].shape == (8, layers[name].in_features)
    assert sd[f"unet.{name}.lora_B.weight"].shape == (layers[name].out_features, 8)
    write_lora_file(tmp_path / "pytorch_lora_weights.safetensors", sd)
    _, metadata = read_lora_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert metadata == {"format": "pt"}

    plain = copy.deepcopy(pipe)
    plain.load_lora_weights(str(tmp_path))
    theirs = run(plain.unet)
    assert (ours - run(pipe.unet)).abs().max() > 1e-3  # the LoRA does something
    assert (ours - theirs).abs().max() <= 1e-5


def test_merge_state_dict_layout(pipe):
    _, layers = trained(pipe)
    sd = merge_state_dict(layers)
    assert len(sd) == 4 * len(layers)
    name, layer = next(iter(layers.items()))
    assert sd[f"{name}.merge_content"].dtype == torch.float32
    assert torch.equal(sd[f"{name}.mask_style"], layer.mask("style")) and sd[f"{name}.mask_style"].dtype == torch.bool
    layer.set_mask_active("style", False)  # an inactive mask means every column was used
    assert merge_state_dict(layers)[f"{name}.mask_style"].all()
    # masks baked into up rows, merges not
    up = lora_state_dict(layers, "content")[f"unet.{name}.lora_B.weight"]
    torch.testing.assert_close(up, layer.lora_B["content"].detach() * layer.mask("content")[:, None])


def test_reloaded_state_reproduces_combined_forward(pipe, tmp_path):
    unet, layers = trained(pipe)
    kw = prompt_kwargs()
    expected = run(unet, kw)
    for branch in ("content", "style"):
        write_lora_file(tmp_path / f"{branch}.safetensors", lora_state_dict(layers, branch))
    write_lora_file(tmp_path / "masks.safetensors", merge_state_dict(layers))

    fresh = copy.deepcopy(pipe.unet)
    fresh_layers = inject_unziplora(fresh, 8, generator=torch.Generator().manual_seed(42))
    content, _ = read_lora_file(tmp_path / "content.safetensors")
    style, _ = read_lora_file(tmp_path / "style.safetensors")
    merges, _ = read_lora_file(tmp_path / "masks.safetensors")
    load_unziplora_state(fresh, content, style, merges)
    assert not any(layer.mask_active(b) for layer in fresh_layers.values() for b in ("content", "style"))
    torch.testing.assert_close(run(fresh, kw), expected, atol=1e-5, rtol=1e-5)


def test_cross_entry_loading_takes_content_and_style_from_different_entries(pipe):
    _, layers_a = trained(pipe, rank=8, seed=0)
    _, layers_b = trained(pipe, rank=4, seed=5)  # another entry, another rank
    target = copy.deepcopy(pipe.unet)
    layers = inject_unziplora(target, 8)
    load_unziplora_state(
        target,
        lora_state_dict(layers_a, "content"),
        lora_state_dict(layers_b, "style"),
        merge_state_dict(layers_a),
        style_merges_sd=merge_state_dict(layers_b),
    )
    for name, layer in layers.items():
        assert layer.rank("content") == 8 and layer.rank("style") == 4
        torch.testing.assert_close(layer.merge["content"], layers_a[name].merge["content"])
        torch.testing.assert_close(layer.merge["style"], layers_b[name].merge["style"])
        torch.testing.assert_close(
            layer.lora_B["style"], layers_b[name].lora_B["style"] * layers_b[name].mask("style")[:, None]
        )
    assert torch.isfinite(run(target, prompt_kwargs())).all()
    # without a style LoRA the style branch contributes nothing
    load_unziplora_state(target, lora_state_dict(layers_a, "content"), None, merge_state_dict(layers_a))
    with mode(target, "style"):
        torch.testing.assert_close(run(target), run(pipe.unet), atol=1e-6, rtol=1e-6)


def test_foreign_or_damaged_files_are_refused(pipe, tmp_path):
    _, layers = trained(pipe)
    target = copy.deepcopy(pipe.unet)
    inject_unziplora(target, 8)
    content = lora_state_dict(layers, "content")
    broken = dict(content)
    broken.pop(next(iter(broken)))
    with pytest.raises(IncompatibleEntriesError, match="missing"):
        load_unziplora_state(target, broken, None)
    wrong = {k: (v[:, :3] if k.endswith("lora_A.weight") else v) for k, v in content.items()}
    with pytest.raises(IncompatibleEntriesError, match="different base"):
        load_unziplora_state(target, wrong, None)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(DamagedEntryError):
        read_lora_file(bad)
    with pytest.raises(DamagedEntryError):
        read_lora_file(tmp_path / "missing.safetensors")
