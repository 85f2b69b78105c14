"""Exported files load in an unmodified diffusers pipeline and do exactly what our factors say.

Each case writes a file, loads it with a fresh tiny pipeline's ``load_lora_weights(path)`` and
compares the UNet output with a reference UNet whose weights had ``up @ down`` added by hand.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unziplora.formats import combine, io, kohya, peft
from unziplora.formats._keys import join_pairs, split_pairs
from unziplora.formats.sgm import sdxl_attention_projections
from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

TINY_PROJECTIONS = sdxl_attention_projections(depth=2)


def _pipe():
    return build_tiny_sdxl_pipeline()


@pytest.fixture(scope="module")
def shapes() -> dict[str, tuple[int, int]]:
    unet = _pipe().unet
    mods = dict(unet.named_modules())
    return {m: (mods[m].in_features, mods[m].out_features) for m in TINY_PROJECTIONS}


def random_lora(shapes, rank: int, seed: int, modules=None, std: float = 0.15) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for m in modules or TINY_PROJECTIONS:
        fan_in, fan_out = shapes[m]
        pairs[m] = (torch.randn(rank, fan_in, generator=g) * std, torch.randn(fan_out, rank, generator=g) * std)
    return join_pairs(pairs)


def unet_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500, 120]),
        "encoder_hidden_states": torch.randn(2, 10, 64, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.randn(2, 6, generator=g),
        },
    }


@torch.no_grad()
def run_unet(unet) -> torch.Tensor:
    return unet(**unet_inputs(), return_dict=False)[0]


@torch.no_grad()
def reference_output(deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """Base UNet with ``ΔW`` added to each projection weight by hand."""
    unet = _pipe().unet
    mods = dict(unet.named_modules())
    for module, delta in deltas.items():
        mods[module].weight += delta.to(mods[module].weight.dtype)
    return run_unet(unet)


def deltas_of(sd, weight: float = 1.0) -> dict[str, torch.Tensor]:
    return {m: weight * (u.double() @ d.double()).float() for m, (d, u) in split_pairs(sd).items()}


def load_and_run(path) -> tuple[torch.Tensor, set[str]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipe = _pipe()
    pipe.load_lora_weights(str(path))
    injected = {n for n, m in pipe.unet.named_modules() if isinstance(m, BaseTunerLayer)}
    return run_unet(pipe.unet), injected


@pytest.fixture(scope="module")
def lora(shapes):
    return random_lora(shapes, rank=4, seed=1)


@pytest.fixture(scope="module")
def base_and_reference(lora):
    return run_unet(_pipe().unet), reference_output(deltas_of(lora))


@pytest.fixture(scope="module")
def rounded_reference(lora):
    return reference_output(deltas_of({k: v.half() for k, v in lora.items()}))


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-5), ("fp16", 1e-3)])
def test_export_loads_in_diffusers(tmp_path, lora, base_and_reference, rounded_reference, fmt, dtype, tol):
    base, reference = base_and_reference
    effect = (reference - base).abs().max().item()
    assert effect > 100 * tol, "the LoRA must visibly change the output for the test to mean anything"
    convert = kohya.to_kohya if fmt == "kohya" else peft.to_diffusers
    tensors, meta = convert(lora, dtype=dtype, metadata=None)
    assert {t.dtype for k, t in tensors.items() if not k.endswith(".alpha")} == {kohya.resolve_dtype(dtype)}
    path = io.write_safetensors(tmp_path / f"{fmt}.safetensors", tensors, meta)
    out, injected = load_and_run(path)
    assert injected == set(TINY_PROJECTIONS)
    assert len(injected) == 176
    assert (out - reference).abs().max().item() <= tol
    if dtype == "fp16":
        # Against factors rounded to fp16 by hand the load itself is exact: all the error is storage rounding.
        assert (out - rounded_reference).abs().max().item() <= 1e-5


def test_diffusers_file_in_folder_with_default_name(tmp_path, lora, base_and_reference):
    """`load_lora_weights(folder)` finds our file by diffusers' default weight name."""
    tensors, meta = peft.to_diffusers(lora, dtype="fp32")
    io.write_safetensors(tmp_path / peft.DIFFUSERS_WEIGHT_NAME, tensors, meta)
    out, injected = load_and_run(tmp_path)
    assert injected == set(TINY_PROJECTIONS)
    assert (out - base_and_reference[1]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_exact_sum_with_mixed_ranks_loads_as_the_sum(tmp_path, shapes, fmt):
    """0.7·A (rank 4, all modules) − 0.4·B (rank 2, half the modules) -> ranks 6 and 4 in one file."""
    first = random_lora(shapes, rank=4, seed=2)
    second = random_lora(shapes, rank=2, seed=3, modules=TINY_PROJECTIONS[::2])
    summed = combine.exact_sum_state_dicts([(first, 0.7), (second, -0.4)])
    ranks = {d.shape[0] for d, _u in split_pairs(summed).values()}
    assert ranks == {6, 4}
    expected = deltas_of(first, 0.7)
    for m, delta in deltas_of(second, -0.4).items():
        expected[m] = expected[m] + delta
    convert = kohya.to_kohya if fmt == "kohya" else peft.to_diffusers
    tensors, meta = convert(summed, dtype="fp32")
    if fmt == "kohya":
        # One alpha for all modules (the majority rank), r/alpha baked into up: per-module alphas
        # would hit diffusers' alpha_pattern bug (FORMATS.md 5).
        assert meta["ss_network_dim"] == "Dynamic"
        assert meta["ss_network_alpha"] == "Dynamic"  # as resize_lora.py writes for mixed ranks
        assert {float(t) for k, t in tensors.items() if k.endswith(".alpha")} == {6.0}
    path = io.write_safetensors(tmp_path / "sum.safetensors", tensors, meta)
    out, injected = load_and_run(path)
    assert injected == set(TINY_PROJECTIONS)
    assert (out - reference_output(expected)).abs().max().item() <= 1e-5


def test_reimported_kohya_file_equals_original(tmp_path, lora):
    tensors, meta = kohya.to_kohya(lora, dtype="fp32")
    path = io.write_safetensors(tmp_path / "k.safetensors", tensors, meta)
    read, header = io.read_safetensors(path)
    assert peft.detect_format(read) == "kohya"
    back = kohya.from_kohya(read)
    assert back.keys() == lora.keys()
    assert all(torch.equal(back[k], lora[k]) for k in lora)
    assert header == meta
