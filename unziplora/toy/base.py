"""The toy base's architecture: SDXL's classes and block layout at toy widths, for the toy world.

``scripts/pretrain_toy.py`` (:mod:`unziplora.toy.pretrain`) trains these models on
:mod:`unziplora.toy.world` and writes their fp16 weights as one safetensors file;
:func:`build_toy_sdxl_pipeline` puts such a file back into the same classes as SDXL's (two CLIP
text encoders, tokenizers, ``UNet2DConditionModel`` with SDXL's block layout and ``text_time``
conditioning, ``AutoencoderKL``). The shipped :data:`WEIGHTS_FILE` (14 MB, fp16) is the second
design's run (``scripts/logs/pretrain_toy2.log``): its images classify 0.972 shape / 0.965 style on
held-out seeds (targets 0.90 / 0.80). Not a ``--base`` yet: ``toy-sdxl`` is not a base name until the
folder path, the separation benchmark and its CI test use it.

The tokenizer knows the world's words as whole tokens (so "circle" is one token, as a real CLIP
vocabulary would have it); every other word, such as ``monadikos`` or the held-out style
``zigzag``, falls back to characters.
"""

from __future__ import annotations

import json
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

from unziplora.clip_bpe import byte_chars
from unziplora.tiny_sdxl import SDXL_SCHEDULER_CONFIG, UNET_CONFIG, VAE_CONFIG

WEIGHTS_FILE = Path(__file__).with_name("toy_sdxl.safetensors")  # scripts/pretrain_toy.py's output, shipped
# The base draws 32 px images: the world is drawn at 64 px and area-averaged, so pretraining fits a
# shared 2-core CPU. The VAE has 3 blocks (factor 4, an 8x8x4 latent): the first design's 4 blocks
# (factor 8, 4x4x4) lost shape and texture in the round trip (0.685 / 0.620 classified, see
# scripts/logs/pretrain_toy.log), capping any UNet below the targets. One latent cell is one 4 px
# texture cell of the world at 32 px.
RESOLUTION = 32
VAE_FACTOR = 4

# The SDXL layout of tiny-sdxl (all 11 attention groups, SDXL module names), one transformer block
# per attention so pretraining fits a 2-core CPU; trained, not random.
TOY_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "transformer_layers_per_block": (1, 1, 1),
    "sample_size": RESOLUTION // VAE_FACTOR,
}
TOY_VAE_CONFIG: dict[str, Any] = {
    **VAE_CONFIG,
    "block_out_channels": (32, 32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "sample_size": RESOLUTION,
}
assert 2 ** (len(TOY_VAE_CONFIG["block_out_channels"]) - 1) == VAE_FACTOR
TEXT_HIDDEN = 32
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "max_position_embeddings": 77,
    "projection_dim": TEXT_HIDDEN,
    "hidden_act": "gelu",
}


def words() -> tuple[str, ...]:
    """Whole-word tokens: the caption words the base was trained on (the world is imported here,
    not at module level, so ``--base`` parsing stays free of numpy and PIL)."""
    from unziplora.toy.world import SHAPES, TRAIN_STYLES

    return ("a", "an", "in", "image", "style", *SHAPES, *TRAIN_STYLES)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word (the last symbol carries ``</w>``), as ``CLIPTokenizer.bpe`` does it."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(pairwise(parts))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def write_tokenizer_files(folder: Path) -> None:
    """A CLIP byte-level BPE vocabulary: all bytes, plus merges that build each of :func:`words` whole.

    Merges are added left to right over whatever pieces BPE still leaves a word in (another word's
    earlier merge may have claimed a pair), until every word is one token. Every merge product is
    in the vocabulary too, so a merge that fires inside some other word still yields a known token.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_chars()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words():
        while len(parts := _bpe(word, ranks)) > 1:
            left = parts[0]
            for right in parts[1:]:
                if (left, right) not in ranks:
                    ranks[(left, right)] = len(merges)
                    merges.append((left, right))
                left = left + right
                vocab.setdefault(left, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = "\n".join(f"{a} {b}" for a, b in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + lines + "\n", encoding="utf-8")


def make_tokenizers() -> tuple[Any, Any]:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        return (
            CLIPTokenizer.from_pretrained(tmp, model_max_length=77),
            CLIPTokenizer.from_pretrained(tmp, model_max_length=77),
        )


def make_models(tokenizer: Any, seed: int, vae_scaling_factor: float | None = None) -> dict[str, Any]:
    """Fresh (initialised from ``seed``) unet, vae, text_encoder, text_encoder_2 in fp32."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **TEXT_CONFIG,
    )
    vae_config = dict(TOY_VAE_CONFIG)
    if vae_scaling_factor is not None:
        vae_config["scaling_factor"] = vae_scaling_factor
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TOY_UNET_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**vae_config)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(config)
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(config)
    finally:
        torch.random.set_rng_state(state)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}


def build_toy_sdxl_pipeline(weights: Path = WEIGHTS_FILE) -> Any:
    """The toy pipeline in memory (fp32) from the shipped fp16 weights file."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors import safe_open

    tokenizer, tokenizer_2 = make_tokenizers()
    with safe_open(str(weights), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no items()
    models = make_models(tokenizer, seed=0, vae_scaling_factor=float(meta["vae_scaling_factor"]))
    for name, model in models.items():
        prefix = name + "."
        state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        model.load_state_dict(state, strict=True)
        model.eval()
    return StableDiffusionXLPipeline(
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        **models,
    )
