"""Single-file checkpoints: a file that is not SDXL is refused with one line, from its header alone."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from PIL import Image

from unziplora.base_model import load_pipeline, parse_base
from unziplora.errors import BaseModelError
from unziplora.single_file import check_sdxl_file, family, header_keys

# A few keys typical of each family (shapes are irrelevant: only the header is read).
FAMILY_KEYS = {
    "SD 1.5": [
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "model.diffusion_model.input_blocks.0.0.weight",
    ],
    "SD 2.x": ["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"],
    "SD3": [
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
        "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight",
    ],
    "Flux": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"],
    "SDXL": ["conditioner.embedders.1.model.token_embedding.weight", "model.diffusion_model.label_emb.0.0.weight"],
}


def _fake_safetensors(path: Path, keys: list[str]) -> Path:
    """A valid safetensors file holding one float16 scalar per key (a few bytes in all)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, key in enumerate(keys):
        header[key] = {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0" * len(keys))
    return path


@pytest.mark.parametrize("name", list(FAMILY_KEYS))
def test_family_from_header(tmp_path: Path, name: str) -> None:
    path = _fake_safetensors(tmp_path / "model.safetensors", FAMILY_KEYS[name])
    assert sorted(header_keys(path)) == sorted(FAMILY_KEYS[name])
    assert family(header_keys(path)) == name


def test_sdxl_text_encoder_without_sdxl_unet_is_not_sdxl() -> None:
    assert family(["conditioner.embedders.1.model.token_embedding.weight"]) is None


@pytest.mark.parametrize("name", ["SD 1.5", "SD 2.x", "SD3", "Flux"])
def test_non_sdxl_file_refused_before_loading(tmp_path: Path, name: str) -> None:
    path = _fake_safetensors(tmp_path / "model.safetensors", FAMILY_KEYS[name])
    article = "a" if name == "Flux" else "an"
    expected = (
        f"base model {path} is {article} {name} checkpoint, not SDXL; UnZipLoRA needs an SDXL single file "
        "(SGM/A1111 layout) or a diffusers SDXL folder."
    )
    with pytest.raises(BaseModelError) as info:
        check_sdxl_file(path)
    assert str(info.value) == expected
    with pytest.raises(BaseModelError) as info:
        load_pipeline(parse_base(str(path)))
    assert str(info.value) == expected


def test_not_a_safetensors_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff" * 4)
    with pytest.raises(BaseModelError, match="is not a safetensors file"):
        check_sdxl_file(path)


def test_cli_refuses_sd15_file_with_one_line(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path = _fake_safetensors(tmp_path / "sd15.safetensors", FAMILY_KEYS["SD 1.5"])
    image = tmp_path / "cat.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(image)
    result = cli(
        "train",
        str(image),
        "--base",
        str(path),
        "--device",
        "cpu",
        "--steps",
        "1",
        "--subject",
        "cat",
        "--style",
        "sketch",
    )
    assert result.exit_code == 1
    assert not (tmp_path / "registry").exists()  # refused before the registry is made
    lines = result.stderr.strip().splitlines()
    assert lines == [
        (
            f"error: base model {path} is an SD 1.5 checkpoint, not SDXL; UnZipLoRA needs an SDXL single file "
            "(SGM/A1111 layout) or a diffusers SDXL folder."
        )
    ]


def test_shipped_sdxl_unet_config_has_sdxl_size() -> None:
    """The shipped SDXL base 1.0 UNet config, built on the meta device (no memory): 2.567B params, 560 projections."""
    from importlib.resources import files

    import torch
    from diffusers import UNet2DConditionModel

    config = json.loads((files("unziplora") / "sdxl_config" / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    projections = [n for n, _ in unet.named_modules() if re.search(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$", n)]
    assert len(projections) == 560


def test_shipped_sdxl_vae_text_encoder_and_scheduler_configs() -> None:
    """The other shipped SDXL base 1.0 configs build (meta device) at SDXL's sizes."""
    from importlib.resources import files

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = files("unziplora") / "sdxl_config"

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(json.loads((root / "vae" / "config.json").read_text()))
        te1 = CLIPTextModel(CLIPTextConfig.from_dict(json.loads((root / "text_encoder" / "config.json").read_text())))
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_dict(json.loads((root / "text_encoder_2" / "config.json").read_text()))
        )
    assert count(vae) == 83_653_863
    assert count(te1) == 123_060_480
    assert count(te2) == 694_659_840
    scheduler = EulerDiscreteScheduler.from_config(
        json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    )
    assert scheduler.config.timestep_spacing == "leading"
