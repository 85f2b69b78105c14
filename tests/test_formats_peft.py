"""diffusers/PEFT export header, format detection, and reading every diffusers-era key spelling."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from unziplora.errors import ImportFormatError
from unziplora.formats import kohya, peft
from unziplora.formats._keys import join_pairs
from unziplora.formats.metadata import LoraInfo

M1 = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
M2 = "up_blocks.0.attentions.2.transformer_blocks.1.attn2.to_out.0"


def make_sd(rank=4):
    g = torch.Generator().manual_seed(0)
    return join_pairs({m: (torch.randn(rank, 8, generator=g), torch.randn(6, rank, generator=g)) for m in (M1, M2)})


def respell(sd, fn):
    """Rename internal keys: fn(module, "down"|"up") -> new key."""
    out = {}
    for key, value in sd.items():
        module = key[len("unet.") : -len(".lora_A.weight")]
        out[fn(module, "down" if ".lora_A." in key else "up")] = value
    return out


SPELLINGS = {
    "peft": lambda m, w: f"unet.{m}.lora_{'A' if w == 'down' else 'B'}.weight",
    "old-diffusers": lambda m, w: f"unet.{m}.lora.{w}.weight",
    "official": lambda m, w: f"unet.unet.{m}.lora.{w}.weight",
    "no-prefix": lambda m, w: f"{m}.lora_{'A' if w == 'down' else 'B'}.weight",
    "peft-adapter": lambda m, w: f"base_model.model.{m}.lora_{'A' if w == 'down' else 'B'}.weight",
    "attn-processor": lambda m, w: (
        f"unet.{m.rsplit('.', 2)[0] if m.endswith('to_out.0') else m.rsplit('.', 1)[0]}.processor."
        f"{'to_out' if m.endswith('to_out.0') else m.rsplit('.', 1)[1]}_lora.{w}.weight"
    ),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_spelling_reads_into_internal_keys(spelling):
    sd = make_sd()
    tensors = respell(sd, SPELLINGS[spelling])
    assert peft.detect_format(tensors) == ("official" if spelling == "official" else "peft")
    back = peft.from_peft(tensors)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_detect_format():
    sd = make_sd()
    assert peft.detect_format(sd) == "peft"
    assert peft.detect_format(kohya.to_kohya(sd, dtype="fp32")[0]) == "kohya"
    assert peft.detect_format({}) == "unknown"
    assert peft.detect_format({"model.diffusion_model.input_blocks.0.0.weight": 0}) == "unknown"
    assert peft.detect_format({**sd, "lora_unet_x.alpha": 0}) == "unknown"  # mixed files are not guessed


def test_lora_adapter_metadata_scale_is_baked():
    sd = make_sd(rank=4)
    config = {
        "unet.r": 4,
        "unet.lora_alpha": 2.0,
        "unet.alpha_pattern": {"attn2.to_out.0": 8.0},
        "unet.use_rslora": False,
    }
    back = peft.from_peft(sd, {"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    assert torch.allclose(back[f"unet.{M1}.lora_B.weight"], 0.5 * sd[f"unet.{M1}.lora_B.weight"])
    assert torch.allclose(back[f"unet.{M2}.lora_B.weight"], 2.0 * sd[f"unet.{M2}.lora_B.weight"])
    rs = peft.from_peft(sd, {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": 4.0, "unet.use_rslora": True})})
    assert torch.allclose(rs[f"unet.{M1}.lora_B.weight"], 2.0 * sd[f"unet.{M1}.lora_B.weight"])  # 4 / sqrt(4)
    assert torch.equal(peft.from_peft(sd, {"format": "pt"})[f"unet.{M1}.lora_B.weight"], sd[f"unet.{M1}.lora_B.weight"])


@pytest.mark.parametrize(
    "tensors, match",
    [
        ({"unet.foo.weight": torch.zeros(2)}, "not a diffusers/PEFT"),
        ({f"unet.{M1}.lora_A.weight": torch.zeros(4, 8)}, "only one"),
        ({f"unet.{M1}.lora_A.weight": torch.zeros(4, 8), f"unet.{M1}.lora_B.weight": torch.zeros(6, 3)}, "shapes"),
        ({"text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": torch.zeros(4, 8)}, "text encoders"),
        ({f"unet.{M1}.lora_A.weight": torch.zeros(4, 8), f"unet.{M1}.lora.down.weight": torch.zeros(4, 8)}, "twice"),
        ({}, "no UNet"),
    ],
)
def test_from_peft_refusals(tensors, match):
    with pytest.raises(ImportFormatError, match=match):
        peft.from_peft(tensors)


def test_text_encoder_keys_can_be_skipped():
    sd = make_sd()
    sd["text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight"] = torch.zeros(4, 8)
    assert len(peft.from_peft(sd, skip_text_encoders=True)) == 4


def test_to_diffusers_header_and_dtype():
    info = LoraInfo(title="cat", entry_id="cat-sketch-3f2a", part="content", prompts={"content": "a sks cat"})
    tensors, meta = peft.to_diffusers(make_sd(), dtype="fp16", metadata=info)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert set(tensors) == set(make_sd())
    assert meta["format"] == "pt"
    assert "lora_adapter_metadata" not in meta  # scale 1 is what diffusers assumes without it
    assert meta["modelspec.implementation"] == "https://github.com/huggingface/diffusers"
    assert meta["unziplora.entry_id"] == "cat-sketch-3f2a" and meta["unziplora.part"] == "content"
    assert not any(k.startswith("ss_") for k in meta)
    with pytest.raises(ValueError):
        peft.to_diffusers({"down_blocks.x.lora_A.weight": torch.zeros(1, 1)})
