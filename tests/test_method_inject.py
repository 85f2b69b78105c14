"""Injection into the tiny SDXL UNet, prompt separation in the processor, UNet-level folding."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

from unziplora.method import (
    UnZipLoRAAttnProcessor,
    fold,
    inject_unziplora,
    mode,
    param_groups,
    remove_unziplora,
    sdxl_attention_modules,
    set_mode,
    set_prompt_separation,
    unfold,
    unziplora_layers,
)
from unziplora.method.blocks import SDXL_ATTENTION_GROUPS

FIRST = "down_blocks.1.attentions.0.transformer_blocks.0"
# Official init gives B A entries of std r^-1.5: rank 16 keeps the tiny UNet well conditioned
# (at rank 4 the LoRA dwarfs the base weights and float32 rounding gets amplified ~100x).
RANK = 16


@pytest.fixture(scope="module")
def pipe():
    from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline()


@pytest.fixture
def unet(pipe):
    return copy.deepcopy(pipe.unet)


def inputs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(batch, 77, 64, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, 32, generator=g),
            "time_ids": torch.randn(batch, 6, generator=g),
        },
    }


def prompts(batch: int = 1, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 77, 64, generator=g), torch.randn(batch, 77, 64, generator=g)


def run(unet, kw: dict, ec=None, es=None) -> torch.Tensor:
    extra = (
        {} if ec is None and es is None else {"content_encoder_hidden_states": ec, "style_encoder_hidden_states": es}
    )
    with torch.no_grad():
        return unet(**kw, cross_attention_kwargs=extra or None).sample


def test_inject_wraps_every_attention_projection(unet):
    layers = inject_unziplora(unet, 4, generator=torch.Generator().manual_seed(0))
    depths = {g: 2 for g in SDXL_ATTENTION_GROUPS}
    assert sorted(layers) == sorted(sdxl_attention_modules(depths)) and len(layers) == 176
    assert layers == unziplora_layers(unet)
    assert all(isinstance(p, UnZipLoRAAttnProcessor) for p in unet.attn_processors.values())
    separate = {n for n, layer in layers.items() if layer.separate_inputs}
    assert separate == {n for n in layers if ".attn2.to_k" in n or ".attn2.to_v" in n}
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)  # merges frozen until SELECT
    assert all(layer.lora_A["content"].dtype == torch.float32 for layer in layers.values())
    with pytest.raises(RuntimeError):
        inject_unziplora(unet, RANK)


def test_init_is_deterministic_with_a_generator(pipe):
    a = inject_unziplora(copy.deepcopy(pipe.unet), 4, generator=torch.Generator().manual_seed(3))
    b = inject_unziplora(copy.deepcopy(pipe.unet), 4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[n].lora_B["style"], b[n].lora_B["style"]) for n in a)


def test_remove_restores_plain_unet(unet):
    kw = inputs()
    expected = run(unet, kw)
    originals = {n: unet.get_submodule(n) for n in sdxl_attention_modules({g: 2 for g in SDXL_ATTENTION_GROUPS})}
    processors = {k: type(v) for k, v in unet.attn_processors.items()}
    layers = inject_unziplora(unet, RANK)
    assert not torch.equal(run(unet, kw), expected)  # official init: the update is non-zero at step 0
    layers[f"{FIRST}.attn1.to_q"].fold()
    restored = remove_unziplora(unet)
    assert all(restored[n] is originals[n] and unet.get_submodule(n) is originals[n] for n in originals)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == processors
    # The original modules are back (identity, above): that is the exact part. The outputs get a
    # float tolerance because inject froze the base (requires_grad=False), which may pick another
    # CPU kernel than the run before injection did.
    torch.testing.assert_close(run(unet, kw), expected, atol=1e-5, rtol=1e-5)


def test_equal_prompts_equal_ordinary_attention(unet):
    inject_unziplora(unet, RANK)
    kw = inputs(batch=2)
    e = kw["encoder_hidden_states"]
    separated = run(unet, kw, e, e)
    plain = run(unet, kw)
    unet.set_attn_processor(AttnProcessor2_0())  # diffusers' own processor over our layers
    stock = run(unet, kw)
    torch.testing.assert_close(separated, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(separated, stock, atol=1e-6, rtol=1e-6)


def record_outputs(unet, kw, ec=None, es=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def record(module, args, out) -> None:
            seen[name] = (args[0].detach(), out.detach())

        return record

    handles = [
        unet.get_submodule(f"{FIRST}.{a}.{p}").register_forward_hook(hook(f"{a}.{p}"))
        for a in ("attn1", "attn2")
        for p in ("to_q", "to_k", "to_v", "to_out.0")
    ]
    run(unet, kw, ec, es)
    for h in handles:
        h.remove()
    return seen


def test_different_prompts_change_only_cross_attention_keys_and_values(unet):
    layers = inject_unziplora(unet, RANK)
    kw = inputs()
    ec, es = prompts()
    same = record_outputs(unet, kw)
    diff = record_outputs(unet, kw, ec, es)
    for name in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q"):
        assert torch.equal(same[name][1], diff[name][1]), name
    for name in ("attn2.to_k", "attn2.to_v"):
        base_in, out = diff[name]
        assert torch.equal(base_in, kw["encoder_hidden_states"])  # base weights see the combined prompt
        layer = layers[f"{FIRST}.{name}"]
        expected = base_in @ layer.base_layer.weight.T
        for branch, inp in (("content", ec), ("style", es)):
            expected = expected + (inp @ layer.lora_A[branch].T @ layer.lora_B[branch].T) * layer.gate(branch)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out, same[name][1])
    set_prompt_separation(unet, False)  # ablation: the branches read the combined prompt again
    # Bit-exact on purpose: the same UNet on the same inputs twice in a row (same shapes, same flags,
    # so the same kernels); any difference means the branch prompts still reach the output.
    torch.testing.assert_close(run(unet, kw, ec, es), run(unet, kw), atol=0, rtol=0)


def test_classifier_free_guidance_batch_is_rowwise(unet):
    inject_unziplora(unet, RANK, generator=torch.Generator().manual_seed(0))
    kw = inputs(batch=2)
    ec, es = prompts(batch=2)
    ec[0] = 0.0  # unconditional row: branches see zeros (ALGORITHM 7.1)
    es[0] = 0.0
    both = run(unet, kw, ec, es)
    for row in range(2):
        single = {
            **kw,
            "sample": kw["sample"][row : row + 1],
            "encoder_hidden_states": kw["encoder_hidden_states"][row : row + 1],
        }
        single["added_cond_kwargs"] = {k: v[row : row + 1] for k, v in kw["added_cond_kwargs"].items()}
        torch.testing.assert_close(
            both[row : row + 1], run(unet, single, ec[row : row + 1], es[row : row + 1]), atol=1e-5, rtol=1e-5
        )
    # one row of branch prompts is broadcast over the batch
    torch.testing.assert_close(
        run(unet, kw, ec[1:], es[1:]), run(unet, kw, ec[1:].expand(2, -1, -1), es[1:].expand(2, -1, -1))
    )


def test_mismatched_prompt_shapes_are_refused(unet):
    inject_unziplora(unet, RANK)
    kw = inputs(batch=2)
    with pytest.raises(ValueError, match="token length"):
        run(unet, kw, torch.randn(2, 70, 64), None)
    with pytest.raises(ValueError, match="batch"):
        run(unet, kw, torch.randn(3, 77, 64), None)


def test_modes_and_context_manager(unet):
    layers = inject_unziplora(unet, RANK)
    kw = inputs()
    with mode(unet, "content"):
        assert all(layer.mode == "content" for layer in layers.values())
        content = run(unet, kw)
    assert all(layer.mode == "both" for layer in layers.values())
    set_mode(layers, "style")
    style = run(unet, kw)
    set_mode(unet, "both")
    assert not torch.allclose(content, style)
    with pytest.raises(ValueError):
        set_mode(unet, "all")


@pytest.mark.parametrize("separated", [True, False])
def test_unet_fold_equals_unfolded_and_unfold_restores(unet, separated):
    layers = inject_unziplora(unet, RANK)
    for layer in list(layers.values())[::3]:
        layer.set_mask("style", torch.arange(layer.out_features) % 2 == 0)
        layer.set_mask_active("style", True)
    before = copy.deepcopy(unet.state_dict())
    kw = inputs()
    ec, es = prompts() if separated else (None, None)
    expected = run(unet, kw, ec, es)
    count = fold(unet, include_separate=not separated)
    assert count == (176 - 2 * 22 if separated else 176)  # 22 cross-attentions keep K and V live
    torch.testing.assert_close(run(unet, kw, ec, es), expected, atol=1e-5, rtol=1e-5)
    unfold(unet)
    after = unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_param_groups_and_only_adapters_train(unet):
    layers = inject_unziplora(unet, RANK)
    groups = param_groups(layers, 5e-5, 4e-5, 5e-3, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["content", "style", "merge"]
    assert [len(g["params"]) for g in groups] == [352, 352, 352]
    assert [g["lr"] for g in groups] == [5e-5, 4e-5, 5e-3]
    optimizer = torch.optim.AdamW(groups)
    kw = inputs()
    loss = unet(**kw).sample.square().mean()
    loss.backward()
    with_grad = {n for n, p in unet.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in unet.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    optimizer.step()
    assert all(isinstance(unet.get_submodule(n).base_layer, nn.Linear) for n in layers)


@pytest.mark.parametrize("init", ["official", "zero"])
def test_movement_redraws_the_exact_init_and_measures_what_changed(unet, init):
    from unziplora.method.layer import init_generator
    from unziplora.method.movement import lora_movement

    layers = inject_unziplora(unet, 4, init=init, generator=init_generator(5))
    start = lora_movement(layers, init=init, seed=5)
    for branch in ("content", "style"):  # right after injection nothing moved: the redraw is the init
        assert start[branch]["moved"] == 0.0
        assert start[branch]["relative"] == (0.0 if init == "official" else None)
        assert start["merge"][branch] == {"mean": 1.0, "min": 1.0, "max": 1.0, "rms_change": 0.0}
    layer = next(iter(layers.values()))
    before = layer.lora_B["style"].detach().clone() @ layer.lora_A["style"].detach()
    with torch.no_grad():
        layer.lora_B["style"].add_(0.01)
        layer.merge["content"][0] = 1.5
    after = lora_movement(layers, init=init, seed=5)
    expected = float((layer.lora_B["style"] @ layer.lora_A["style"] - before).detach().norm())
    assert after["style"]["moved"] == pytest.approx(expected, rel=1e-4) and after["content"]["moved"] == 0.0
    assert after["merge"]["content"]["max"] == 1.5 and after["merge"]["content"]["rms_change"] > 0
    if init == "official":  # another seed is another init: far from this one
        assert lora_movement(layers, init=init, seed=6)["content"]["relative"] > 0.5
