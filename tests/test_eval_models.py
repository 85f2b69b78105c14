"""The evaluation models load through from_pretrained (tiny random CLIP + DINOv2 built offline) and embed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unziplora.errors import BaseModelError


@pytest.fixture(scope="module")
def tiny_eval_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.eval_helpers import build_tiny_eval_models

    return build_tiny_eval_models(tmp_path_factory.mktemp("eval-models"))


def image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(40, 40, 3) * 255).astype("uint8"))


def test_tiny_models_embed_deterministically(tiny_eval_models: tuple[Path, Path]) -> None:
    import torch

    from unziplora.eval.metrics import cosine
    from unziplora.eval.models import Embedders

    clip_dir, dino_dir = tiny_eval_models
    emb = Embedders.load(str(clip_dir), str(dino_dir))
    images = [image(1), image(1), image(2)]
    clip_i, dino_i = emb.clip_images(images), emb.dino_images(images)
    assert clip_i.shape == (3, 16) and dino_i.shape == (3, 32)
    torch.testing.assert_close(cosine(clip_i[0:1], clip_i[1]), torch.ones(1))  # the same image
    assert float(cosine(dino_i[0:1], dino_i[2])) < 0.9999  # a different one
    texts = emb.clip_texts(["a cat", "in sketch style"])
    assert texts.shape == (2, 16) and not torch.allclose(texts[0], texts[1])
    torch.testing.assert_close(Embedders.load(str(clip_dir), str(dino_dir)).clip_texts(["a cat"]), texts[0:1])


def test_missing_models_give_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unziplora.eval.models import Embedders

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BaseModelError) as info:
        Embedders.load("nobody/no-such-clip", "nobody/no-such-dino")
    message = str(info.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message
    assert "`hf download nobody/no-such-clip`" in message
    with pytest.raises(BaseModelError, match="does not exist"):
        Embedders.load(str(tmp_path / "absent"), "x")
