"""Reading what ``unzip import`` is given into one checked content/style pair.

Why a separate step: every refusal (unknown format, pickles, text-encoder LoRAs, modules the base
does not have, missing projections, wrong widths) must happen *before* the registry is touched,
as one line. Two sources are accepted (issue 7, 5):

* an official UnZipLoRA output (``X_content/``, ``X_style/``, ``X_merger_*.pth``), read by
  :mod:`unziplora.formats.official` (``torch.load(weights_only=True)`` only); its column masks are
  recovered from the zero rows the trainer baked into ``up``;
* a content and a style LoRA file in a format we export (kohya, diffusers/PEFT), with merges of one.

Only ``.safetensors`` LoRA files are read; a ``.pth``/``.bin``/``.ckpt`` LoRA is refused (unpickling
can run code), except the official merge vectors, which are loaded with the weights-only unpickler.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unziplora.errors import ImportFormatError
from unziplora.formats.peft import DIFFUSERS_WEIGHT_NAME
from unziplora.transfer.layout import describe_missing
from unziplora.unet_layout import PROJECTIONS

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
FORMAT_NAMES = {"kohya": "kohya", "peft": "diffusers", "official": "diffusers"}


@dataclass
class ReadLoRA:
    """A content/style pair read and converted to internal keys, before any check against a base.

    ``merges`` / ``masks``: ``<module>.merge_<part>`` fp32 vectors and ``<module>.mask_<part>`` bool
    vectors, or None (= ones). ``headers``: each file's safetensors metadata (for prompts).
    """

    format: str
    content: dict[str, Any]
    style: dict[str, Any]
    files: list[Path]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    merges: dict[str, Any] | None = None
    masks: dict[str, Any] | None = None
    official_stem: Path | None = None
    naming: dict[str, str] = field(default_factory=dict)  # part -> "kohya" / "diffusers": names in errors
    notes: list[str] = field(default_factory=list)  # warnings for the user (modules dropped or filled)


def read_official(path: str | os.PathLike[str]) -> ReadLoRA:
    """An official output given as ``X`` or any of its four pieces."""
    from unziplora.formats.official import infer_column_masks, load_official

    loaded = load_official(path)
    check_values(loaded.content, f"content LoRA of {path}")
    check_values(loaded.style, f"style LoRA of {path}")
    masks = {}
    for part in ("content", "style"):
        for module, mask in infer_column_masks(getattr(loaded, part)).items():
            masks[f"{module}.mask_{part}"] = mask
    p = loaded.paths
    return ReadLoRA(
        format="official",
        content=loaded.content,
        style=loaded.style,
        files=[p.content, p.style, p.merger_content, p.merger_style],
        merges=loaded.merges,
        masks=masks,
        official_stem=p.stem,
    )


def _lora_file(path: str | os.PathLike[str], part: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / DIFFUSERS_WEIGHT_NAME
        if not candidate.is_file():
            raise ImportFormatError(f"folder {p} has no {DIFFUSERS_WEIGHT_NAME}; give the {part} LoRA file itself")
        return candidate
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ImportFormatError(
            f"{p} is a pickle ({p.suffix}); only .safetensors LoRA files are imported, since unpickling can run code"
        )
    if not p.is_file():
        raise ImportFormatError(f"the {part} LoRA {p} does not exist")
    return p


def read_one(
    path: str | os.PathLike[str], part: str, *, skip_text_encoders: bool = False
) -> tuple[Path, str, dict[str, Any], dict[str, str]]:
    """(file, format, internal state dict, header) of one content or style LoRA file."""
    from unziplora.formats.io import read_safetensors
    from unziplora.formats.kohya import from_kohya
    from unziplora.formats.peft import detect_format, from_peft

    file = _lora_file(path, part)
    tensors, header = read_safetensors(file)
    check_values(tensors, f"{part} LoRA {file}")
    kind = detect_format(tensors)
    try:
        if kind == "kohya":
            sd = from_kohya(tensors, skip_text_encoders=skip_text_encoders)
        elif kind in ("peft", "official") or any("lora_magnitude_vector" in k for k in tensors):
            sd = from_peft(tensors, header, skip_text_encoders=skip_text_encoders)
        else:
            first = next(iter(tensors), "(none)")
            raise ImportFormatError(
                f"it is not a LoRA in a format unziplora reads (kohya lora_unet_… or diffusers unet.….lora_A.weight); "
                f"first key: {first!r}"
            )
    except ImportFormatError as exc:
        raise ImportFormatError(f"{part} LoRA {file}: {str(exc).rstrip('.')}") from None
    return file, FORMAT_NAMES[kind], sd, header


FLOAT_DTYPES = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def check_values(tensors: Mapping[str, Any], what: str) -> None:
    """Refuse tensors a LoRA cannot hold: integer, bool, complex or fp8 dtypes, empty ones, NaN or Inf values."""
    import torch

    for key, tensor in tensors.items():
        if str(tensor.dtype) not in FLOAT_DTYPES:
            raise ImportFormatError(
                f"{what}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}; a LoRA holds float16, bfloat16 or float32 values"
            )
        if tensor.numel() == 0:
            raise ImportFormatError(f"{what}: tensor {key!r} is empty (shape {tuple(tensor.shape)})")
        if not bool(torch.isfinite(tensor).all()):
            raise ImportFormatError(f"{what}: tensor {key!r} holds NaN or infinite values")


def _text_encoder_tensors(tensors: Mapping[str, Any]) -> int:
    from unziplora.formats.peft import _TEXT_ENCODER_PREFIXES
    from unziplora.formats.sgm import KOHYA_UNET_PREFIX

    return sum(
        1
        for k in tensors
        if k.startswith(_TEXT_ENCODER_PREFIXES) or (k.startswith("lora_te") and not k.startswith(KOHYA_UNET_PREFIX))
    )


def read_pair(
    content: str | os.PathLike[str], style: str | os.PathLike[str], *, skip_text_encoders: bool = False
) -> ReadLoRA:
    """A content and a style LoRA file (kohya or diffusers, mixed is fine); merges of one."""
    c_file, c_fmt, c_sd, c_head = read_one(content, "content", skip_text_encoders=skip_text_encoders)
    s_file, s_fmt, s_sd, s_head = read_one(style, "style", skip_text_encoders=skip_text_encoders)
    if c_file.resolve() == s_file.resolve():
        raise ImportFormatError(f"the content and the style LoRA are the same file ({c_file}); give two files")
    fmt = c_fmt if c_fmt == s_fmt else f"{c_fmt}+{s_fmt}"
    notes = []
    if skip_text_encoders:
        from unziplora.formats.io import read_safetensors

        for part, file in (("content", c_file), ("style", s_file)):
            dropped = _text_encoder_tensors(read_safetensors(file)[0])
            if dropped:
                notes.append(f"{part} LoRA: dropped {dropped} text-encoder tensors (--skip-text-encoders)")
    return ReadLoRA(
        fmt,
        c_sd,
        s_sd,
        [c_file, s_file],
        {"content": c_head, "style": s_head},
        naming={"content": c_fmt, "style": s_fmt},
        notes=notes,
    )


def _is_projection(module: str) -> bool:
    return ".attn" in module and module.endswith(PROJECTIONS)


def file_name(module: str, naming: str) -> str:
    """``module`` as the file spells it: kohya ``lora_unet_<SGM path>`` for kohya files."""
    if naming != "kohya":
        return module
    from unziplora.formats.sgm import diffusers_to_kohya_key

    return diffusers_to_kohya_key(module)


def attention_only(
    sd: Mapping[str, Any], shapes: Mapping[str, tuple[int, int]], what: str
) -> tuple[dict[str, Any], list[str]]:
    """``--attention-only``: drop modules that are not attention projections, and give projections
    the file lacks a zero delta (exact: an absent module changes nothing). Returns the new state
    dict and the warnings to print. Projections the base lacks are left for :func:`check_fits`."""
    import torch

    from unziplora.formats._keys import join_pairs, split_pairs

    pairs = split_pairs(sd, error=ImportFormatError)
    kept = {m: p for m, p in pairs.items() if _is_projection(m)}
    notes = []
    if len(kept) < len(pairs):
        notes.append(
            f"{what}: dropped {len(pairs) - len(kept)} modules that are not attention projections (--attention-only)"
        )
    missing = [m for m in shapes if m not in kept]
    if missing and kept:
        down0, up0 = next(iter(kept.values()))
        rank = min(int(d.shape[0]) for d, _u in kept.values())
        for module in missing:
            fan_in, fan_out = shapes[module]
            kept[module] = (
                torch.zeros(rank, fan_in, dtype=down0.dtype),
                torch.zeros(fan_out, rank, dtype=up0.dtype),
            )
        notes.append(
            f"{what}: {len(missing)} attention projections absent from the file get a zero delta (--attention-only)"
        )
    if not kept:
        raise ImportFormatError(f"the {what} has no attention projections ({'/'.join(PROJECTIONS)})")
    return join_pairs(kept), notes


def check_fits(
    sd: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, int]],
    what: str,
    base_ref: str,
    naming: str = "diffusers",
    *,
    offer_flag: bool = False,
) -> dict[str, int]:
    """Refuse a LoRA that does not cover exactly the attention projections of the base; return ranks.

    ``naming``: how the file spells modules (errors use its names); ``offer_flag``: the refusal
    names ``--attention-only`` (plain LoRA files; official outputs cannot take it).

    Raises:
        ImportFormatError: foreign modules, modules the base lacks, missing projections, wrong widths.
    """
    from unziplora.formats._keys import split_pairs

    pairs = split_pairs(sd, error=ImportFormatError)
    extra = [m for m in pairs if m not in shapes]
    if extra:
        first = extra[0]
        foreign = [m for m in extra if not _is_projection(m)]
        if foreign:
            raise ImportFormatError(
                f"the {what} changes {len(foreign)} modules that are not attention projections "
                f"(e.g. {file_name(foreign[0], naming)}); unziplora entries hold LoRAs of {'/'.join(PROJECTIONS)} "
                + ("only: pass --attention-only to drop them" if offer_flag else "only")
            )
        raise ImportFormatError(
            f"the {what} has modules the base {base_ref} lacks (e.g. {first}); it was made for another base: pass --base MODEL"
        )
    missing = [m for m in shapes if m not in pairs]
    if missing:
        raise ImportFormatError(
            f"the {what} does not cover base {base_ref}: {describe_missing(missing, len(shapes))}; "
            "it was made for another base (pass --base MODEL) or is "
            + (
                "a partial attention LoRA (pass --attention-only to give the rest a zero delta)"
                if offer_flag
                else "not a full attention LoRA"
            )
        )
    for module, (down, up) in pairs.items():
        fan_in, fan_out = shapes[module]
        if down.shape[1] != fan_in or up.shape[0] != fan_out:
            raise ImportFormatError(
                f"the {what} maps {down.shape[1]} -> {up.shape[0]} features at {module}, but base {base_ref} has "
                f"{fan_in} -> {fan_out}; it was made for another base: pass --base MODEL"
            )
    return {m: int(d.shape[0]) for m, (d, _u) in pairs.items()}


def file_prompts(header: Mapping[str, str] | None) -> dict[str, str]:
    """The ``unziplora.prompts`` JSON of a file we wrote (training payload or export), or ``{}``."""
    raw = (header or {}).get("unziplora.prompts")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): " ".join(v.split()) for k, v in data.items() if isinstance(v, str) and v.strip()}
