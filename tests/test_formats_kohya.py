"""kohya export/import: keys, alpha, metadata, sd-scripts' hashes (FORMATS.md 1–3, 8)."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")

from unziplora.errors import ImportFormatError
from unziplora.formats import io, kohya
from unziplora.formats._keys import join_pairs
from unziplora.formats.metadata import LoraInfo
from unziplora.formats.sgm import sdxl_attention_projections

MODULES = sdxl_attention_projections(depth=2)


def make_sd(rank=4, fan=16, modules=MODULES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return join_pairs({m: (torch.randn(rank, fan, generator=g), torch.randn(fan, rank, generator=g)) for m in modules})


INFO = LoraInfo(
    title="cat sketch — style",
    description="Style half of an UnZipLoRA decomposition",
    trigger_phrase="in sks style",
    date="2025-01-02T03:04:05",
    base_model="stabilityai/stable-diffusion-xl-base-1.0",
    entry_id="cat-sketch-3f2a",
    part="style",
    prompts={"content": "a sks cat", "style": "in sks style", "combined": "a sks cat in sks style"},
    training={"learning_rate": 5e-5, "max_train_steps": 600, "seed": 0, "ss_mixed_precision": "bf16"},
)


def data_region_sha256(path) -> str:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + n :]).hexdigest()


def test_keys_alpha_and_metadata(tmp_path):
    tensors, meta = kohya.to_kohya(make_sd(), dtype="fp16", metadata=INFO)
    assert len(tensors) == 3 * 176
    assert all(k.startswith("lora_unet_") and "down_blocks" not in k for k in tensors)
    alpha = tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha"]
    assert alpha.ndim == 0 and alpha.dtype == torch.float32 and alpha.item() == 4.0
    assert (
        tensors["lora_unet_output_blocks_2_1_transformer_blocks_1_attn2_to_out_0.lora_up.weight"].dtype == torch.float16
    )
    expected = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "4.0",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_v2": "False",
        "ss_output_name": INFO.title,
        "ss_training_comment": INFO.description,
        "ss_sd_model_name": INFO.base_model,
        "ss_learning_rate": "5e-05",
        "ss_max_train_steps": "600",
        "ss_seed": "0",
        "ss_mixed_precision": "bf16",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": INFO.title,
        "modelspec.date": INFO.date,
        "modelspec.resolution": "1024x1024",
        "modelspec.prediction_type": "epsilon",
        "modelspec.trigger_phrase": "in sks style",
        "modelspec.description": INFO.description,
        "unziplora.entry_id": "cat-sketch-3f2a",
        "unziplora.part": "style",
        "unziplora.trigger": "in sks style",
        "unziplora.base_model": INFO.base_model,
    }
    assert expected.items() <= meta.items()
    assert json.loads(meta["unziplora.prompts"]) == dict(INFO.prompts)
    assert "modelspec.hash_sha256" not in meta  # sd-scripts' resize/merge would leave it stale
    assert meta["ss_resolution"] == "(1024, 1024)"
    assert meta["sshs_legacy_hash"] == "e3b0c442"  # < 1 MiB: sha256 of an empty slice
    assert all(isinstance(v, str) for v in meta.values())
    path = io.write_safetensors(tmp_path / "x.safetensors", tensors, meta)
    assert io.read_safetensors_metadata(path) == meta


def test_model_hash_is_the_written_files_data_region(tmp_path):
    tensors, meta = kohya.to_kohya(make_sd(), dtype="fp32", metadata=INFO)
    path = io.write_safetensors(tmp_path / "x.safetensors", tensors, meta)
    assert meta["sshs_model_hash"] == data_region_sha256(path)


def test_legacy_hash_uses_the_ss_only_serialisation_of_a_large_file():
    from safetensors.torch import save

    tensors, meta = kohya.to_kohya(make_sd(rank=8, fan=256), dtype="fp32", metadata=INFO)
    ss_only = save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    assert len(ss_only) > 0x110000
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert meta["sshs_legacy_hash"] != "e3b0c442"


def test_without_info_required_keys_are_still_written():
    _t, meta = kohya.to_kohya(make_sd(), dtype="fp32")
    for key in (
        "ss_network_module",
        "ss_base_model_version",
        "ss_v2",
        "modelspec.title",
        "modelspec.date",
        "sshs_model_hash",
    ):
        assert key in meta


def test_from_kohya_bakes_alpha_and_accepts_both_namings():
    sd = make_sd(modules=MODULES[:2])
    tensors, _ = kohya.to_kohya(sd, dtype="fp32")
    stems = sorted({k.split(".")[0] for k in tensors})  # kohya stems have no dots
    half, absent, zero = dict(tensors), dict(tensors), dict(tensors)
    half[stems[0] + ".alpha"] = torch.tensor(2, dtype=torch.int64)  # int64 alpha as kohya's default writes
    del absent[stems[0] + ".alpha"]
    zero[stems[0] + ".alpha"] = torch.tensor(0.0, dtype=torch.float16)
    module = next(m for m in MODULES[:2] if kohya.diffusers_to_kohya_key(m) == stems[0])
    key = f"unet.{module}.lora_B.weight"
    assert torch.allclose(kohya.from_kohya(half)[key], 0.5 * sd[key])
    assert torch.equal(kohya.from_kohya(absent)[key], sd[key])
    assert torch.equal(kohya.from_kohya(zero)[key], sd[key])  # kohya reads alpha 0 as "= rank"
    # diffusers-block names, as diffusers' convert_state_dict_to_kohya writes them
    renamed = {k.replace(stems[0], "lora_unet_" + module.replace(".", "_")): v for k, v in tensors.items()}
    assert kohya.from_kohya(renamed).keys() == sd.keys()


def test_mixed_ranks_write_one_alpha_and_read_back_exactly():
    sd = {**make_sd(rank=4, modules=MODULES[:3]), **make_sd(rank=2, modules=MODULES[3:4], seed=1)}
    tensors, meta = kohya.to_kohya(sd, dtype="fp32")
    assert {t.item() for k, t in tensors.items() if k.endswith(".alpha")} == {4.0}
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("Dynamic", "Dynamic")  # as resize_lora.py
    back = kohya.from_kohya(tensors)
    for k, value in sd.items():
        assert torch.allclose(back[k], value, atol=1e-6)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8)}, "text encoders"),
        ({"lora_unet_input_blocks_4_1_proj_in.dora_scale": torch.zeros(1)}, "DoRA"),
        ({"lora_unet_input_blocks_4_1_proj_in.lora_mid.weight": torch.zeros(1)}, "not a LoRA tensor"),
        ({"model.diffusion_model.x": torch.zeros(1)}, "not a kohya LoRA key"),
        ({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 8)}, "lacks"),
        (
            {
                "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight": torch.zeros(4, 8, 3, 3),
                "lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight": torch.zeros(8, 4, 1, 1),
            },
            "convolution",
        ),
    ],
)
def test_from_kohya_refuses_what_it_cannot_represent(extra, match):
    tensors, _ = kohya.to_kohya(make_sd(modules=MODULES[:1]), dtype="fp32")
    with pytest.raises(ImportFormatError, match=match):
        kohya.from_kohya({**tensors, **extra})


def test_from_kohya_can_skip_text_encoders():
    tensors, _ = kohya.to_kohya(make_sd(modules=MODULES[:1]), dtype="fp32")
    tensors["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 8)
    assert len(kohya.from_kohya(tensors, skip_text_encoders=True)) == 2


def test_resolve_dtype():
    assert kohya.resolve_dtype("bf16") is torch.bfloat16
    assert kohya.resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError):
        kohya.resolve_dtype("int8")
