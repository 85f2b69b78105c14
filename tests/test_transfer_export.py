"""``unzip export``: paths, metadata and hashes, rank reduction, refusals (one line, registry unchanged).

Loading the files into diffusers is tests/test_transfer_roundtrip.py; the SGM table and the hash
algorithm against sd-scripts are tests/test_formats_sgm.py and tests/test_formats_kohya.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

torch = pytest.importorskip("torch")

from transfer_helpers import TINY_BASE, chmod_of, make_entry, read, snapshot

from unziplora.formats._keys import split_pairs
from unziplora.formats.io import read_safetensors, read_safetensors_metadata
from unziplora.formats.kohya import from_kohya, kohya_hashes
from unziplora.registry import Registry

ONE_PROMPT = "one LoRA cannot keep per-branch prompts"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-reg")
    reg = Registry(root)
    a = make_entry(reg, subject="cat", style="pencil sketch", seed=1)
    b = make_entry(reg, subject="rose", style="pop art", seed=2, resolution=64)
    other = make_entry(
        reg, subject="dog", style="ink", seed=3, base={"ref": "some/other-base", "kind": "hub", "fingerprint": "x"}
    )
    return {"root": root, "reg": reg, "a": a, "b": b, "other": other}


@pytest.fixture
def export(cli, store, tmp_path, monkeypatch):
    """``export("ID", "--part", ...)`` run in tmp_path against the module's registry."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        return cli("export", *args, "--registry", str(store["root"]))

    return run


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def deltas(sd):
    return {m: u.double() @ d.double() for m, (d, u) in split_pairs(sd).items()}


def test_prints_the_path_and_uses_the_default_name(export, store, tmp_path):
    result = export(store["a"].id, "--part", "style")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / f"{store['a'].id}-style.safetensors"
    assert result.stdout == f"{path}\n" and path.is_file()
    assert chmod_of(path) == umask_mode()  # not safetensors' 0600
    assert ONE_PROMPT not in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    result = export(store["a"].id, "--format", "diffusers", "--part", "content", "-q")
    assert result.stdout == f"{tmp_path / (store['a'].id + '-content') / 'pytorch_lora_weights.safetensors'}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("alias", ["kohya", "a1111", "comfyui", "KOHYA"])
def test_format_aliases_write_kohya_files(export, store, tmp_path, alias):
    result = export(store["a"].id, "-f", alias, "-p", "content", "-o", "x.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["format"] == "kohya"
    tensors, _ = read_safetensors(tmp_path / "x.safetensors")
    assert all(k.startswith("lora_unet_") for k in tensors)


def test_json_record(export, store, tmp_path):
    result = export(store["a"].id, "--part", "both", "--dtype", "fp32", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert {"path", "format", "part", "rank", "dtype", "bytes", "sshs_model_hash", "rank_error"} <= set(record)
    assert (
        record["part"] == "both" and record["rank"] == 8 and record["dtype"] == "fp32" and record["rank_error"] is None
    )
    assert record["bytes"] == os.path.getsize(record["path"])
    assert ONE_PROMPT in result.stderr  # the note says what a single LoRA loses


def test_kohya_metadata_parses_and_hashes_match(export, store, tmp_path):
    assert export(store["a"].id, "-o", "cat.safetensors").exit_code == 0
    path = tmp_path / "cat.safetensors"
    meta = read_safetensors_metadata(path)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_v2"] == "False"  # A1111 files it under SDXL
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "8"
    assert meta["ss_output_name"] == "cat" and meta["modelspec.title"] == "cat"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.trigger_phrase"] == "monadikos cat in pencil sketch style"
    assert meta["unziplora.entry_id"] == store["a"].id and meta["unziplora.part"] == "both"
    prompts = json.loads(meta["unziplora.prompts"])
    assert prompts["content"] == "A monadikos cat" and prompts["style"] == "A cat in pencil sketch style"
    assert prompts["subject"] == "cat" and prompts["style_words"] == "pencil sketch"
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header_len :]).hexdigest()  # the tensor data region
    assert "modelspec.hash_sha256" not in meta
    tensors, _ = read_safetensors(path)
    assert (meta["sshs_model_hash"], meta["sshs_legacy_hash"]) == kohya_hashes(tensors, meta)
    assert all(t.ndim == 0 and t.dtype == torch.float32 for k, t in tensors.items() if k.endswith(".alpha"))
    assert {str(t.dtype) for k, t in tensors.items() if not k.endswith(".alpha")} == {"torch.float16"}  # default dtype


def test_diffusers_file_layout(export, store, tmp_path):
    assert export(store["a"].id, "-f", "diffusers", "-p", "style", "-o", "out/dir", "--dtype", "bf16").exit_code == 0
    path = tmp_path / "out" / "dir" / "pytorch_lora_weights.safetensors"
    tensors, meta = read_safetensors(path)
    assert meta["format"] == "pt" and meta["unziplora.part"] == "style" and "modelspec.trigger_phrase" in meta
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert export(store["a"].id, "-f", "diffusers", "-p", "style", "-o", "single.safetensors").exit_code == 0
    assert (tmp_path / "single.safetensors").is_file()


def test_content_and_style_files_hold_the_entry_loras(export, store, tmp_path):
    for part in ("content", "style"):
        assert export(store["a"].id, "-p", part, "--dtype", "fp32", "-o", f"{part}.safetensors").exit_code == 0
        theirs = deltas(from_kohya(read_safetensors(tmp_path / f"{part}.safetensors")[0]))
        ours = deltas(read(store["a"].file(f"{part}.safetensors")))
        assert theirs.keys() == ours.keys()
        assert max((theirs[m] - ours[m]).abs().max().item() for m in ours) < 1e-6


def test_rank_reduction_prints_the_measured_error(export, store, tmp_path):
    full = deltas(from_kohya(read_safetensors(_export_fp32(export, store, tmp_path, "full.safetensors"))[0]))
    result = export(store["a"].id, "--rank", "3", "--dtype", "fp32", "-o", "r3.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    reported = json.loads(result.stdout)["rank_error"]
    printed = float(re.search(r"rank 3: relative Frobenius error ([0-9.e-]+)", result.stderr).group(1))
    reduced = from_kohya(read_safetensors(tmp_path / "r3.safetensors")[0])
    assert {d.shape[0] for d, _u in split_pairs(reduced).values()} == {3}
    low = deltas(reduced)
    lost = sum(float(((low[m] - full[m]) ** 2).sum()) for m in full)
    measured = (lost / sum(float((full[m] ** 2).sum()) for m in full)) ** 0.5
    assert 0.05 < measured < 1
    assert reported == pytest.approx(measured, rel=1e-5)
    assert printed == pytest.approx(measured, rel=1e-5)


def test_rank_at_full_rank_reproduces_the_input(export, store, tmp_path):
    full = deltas(from_kohya(read_safetensors(_export_fp32(export, store, tmp_path, "full.safetensors"))[0]))
    for rank in ("8", "50"):  # 8 = r_c + r_s; above it nothing is cut either
        result = export(store["a"].id, "--rank", rank, "--dtype", "fp32", "-o", f"r{rank}.safetensors", "--json")
        assert json.loads(result.stdout)["rank_error"] < 1e-6
        again = deltas(from_kohya(read_safetensors(tmp_path / f"r{rank}.safetensors")[0]))
        assert max((again[m] - full[m]).abs().max().item() for m in full) < 1e-5


def _export_fp32(export, store, tmp_path, name):
    assert export(store["a"].id, "--dtype", "fp32", "-o", name).exit_code == 0
    return tmp_path / name


def test_existing_file_needs_force(export, store, tmp_path):
    target = tmp_path / "taken.safetensors"
    target.write_bytes(b"precious")
    result = export(store["a"].id, "-o", "taken.safetensors")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: {target} already exists; pass --force to overwrite it\n"
    assert target.read_bytes() == b"precious"
    assert export(store["a"].id, "-o", "taken.safetensors", "--force").exit_code == 0
    assert read_safetensors_metadata(target)["unziplora.entry_id"] == store["a"].id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.safetensors"]  # no temp files left


def test_out_folder_is_created_when_missing_like_every_o_folder(export, store, tmp_path):
    # -o without .safetensors names a folder: created with its parents, as compose/restyle/gallery do
    result = export(store["a"].id, "--part", "style", "-o", "new/kohya")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'new' / 'kohya' / (store['a'].id + '-style.safetensors')}\n"
    again = export(store["a"].id, "--part", "style", "-o", "new/kohya")  # and never overwritten without --force
    assert again.exit_code == 1
    assert (
        again.stderr
        == f"error: {tmp_path / 'new/kohya' / (store['a'].id + '-style.safetensors')} already exists; pass --force to overwrite it\n"
    )
    (tmp_path / "plain").write_bytes(b"keep")
    refused = export(store["a"].id, "-o", "plain")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert (
        refused.stderr
        == f"error: {tmp_path / 'plain'} is a file, not a folder; give -o a folder or a name ending in .safetensors\n"
    )
    assert (tmp_path / "plain").read_bytes() == b"keep"


@pytest.mark.parametrize(
    "args, line",
    [
        (["-f", "ckpt"], "error: unknown format 'ckpt'; use kohya (also: a1111, comfyui) or diffusers"),
        (["-p", "all"], "error: unknown part 'all'; use content, style or both"),
        (["--dtype", "fp8"], "error: unknown dtype 'fp8'; use fp16, bf16 or fp32"),
        (["--rank", "0"], "error: --rank must be a positive integer, got 0"),
        (
            ["-p", "content", "--style-from", "{b}"],
            "error: --style-from takes the style from another entry; use it with --part style or --part both",
        ),
        (
            ["--style-from", "{other}"],
            "error: cannot combine {a} and {other}: they were trained on different base models (tiny-sdxl vs some/other-base); pick a style entry trained on the same base",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(export, store, tmp_path, args, line):
    names = {"a": store["a"].id, "b": store["b"].id, "other": store["other"].id, "cwd": tmp_path}
    before = snapshot(store["root"])
    result = export(store["a"].id, *[a.format(**names) for a in args])
    usage = args[0] in ("-f", "-p", "--dtype", "--rank") or args[-2:] == ["--style-from", "{b}"]
    assert result.exit_code == (2 if usage else 1)  # usage mistakes exit 2, like Click's own
    assert result.stdout == ""
    assert result.stderr == line.format(**names) + "\n"
    assert snapshot(store["root"]) == before
    assert list(tmp_path.iterdir()) == []


def test_unknown_entry(export, store):
    result = export("nope")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_help_has_examples(cli):
    for command in ("export", "import"):
        result = cli(command, "--help")
        assert result.exit_code == 0
        examples = result.stdout.split("Examples:")[1].strip().splitlines()
        assert 2 <= len(examples) <= 3 and all(e.strip().startswith(f"unzip {command} ") for e in examples)


def test_library_api(store, tmp_path):
    from unziplora.transfer import export_entry

    result = export_entry(
        store["a"], fmt="comfyui", part="both", style_from=store["b"], rank=2, dtype="fp32", cwd=tmp_path
    )
    assert result.path == tmp_path / f"{store['a'].id}_{store['b'].id}-both.safetensors"
    assert result.rank == 2 and 0 < result.rank_error < 1 and result.style_entry_id == store["b"].id
    meta = read_safetensors_metadata(result.path)
    assert meta["unziplora.style_entry_id"] == store["b"].id
    assert json.loads(meta["unziplora.prompts"])["style_words"] == "pop art"
    assert store["a"].record["base"] == TINY_BASE


def test_metadata_names_the_trained_resolution(export, store, tmp_path):
    assert export(store["b"].id, "-o", "rose.safetensors").exit_code == 0
    meta = read_safetensors_metadata(tmp_path / "rose.safetensors")
    assert meta["modelspec.resolution"] == "64x64" and meta["ss_resolution"] == "(64, 64)"
