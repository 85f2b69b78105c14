"""``unzip import`` on files as other tools write them: DoRA (diffusers/PEFT ``lora_magnitude_vector``)
and text-encoder LoRAs (kohya ``lora_te1_``, diffusers ``text_encoder.``) are refused with one line
naming the cause and the way in."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from transfer_helpers import make_entry, snapshot

from unziplora.formats.io import read_safetensors, write_safetensors
from unziplora.registry import Registry


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from unziplora.transfer import export_entry

    folder = tmp_path_factory.mktemp("eco")
    entry = make_entry(Registry(folder / "reg"), subject="fox", style="chalk art", seed=7)
    content = export_entry(entry, fmt="kohya", part="content", dtype="fp32", cwd=folder).path
    style = export_entry(entry, fmt="diffusers", part="style", dtype="fp32", cwd=folder).path
    return content, style


@pytest.fixture
def reg(isolated_env):
    reg = Registry(isolated_env)
    make_entry(reg, seed=5)
    return reg


def refused(cli, reg, *args) -> str:
    before = snapshot(reg.root)
    result = cli("import", *args, "--base", "tiny-sdxl")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert snapshot(reg.root) == before
    return result.stderr.removeprefix("error: ").rstrip("\n")


def _with(tmp_path, path, extra, name):
    tensors, meta = read_safetensors(path)
    tensors.update(extra)
    out = tmp_path / name
    write_safetensors(out, tensors, meta)
    return str(out)


def test_dora_file_is_refused_naming_its_magnitude_keys(cli, reg, files, tmp_path):
    content, style = files
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"
    dora = _with(tmp_path, style, {key: torch.ones(64)}, "dora.safetensors")
    line = refused(cli, reg, str(content), dora)
    assert line == (
        f"style LoRA {dora}: it is a DoRA LoRA (1 lora_magnitude_vector keys, e.g. {key!r}); "
        "DoRA is not supported, only plain LoRAs"
    )


def test_text_encoder_refusal_names_the_flag(cli, reg, files, tmp_path):
    content, style = files
    kohya_te = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 32),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(32, 2),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(2.0),
    }
    path = _with(tmp_path, content, kohya_te, "te.safetensors")
    assert refused(cli, reg, path, str(style)) == (
        f"content LoRA {path}: the LoRA also changes the text encoders (3 tensors); unziplora keeps UNet LoRAs "
        "only — pass --skip-text-encoders to import the UNet part only"
    )
    peft_te = {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 32)}
    path = _with(tmp_path, style, peft_te, "te2.safetensors")
    assert refused(cli, reg, str(content), path).endswith(
        "(1 tensors); unziplora keeps UNet LoRAs only — pass --skip-text-encoders to import the UNet part only"
    )
