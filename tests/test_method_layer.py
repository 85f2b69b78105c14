"""UnZipLoRALinear against an explicit dense reference, folding, dtypes, state (ALGORITHM.md 1)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from unziplora.method import BRANCHES, UnZipLoRALinear

IN, OUT, RANK = 12, 10, 3


def make_layer(seed: int = 0, bias: bool = True, separate: bool = False) -> UnZipLoRALinear:
    torch.manual_seed(seed)
    layer = UnZipLoRALinear(nn.Linear(IN, OUT, bias=bias), RANK, separate_inputs=separate)
    with torch.no_grad():
        for b in BRANCHES:  # non-trivial merges and masks
            layer.merge[b].uniform_(0.2, 1.0)
            layer.set_mask(b, torch.rand(OUT) > 0.4)
    return layer


def dense_reference(layer: UnZipLoRALinear, x, xc, xs):
    """``W x + b + (B_c A_c x_c) * g_c + (B_s A_s x_s) * g_s`` with dense ``B A`` products."""
    y = x @ layer.base_layer.weight.T
    if layer.base_layer.bias is not None:
        y = y + layer.base_layer.bias
    for branch, inp in (("content", xc), ("style", xs)):
        if layer.mode not in ("both", branch):
            continue
        scale = layer.scale_content if branch == "content" else layer.scale_style
        gate = torch.full((OUT,), scale)
        if layer.mode == "both":
            gate = gate * layer.merge[branch]
        if layer.mask_active(branch):
            gate = gate * layer.mask(branch).float()
        dense = layer.lora_B[branch] @ layer.lora_A[branch]  # [out, in]
        y = y + (inp @ dense.T) * gate
    return y


CASES = [
    pytest.param(
        mode,
        active,
        separate,
        scales,
        id=f"{mode}-{'+'.join(active) or 'nomask'}-{'sep' if separate else 'shared'}-s{scales[0]}",
    )
    for mode, active, separate, scales in itertools.product(
        ("both", "content", "style"), ((), ("content",), ("content", "style")), (False, True), ((1.0, 1.0), (0.7, 1.3))
    )
]


@pytest.mark.parametrize("mode,active,separate,scales", CASES)
def test_forward_and_grads_match_dense_reference(mode, active, separate, scales):
    layer = make_layer()
    layer.mode = mode
    layer.scale_content, layer.scale_style = scales
    for b in active:
        layer.set_mask_active(b, True)
    for p in layer.merge.values():
        p.requires_grad_(True)
    torch.manual_seed(1)
    x = torch.randn(2, 5, IN, requires_grad=True)
    xc = torch.randn(2, 5, IN, requires_grad=True) if separate else x
    xs = torch.randn(2, 5, IN, requires_grad=True) if separate else x
    weight = torch.randn(2, 5, OUT)
    params = [
        x,
        *(xc, xs)[: 2 if separate else 0],
        *layer.lora_A.values(),
        *layer.lora_B.values(),
        *layer.merge.values(),
    ]

    ours = layer(x, content_input=xc if separate else None, style_input=xs if separate else None)
    g_ours = torch.autograd.grad((ours * weight).sum(), params, allow_unused=True)
    ref = dense_reference(layer, x, xc, xs)
    g_ref = torch.autograd.grad((ref * weight).sum(), params, allow_unused=True)

    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, g_ref):
        if a is None or b is None:
            assert (a is None or not a.abs().any()) and (b is None or not b.abs().any())
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gate_semantics():
    layer = make_layer()
    layer.set_mask_active("content", True)
    layer.scale_style = 0.5
    torch.testing.assert_close(layer.gate("content"), layer.merge["content"] * layer.mask("content").float())
    torch.testing.assert_close(layer.gate("style"), 0.5 * layer.merge["style"])
    layer.mode = "content"  # standalone modes ignore the merges
    torch.testing.assert_close(layer.gate("content"), layer.mask("content").float())
    assert not layer.gate("style").any()
    with pytest.raises(ValueError):
        layer.mode = "neither"


def test_official_init_statistics_and_zero_init():
    torch.manual_seed(0)
    layer = UnZipLoRALinear(nn.Linear(640, 640), 64)
    for b in BRANCHES:
        assert abs(layer.lora_A[b].std().item() - 1 / 64) < 1e-3
        assert abs(layer.lora_B[b].std().item() - 1 / 64) < 1e-3
        assert torch.equal(layer.merge[b], torch.ones(640))
        assert not layer.mask(b).any() and not layer.mask_active(b)
    zero = UnZipLoRALinear(nn.Linear(IN, OUT), RANK, init="zero")
    x = torch.randn(4, IN)
    torch.testing.assert_close(zero(x), zero.base_layer(x))


@pytest.mark.parametrize("mode", ["both", "content", "style"])
@pytest.mark.parametrize("separate", [False, True])
def test_fold_then_run_equals_unfolded_and_unfold_restores(mode, separate):
    layer = make_layer(separate=separate)
    layer.mode = mode
    layer.set_mask_active("style", True)
    layer.scale_content = 0.8
    before = layer.base_layer.weight.detach().clone()
    x, xc, xs = torch.randn(3, IN), torch.randn(3, IN), torch.randn(3, IN)
    kwargs = {"content_input": xc, "style_input": xs} if separate else {}
    expected = layer(x, **kwargs)

    folded = layer.fold()
    if separate:  # prompt-separated K/V: nothing folded, branches stay live
        assert folded == ()
    else:
        assert set(folded) == set(layer.branches_in_mode())
    torch.testing.assert_close(layer(x, **kwargs), expected, atol=1e-5, rtol=1e-5)
    assert layer.fold() == folded  # idempotent: refolding never stacks
    torch.testing.assert_close(layer(x, **kwargs), expected, atol=1e-5, rtol=1e-5)
    layer.unfold()
    assert torch.equal(layer.base_layer.weight, before)

    # "fold everything" (single prompt): equals running with all inputs equal to x
    single = layer(x)
    assert layer.fold(include_separate=True)
    torch.testing.assert_close(layer(x), single, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError):
        layer.mode = "content" if mode != "content" else "style"
    layer.unfold()
    assert torch.equal(layer.base_layer.weight, before)
    assert not {"_fold_fix_index", "_fold_fix_value"} & set(dict(layer.named_buffers()))


def test_fold_half_precision_base_restores_bit_exactly():
    layer = make_layer()
    layer.base_layer.to(torch.float16)
    before = layer.base_layer.weight.detach().clone()
    layer.fold()
    assert not torch.equal(layer.base_layer.weight, before)
    layer.unfold()
    assert torch.equal(layer.base_layer.weight, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fold_keeps_no_copy_of_the_weight(dtype):
    """Issue 13: folding keeps only the few entries that (w + d) - d does not give back, not a copy of w."""
    torch.manual_seed(3)
    layer = UnZipLoRALinear(nn.Linear(256, 512), 8)
    with torch.no_grad():
        for b in BRANCHES:
            layer.lora_B[b].normal_(0, 0.004)  # deltas about 5% of the weights
    layer.base_layer.to(dtype)
    before = layer.base_layer.weight.detach().clone()
    layer.fold()
    kept = sum(t.numel() * t.element_size() for n, t in layer._buffers.items() if n.startswith("_fold_fix"))
    assert not torch.equal(layer.base_layer.weight, before)
    assert kept < 0.2 * before.numel() * before.element_size()
    layer.unfold()
    assert torch.equal(layer.base_layer.weight, before)


def test_changing_a_folded_branch_is_refused_at_unfold():
    layer = make_layer()
    layer.fold()
    with torch.no_grad():
        layer.lora_A["content"].mul_(2)  # the delta to subtract is no longer the one added
    with pytest.raises(RuntimeError, match="changed while folded"):
        layer.unfold()


def test_trainable_tensors_stay_fp32_under_autocast():
    layer = make_layer()
    layer.base_layer.to(torch.bfloat16)
    x = torch.randn(4, IN, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().sum().backward()
    for store in (layer.lora_A, layer.lora_B):
        for p in store.values():
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
    # without autocast a half-precision base still works: LoRA math runs in fp32, output in bf16
    assert layer(x).dtype == torch.bfloat16


def test_buffers_move_and_round_trip(tmp_path):
    layer = make_layer()
    layer.set_mask_active("content", True)
    half = make_layer().to(torch.float64)
    assert half.lora_A["content"].dtype == torch.float64 and half.mask("content").dtype == torch.bool
    path = tmp_path / "layer.pt"
    torch.save(layer.state_dict(), path)
    other = make_layer(seed=5)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.mask_active("content") and not other.mask_active("style")
    x = torch.randn(3, IN)
    torch.testing.assert_close(other(x), layer(x))


def test_only_adapter_parameters_get_gradients():
    layer = make_layer()
    layer.base_layer.requires_grad_(False)
    layer(torch.randn(3, IN)).sum().backward()
    assert layer.base_layer.weight.grad is None
    assert all(p.grad is not None for p in [*layer.lora_A.values(), *layer.lora_B.values()])
    assert all(p.grad is not None for p in layer.merge.values())  # requires_grad is the scheduler's business


def test_unselected_rows_of_b_get_zero_gradient():
    layer = make_layer()
    layer.set_mask_active("content", True)
    layer(torch.randn(3, IN)).sum().backward()
    off = ~layer.mask("content")
    assert not layer.lora_B["content"].grad[off].any()
