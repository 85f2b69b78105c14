"""Weights prepared once per UNet forward (method/step_weights.py) train exactly what the plain path trains.

The plain per-layer path (``step_weights=False``) is the reference: its arithmetic is the one the
dense-reference tests of test_method_layer.py check. A 20-step run of the real training loop
(RESET, SELECT and MASKED phases, orthogonality term, merge training) on the tiny UNet must end
with the same LoRA tensors, merges and masks either way.

The runs are in float64: the tiny random UNet is so ill-conditioned that float32 rounding alone
moves some LoRA gradients by tens of percent (plain fp32 against plain fp64), and Adam's
sign-like first steps turn any such difference into an lr-sized one; in float64 the two paths
agree to about 1e-8 after 20 steps.
"""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch

from unziplora.method import BRANCHES, inject_unziplora
from unziplora.method.step_weights import prepare


def _tiny_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    from unziplora.tiny_sdxl import UNET_CONFIG

    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG)


def _cond(unet: torch.nn.Module) -> SimpleNamespace:
    from unziplora.sdxl import time_ids
    from unziplora.train.loop import Conditioning

    g = torch.Generator().manual_seed(3)
    cross = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    return Conditioning(
        combined=torch.randn(1, 77, cross, generator=g),
        content=torch.randn(1, 77, cross, generator=g),
        style=torch.randn(1, 77, cross, generator=g),
        pooled=torch.randn(1, pooled, generator=g),
        time_ids=time_ids(64, 1, torch.float32, "cpu"),
    )


def _train(unet: torch.nn.Module, step_weights: bool, steps: int = 20) -> tuple[dict, list[float]]:
    """``steps`` steps of the real training loop in float64 (see the module docstring for why)."""
    from diffusers import DDPMScheduler

    from unziplora.method import ColumnSeparation, param_groups
    from unziplora.sdxl import LatentPosterior
    from unziplora.tiny_sdxl import SDXL_SCHEDULER_CONFIG
    from unziplora.train.config import TrainConfig
    from unziplora.train.loop import train_loop

    config = TrainConfig(steps=steps, rank=4, resolution=64, seed=0, sample_times=3)
    unet = unet.to(torch.float64).train()
    layers = inject_unziplora(
        unet, config.rank, dtype=torch.float64, generator=torch.Generator().manual_seed(0), step_weights=step_weights
    )
    columns = ColumnSeparation(layers, steps=steps, sample_times=config.sample_times)
    groups = param_groups(layers, config.content_lr, config.style_lr, config.merge_lr, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, foreach=True)
    g = torch.Generator().manual_seed(7)
    posterior = LatentPosterior(mean=torch.randn(1, 4, 8, 8, generator=g), std=torch.rand(1, 4, 8, 8, generator=g))
    cond = _cond(unet)
    with warnings.catch_warnings():  # CPU autocast has no float64: the loop then runs without it
        warnings.simplefilter("ignore", UserWarning)
        result = train_loop(
            unet=unet,
            layers=layers,
            columns=columns,
            optimizer=optimizer,
            noise_scheduler=DDPMScheduler.from_config(SDXL_SCHEDULER_CONFIG),
            cond=SimpleNamespace(**{k: getattr(cond, k).to(torch.float64) for k in vars(cond)}),
            posterior=posterior,
            config=config,
            generator=torch.Generator().manual_seed(1),
            device="cpu",
            dtype=torch.float64,
            scaler=torch.amp.GradScaler("cpu", enabled=False),
        )
    state = {
        f"{name}.{key}": value.detach().clone()
        for name, layer in layers.items()
        for key, value in layer.state_dict().items()
        if not key.startswith("base_layer.")
    }
    return state, result.losses


@pytest.mark.slow
def test_twenty_steps_give_the_same_loras_as_the_plain_path() -> None:
    base = _tiny_unet()
    fused_state, fused_losses = _train(copy.deepcopy(base), step_weights=True)
    plain_state, plain_losses = _train(base, step_weights=False)
    assert fused_state.keys() == plain_state.keys()
    assert any(k.endswith("mask_content") and v.any() for k, v in fused_state.items())  # a SELECT happened
    for key, plain in plain_state.items():
        if plain.dtype == torch.bool:
            assert torch.equal(fused_state[key], plain), key
        else:
            assert torch.allclose(fused_state[key], plain, rtol=0, atol=1e-5), (
                key,
                (fused_state[key] - plain).abs().max(),
            )
    assert fused_losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6)


def test_a_unet_forward_prepares_every_layer_and_the_prompt_kv_part() -> None:
    unet = _tiny_unet()
    layers = inject_unziplora(unet, 4, generator=torch.Generator().manual_seed(0))
    cond = _cond(unet)
    extra = {"content_encoder_hidden_states": cond.content, "style_encoder_hidden_states": cond.style}
    unet(
        torch.randn(1, 4, 8, 8),
        torch.tensor([10]),
        encoder_hidden_states=cond.combined,
        added_cond_kwargs={"text_embeds": cond.pooled, "time_ids": cond.time_ids},
        cross_attention_kwargs=extra,
    )
    assert all(layer._prepared is not None for layer in layers.values())
    kv = {name for name, layer in layers.items() if layer._prepared[3] is not None}
    assert kv == {name for name, layer in layers.items() if layer.separate_inputs} and kv
    trios = {name for name, layer in layers.items() if layer._prepared_qkv is not None}
    assert trios == {name for name in layers if name.endswith("attn1.to_q")} and trios


def test_prepared_weights_are_dropped_when_a_merge_changes_in_place() -> None:
    unet = _tiny_unet()
    layers = inject_unziplora(unet, 4, generator=torch.Generator().manual_seed(0))
    layer = next(iter(layers.values()))
    x = torch.randn(2, 5, layer.in_features)
    assert prepare([layer]) == 1
    with torch.no_grad():
        layer.merge["style"].mul_(0.5)
    for b in BRANCHES:
        layer.set_mask(b, torch.arange(layer.out_features) % 2 == 0)
        layer.set_mask_active(b, True)
    got = layer(x)
    assert layer._prepared is None  # stale: the plain path ran
    layer.step_weights = False
    assert torch.allclose(got, layer(x), atol=1e-6)
    layer.step_weights = True
    assert prepare([layer]) == 1
    assert torch.allclose(layer(x), got, atol=1e-6)


def test_no_preparation_without_gradients() -> None:
    unet = _tiny_unet()
    layers = inject_unziplora(unet, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert prepare(layers.values()) == 0


def test_a_kv_layer_called_with_other_prompts_takes_the_plain_path() -> None:
    """K/V layers prepared for one pair of prompt embeddings get no down slice: any other
    inputs must give the plain path's output (and drop the prepared weights)."""
    unet = _tiny_unet()
    layers = inject_unziplora(unet, 4, generator=torch.Generator().manual_seed(0))
    kv_layers = [layer for layer in layers.values() if layer.separate_inputs]
    layer = kv_layers[0]
    for b in BRANCHES:
        layer.lora_B[b].data.normal_()  # nonzero deltas, so a wrong path cannot agree by accident
    shape = (1, 7, layer.in_features)
    content, style = torch.randn(shape), torch.randn(shape)
    assert prepare(kv_layers, content, style) == len(kv_layers)
    assert layer._prepared is not None and layer._prepared[0] is None and layer._prepared[3] is not None
    x, other_c, other_s = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    got = layer(x, other_c, other_s)
    assert layer._prepared is None
    layer.step_weights = False
    assert torch.allclose(got, layer(x, other_c, other_s), atol=1e-6)
    plain_kv = layer(x, content, style)
    layer.step_weights = True
    assert prepare(kv_layers, content, style) == len(kv_layers)
    assert torch.allclose(layer(x, content, style), plain_kv, atol=1e-6)  # the prepared K/V part
    assert layer._prepared is not None


def test_preparing_in_small_pieces_trains_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU big groups are prepared in pieces (CPU_CHUNK_BYTES); pieces of one layer (trios
    kept whole) give the same run as one piece per group."""
    from unziplora.method import step_weights

    base = _tiny_unet()
    whole_state, whole_losses = _train(copy.deepcopy(base), step_weights=True, steps=6)
    seen: list[int] = []
    chunks = step_weights._chunks

    def spy(key: tuple, members: list) -> list:
        pieces = chunks(key, members)
        seen.append(len(pieces))
        for piece in pieces:
            for i, layer in enumerate(piece):
                if layer.qkv_peers is not None and layer.qkv_peers[0] is layer:
                    assert tuple(piece[i : i + 3]) == layer.qkv_peers  # a trio stays in one piece
        return pieces

    monkeypatch.setattr(step_weights, "CPU_CHUNK_BYTES", 1)
    monkeypatch.setattr(step_weights, "_chunks", spy)
    piece_state, piece_losses = _train(base, step_weights=True, steps=6)
    assert max(seen) > 1
    for key, value in whole_state.items():
        if value.dtype == torch.bool:
            assert torch.equal(piece_state[key], value), key
        else:
            assert torch.allclose(piece_state[key], value, rtol=0, atol=1e-10), key
    assert piece_losses == pytest.approx(whole_losses, rel=1e-10)
