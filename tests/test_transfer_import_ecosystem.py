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


def _imported(cli, reg, *args):
    result = cli("import", *args, "--base", "tiny-sdxl")
    assert result.exit_code == 0, result.stderr
    return reg.get(result.stdout.strip()), result.stderr


def _deltas(sd):
    from unziplora.formats._keys import split_pairs

    return {m: u.double() @ d.double() for m, (d, u) in split_pairs(sd).items()}


def test_sd_scripts_layout_imports_with_attention_only(cli, reg, files, tmp_path):
    """kohya names with alpha, plus proj_in/proj_out/ff.net modules as sd-scripts writes for SDXL."""
    from transfer_helpers import read

    content, style = files
    g = torch.Generator().manual_seed(3)
    extra = {}
    for stem, fan_in, fan_out in (
        ("lora_unet_input_blocks_4_1_proj_in", 64, 64),
        ("lora_unet_input_blocks_4_1_proj_out", 64, 64),
        ("lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj", 128, 1024),
        ("lora_unet_middle_block_1_transformer_blocks_0_ff_net_2", 512, 128),
    ):
        extra[f"{stem}.lora_down.weight"] = torch.randn(4, fan_in, generator=g)
        extra[f"{stem}.lora_up.weight"] = torch.randn(fan_out, 4, generator=g)
        extra[f"{stem}.alpha"] = torch.tensor(2.0)
    path = _with(tmp_path, content, extra, "sd-scripts.safetensors")
    line = refused(cli, reg, path, str(style))
    assert line == (
        "the content LoRA changes 4 modules that are not attention projections "
        "(e.g. lora_unet_input_blocks_4_1_proj_in); unziplora entries hold LoRAs of to_q/to_k/to_v/to_out.0 "
        "only: pass --attention-only to drop them"
    )
    entry, stderr = _imported(cli, reg, path, str(style), "--attention-only")
    assert stderr.splitlines()[0] == (
        "warning: content LoRA: dropped 4 modules that are not attention projections (--attention-only)"
    )
    from unziplora.formats.kohya import from_kohya

    want = _deltas(from_kohya(read_safetensors(content)[0]))
    got = _deltas(read(entry.file("content.safetensors")))
    assert got.keys() == want.keys()
    assert max((got[m] - want[m]).abs().max().item() for m in want) < 1e-6


def test_partial_diffusers_lora_gets_zero_deltas(cli, reg, files, tmp_path):
    """save_lora_weights naming (unet.<module>.lora_A/B.weight) covering only attn2."""
    from transfer_helpers import read

    content, style = files
    tensors, meta = read_safetensors(style)
    partial = {k: v for k, v in tensors.items() if ".attn2." in k}
    path = tmp_path / "attn2.safetensors"
    write_safetensors(path, partial, meta)
    line = refused(cli, reg, str(content), str(path))
    assert line.startswith("the style LoRA does not cover base tiny-sdxl: 88 of the 176 attention projections")
    assert line.endswith("or is a partial attention LoRA (pass --attention-only to give the rest a zero delta)")
    entry, stderr = _imported(cli, reg, str(content), str(path), "--attention-only")
    assert "warning: style LoRA: 88 attention projections absent from the file get a zero delta (--attention-only)" in (
        stderr.splitlines()
    )
    got = _deltas(read(entry.file("style.safetensors")))
    want = _deltas({k: v for k, v in partial.items()})
    assert len(got) == 176
    for module, delta in got.items():
        expected = want.get(module)
        if expected is None:
            assert not delta.any()
        else:
            assert (delta - expected).abs().max().item() < 1e-6


def test_skip_text_encoders_warns_with_the_count(cli, reg, files, tmp_path):
    content, style = files
    te = {
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 32),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(37, 2),
    }
    path = _with(tmp_path, content, te, "te.safetensors")
    _entry, stderr = _imported(cli, reg, path, str(style), "--skip-text-encoders")
    assert "warning: content LoRA: dropped 2 text-encoder tensors (--skip-text-encoders)" in stderr.splitlines()
