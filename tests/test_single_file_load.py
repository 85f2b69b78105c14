"""``--base FILE.safetensors``: an SGM-layout SDXL checkpoint loads offline with the folder's weights.

The tiny base is written as an SGM-layout single file (``sgm_layout``) in fp32 (with an EMA copy
that must be ignored) and in fp16 (a "pruned" file), both with the VAE baked in, and loaded with
the network blocked and an empty Hugging Face cache. A header shaped like full SDXL (built on the
meta device, no memory) must get the shipped SDXL base 1.0 configs and real CLIP tokenizers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sgm_layout import pipeline_to_sgm, write_sgm_file

from unziplora.base_model import fingerprint, load_pipeline, parse_base
from unziplora.errors import BaseModelError
from unziplora.single_file import check_sdxl_file
from unziplora.single_file_arch import config_folder

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> SimpleNamespace:
    """The tiny folder's pipeline and its SGM-layout files: fp32 + EMA, fp16 + position_ids, bf16, no VAE."""
    from diffusers import StableDiffusionXLPipeline

    from unziplora.tiny_sdxl import tiny_sdxl_dir

    folder = tiny_sdxl_dir(tiny_cache)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    root = tmp_path_factory.mktemp("sgm")
    return SimpleNamespace(
        folder=folder,
        pipe=pipe,
        fp32=write_sgm_file(pipe, root / "tiny-fp32.safetensors", ema=True),
        fp16=write_sgm_file(pipe, root / "tiny-fp16.safetensors", dtype=torch.float16, extras=True),
        bf16=write_sgm_file(pipe, root / "tiny-bf16.safetensors", dtype=torch.bfloat16),
        no_vae=write_sgm_file(pipe, root / "tiny-novae.safetensors", vae=False),
    )


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test; the Hugging Face cache is empty; offline mode is off
    (conftest turns it on for every test), so only the loader's own forcing keeps the hub away."""
    import huggingface_hub.constants

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the single-file load tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_hub_offline_forces_and_restores_offline_mode(no_network) -> None:
    import huggingface_hub.constants

    from unziplora.hf_env import hub_offline

    with hub_offline():
        assert huggingface_hub.constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"
    assert not huggingface_hub.constants.is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ


ROUNDED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("precision", list(ROUNDED))
def test_single_file_loads_offline_with_the_folders_weights(tiny_files, no_network, precision: str) -> None:
    path = getattr(tiny_files, precision)
    info = check_sdxl_file(path)
    assert info.has_ema == (precision == "fp32")
    assert (
        info.describe()
        == {
            "fp32": "f32 UNet, baked-in VAE, EMA copy ignored",
            "fp16": "f16 UNet, baked-in VAE",
            "bf16": "bf16 UNet, baked-in VAE",
        }[precision]
    )
    pipe = load_pipeline(parse_base(str(path)), dtype=torch.float32)
    for component in COMPONENTS:
        want = getattr(tiny_files.pipe, component).state_dict()
        got = getattr(pipe, component).state_dict()
        assert set(got) == set(want), component
        for name, tensor in want.items():
            # fp16/bf16 file: exactly the folder's weights rounded to it (the fp32 file's EMA copy, +1, ignored).
            expected = tensor.to(ROUNDED[precision]).float()
            assert got[name].dtype == torch.float32 and torch.equal(got[name], expected), f"{component}.{name}"
    assert dict(pipe.scheduler.config) == dict(tiny_files.pipe.scheduler.config)
    assert pipe.tokenizer_2("a cat").input_ids == tiny_files.pipe.tokenizer_2("a cat").input_ids


def test_train_on_single_file_through_the_cli(cli, tiny_files, no_network, isolated_env: Path, tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(image)
    result = cli(
        "train",
        str(image),
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--steps",
        "2",
        "--base",
        str(tiny_files.fp16),
        "--resolution",
        "64",
        "--preview-steps",
        "1",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads((isolated_env / "entries" / result.stdout.strip() / "entry.json").read_text())
    assert record["base"]["kind"] == "file" and record["base"]["ref"] == str(tiny_files.fp16.resolve())
    # The same weights as the builtin tiny base: entries trained on either combine (issue 14.12).
    assert record["base"]["fingerprint"] == fingerprint(parse_base("tiny-sdxl"))


def test_file_without_vae_is_refused_from_its_header(tiny_files) -> None:
    expected = (
        f"base model {tiny_files.no_vae} is an SDXL checkpoint without its VAE (no first_stage_model.* tensors); "
        "UnZipLoRA needs a full single file (UNet, both text encoders and a baked-in VAE) or a diffusers SDXL folder."
    )
    with pytest.raises(BaseModelError) as info:
        load_pipeline(parse_base(str(tiny_files.no_vae)))
    assert str(info.value) == expected


def _header_only_file(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A safetensors header for ``state`` (names and shapes; meta tensors, so no data follows)."""
    header: dict[str, object] = {}
    offset = 0
    for name, tensor in state.items():
        size = 2 * tensor.numel()
        header[name] = {"dtype": "F16", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


@pytest.fixture(scope="module")
def sdxl_meta() -> SimpleNamespace:
    """Full-size SDXL base 1.0 built from the shipped configs on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from unziplora.single_file_config import shipped_config_text

    def config(name: str) -> dict:
        return json.loads(shipped_config_text(f"{name}/config.json"))

    with torch.device("meta"):
        pipe = SimpleNamespace(
            unet=UNet2DConditionModel.from_config(config("unet")),
            vae=AutoencoderKL.from_config(config("vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(config("text_encoder"))),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_dict(config("text_encoder_2"))),
        )
    return pipe


@pytest.fixture(scope="module")
def sdxl_state(sdxl_meta: SimpleNamespace) -> dict[str, torch.Tensor]:
    """Full-size SDXL base 1.0 in SGM names (meta tensors)."""
    with torch.device("meta"):
        return pipeline_to_sgm(sdxl_meta)


def test_full_size_sgm_names_convert_back_with_the_shipped_configs(sdxl_meta, sdxl_state) -> None:
    """At SDXL's real widths, diffusers' own converters, given the shipped configs, turn the SGM
    names back into exactly every tensor name and shape of the models (1680 UNet, 248 VAE,
    196 + 517 text-encoder tensors): what a real A1111 file goes through, checked without memory."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    from unziplora.single_file import OPEN_CLIP
    from unziplora.single_file_config import shipped_config_text

    def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        return {k.removeprefix("text_model."): tuple(v.shape) for k, v in state.items()}

    with torch.device("meta"):
        converted = {
            "unet": convert_ldm_unet_checkpoint(sdxl_state, json.loads(shipped_config_text("unet/config.json"))),
            "vae": convert_ldm_vae_checkpoint(sdxl_state, json.loads(shipped_config_text("vae/config.json"))),
            "text_encoder": convert_ldm_clip_checkpoint(sdxl_state),
            "text_encoder_2": convert_open_clip_checkpoint(sdxl_meta.text_encoder_2, sdxl_state, prefix=OPEN_CLIP),
        }
    for component, state in converted.items():
        want = getattr(sdxl_meta, component).state_dict()
        got = shapes(state) if component == "text_encoder" else {k: tuple(v.shape) for k, v in state.items()}
        assert got == {k: tuple(v.shape) for k, v in want.items()}, component


def test_sdxl_shaped_file_gets_shipped_configs_and_clip_tokenizers(sdxl_state, tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    path = _header_only_file(tmp_path / "juggernaut.safetensors", sdxl_state)
    name, folder = config_folder(check_sdxl_file(path))
    assert name == "SDXL base 1.0"
    assert json.loads((folder / "unet" / "config.json").read_text())["block_out_channels"] == [320, 640, 1280]
    clip_l = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    big_g = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True)
    # CLIP's own ids (openai/clip-vit-large-patch14's vocab.json); bigG pads with "!" (id 0) as in SDXL.
    assert len(clip_l) == 49408 and clip_l.bos_token_id == 49406 and clip_l.eos_token_id == 49407
    assert clip_l("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert big_g("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_l.pad_token_id == 49407 and big_g.pad_token_id == 0


def test_sdxl_family_file_of_another_architecture_is_refused(sdxl_state, tmp_path: Path) -> None:
    # A pruned variant (SSD-1B style): the middle block keeps one transformer block of ten.
    pruned = {k: v for k, v in sdxl_state.items() if not k.startswith(tuple(_mid_blocks(1, 10)))}
    path = _header_only_file(tmp_path / "pruned.safetensors", pruned)
    with pytest.raises(BaseModelError) as info:
        config_folder(check_sdxl_file(path))
    assert str(info.value) == (
        f"base model {path} is an SDXL-family checkpoint not shaped like SDXL base 1.0 "
        "(unet.depths[middle_block.1] is 1 in the file, 10 in SDXL base 1.0); "
        "UnZipLoRA loads single files of SDXL's own architecture only: convert it to a diffusers folder and pass that."
    )


def _mid_blocks(start: int, stop: int) -> list[str]:
    return [f"model.diffusion_model.middle_block.1.transformer_blocks.{i}." for i in range(start, stop)]


def test_fingerprint_is_the_weights_however_the_base_is_referenced(tiny_files, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(tiny_files.folder, copy)
    refs = ["tiny-sdxl", str(copy), str(tiny_files.fp32), str(tiny_files.fp16)]
    prints = {ref: fingerprint(parse_base(ref)) for ref in refs}
    assert len(set(prints.values())) == 1 and prints["tiny-sdxl"].startswith("w1:"), prints
    # Other weights (one UNet value changed in the copy) are another base.
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.weight"][0, 0, 0, 0] += 1.0
    save_file(state, str(weights))
    assert fingerprint(parse_base(str(copy))) != prints["tiny-sdxl"]


def test_entries_on_the_same_weights_combine_however_the_base_was_given(cli, tiny_files, tmp_path: Path) -> None:
    """Issue 14.12: compose, export --style-from and eval compare weights, not the --base strings."""
    from generate_helpers import make_entry

    from unziplora.registry import Registry

    reg = Registry.from_settings()
    base_name = {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": fingerprint(parse_base("tiny-sdxl"))}
    base_file = {
        "ref": str(tiny_files.fp16),
        "kind": "file",
        "fingerprint": fingerprint(parse_base(str(tiny_files.fp16))),
    }
    on_name = make_entry(reg, subject="cat", style="sketch", seed=1, base=base_name)
    on_file = make_entry(reg, subject="rose", style="pop art", seed=2, base=base_file)
    elsewhere = make_entry(
        reg,
        subject="dog",
        style="oil",
        seed=3,
        base={"ref": str(tmp_path / "other.safetensors"), "fingerprint": "w1:0"},
    )
    fast = ["--steps", "1", "--width", "64", "--height", "64", "-o", str(tmp_path / "out")]
    composed = cli("compose", "--content", on_name.id, "--style", on_file.id, *fast)
    assert composed.exit_code == 0, composed.stderr
    # --base naming the same weights another way is no change of base: no "generating on ... as asked" note.
    rebased = cli("compose", "--content", on_file.id, "--base", "tiny-sdxl", *fast, "--force")
    assert rebased.exit_code == 0, rebased.stderr
    assert "as asked" not in rebased.stderr
    (tmp_path / "x").mkdir()
    exported = cli("export", on_name.id, "--part", "both", "--style-from", on_file.id, "-o", str(tmp_path / "x"))
    assert exported.exit_code == 0, exported.stderr
    # eval's one-base check: past it, the missing CLIP folder is the error.
    no_clip = tmp_path / "no-clip"
    together = cli("eval", on_name.id, on_file.id, "--clip", str(no_clip))
    assert together.exit_code == 1 and together.stderr.strip() == f"error: CLIP model folder {no_clip} does not exist."
    apart = cli("eval", on_name.id, elsewhere.id, "--clip", str(no_clip))
    assert apart.exit_code == 1 and apart.stderr.strip() == (
        f"error: the entries were trained on different base models ({tmp_path / 'other.safetensors'}, tiny-sdxl); "
        "evaluate them separately."
    )
    refused = cli("compose", "--content", on_file.id, "--style", elsewhere.id, *fast)
    assert refused.exit_code == 1
    assert refused.stderr.splitlines()[-1] == (
        f"error: cannot combine {on_file.id} and {elsewhere.id}: they were trained on different base models "
        f"({tiny_files.fp16} vs {tmp_path / 'other.safetensors'}); pick a content and a style entry trained on the same base"
    )
