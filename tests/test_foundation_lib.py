"""Settings precedence, device resolution, base model parsing and the tiny SDXL base."""

from __future__ import annotations

from pathlib import Path

import pytest

from unziplora.base_model import fingerprint, load_pipeline, parse_base
from unziplora.device import resolve_device, resolve_placement, resolve_precision
from unziplora.errors import BaseModelError, ConfigError, DeviceError
from unziplora.settings import DEFAULT_BASE_MODEL, load_settings

# ALGORITHM.md Appendix A / FORMATS.md 1.3: the 11 SDXL attention groups.
SDXL_GROUPS = [
    "down_blocks.1.attentions.0",
    "down_blocks.1.attentions.1",
    "down_blocks.2.attentions.0",
    "down_blocks.2.attentions.1",
    "mid_block.attentions.0",
    "up_blocks.0.attentions.0",
    "up_blocks.0.attentions.1",
    "up_blocks.0.attentions.2",
    "up_blocks.1.attentions.0",
    "up_blocks.1.attentions.1",
    "up_blocks.1.attentions.2",
]


def test_precedence_flag_env_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    assert load_settings().base_model == DEFAULT_BASE_MODEL
    config.write_text('base_model = "from-file/model"\ndevice = "cpu"\n[train]\nsteps = 50\n')
    settings = load_settings()
    assert settings.base_model == "from-file/model"
    assert settings.train.steps == 50 and settings.train.rank == 64
    assert settings.sources["base_model"].startswith("config ")
    monkeypatch.setenv("UNZIPLORA_BASE_MODEL", "from-env/model")
    assert load_settings().base_model == "from-env/model"
    assert load_settings(base_model="from-flag/model").base_model == "from-flag/model"
    assert load_settings(registry=tmp_path / "r").registry == tmp_path / "r"
    monkeypatch.setenv("UNZIPLORA_HOME", str(tmp_path / "env-home"))
    assert load_settings().registry == tmp_path / "env-home"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('device = "cpu\n', "is not valid TOML"),
        ('devise = "cpu"\n', "line 1: unknown setting 'devise'"),
        ("rank = 4\n", "(steps, rank and resolution go under [train])"),
        ('[train]\nsteps = "many"\n', "line 2: 'train.steps' must be an integer"),
        ("[train]\nsteps = -3\n", "'train.steps' must be positive"),
        ('precision = "fp8"\n', "precision must be one of"),
    ],
)
def test_broken_config_names_file_line_problem(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert str(tmp_path / "config.toml") in message
    assert needle in message
    assert "\n" not in message


def test_device_resolution_on_cpu_machine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    assert resolve_device("auto") in {"cpu", "mps"}
    assert resolve_precision("cpu", "auto") == "fp32"
    assert resolve_placement("cpu", "auto").precision == "fp32"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="not supported for training and generation on CPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_parse_base(tmp_path: Path) -> None:
    assert parse_base("tiny-sdxl").kind == "tiny"
    assert parse_base("stabilityai/stable-diffusion-xl-base-1.0").kind == "hub"
    with pytest.raises(BaseModelError, match="has no model_index.json"):
        parse_base(str(tmp_path))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(BaseModelError, match="only safetensors weights are loaded"):
        parse_base(str(ckpt))
    with pytest.raises(BaseModelError, match="does not exist"):
        parse_base(str(tmp_path / "missing.safetensors"))


def test_hub_base_not_cached_is_a_clear_error() -> None:
    with pytest.raises(BaseModelError) as info:
        load_pipeline(parse_base("someone/not-cached-sdxl"))
    assert "not in the local Hugging Face cache" in str(info.value)
    assert "hf download someone/not-cached-sdxl" in str(info.value)


def test_tiny_base_builds_reloads_and_generates(tiny_cache: Path) -> None:
    import torch

    pipe = load_pipeline(parse_base("tiny-sdxl"))
    assert (tiny_cache / "tiny-sdxl-v1" / "model_index.json").is_file()
    groups = sorted(
        {n.split(".transformer_blocks")[0] for n, _ in pipe.unet.named_modules() if ".transformer_blocks." in n}
    )
    assert groups == SDXL_GROUPS
    projections = [n for n, _ in pipe.unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
    assert len(projections) == 11 * 2 * 2 * 4  # groups x blocks x (attn1, attn2) x projections
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer_2.model_max_length == 77
    image = pipe(
        "A monadikos cat in sketch style", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (64, 64)
    again = load_pipeline(parse_base("tiny-sdxl"))
    for (name, a), (_, b) in zip(pipe.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name
    # A weights fingerprint: the builtin name and its folder are the same base.
    assert fingerprint(parse_base("tiny-sdxl")) == fingerprint(parse_base(str(tiny_cache / "tiny-sdxl-v1")))
    assert fingerprint(parse_base("tiny-sdxl")).startswith("w1:")


def test_tiny_base_is_deterministic() -> None:
    import torch

    from unziplora.tiny_sdxl import build_tiny_sdxl_pipeline

    a, b = build_tiny_sdxl_pipeline(), build_tiny_sdxl_pipeline()
    for (name, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(x, y), name
    ids_a = a.tokenizer("a cat").input_ids
    assert ids_a != a.tokenizer("a dog").input_ids
