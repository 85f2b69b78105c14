"""Bases in the Hugging Face cache: doctor and train agree, fp16-only caches load, bad bases are refused.

The caches are fake but laid out as huggingface_hub lays them out
(``models--org--name/refs/main`` -> ``snapshots/<commit>/``, files linked to ``blobs/``), holding
the tiny base's files; nothing here reaches the network (HF_HUB_OFFLINE is set by conftest).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from unziplora import hf_cache
from unziplora.base_model import availability, load_pipeline, parse_base
from unziplora.errors import BaseModelError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[1]


def _fake_hub_cache(hub: Path, repo_id: str, *, variant: str | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A hub cache holding the tiny base as ``repo_id``: weights only as ``variant`` (fp16 tensors), minus ``drop``."""
    from safetensors.torch import load_file, save_file

    from unziplora.tiny_sdxl import tiny_sdxl_dir

    source = tiny_sdxl_dir()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot, blobs = repo / "snapshots" / COMMIT, repo / "blobs"
    blobs.mkdir(parents=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        name = path.relative_to(source).as_posix()
        if variant and name.endswith(".safetensors"):
            name = name.replace(".safetensors", f".{variant}.safetensors")
            blob = blobs / f"{len(list(blobs.iterdir())):04d}"
            save_file({k: v.half() for k, v in load_file(path).items()}, blob)
        else:
            blob = blobs / f"{len(list(blobs.iterdir())):04d}"
            shutil.copyfile(path, blob)
        if name in drop:
            continue
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    return folder


def test_fp16_only_cache_is_cached_for_doctor_and_loads_as_fp16(hub: Path, cli, capfd) -> None:
    import torch
    from safetensors.torch import load_file

    snapshot = _fake_hub_cache(hub, "acme/sdxl-fp16", variant="fp16")
    ok, detail = availability(parse_base("acme/sdxl-fp16"))
    assert ok and detail == f"cached at {snapshot} (fp16 variant only: loaded as fp16 weights)"
    result = cli("doctor", "--base", "acme/sdxl-fp16", "--json")
    base = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")
    assert base["status"] == "ok" and "fp16 variant only" in base["detail"]
    capfd.readouterr()
    pipe = load_pipeline(parse_base("acme/sdxl-fp16"))
    expected = load_file(snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    got = pipe.unet.state_dict()
    assert all(torch.equal(got[k].to(v.dtype), v) for k, v in expected.items())
    assert capfd.readouterr().err == ""  # no diffusers/transformers log lines


def test_incomplete_cache_fails_the_same_way_in_doctor_and_loading(hub: Path, cli) -> None:
    _fake_hub_cache(hub, "acme/sdxl-partial", drop=("unet/diffusion_pytorch_model.safetensors",))
    ok, detail = availability(parse_base("acme/sdxl-partial"))
    assert not ok and "without unet/diffusion_pytorch_model.safetensors" in detail
    result = cli("doctor", "--base", "acme/sdxl-partial", "--json")
    assert result.exit_code == 1
    with pytest.raises(BaseModelError) as info:
        load_pipeline(parse_base("acme/sdxl-partial"))
    assert str(info.value).startswith(
        "base model acme/sdxl-partial is cached without unet/diffusion_pytorch_model.safetensors and HF_HUB_OFFLINE is set;"
    )


def test_empty_model_index_is_refused_as_a_base(tmp_path: Path, cli) -> None:
    folder = tmp_path / "not-a-pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    line = (
        f"base model folder {folder}: model_index.json names no pipeline (no _class_name); "
        "it is not a diffusers SDXL folder."
    )
    with pytest.raises(BaseModelError) as info:
        parse_base(str(folder))
    assert str(info.value) == line
    result = cli("doctor", "--base", str(folder), "--json")
    assert result.exit_code == 1
    base = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")
    assert base == {"name": "base model", "status": "fail", "detail": line}


def test_lora_file_is_refused_as_a_base(tmp_path: Path, cli) -> None:
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, lora)
    result = cli("doctor", "--base", str(lora), "--json")
    assert result.exit_code == 1
    base = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")
    assert base["status"] == "fail"
    assert base["detail"] == (
        f"base model {lora} is a LoRA file, not a checkpoint: --base takes an SDXL checkpoint or "
        "diffusers folder (bring a LoRA in with 'unzip import')."
    )


def test_missing_default_base_is_a_warning_when_the_hub_is_reachable(
    hub: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_cache, "hub_reachable", lambda timeout=2.0: True)
    result = cli("doctor", "--json")
    base = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")
    assert base["status"] == "warn"
    assert base["detail"].startswith("stabilityai/stable-diffusion-xl-base-1.0: will download on first use")
    monkeypatch.setattr(hf_cache, "hub_reachable", lambda timeout=2.0: False)
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    assert next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "base model")["status"] == "fail"


def test_download_prints_one_plain_line_per_file_off_a_terminal(
    hub: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The hub's bars would be invisible in a log file; off a terminal each file gets a line as it starts."""
    import huggingface_hub

    from unziplora.hf_env import download_shows_bars

    source = _fake_hub_cache(hub / "elsewhere", "acme/remote")
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    fetched: list[str] = []

    class Planned:
        def __init__(self, name: str) -> None:
            self.filename, self.file_size, self.commit_hash = name, (source / name).stat().st_size, COMMIT

    def snapshot_download(repo_id: str, *, allow_patterns: list[str], dry_run: bool = False) -> list[Planned]:
        assert dry_run and allow_patterns == hf_cache.loader_patterns()
        return [Planned(n) for n in files]

    def hf_hub_download(repo_id: str, filename: str, revision: str | None = None) -> str:
        target = hub / "models--acme--remote" / "snapshots" / COMMIT / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / filename, target)
        fetched.append(filename)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    assert not download_shows_bars()  # pytest's stderr is no terminal
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ  # prepare_hf must not switch them off for good
    snapshot = hf_cache.download("acme/remote")
    assert snapshot == hub / "models--acme--remote" / "snapshots" / COMMIT and fetched == files
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "downloading acme/remote from the Hugging Face hub (once; later runs read the cache)"
    assert lines[1:] == [f"  {name}" for name in files]
    assert hf_cache.sdxl_layout(snapshot).complete


def test_readme_download_lines_fetch_what_the_loader_reads() -> None:
    commands, current = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if current is None and line.startswith("    hf download "):
            current = []
        if current is not None:
            current.append(line.removesuffix("\\").strip())
            if not line.endswith("\\"):
                commands.append(" ".join(current))
                current = None
    repo = "stabilityai/stable-diffusion-xl-base-1.0"
    assert hf_cache.download_command(repo) in commands
    assert hf_cache.download_command(repo, "fp16") in commands


def test_layout_accepts_sharded_weights_and_refuses_a_mix_of_variants(tmp_path: Path) -> None:
    """Sharded weights count by their index file; half fp16, half full precision is loadable neither way."""
    folder = tmp_path / "sdxl"
    index = {"_class_name": "StableDiffusionXLPipeline", **{c: ["x", "y"] for c in hf_cache.PIPELINE_COMPONENTS}}
    files = {"model_index.json": json.dumps(index), **{name: "{}" for name in hf_cache.CONFIGS[1:]}}
    files.update({f"{t}/tokenizer.json": "{}" for t in hf_cache.TOKENIZERS})
    files.update(
        {
            "unet/diffusion_pytorch_model.safetensors.index.json": "{}",
            "vae/diffusion_pytorch_model.safetensors": "",
            "text_encoder/model.safetensors": "",
            "text_encoder_2/model.safetensors": "",
        }
    )
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    assert hf_cache.sdxl_layout(folder) == hf_cache.Layout(None, ())
    (folder / "text_encoder_2" / "model.safetensors").rename(folder / "text_encoder_2" / "model.fp16.safetensors")
    layout = hf_cache.sdxl_layout(folder)
    assert layout.missing == ("text_encoder_2/model.safetensors",) and not layout.complete
