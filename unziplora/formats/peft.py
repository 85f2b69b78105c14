"""diffusers/PEFT-named LoRAs: writing ``pytorch_lora_weights.safetensors``, recognising formats,
and reading every diffusers-era key spelling into our internal keys.

Why: our internal format *is* the diffusers one (``unet.<m>.lora_A/B.weight``, scale 1), so export
is a cast plus a header. ``lora_adapter_metadata`` is deliberately not written: with no alphas
diffusers takes ``lora_alpha = r`` per module (rank_pattern included), i.e. scale 1, which is
exact (FORMATS.md 5, 7 (b)). Import has to accept what older tools wrote: diffusers < 0.26
``lora.down/up`` keys, attention-processor ``to_q_lora`` keys, PEFT keys without ``unet.``, and
the official UnZipLoRA ``unet.unet.`` double prefix (ALGORITHM.md 8).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unziplora.errors import ImportFormatError
from unziplora.formats import metadata as md
from unziplora.formats._keys import UNET_PREFIX, join_pairs, split_pairs
from unziplora.formats.kohya import KOHYA_PREFIXES, resolve_dtype

if TYPE_CHECKING:
    import torch

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE

# (regex on the key after the component prefix, factor). Group 1 = module path, group 2 if present = projection.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(.+)\.lora_A\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_B\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora\.down\.weight$"), "down"),  # diffusers < 0.26 / official UnZipLoRA
    (re.compile(r"^(.+)\.lora\.up\.weight$"), "up"),
    (re.compile(r"^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.down\.weight$"), "down"),  # attn processors
    (re.compile(r"^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.up\.weight$"), "up"),
)
_UNET_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.", "add_embedding.")
_TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.", "te.", "te1.", "te2.")


def _parse(key: str) -> tuple[str, str] | None:
    """Key without component prefix -> (diffusers module, "down"|"up"), or None."""
    for pattern, which in _PATTERNS:
        m = pattern.match(key)
        if m:
            module = m.group(1)
            if m.lastindex == 2:
                proj = m.group(2)
                module = f"{module}.{'to_out.0' if proj == 'to_out' else proj}"
            return module, which
    return None


def _strip_unet_prefix(key: str) -> str | None:
    """The key relative to the UNet, or None if it belongs to no UNet."""
    for prefix in ("unet.unet.", "base_model.model.", UNET_PREFIX):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key if key.startswith(_UNET_ROOTS) else None


def detect_format(tensors: Mapping[str, object]) -> str:
    """Which format a LoRA state dict is in: ``"kohya"``, ``"official"`` (UnZipLoRA's
    ``unet.unet.`` keys), ``"peft"`` (any diffusers/PEFT spelling :func:`from_peft` reads) or
    ``"unknown"``. Looks at key names only."""
    keys = list(tensors)
    if not keys:
        return "unknown"
    if all(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if any(k.startswith("unet.unet.") for k in keys):
        return "official"
    if all(k.startswith(_TEXT_ENCODER_PREFIXES) or _parse(k) is not None for k in keys):
        return "peft"
    return "unknown"


def _scales(config_json: str | None, ranks: Mapping[str, int]) -> dict[str, float]:
    """Per-module scale from diffusers' ``lora_adapter_metadata`` (a prefixed ``LoraConfig`` dict)."""
    if not config_json:
        return {}
    try:
        raw = json.loads(config_json)
    except ValueError:
        raise ImportFormatError("the file's lora_adapter_metadata header is not valid JSON.") from None
    config = (
        {k[len(UNET_PREFIX) :]: v for k, v in raw.items() if k.startswith(UNET_PREFIX)} if isinstance(raw, dict) else {}
    )
    if "lora_alpha" not in config:
        return {}

    def number(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ImportFormatError(
                f"the file's lora_adapter_metadata has {what} {value!r}; it must be a positive number."
            )
        return float(value)

    alpha_pattern = config.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict):
        raise ImportFormatError("the file's lora_adapter_metadata alpha_pattern is not an object.")
    base_alpha = number(config["lora_alpha"], "lora_alpha")
    scales = {}
    for module, rank in ranks.items():
        if rank <= 0:
            raise ImportFormatError(f"LoRA module {module!r} has rank 0.")
        alpha = base_alpha
        for pattern, value in alpha_pattern.items():  # PEFT's get_pattern_key: suffix match
            try:
                hit = re.fullmatch(rf"(.*\.)?({pattern})", module) or module.endswith(str(pattern))
            except re.error as exc:
                raise ImportFormatError(
                    f"the file's lora_adapter_metadata alpha_pattern {str(pattern)[:60]!r} is not a valid pattern ({exc})."
                ) from None
            if hit:
                alpha = number(value, f"alpha_pattern value for {str(pattern)[:60]!r}")
                break
        scales[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return scales


def from_peft(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    skip_text_encoders: bool = False,
) -> dict[str, torch.Tensor]:
    """Any diffusers/PEFT/official key spelling -> internal keys at scale 1.

    Args:
        tensors: the file's tensors.
        metadata: the file's header; a ``lora_adapter_metadata`` entry (diffusers' saved
            ``LoraConfig``) supplies ``lora_alpha`` / ``alpha_pattern`` / ``use_rslora``, baked into ``up``.
        skip_text_encoders: drop ``text_encoder(_2).`` keys instead of refusing the file.

    Raises:
        ImportFormatError: unknown keys, text-encoder keys (unless skipped), inconsistent factors.
    """
    import torch

    found: dict[str, dict[str, torch.Tensor]] = {}
    text_encoder_keys = 0
    dora = [k for k in tensors if "lora_magnitude_vector" in k]
    if dora:
        raise ImportFormatError(
            f"it is a DoRA LoRA ({len(dora)} lora_magnitude_vector keys, e.g. {dora[0]!r}); DoRA is not supported, "
            "only plain LoRAs"
        )
    for key, value in tensors.items():
        if key.startswith(_TEXT_ENCODER_PREFIXES):
            text_encoder_keys += 1
            continue
        rest = _strip_unet_prefix(key)
        parsed = _parse(rest) if rest is not None else None
        if parsed is None:
            raise ImportFormatError(f"{key!r} is not a diffusers/PEFT UNet LoRA key (…lora_A.weight / …lora_B.weight).")
        module, which = parsed
        if which in found.setdefault(module, {}):
            raise ImportFormatError(f"module {module!r} appears twice in the file under different key spellings.")
        found[module][which] = value
    if text_encoder_keys and not skip_text_encoders:
        raise ImportFormatError(
            f"the LoRA also changes the text encoders ({text_encoder_keys} tensors); unziplora keeps UNet LoRAs only — "
            "pass --skip-text-encoders to import the UNet part only"
        )
    if not found:
        raise ImportFormatError("the file holds no UNet LoRA tensors.")
    lonely = [m for m, f in found.items() if len(f) != 2]
    if lonely:
        raise ImportFormatError(
            f"LoRA module {lonely[0]!r} has only one of its two factors ({len(lonely)} such modules)."
        )
    pairs = {m: (f["down"], f["up"]) for m, f in found.items()}
    sd = join_pairs(pairs)
    split_pairs(sd, error=ImportFormatError)  # shape checks
    scales = _scales(
        (metadata or {}).get("lora_adapter_metadata"), {m: int(d.shape[0]) for m, (d, _u) in pairs.items()}
    )
    for module, scale in scales.items():
        if scale != 1.0:
            down, up = pairs[module]
            pairs[module] = (down, (up.to(torch.float32) * scale).to(up.dtype))
    return join_pairs(pairs)


def to_diffusers(
    peft_sd: Mapping[str, torch.Tensor],
    *,
    dtype: str | torch.dtype = "fp16",
    metadata: md.LoraInfo | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Internal LoRA -> tensors and header for ``pytorch_lora_weights.safetensors``.

    Keys stay ``unet.<m>.lora_A/B.weight`` (the ``unet.`` prefix is required: without it diffusers
    loads nothing, FORMATS.md 7 (g)). Header: ``format = "pt"`` as ``save_lora_weights`` writes,
    plus ``modelspec.*`` and ``unziplora.*`` provenance (diffusers ignores keys it does not know).
    """
    target = resolve_dtype(dtype)
    info = metadata or md.LoraInfo()
    pairs = split_pairs(peft_sd)  # validates keys and shapes before anything is written
    tensors = {k: v.detach().to("cpu", target).contiguous() for k, v in join_pairs(pairs).items()}
    meta = {"format": "pt"}
    meta.update(md.modelspec_metadata(info, implementation=md.IMPLEMENTATION_DIFFUSERS))
    meta.update(md.provenance_metadata(info))
    return tensors, meta
