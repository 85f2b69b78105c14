"""``unzip import``: official outputs and plain LoRA files become ordinary entries marked imported.

The official output is built here as ALGORITHM.md 8 documents it (``unet.unet.`` keys, masks as
zero ``up`` rows, ``nn.Parameter`` merges in ``.pth`` files). The imported entry, loaded the way
``unzip compose`` loads entries (``unziplora.generate.assemble``; method.state when that package is
absent), must give the official combined formula computed by hand:
``K = W_k E_i + (B_c A_c E_c) m_c + (B_s A_s E_s) m_s`` at a cross-attention layer, and the same
formula everywhere (every other projection sees one input) for the whole UNet output.
"""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from transfer_helpers import fake_official, make_entry, read, run_unet, snapshot, tiny_unet

from unziplora.base_model import fingerprint, parse_base
from unziplora.formats.io import read_safetensors, write_safetensors
from unziplora.registry import Registry
from unziplora.transfer.layout import base_projection_shapes

SHAPES = base_projection_shapes(parse_base("tiny-sdxl"))
WORDS = ["--subject", "cat", "--style", "sketch", "--base", "tiny-sdxl"]


class Foo:
    """Not a tensor: the weights-only unpickler must refuse it."""


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return fake_official(tmp_path_factory.mktemp("official"), SHAPES)


@pytest.fixture
def reg(isolated_env):
    reg = Registry(isolated_env)
    make_entry(reg, seed=5)  # so the registry exists and "unchanged" means something
    return reg


def imported(cli, reg, *args):
    result = cli("import", *args)
    assert result.exit_code == 0, result.stderr
    return reg.get(result.stdout.strip())


def refused(cli, reg, *args, code: int = 1) -> str:
    before = snapshot(reg.root)
    result = cli("import", *args)
    assert result.exit_code == code and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert snapshot(reg.root) == before
    return result.stderr.removeprefix("error: ").rstrip("\n")


def load_like_compose(entry):
    """A tiny UNet with the entry's content and style loaded, prompt separation on."""
    unet = tiny_unet()
    try:
        from unziplora.generate.assemble import assemble
    except ImportError:  # the generate package is not there yet: the same loading, by hand
        from unziplora.method import inject_unziplora, load_unziplora_state

        layers = inject_unziplora(unet, 4, init="zero")
        load_unziplora_state(
            layers,
            read(entry.file("content.safetensors")),
            read(entry.file("style.safetensors")),
            read(entry.file("masks.safetensors")),
        )
    else:
        layers = assemble(unet, entry, entry)
    return unet, layers


def hand_official(truth, e_c, e_s):
    """The official combined forward, by hand on a plain UNet: fold ``(B⊙m) A`` into every weight
    that sees one input; add the prompt-separated branches to attn2.to_k/to_v with forward hooks."""
    unet = tiny_unet()
    modules = dict(unet.named_modules())
    with torch.no_grad():
        for name in SHAPES:
            (dc, uc, mc), (ds, us, ms) = truth["content"][name], truth["style"][name]
            if ".attn2.to_k" in name or ".attn2.to_v" in name:

                def hook(_mod, _args, out, dc=dc, uc=uc, mc=mc, ds=ds, us=us, ms=ms):
                    return out + (e_c @ dc.T @ uc.T) * mc + (e_s @ ds.T @ us.T) * ms

                modules[name].register_forward_hook(hook)
            else:
                modules[name].weight += (uc * mc[:, None]) @ dc + (us * ms[:, None]) @ ds
    return unet


@pytest.mark.parametrize(
    "given", ["{X}", "{X}_style/", "{X}_content/pytorch_lora_weights.safetensors", "{X}_merger_style.pth"]
)
def test_official_output_imports_from_any_piece(cli, reg, official, given):
    stem, _truth = official
    entry = imported(cli, reg, given.format(X=stem), *WORDS)
    rec = entry.record
    assert rec["kind"] == "imported" and rec["imported"] is True
    assert rec["base"] == {"ref": "tiny-sdxl", "kind": "tiny", "fingerprint": fingerprint(parse_base("tiny-sdxl"))}
    assert rec["prompts"] == {
        "combined": "A monadikos cat in sketch style",
        "content": "A monadikos cat",
        "style": "A cat in sketch style",
    }
    assert rec["settings"]["rank"] == 4 and rec["provenance"]["format"] == "official"
    files = rec["provenance"]["files"]
    assert [f["path"].rsplit("/", 2)[-2:] for f in files][2:] == [
        ["sketch_cat", "sketch_cat_merger_content.pth"],
        ["sketch_cat", "sketch_cat_merger_style.pth"],
    ]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in files)
    assert set(entry.files) == {"content.safetensors", "style.safetensors", "masks.safetensors"}


def test_masks_file_has_the_method_layout(cli, reg, official):
    from unziplora.method import inject_unziplora, merge_state_dict

    stem, truth = official
    entry = imported(cli, reg, str(stem), *WORDS)
    masks = read(entry.file("masks.safetensors"))
    reference = merge_state_dict(inject_unziplora(tiny_unet(), 4))
    assert masks.keys() == reference.keys()
    assert all(masks[k].dtype == v.dtype and masks[k].shape == v.shape for k, v in reference.items())
    for name, (_d, up, merge) in truth["style"].items():
        assert torch.equal(masks[f"{name}.merge_style"], merge)
        assert torch.equal(masks[f"{name}.mask_style"], (up != 0).any(dim=1))  # recovered from zero rows
    content = read(entry.file("content.safetensors"))
    name = next(iter(SHAPES))
    assert torch.equal(content[f"unet.{name}.lora_B.weight"], truth["content"][name][1])


def test_compose_of_imported_official_equals_the_official_formula(cli, reg, official):
    stem, truth = official
    entry = imported(cli, reg, str(stem), *WORDS)
    unet, layers = load_like_compose(entry)
    g = torch.Generator().manual_seed(11)
    e_i, e_c, e_s = (torch.randn(2, 77, 64, generator=g) for _ in range(3))
    # one cross-attention layer: K
    name = "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_k"
    base = dict(tiny_unet().named_modules())[name]
    (dc, uc, mc), (ds, us, ms) = truth["content"][name], truth["style"][name]
    expected_k = base(e_i) + (e_c @ dc.T @ uc.T) * mc + (e_s @ ds.T @ us.T) * ms
    with torch.no_grad():
        k = layers[name](e_i, content_input=e_c, style_input=e_s)
    torch.testing.assert_close(k, expected_k, atol=1e-5, rtol=1e-5)
    # the whole UNet
    from transfer_helpers import unet_inputs

    inputs = unet_inputs()
    inputs["encoder_hidden_states"] = e_i
    kwargs = {"content_encoder_hidden_states": e_c, "style_encoder_hidden_states": e_s}
    with torch.no_grad():
        ours = unet(**inputs, cross_attention_kwargs=kwargs, return_dict=False)[0]
        theirs = hand_official(truth, e_c, e_s)(**inputs, return_dict=False)[0]
        plain = tiny_unet()(**inputs, return_dict=False)[0]
    assert (theirs - plain).abs().max() > 1e-2
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_imported_official_exports_the_folded_sum(cli, reg, official, tmp_path):
    from unziplora.formats._keys import split_pairs
    from unziplora.formats.kohya import from_kohya

    stem, truth = official
    entry = imported(cli, reg, str(stem), *WORDS)
    out = tmp_path / "both.safetensors"
    assert cli("export", entry.id, "--dtype", "fp32", "-o", str(out)).exit_code == 0
    pairs = split_pairs(from_kohya(read_safetensors(out)[0]))
    for name, (dc, uc, mc) in truth["content"].items():
        ds, us, ms = truth["style"][name]
        down, up = pairs[name]
        torch.testing.assert_close(up @ down, (uc * mc[:, None]) @ dc + (us * ms[:, None]) @ ds, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "payload", [{"unet.x.lora.merge_style": "not a tensor"}, {"unet.x.lora.merge_style": Foo()}, [1, 2]]
)
def test_pth_with_anything_but_tensors_is_refused(cli, reg, tmp_path, payload):
    stem, _ = fake_official(tmp_path, SHAPES)
    torch.save(payload, f"{stem}_merger_style.pth")
    line = refused(cli, reg, str(stem), *WORDS)
    assert line.startswith(f"refusing {stem}_merger_style.pth: ")


def test_official_output_without_words_is_refused_off_a_terminal(cli, reg, official):
    stem, _ = official
    line = refused(cli, reg, str(stem), "--base", "tiny-sdxl")
    assert (
        line
        == 'the files do not say which subject and style they hold; pass --subject and --style (e.g. --subject cat --style "pencil sketch")'
    )
    assert refused(cli, reg, str(stem), "--subject", "cat", "--base", "tiny-sdxl").startswith(
        "the files do not say which style they hold; pass --style "
    )


def test_words_are_asked_for_on_a_terminal(cli, reg, official, monkeypatch):
    from unziplora_cli.commands import transfer

    monkeypatch.setattr(transfer, "_interactive", lambda: True)
    stem, _ = official
    result = cli("import", str(stem), "--base", "tiny-sdxl", input="cat\nink wash\n")
    assert result.exit_code == 0, result.stderr
    entry = reg.get(result.stdout.strip().splitlines()[-1])  # the runner echoes the typed answers
    assert (entry.subject, entry.style) == ("cat", "ink wash")
    assert "Subject words (e.g. cat):" in result.stderr and "Style words" in result.stderr


def test_official_for_another_base_is_refused(cli, reg, official):
    stem, _ = official
    line = refused(cli, reg, str(stem), "--subject", "cat", "--style", "sketch")  # default base: SDXL
    assert line == (
        "the content LoRA does not cover base stabilityai/stable-diffusion-xl-base-1.0: 384 of the 560 attention "
        "projections are missing (e.g. down_blocks.2.attentions.0.transformer_blocks.2.attn1.to_q); it was made for "
        "another base (pass --base MODEL) or is not a full attention LoRA"
    )


@pytest.fixture(scope="module")
def plain_files(tmp_path_factory):
    """A content LoRA exported as kohya and a style LoRA exported as diffusers, from one entry."""
    from unziplora.transfer import export_entry

    folder = tmp_path_factory.mktemp("plain")
    reg = Registry(folder / "reg")
    entry = make_entry(reg, subject="fox", style="chalk art", seed=7)
    content = export_entry(entry, fmt="kohya", part="content", dtype="fp32", cwd=folder).path
    style = export_entry(entry, fmt="diffusers", part="style", dtype="fp32", cwd=folder).path
    return entry, content, style


def test_plain_files_import_with_words_from_their_metadata(cli, reg, plain_files):
    source, content, style = plain_files
    entry = imported(cli, reg, str(content), str(style.parent), "--base", "tiny-sdxl", "--name", "fox-again")
    assert entry.name == "fox-again" and (entry.subject, entry.style) == ("fox", "chalk art")
    assert entry.record["prompts"] == source.record["prompts"]
    assert entry.record["provenance"]["format"] == "kohya+diffusers" and entry.record["kind"] == "imported"
    for part in ("content", "style"):
        ours, theirs = read(entry.file(f"{part}.safetensors")), read(source.file(f"{part}.safetensors"))
        assert ours.keys() == theirs.keys()
        assert max(((ours[k].double() - theirs[k].double()).abs().max().item()) for k in ours) < 1e-6
    masks = read(entry.file("masks.safetensors"))
    assert all(v.all() if v.dtype == torch.bool else torch.equal(v, torch.ones_like(v)) for v in masks.values())
    # standalone modes of the imported entry equal the source entry's
    from transfer_helpers import native_unet

    from unziplora.method import mode

    for e in (entry, source):
        unet, layers = native_unet(tiny_unet(), e)
        with mode(layers, "content"):
            e.out = run_unet(unet)
    torch.testing.assert_close(entry.out, source.out, atol=1e-5, rtol=1e-5)


def test_flags_override_the_words_read(cli, reg, plain_files):
    _source, content, style = plain_files
    entry = imported(cli, reg, str(content), str(style), "--subject", "wolf", "--style", "oil", "--base", "tiny-sdxl")
    assert entry.record["prompts"]["combined"] == "A monadikos wolf in oil style"


def test_plain_files_without_words_are_refused(cli, reg, plain_files, tmp_path):
    _source, content, style = plain_files
    tensors, _ = read_safetensors(content)
    write_safetensors(tmp_path / "bare.safetensors", tensors, {})
    line = refused(
        cli, reg, str(tmp_path / "bare.safetensors"), str(tmp_path / "bare.safetensors"), "--base", "tiny-sdxl"
    )
    assert line.startswith("the content and the style LoRA are the same file")
    tensors, _ = read_safetensors(style)
    write_safetensors(tmp_path / "bare-style.safetensors", tensors, {"format": "pt"})
    line = refused(
        cli, reg, str(tmp_path / "bare.safetensors"), str(tmp_path / "bare-style.safetensors"), "--base", "tiny-sdxl"
    )
    assert line.startswith("the files do not say which subject and style they hold; pass --subject and --style ")


def _kohya_with(tmp_path, content, extra):
    tensors, meta = read_safetensors(content)
    tensors.update(extra)
    write_safetensors(tmp_path / "extra.safetensors", tensors, meta, force=True)
    return str(tmp_path / "extra.safetensors")


def test_foreign_or_partial_loras_are_refused(cli, reg, plain_files, tmp_path):
    _source, content, style = plain_files
    ff = {
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 64),
        "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(64, 2),
    }
    line = refused(cli, reg, _kohya_with(tmp_path, content, ff), str(style), "--base", "tiny-sdxl")
    assert line == (
        "the content LoRA changes 1 modules that are not attention projections "
        "(e.g. lora_unet_input_blocks_4_1_proj_in); unziplora entries hold LoRAs of to_q/to_k/to_v/to_out.0 "
        "only: pass --attention-only to drop them"
    )
    te = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 32),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(32, 2),
    }
    path = _kohya_with(tmp_path, content, te)
    assert "changes the text encoders" in refused(cli, reg, path, str(style), "--base", "tiny-sdxl")
    assert (
        imported(cli, reg, path, str(style), "--base", "tiny-sdxl", "--skip-text-encoders").record["kind"] == "imported"
    )
    tensors, meta = read_safetensors(content)
    partial = {k: v for k, v in tensors.items() if "output_blocks_5_1" not in k}
    write_safetensors(tmp_path / "partial.safetensors", partial, meta)
    line = refused(cli, reg, str(tmp_path / "partial.safetensors"), str(style), "--base", "tiny-sdxl")
    assert line.startswith(
        "the content LoRA does not cover base tiny-sdxl: 16 of the 176 attention projections are missing"
    )
    write_safetensors(tmp_path / "junk.safetensors", {"model.weight": torch.zeros(2)}, {})
    line = refused(cli, reg, str(tmp_path / "junk.safetensors"), str(style), "--base", "tiny-sdxl")
    assert line.startswith(
        f"content LoRA {tmp_path / 'junk.safetensors'}: it is not a LoRA in a format unziplora reads"
    )


def test_bad_paths_are_refused(cli, reg, plain_files, tmp_path):
    _source, content, style = plain_files
    (tmp_path / "lora.pth").write_bytes(b"x")
    assert refused(cli, reg, str(tmp_path / "lora.pth"), str(style)).startswith(
        f"{tmp_path / 'lora.pth'} is a pickle (.pth)"
    )
    assert refused(cli, reg, str(content)).startswith(
        f"{content} is a single LoRA file; import needs a content and a style LoRA"
    )
    assert (
        refused(cli, reg, "a", "b", "c", code=2)  # a usage mistake
        == "import takes one official output or a content and a style file, not 3 paths"
    )
    assert refused(cli, reg, str(tmp_path / "nothing")).startswith(
        f"{tmp_path / 'nothing'} is not an official UnZipLoRA output"
    )
    assert (
        refused(cli, reg, str(content), str(tmp_path / "gone.safetensors"))
        == f"the style LoRA {tmp_path / 'gone.safetensors'} does not exist"
    )


def test_json_output_is_the_entry(cli, reg, official):
    stem, _ = official
    result = cli("import", str(stem), *WORDS, "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["kind"] == "imported" and record["id"] in reg.ids()
    shown = json.loads(cli("show", record["id"], "--json").stdout)
    assert set(record) == set(shown) and record["preview"] is None  # the same entry record as show/list
    assert "\nmoved:       -\n" in cli("show", record["id"]).stdout  # nothing to compare an import with


def test_library_api(reg, official):
    from unziplora.transfer import import_official

    stem, _ = official
    asked = []
    entry = import_official(
        stem, reg, base="tiny-sdxl", ask=lambda what: asked.append(what) or {"subject": "cat", "style": "sketch"}[what]
    )
    assert asked == ["subject", "style"] and entry.record["imported"] is True
    assert copy.deepcopy(entry.record["provenance"])["official_output"] == str(stem.resolve())
