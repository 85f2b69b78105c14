"""Exact sums, merge folding and rank reduction (FORMATS.md 6.1, 6.3, 8.5)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from unziplora.formats import combine
from unziplora.formats._keys import join_pairs, split_pairs


def factors(rank, fan_in=12, fan_out=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, fan_in, generator=g, dtype=dtype), torch.randn(fan_out, rank, generator=g, dtype=dtype)


def small_sd(rank, seed, modules=("m.a", "m.b", "m.c"), dtype=torch.float32):
    return join_pairs({m: factors(rank, seed=seed + i, dtype=dtype) for i, m in enumerate(modules)})


def test_exact_sum_is_exact_with_signs_and_ranks():
    d1, u1 = factors(4, seed=1)
    d2, u2 = factors(2, seed=2)
    down, up = combine.exact_sum([(d1, u1, 0.7), (d2, u2, -0.4)])
    assert down.shape == (6, 12) and up.shape == (10, 6)
    expected = 0.7 * u1 @ d1 - 0.4 * u2 @ d2
    assert torch.allclose(up @ down, expected, atol=1e-12)
    # sqrt split: both factors carry sqrt|w|, the sign sits on up
    assert torch.allclose(down[4:], math.sqrt(0.4) * d2) and torch.allclose(up[:, 4:], -math.sqrt(0.4) * u2)


def test_exact_sum_state_dicts_with_partial_coverage():
    a = small_sd(4, seed=0)
    b = small_sd(2, seed=10, modules=("m.b",))
    out = split_pairs(combine.exact_sum_state_dicts([(a, 1.0), (b, 2.0)]))
    assert {m: d.shape[0] for m, (d, _u) in out.items()} == {"m.a": 4, "m.b": 6, "m.c": 4}
    pa, pb = split_pairs(a), split_pairs(b)
    d, u = out["m.b"]
    assert torch.allclose(u @ d, pa["m.b"][1] @ pa["m.b"][0] + 2 * pb["m.b"][1] @ pb["m.b"][0], atol=1e-4)
    assert torch.equal(out["m.a"][0], pa["m.a"][0])


def test_fold_merge_scales_up_rows():
    _down, up = factors(3, dtype=torch.float16)
    merge = torch.linspace(0, 1, up.shape[0])
    folded = combine.fold_merge(up, merge)
    assert folded.dtype == torch.float16
    assert torch.allclose(folded.float(), up.float() * merge[:, None], atol=1e-3)
    with pytest.raises(ValueError):
        combine.fold_merge(up, torch.ones(up.shape[0] + 1))


def test_combine_parts_folds_merges_then_sums():
    content, style = small_sd(4, seed=0), small_sd(2, seed=5)
    masks = {}
    for i, m in enumerate(("m.a", "m.b", "m.c")):
        masks[f"{m}.merge_content"] = torch.rand(10, generator=torch.Generator().manual_seed(i))
        masks[f"{m}.merge_style"] = torch.rand(10, generator=torch.Generator().manual_seed(100 + i))
    out = split_pairs(combine.combine_parts(content, style, masks))
    pc, ps = split_pairs(content), split_pairs(style)
    for m, (d, u) in out.items():
        expected = masks[f"{m}.merge_content"][:, None] * (pc[m][1] @ pc[m][0]) + masks[f"{m}.merge_style"][:, None] * (
            ps[m][1] @ ps[m][0]
        )
        assert torch.allclose(u @ d, expected, atol=1e-4)
    with pytest.raises(ValueError, match="merge_style"):
        combine.combine_parts(content, style, {k: v for k, v in masks.items() if "style" not in k})


def test_reduce_rank_at_full_rank_reproduces_the_update():
    down, up = factors(5)
    for rank in (5, 8):
        d, u, err = combine.reduce_rank(down, up, rank)
        assert d.shape == (5, 12) and u.shape == (10, 5)
        assert torch.allclose(u @ d, up @ down, atol=1e-10)
        assert err < 1e-7


def test_reduce_rank_error_is_the_measured_error_and_optimal():
    down, up = factors(6, fan_in=20, fan_out=16, dtype=torch.float32)
    full = up.double() @ down.double()
    d, u, err = combine.reduce_rank(down, up, 2)
    assert d.shape == (2, 20) and u.shape == (16, 2) and d.dtype == torch.float32
    measured = torch.linalg.norm(full - u.double() @ d.double()) / torch.linalg.norm(full)
    assert err == pytest.approx(measured.item(), rel=1e-5)
    s = torch.linalg.svdvals(full)  # Eckart–Young: the best rank-2 error
    assert err == pytest.approx(math.sqrt((s[2:] ** 2).sum() / (s**2).sum()), rel=1e-9)
    # all singular values go into up; down has orthonormal rows (kohya resize_lora's convention)
    assert torch.allclose(d.double() @ d.double().T, torch.eye(2, dtype=torch.float64), atol=1e-5)


def test_reduce_rank_of_a_zero_update_and_bad_rank():
    down, up = torch.zeros(3, 8), torch.zeros(5, 3)
    d, u, err = combine.reduce_rank(down, up, 2)
    assert err == 0.0 and torch.count_nonzero(u @ d) == 0
    with pytest.raises(ValueError):
        combine.reduce_rank(down, up, 0)


def test_reduce_rank_state_dict_overall_error():
    sd = small_sd(6, seed=3)
    full, overall = combine.reduce_rank_state_dict(sd, 6)
    assert overall < 1e-6
    for m, (d, u) in split_pairs(full).items():
        d0, u0 = split_pairs(sd)[m]
        assert torch.allclose(u @ d, u0 @ d0, atol=1e-4)
    reduced, overall = combine.reduce_rank_state_dict(sd, 3)
    num = den = 0.0
    for m, (d, u) in split_pairs(reduced).items():
        assert d.shape[0] == 3
        d0, u0 = split_pairs(sd)[m]
        ref = u0.double() @ d0.double()
        num += (torch.linalg.norm(ref - u.double() @ d.double()) ** 2).item()
        den += (torch.linalg.norm(ref) ** 2).item()
    assert overall == pytest.approx(math.sqrt(num / den), rel=1e-5)
