"""`--faithful`: the official column rule (ties, zero columns), unmasked RESET merge grads, the precision recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unziplora.errors import ConfigError
from unziplora.method import ColumnSeparation, Phase, UnZipLoRALinear, official_columns, select_columns, selection
from unziplora.train.faithful import faithful_recipe

BOTH_NAME = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def picked(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def test_official_rule_is_strictly_above_the_kth_score():
    score = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1])
    assert picked(official_columns(score, 3)) == [1]  # k-th = 0.5 ties with two more: only 0.9 is above
    assert picked(official_columns(score, 2)) == [1]  # at most k - 1
    assert picked(official_columns(score, 5)) == [0, 1, 2, 3]
    assert picked(official_columns(torch.zeros(6), 2)) == []  # top k all tie: no column at all
    distinct = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert picked(official_columns(distinct, 3)) == [0, 1]
    exclude = torch.tensor([False, True, True, False, False])
    assert picked(official_columns(score, 2, exclude)) == []  # left: 0.5, 0.5, 0.1; the 2nd is 0.5, a tie
    assert picked(official_columns(score, 4, exclude)) == [0, 3, 4]  # fewer than k left: every one not excluded
    assert not official_columns(score, 0).any()


def fake_tied_scores(monkeypatch) -> None:
    tied = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    monkeypatch.setattr(selection, "column_scores", lambda layer, branch, **kw: (tied.clone(), torch.zeros(6)))


def test_tied_scores_faithful_selects_none_default_selects_k(monkeypatch):
    fake_tied_scores(monkeypatch)
    default, faithful = UnZipLoRALinear(nn.Linear(4, 6), 2), UnZipLoRALinear(nn.Linear(4, 6), 2)
    assert select_columns(default, "both", 2) == {"content": 2, "style": 2}
    assert picked(default.mask("content")) == [0, 1] and picked(default.mask("style")) == [2, 3]
    assert select_columns(faithful, "both", 2, faithful=True) == {"content": 0, "style": 0}
    assert not faithful.mask("content").any() and not faithful.mask("style").any()


def test_tied_run_through_the_scheduler(monkeypatch):
    fake_tied_scores(monkeypatch)
    counts = {}
    for faithful in (False, True):
        layers = {BOTH_NAME: UnZipLoRALinear(nn.Linear(4, 6), 2)}
        cs = ColumnSeparation(layers, steps=6, sample_times=2, column_ratio=0.34, faithful=faithful)
        assert cs.config["faithful"] is faithful
        for step in range(6):
            cs.after_backward(step)
        counts[faithful] = cs.column_counts()[BOTH_NAME]
    assert len(cs.history) == 2
    assert counts[False] == {"content": 2, "style": 2}  # k = 2 per round; the same scores twice: the same columns
    assert counts[True] == {"content": 0, "style": 0}


def reset_grads(faithful: bool) -> torch.Tensor:
    layer = UnZipLoRALinear(nn.Linear(4, 6), 2)
    layers = {BOTH_NAME: layer}
    cs = ColumnSeparation(layers, steps=8, sample_times=2, column_ratio=0.5, faithful=faithful)
    layer.set_mask("content", torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool))
    layer.set_mask("style", torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.bool))
    for b in ("content", "style"):
        layer.set_mask_active(b, True)
        layer.merge[b].grad = torch.ones(6)
    assert cs.phase(4) is Phase.RESET
    cs.after_backward(4)
    return layer.merge["content"].grad


def test_reset_step_applies_the_unmasked_merge_grad_only_when_faithful():
    torch.testing.assert_close(reset_grads(False), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))  # the overlap only
    torch.testing.assert_close(reset_grads(True), torch.ones(6))


def test_old_checkpoint_state_without_the_key_still_loads():
    layers = {BOTH_NAME: UnZipLoRALinear(nn.Linear(4, 6), 2)}
    cs = ColumnSeparation(layers, steps=8)
    state = cs.state_dict()
    del state["config"]["faithful"]
    cs.load_state_dict(state)
    with pytest.raises(ValueError):
        ColumnSeparation(layers, steps=8, faithful=True).load_state_dict(state)


def test_checkpoint_state_that_named_the_steps_max_train_steps_still_loads():
    layers = {BOTH_NAME: UnZipLoRALinear(nn.Linear(4, 6), 2)}
    state = ColumnSeparation(layers, steps=8).state_dict()
    state["config"]["max_train_steps"] = state["config"].pop("steps")
    ColumnSeparation(layers, steps=8).load_state_dict(state)
    with pytest.raises(ValueError):
        ColumnSeparation(layers, steps=9).load_state_dict(state)


def test_recipe_per_machine():
    cuda = faithful_recipe("cuda", "auto", "adamw", have_8bit=True)
    assert (cuda.precision, cuda.optimizer, cuda.notes) == ("fp16", "adamw8bit", [])
    no_bnb = faithful_recipe("cuda", "fp16", "adamw", have_8bit=False)
    assert no_bnb.optimizer == "adamw" and "bitsandbytes is not installed" in no_bnb.notes[0]
    cpu = faithful_recipe("cpu", "auto", "adamw", have_8bit=False)
    assert cpu.precision == "fp32" and cpu.record()["official_precision"] is False
    assert any("not available on CPU" in n for n in cpu.notes)
    with pytest.raises(ConfigError, match="--precision bf16 contradicts"):
        faithful_recipe("cuda", "bf16", "adamw")
    with pytest.raises(ConfigError, match="needs a GPU"):
        faithful_recipe("cpu", "fp16", "adamw")


def test_cli_faithful_on_cpu_warns_and_records(cli, isolated_env: Path, tmp_path: Path) -> None:
    from tests.test_train_cli import TINY, entry_dir, make_image

    image = make_image(tmp_path / "cat.png")
    result = cli(
        "train",
        str(image),
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--steps",
        "4",
        "--sample-times",
        "1",
        "--faithful",
        "--device",
        "cpu",
        *TINY,
    )
    assert result.exit_code == 0, result.stderr
    assert "--faithful: fp16 autocast with loss scaling is not available on CPU" in result.stderr
    record = json.loads((entry_dir(isolated_env, result.stdout.strip()) / "entry.json").read_text())
    assert record["settings"]["faithful"] is True and "--faithful" in record["command"]
    recipe = record["figures"]["faithful"]
    assert recipe["precision"] == "fp32" and recipe["reset_merge_grads"] == "unmasked"
    assert record["figures"]["precision"] == "fp32"
    refused = cli(
        "train",
        str(image),
        "--subject",
        "cat",
        "--style",
        "sketch",
        "--faithful",
        "--device",
        "cpu",
        "--precision",
        "bf16",
        *TINY,
    )
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")


def test_config_key_train_faithful(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unziplora.settings import load_settings

    config = tmp_path / "faithful.toml"
    monkeypatch.setenv("UNZIPLORA_CONFIG", str(config))
    assert load_settings().train.faithful is False
    config.write_text("[train]\nfaithful = true\n")
    assert load_settings().train.faithful is True
    config.write_text('[train]\nfaithful = "yes"\n')
    with pytest.raises(ConfigError, match="'train.faithful' must be true or false"):
        load_settings()
    config.write_text("[train]\nsteps = true\n")
    with pytest.raises(ConfigError, match="'train.steps' must be an integer"):
        load_settings()


@pytest.mark.parametrize("bf16_ok", [True, False])
def test_generation_on_cuda_defaults_to_fp16_training_to_bf16(monkeypatch: pytest.MonkeyPatch, bf16_ok: bool) -> None:
    from unziplora.device import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_precision("cuda", "auto", purpose="generate") == "fp16"
    assert resolve_precision("cuda:1", "auto", purpose="generate") == "fp16"
    assert resolve_precision("cuda", "auto") == ("bf16" if bf16_ok else "fp16")  # training unchanged
    assert resolve_precision("cpu", "auto", purpose="generate") == "fp32"
    assert resolve_precision("cuda", "fp32", purpose="generate") == "fp32"
    if bf16_ok:
        assert resolve_precision("cuda", "bf16", purpose="generate") == "bf16"  # still available explicitly


def test_faithful_threshold_follows_the_current_loss_scale() -> None:
    """ALGORITHM 9 #3: official C(S*g) > 1e-5 equals ours C(g) / (65536 / S) > 1e-5 / 65536."""
    from unziplora.method.selection import DEFAULT_THRESHOLD, OFFICIAL_THRESHOLD, faithful_grad_scale

    assert faithful_grad_scale(65536.0, True) == 1.0
    assert faithful_grad_scale(32768.0, True) == 2.0  # after one overflow the official test got stricter
    assert faithful_grad_scale(32768.0, False) == 1.0 and faithful_grad_scale(None, True) == 1.0
    cone = 3e-10  # an unscaled cone entry
    for scale in (65536.0, 32768.0, 1024.0):
        official = cone * scale > OFFICIAL_THRESHOLD
        ours = cone / faithful_grad_scale(scale, True) > DEFAULT_THRESHOLD
        assert official == ours, scale
