"""CPU thread policy: small UNets run on one intra-op thread unless the user said otherwise."""

from __future__ import annotations

import pytest

from unziplora.device import SMALL_MODEL_PARAMS, cpu_threads_for
from unziplora.errors import DeviceError


def test_small_model_gets_one_thread():
    assert cpu_threads_for(2_000_000, {}) == 1


def test_large_model_keeps_torch_default():
    assert cpu_threads_for(2_567_000_000, {}) is None
    assert cpu_threads_for(SMALL_MODEL_PARAMS, {}) is None


def test_user_choices_win():
    assert cpu_threads_for(2_000_000, {"OMP_NUM_THREADS": "4"}) is None  # torch already follows it
    assert cpu_threads_for(2_000_000, {"UNZIPLORA_THREADS": "3"}) == 3
    assert cpu_threads_for(2_567_000_000, {"UNZIPLORA_THREADS": "2", "OMP_NUM_THREADS": "8"}) == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_count_is_one_line(bad):
    with pytest.raises(DeviceError, match="UNZIPLORA_THREADS"):
        cpu_threads_for(1, {"UNZIPLORA_THREADS": bad})


def test_loading_tiny_applies_the_policy(monkeypatch):
    torch = pytest.importorskip("torch")
    from unziplora.base_model import load_pipeline, parse_base

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("UNZIPLORA_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_pipeline(parse_base("tiny-sdxl"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
