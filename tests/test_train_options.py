"""Training options are declared once (``TrainConfig``'s fields); flags, config keys and records follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from unziplora.train.config import TrainConfig, defaults, flag_name, options


def test_every_flag_help_and_config_key_comes_from_the_declaration(cli) -> None:
    from unziplora.settings import _TRAIN_KEYS, TrainDefaults

    help_text = " ".join(cli("train", "--help").stdout.split())
    for name, opt in options().items():
        flag = flag_name(name)
        if not opt.cli:
            assert f"{flag} " not in help_text, flag
            continue
        assert flag in help_text and " ".join(opt.help.split()) in help_text, flag
    assert "--mask-lr" not in help_text and "--merge-lr" in help_text  # the old name is a hidden alias
    assert (
        set(_TRAIN_KEYS)
        == {n for n, o in options().items() if o.config_file}
        == {"steps", "rank", "resolution", "faithful"}
    )
    assert {k: getattr(TrainDefaults(), k) for k in _TRAIN_KEYS} == {k: defaults()[k] for k in _TRAIN_KEYS}


def test_old_names_still_load_and_still_work_as_flags(cli, tmp_path: Path) -> None:
    old = TrainConfig.from_dict({"steps": 9, "mask_lr": 0.01, "a_key_from_a_newer_version": 1})
    assert (old.steps, old.merge_lr) == (9, 0.01)
    assert TrainConfig.from_dict({"mask_lr": 0.01, "merge_lr": 0.02}).merge_lr == 0.02  # the current name wins
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    args = ["train", str(tmp_path / "a.png"), "--subject", "cat", "--style", "ink", "--base", "tiny-sdxl"]
    result = cli(*args, "--mask-lr", "-1")  # refused under the option's one name
    assert (result.exit_code, result.stderr) == (2, "error: --merge-lr must be positive, got -1.0\n")


def test_resume_compares_against_a_run_stored_with_old_names(cli, isolated_env: Path) -> None:
    run = isolated_env / "runs" / "owl-run-0001"
    (run / "inputs").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"steps": 9, "mask_lr": 0.01}, "base": {"ref": "tiny-sdxl"}}))
    result = cli("train", "--resume", "owl-run-0001", "--merge-lr", "0.02", "--steps", "9", "--base", "tiny-sdxl")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --resume finishes run owl-run-0001 with the settings it started with; --merge-lr would"
    )


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ("[train]\nresolution = 4096\n", "'train.resolution' must be a multiple of 8 from 64 to 2048, got 4096"),
        ("[train]\nmerge_lr = 0.1\n", "unknown setting 'train.merge_lr'; known: train.faithful, train.rank"),
    ],
)
def test_config_file_keys_use_the_same_bounds(tmp_path: Path, toml: str, line: str) -> None:
    from unziplora.errors import ConfigError
    from unziplora.settings import load_settings

    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert line in str(info.value)


def test_native_resolution_is_read_from_the_base_configs_without_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "base"
    for part, config in (("unet", {"sample_size": 96}), ("vae", {"block_out_channels": [1, 2, 3, 4]})):
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text(json.dumps(config))
    components = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
    index = {"_class_name": "StableDiffusionXLPipeline", **{c: ["diffusers", "X"] for c in components}}
    (folder / "model_index.json").write_text(json.dumps(index))
    (tmp_path / "one.safetensors").write_bytes(b"")  # a single file loads with the builtin SDXL configs
    code = (
        "import sys\nfrom unziplora.base_model import native_resolution, parse_base\n"
        f"print(*(native_resolution(parse_base(b)) for b in ('tiny-sdxl', {str(folder)!r}, {str(tmp_path / 'one.safetensors')!r})))\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["64", "768", "1024"]
