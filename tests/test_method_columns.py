"""Column separation: hand-computed selections, the RESET/SELECT schedule, resume, ablation flags."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unziplora.method import (
    ColumnSeparation,
    Phase,
    UnZipLoRALinear,
    adapter_state_dict,
    column_scores,
    inject_unziplora,
    load_adapter_state_dict,
    lora_state_dict,
    param_groups,
    select_columns,
    selection,
    top_k_columns,
)

BOTH_NAME = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
CONTENT_SPARSE_NAME = "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k"
STYLE_SPARSE_NAME = "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
R, M, S, A = Phase.RESET, Phase.MASKED, Phase.SELECT, Phase.ACCUMULATE


def toy_layers(seed: int = 0) -> dict[str, UnZipLoRALinear]:
    torch.manual_seed(seed)
    return {
        BOTH_NAME: UnZipLoRALinear(nn.Linear(8, 20), 4),
        CONTENT_SPARSE_NAME: UnZipLoRALinear(nn.Linear(6, 10), 4),
        STYLE_SPARSE_NAME: UnZipLoRALinear(nn.Linear(8, 10), 4),
    }


def toy_loss(layers: dict[str, UnZipLoRALinear], step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    loss = torch.zeros(())
    for layer in layers.values():
        x = torch.randn(4, layer.in_features, generator=g)
        target = torch.randn(4, layer.out_features, generator=g)
        loss = loss + (layer(x) - target).square().mean()
    return loss


def train(layers, cs: ColumnSeparation, optimizer, steps: range, log: list | None = None) -> None:
    """The loop shape documented in ColumnSeparation's docstring."""
    for step in steps:
        loss = toy_loss(layers, step)
        extra = cs.ortho_loss(layers)
        if extra is not None:
            loss = loss + extra
        loss.backward()
        phase = cs.after_backward(step)
        if log is not None:
            log.append((phase, extra is not None, {n: l.merge["content"].grad is not None for n, l in layers.items()}))
        optimizer.step()
        cs.after_optimizer_step(step)
        optimizer.zero_grad(set_to_none=True)


def make(layers, **kw) -> tuple[ColumnSeparation, torch.optim.Optimizer]:
    cs = ColumnSeparation(layers, steps=12, sample_times=3, column_ratio=0.3, **kw)
    optimizer = torch.optim.AdamW(param_groups(layers, 1e-2, 1e-2, 0.5, 1e-4))
    return cs, optimizer


# ---------------------------------------------------------------------------------- schedule
def test_phase_timeline_matches_algorithm_4_1():
    cs = ColumnSeparation(toy_layers(), steps=12, sample_times=3)
    assert cs.period == 4
    assert [cs.phase(g) for g in range(12)] == [R, S, M, M, R, S, M, M, R, S, M, M]
    cs2 = ColumnSeparation(toy_layers(), steps=12, sample_times=3, steps_per_epoch=2)
    assert [cs2.phase(g) for g in range(8)] == [R, A, S, M, R, A, S, M]
    paper = ColumnSeparation(toy_layers(), steps=600, sample_times=3)
    assert [g for g in range(600) if paper.phase(g) is S] == [1, 201, 401]
    assert [g for g in range(600) if paper.phase(g) is R] == [0, 200, 400]
    off = ColumnSeparation(toy_layers(), steps=12, enabled=False)
    assert {off.phase(g) for g in range(12)} == {Phase.OFF}
    assert ColumnSeparation(toy_layers(), steps=12, sample_times=3, steps_per_epoch=4).selects_nothing
    assert not cs2.selects_nothing and not off.selects_nothing


# ---------------------------------------------------------------------------------- hand-computed selection
def test_top_k_exact_k_and_tie_breaks():
    score = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1])
    tiebreak = torch.tensor([1.0, 0.0, 3.0, 2.0, 9.0])
    assert top_k_columns(score, tiebreak, 3).nonzero().flatten().tolist() == [1, 2, 3]  # 0.9, then ties by cone sum
    flat = torch.zeros(6)
    assert top_k_columns(flat, flat, 2).nonzero().flatten().tolist() == [
        0,
        1,
    ]  # official picks 0 here; we take exactly k
    exclude = torch.tensor([False, True, True, False, False])
    assert top_k_columns(score, tiebreak, 2, exclude).nonzero().flatten().tolist() == [0, 3]
    assert top_k_columns(score, tiebreak, 4, exclude).nonzero().flatten().tolist() == [0, 3, 4]  # only 3 remain
    assert not top_k_columns(score, tiebreak, 0).any()


def test_column_score_hand_example():
    layer = UnZipLoRALinear(nn.Linear(2, 2, bias=False), 1)
    with torch.no_grad():
        layer.lora_A["content"].copy_(torch.tensor([[1.0, 2.0]]))
        layer.lora_B["content"].copy_(torch.tensor([[1.0], [3.0]]))
        layer.merge["content"].copy_(torch.tensor([1.0, 0.5]))
    layer.lora_A["content"].grad = torch.tensor([[0.5, 0.0]])
    layer.lora_B["content"].grad = torch.tensor([[0.0], [1e-12]])
    # Δ = B A = [[1, 2], [3, 6]];  D = m * (B dA + dB A) = [[0.5, 0], [0.75 + 5e-13, 1e-12]];  C = Δ ⊙ D
    score, cone = column_scores(layer, "content", threshold=1e-10)
    torch.testing.assert_close(score, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(cone, torch.tensor([0.5, 2.25 + 6e-12]))
    # gradients still carrying a loss scale of 1e-3 mean the true cone is 1000x larger
    score, _ = column_scores(layer, "content", threshold=1e-10, grad_scale=1e-3)
    torch.testing.assert_close(score, torch.tensor([0.5, 1.0]))
    assert not column_scores(layer, "style")[0].any()  # no gradients, no score


def fake_scores(monkeypatch, rounds: dict[str, list[float]]) -> None:
    monkeypatch.setattr(
        selection,
        "column_scores",
        lambda layer, branch, **kw: (torch.tensor(rounds[branch]), torch.zeros(len(rounds[branch]))),
    )


def test_select_both_sparse_avoid_and_union(monkeypatch):
    layer = UnZipLoRALinear(nn.Linear(4, 6), 2)
    fake_scores(monkeypatch, {"content": [0.9, 0.8, 0.1, 0.1, 0.0, 0.7], "style": [0.9, 0.1, 0.6, 0.5, 0.4, 0.95]})
    gained = select_columns(layer, "both", 3)
    assert layer.mask("content").nonzero().flatten().tolist() == [0, 1, 5]
    assert layer.mask("style").nonzero().flatten().tolist() == [2, 3, 4]  # avoids 5 and 0 although they score best
    assert gained == {"content": 3, "style": 3} and layer.mask_active("content") and layer.mask_active("style")
    # round 2: content now wants column 2 (style's): union, overlap appears; style avoids all of content's
    fake_scores(monkeypatch, {"content": [0.0, 0.0, 0.9, 0.8, 0.0, 0.7], "style": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]})
    gained = select_columns(layer, "both", 3)
    assert layer.mask("content").nonzero().flatten().tolist() == [0, 1, 2, 3, 5]
    assert layer.mask("style").nonzero().flatten().tolist() == [2, 3, 4]  # only column 4 was left to take
    assert gained == {"content": 2, "style": 0}
    # without the avoid rule style takes its own top-k
    free = UnZipLoRALinear(nn.Linear(4, 6), 2)
    fake_scores(monkeypatch, {"content": [0.9, 0.8, 0.1, 0.1, 0.0, 0.7], "style": [0.9, 0.1, 0.6, 0.5, 0.4, 0.95]})
    select_columns(free, "both", 3, avoid=False)
    assert free.mask("style").nonzero().flatten().tolist() == [0, 2, 5]


def test_select_one_sided_blocks(monkeypatch):
    fake_scores(monkeypatch, {"content": [0.1, 0.2, 0.3, 0.4], "style": [0.4, 0.3, 0.2, 0.1]})
    layer = UnZipLoRALinear(nn.Linear(4, 4), 2)
    select_columns(layer, "content_sparse", 2)
    assert layer.mask("content").tolist() == [False, False, True, True] and layer.mask("style").all()
    layer = UnZipLoRALinear(nn.Linear(4, 4), 2)
    select_columns(layer, "style_sparse", 2)
    assert layer.mask("style").tolist() == [True, True, False, False] and layer.mask("content").all()


def test_ortho_loss_formula():
    layers = toy_layers()
    cs = ColumnSeparation(layers, steps=12, similarity_lambda=0.5)
    assert cs.ortho_loss() is None
    cs.ortho_on = True
    with torch.no_grad():
        for layer in layers.values():
            layer.merge["content"].uniform_(0, 1)
            layer.merge["style"].uniform_(0, 1)
    both = layers[BOTH_NAME]
    both.set_mask("content", torch.arange(20) < 12)
    both.set_mask("style", torch.arange(20) >= 8)
    for b in ("content", "style"):
        both.set_mask_active(b, True)
    cs._ortho_cache = None
    terms = []
    for layer in layers.values():
        prod = layer.merge["content"] * layer.merge["style"]
        if layer is both:
            prod = prod * ((torch.arange(20) >= 8) & (torch.arange(20) < 12)).float()
        terms.append(prod.abs().mean())
    torch.testing.assert_close(cs.ortho_loss(layers), 0.5 * torch.stack(terms).mean())


# ---------------------------------------------------------------------------------- the scheduler in a loop
def test_short_schedule_on_toy_layers():
    layers = toy_layers()
    cs, optimizer = make(layers)
    log: list = []
    train(layers, cs, optimizer, range(12), log)
    assert [p for p, _, _ in log] == [R, S, M, M, R, S, M, M, R, S, M, M]
    assert [o for _, o, _ in log] == [False, False, True, True, True, False, True, True, True, False, True, True]
    assert [all(g.values()) for _, _, g in log] == [
        False,
        False,
        True,
        True,
        True,
        False,
        True,
        True,
        True,
        False,
        True,
        True,
    ]
    assert [h["step"] for h in cs.history] == [1, 5, 9]
    counts = cs.column_counts()
    assert counts[CONTENT_SPARSE_NAME]["style"] == 10 and counts[STYLE_SPARSE_NAME]["content"] == 10
    assert cs.history[0]["gained"][BOTH_NAME] == {"content": 6, "style": 6}  # exactly floor(20 * 0.3)
    assert not (layers[BOTH_NAME].mask("content") & layers[BOTH_NAME].mask("style")).any() or len(cs.history) > 1
    for layer in layers.values():
        for b in ("content", "style"):
            assert 0.0 <= layer.merge[b].min() and layer.merge[b].max() <= 1.0
    cs.finalize()
    assert all(layer.mask_active(b) for layer in layers.values() for b in ("content", "style"))
    assert not any(p.requires_grad for layer in layers.values() for p in layer.merge.values())
    assert cs.ortho_loss() is None


def test_merge_grads_are_masked_to_the_overlap_on_masked_and_reset_steps():
    layers = toy_layers()
    cs, optimizer = make(layers)
    train(layers, cs, optimizer, range(2))  # RESET, SELECT
    for step in (2, 4):  # MASKED and RESET
        loss = toy_loss(layers, step) + cs.ortho_loss()
        loss.backward()
        cs.after_backward(step)
        for layer in layers.values():
            overlap = layer.mask("content") & layer.mask("style")
            for b in ("content", "style"):
                grad = layer.merge[b].grad
                assert grad is not None and not grad[~overlap].any()
                assert grad[overlap].any() or not overlap.any()
        optimizer.step()
        cs.after_optimizer_step(step)
        optimizer.zero_grad(set_to_none=True)
        if step == 2:
            train(layers, cs, optimizer, range(3, 4))
    assert not layers[CONTENT_SPARSE_NAME].mask_active("content")  # RESET switched masks off


def test_resume_from_state_is_bit_exact():
    layers = toy_layers()
    cs, optimizer = make(layers)
    train(layers, cs, optimizer, range(12))

    first = toy_layers()
    cs1, opt1 = make(first)
    train(first, cs1, opt1, range(6))
    saved = copy.deepcopy((adapter_state_dict(first), cs1.state_dict(), opt1.state_dict()))
    resumed = toy_layers()  # fresh objects over the same base weights; scramble the adapters
    with torch.no_grad():
        for layer in resumed.values():
            layer.reset_parameters(generator=torch.Generator().manual_seed(99))
    cs2, opt2 = make(resumed)
    load_adapter_state_dict(resumed, saved[0])
    cs2.load_state_dict(saved[1])
    opt2.load_state_dict(saved[2])
    train(resumed, cs2, opt2, range(6, 12))
    for name in layers:
        for key, value in adapter_state_dict({name: layers[name]}).items():
            assert torch.equal(value, adapter_state_dict({name: resumed[name]})[key]), key
    assert cs2.column_counts() == cs.column_counts()
    with pytest.raises(ValueError, match="different settings"):
        ColumnSeparation(resumed, steps=13).load_state_dict(saved[1])


def test_column_separation_off_is_plain_joint_training():
    layers = toy_layers()
    cs, optimizer = make(layers, enabled=False)
    log: list = []
    train(layers, cs, optimizer, range(12), log)
    assert {p for p, _, _ in log} == {Phase.OFF} and not any(o for _, o, _ in log)
    cs.finalize()
    for name, layer in layers.items():
        assert torch.equal(layer.merge["content"], torch.ones(layer.out_features))
        assert not layer.mask_active("content") and not layer.mask("content").any()
        torch.testing.assert_close(
            lora_state_dict(layers, "content")[f"unet.{name}.lora_B.weight"], layer.lora_B["content"].detach()
        )


def test_block_separation_off_makes_every_layer_both_sparse():
    layers = toy_layers()
    cs, optimizer = make(layers, block_separation=False)
    assert set(cs.blocks.values()) == {"both"}
    train(layers, cs, optimizer, range(2))
    assert cs.column_counts()[CONTENT_SPARSE_NAME] == {"content": 3, "style": 3}
    assert set(ColumnSeparation(toy_layers(), steps=12).blocks.values()) == {
        "both",
        "content_sparse",
        "style_sparse",
    }


# ---------------------------------------------------------------------------------- the tiny SDXL base
def test_short_schedule_on_tiny_base_visits_reset_and_select():
    from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

    unet = build_tiny_sdxl_pipeline().unet
    layers = inject_unziplora(unet, 8, generator=torch.Generator().manual_seed(0))
    cs = ColumnSeparation(layers, steps=12, sample_times=3, column_ratio=0.1)
    optimizer = torch.optim.AdamW(param_groups(layers, 1e-3, 1e-3, 5e-2))
    g = torch.Generator().manual_seed(0)
    latents, emb = torch.randn(1, 4, 8, 8, generator=g), torch.randn(3, 77, 64, generator=g)
    cond = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    phases, ortho = [], []
    for step in range(12):
        noise = torch.randn(latents.shape, generator=g)
        kwargs = {"content_encoder_hidden_states": emb[1:2], "style_encoder_hidden_states": emb[2:3]}
        pred = unet(
            latents + noise, torch.tensor([500]), emb[:1], added_cond_kwargs=cond, cross_attention_kwargs=kwargs
        ).sample
        loss = (pred - noise).square().mean()
        extra = cs.ortho_loss(layers)
        ortho.append(extra is not None)
        loss = loss + extra if extra is not None else loss
        loss.backward()
        phases.append(cs.after_backward(step))
        optimizer.step()
        cs.after_optimizer_step(step)
        optimizer.zero_grad(set_to_none=True)
    cs.finalize()
    assert phases == [R, S, M, M, R, S, M, M, R, S, M, M]
    assert ortho == [False, False, True, True, True, False, True, True, True, False, True, True]
    first = cs.history[0]["gained"]
    for name, layer in layers.items():
        k = layer.out_features // 10  # 6 of 64, 12 of 128
        block = cs.blocks[name]
        if block in ("both", "content_sparse"):
            assert first[name]["content"] == k
        if block in ("both", "style_sparse"):
            assert first[name]["style"] == k
        counts = cs.column_counts()[name]
        assert counts["content"] == layer.out_features if block == "style_sparse" else k <= counts["content"] <= 3 * k
        assert counts["style"] == layer.out_features if block == "content_sparse" else counts["style"] <= 3 * k
    assert set(cs.group_counts()) == {n.split(".transformer_blocks.")[0] for n in layers}
