"""``unzip export``: an entry's content, style or combined LoRA as one kohya or diffusers file.

Why the choices (FORMATS.md 6, 8):

* ``content`` / ``style`` are the entry's stored LoRAs as they are (column masks already folded into
  ``up``, merge vectors not applied): exactly UnZipLoRA's standalone modes.
* ``both`` folds each branch's merge vector into its ``up`` rows and sums the two *exactly* by
  concatenation, one LoRA of rank ``r_c + r_s`` — UnZipLoRA's combined mode when both branches see
  the same prompt. Per-branch prompts (the cross-attention K/V of each branch reading its own prompt)
  cannot be kept in one LoRA; the CLI says so. kohya's ``--concat`` is not used: it keeps the first
  alpha and weakens both parts.
* ``--rank`` reduces every module by SVD (Eckart–Young) and reports the relative Frobenius error.
* Files are written atomically, never over an existing file unless ``force``, and given the mode a
  new file in that folder gets (safetensors writes 0600).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unziplora.base_model import same_base
from unziplora.dtypes import STORAGE_DTYPES
from unziplora.entry_files import CONTENT_FILE, MASKS_FILE, STYLE_FILE, part_file, read_payload
from unziplora.errors import ExportError, IncompatibleEntriesError, UsageError
from unziplora.fileio import match_new_file_mode
from unziplora.formats.peft import DIFFUSERS_WEIGHT_NAME
from unziplora.prompts import DEFAULT_TOKEN, compose_prompt, style_phrase

FORMAT_ALIASES: dict[str, str] = {"kohya": "kohya", "a1111": "kohya", "comfyui": "kohya", "diffusers": "diffusers"}
PARTS: tuple[str, ...] = ("content", "style", "both")
ONE_PROMPT_NOTE = (
    "note: one LoRA cannot keep per-branch prompts; the combined file applies content and style with "
    "their merge vectors under the one prompt you give it (use 'unzip compose' for separate prompts)."
)


@dataclass(frozen=True)
class ExportResult:
    """What was written. ``rank`` is the largest module rank in the file; ``rank_error`` the relative
    Frobenius error of ``--rank`` (None without it); ``sshs_model_hash`` only for kohya files."""

    path: Path
    format: str
    part: str
    rank: int
    dtype: str
    bytes: int
    modules: int
    entry_id: str
    style_entry_id: str | None
    sshs_model_hash: str | None
    rank_error: float | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def resolve_format(fmt: str) -> str:
    """``kohya``/``a1111``/``comfyui`` -> ``kohya``; ``diffusers`` -> ``diffusers``; else ConfigError."""
    found = FORMAT_ALIASES.get(str(fmt).strip().lower())
    if found is None:
        raise UsageError(f"unknown format '{fmt}'; use kohya (also: a1111, comfyui) or diffusers")
    return found


def output_path(out: str | os.PathLike[str] | None, fmt: str, stem: str, cwd: Path | None = None) -> Path:
    """Where the file goes: ``-o`` ending in ``.safetensors`` is the file; anything else is a folder
    (created when missing, as every ``-o`` folder is) that receives ``<stem>.safetensors`` (kohya)
    or ``pytorch_lora_weights.safetensors`` (diffusers). Without ``-o``: ``./<stem>.safetensors``
    (kohya) or ``./<stem>/pytorch_lora_weights.safetensors`` (diffusers). Relative paths are taken
    from ``cwd`` (default: the working directory) and returned absolute."""
    here = cwd or Path.cwd()
    if out is None:
        return here / (f"{stem}.safetensors" if fmt == "kohya" else f"{stem}/{DIFFUSERS_WEIGHT_NAME}")
    path = Path(out).expanduser()
    path = path if path.is_absolute() else here / path
    if path.suffix.lower() == ".safetensors":
        return path
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} is a file, not a folder; give -o a folder or a name ending in .safetensors")
    return path / (DIFFUSERS_WEIGHT_NAME if fmt == "diffusers" else f"{stem}.safetensors")


def _merges(entry: Any, modules: list[str], part: str) -> dict[str, Any]:
    """``<module>.merge_<part>`` of ``entry``; ones when the entry has no masks file."""
    import torch

    if entry.has_file(MASKS_FILE):
        stored = read_payload(entry, MASKS_FILE)
        found = {k: v for k, v in stored.items() if k.endswith(f".merge_{part}")}
        if found:
            return found
    content = read_payload(entry, part_file(part))
    return {f"{m}.merge_{part}": torch.ones(content[f"unet.{m}.lora_B.weight"].shape[0]) for m in modules}


def _check_same_base(entry: Any, other: Any) -> None:
    a, b = entry.record.get("base") or {}, other.record.get("base") or {}
    if not same_base(a, b):
        raise IncompatibleEntriesError(
            f"cannot combine {entry.id} and {other.id}: they were trained on different base models "
            f"({a.get('ref', '?')} vs {b.get('ref', '?')}); pick a style entry trained on the same base"
        )


def lora_for(entry: Any, part: str, style_entry: Any | None = None) -> dict[str, Any]:
    """The internal (PEFT-named, scale 1) LoRA of ``part``; ``both`` is the exact merge-folded sum."""
    from unziplora.formats._keys import split_pairs
    from unziplora.formats.combine import combine_parts

    style_entry = style_entry or entry
    if part == "content":
        return read_payload(entry, CONTENT_FILE)
    if part == "style":
        return read_payload(style_entry, STYLE_FILE)
    # float32 first: folding a merge keeps the factor's dtype, and entries are usually stored in fp16
    content = {k: v.float() for k, v in read_payload(entry, CONTENT_FILE).items()}
    style = {k: v.float() for k, v in read_payload(style_entry, STYLE_FILE).items()}
    masks = _merges(entry, list(split_pairs(content)), "content")
    masks.update(_merges(style_entry, list(split_pairs(style)), "style"))
    try:
        return combine_parts(content, style, masks)
    except ValueError as exc:
        raise IncompatibleEntriesError(
            f"cannot add the content of {entry.id} and the style of {style_entry.id}: {exc}"
        ) from None


def _words(entry: Any, style_entry: Any, part: str) -> tuple[str | None, dict[str, str]]:
    """(trigger phrase, prompts) to record in the file."""
    rec_c, rec_s = entry.record, style_entry.record
    token = rec_c.get("rare_token") or DEFAULT_TOKEN
    subject, style = rec_c.get("subject") or None, rec_s.get("style") or None
    prompts_c, prompts_s = rec_c.get("prompts") or {}, rec_s.get("prompts") or {}
    prompts = {"content": prompts_c.get("content"), "style": prompts_s.get("style"), "token": token}
    prompts["combined"] = prompts_c.get("combined") if entry.id == style_entry.id else None
    if prompts["combined"] is None and subject and style:
        prompts["combined"] = compose_prompt(subject, "", style, token)
    prompts.update({"subject": subject if part != "style" else rec_s.get("subject") or None, "style_words": style})
    triggers = {
        "content": f"{token} {subject}" if subject else prompts["content"],
        "style": style_phrase(style) if style else prompts["style"],
        "both": f"{token} {subject} {style_phrase(style)}" if subject and style else prompts["combined"],
    }
    return triggers[part], {k: str(v) for k, v in prompts.items() if v}


def _info(entry: Any, style_entry: Any, part: str, title: str) -> Any:
    from unziplora.formats.metadata import LoraInfo

    trigger, prompts = _words(entry, style_entry, part)
    source = entry.id if style_entry.id == entry.id else f"{entry.id} (content) + {style_entry.id} (style)"
    what = {"content": "content LoRA", "style": "style LoRA", "both": "content + style LoRA (merges folded in)"}[part]
    settings = (style_entry if part == "style" else entry).record.get("settings") or {}
    training = {k: settings[s] for k, s in (("max_train_steps", "steps"), ("seed", "seed")) if s in settings}
    return LoraInfo(
        title=title,
        description=f"UnZipLoRA {what} from unziplora entry {source}; trigger: {trigger}",
        trigger_phrase=trigger,
        base_model=(entry.record.get("base") or {}).get("ref"),
        entry_id=entry.id if part != "style" else style_entry.id,
        part=part,
        prompts=prompts,
        training=training,
        resolution=int(settings.get("resolution") or LoraInfo.resolution),
    )


def export_entry(
    entry: Any,
    *,
    fmt: str = "kohya",
    part: str = "both",
    out: str | os.PathLike[str] | None = None,
    style_from: Any | None = None,
    rank: int | None = None,
    dtype: str = "fp16",
    force: bool = False,
    cwd: Path | None = None,
) -> ExportResult:
    """Write ``entry``'s ``part`` as a kohya or diffusers LoRA file; see the module docstring.

    Args:
        entry: a registry Entry (``reg.get(id)``).
        fmt: ``kohya`` (``a1111``, ``comfyui``) or ``diffusers``.
        part: ``content``, ``style`` or ``both``.
        out: file or folder (see :func:`output_path`); None = the default name in ``cwd``.
        style_from: another Entry to take the style (and its merge vectors) from.
        rank: reduce every module to at most this rank by SVD.
        dtype: ``fp16``, ``bf16`` or ``fp32`` for the stored factors.
        force: replace an existing file.

    Raises:
        ConfigError, ExportError, IncompatibleEntriesError, DamagedEntryError — one line each.
    """
    from unziplora.formats import combine, io, kohya, peft
    from unziplora.formats._keys import module_ranks

    fmt = resolve_format(fmt)
    if part not in PARTS:
        raise UsageError(f"unknown part '{part}'; use content, style or both")
    if dtype not in STORAGE_DTYPES:
        raise UsageError(f"unknown dtype '{dtype}'; use fp16, bf16 or fp32")
    if rank is not None and rank < 1:
        raise UsageError(f"--rank must be a positive integer, got {rank}")
    if style_from is not None and part == "content":
        raise UsageError("--style-from takes the style from another entry; use it with --part style or --part both")
    style_entry = style_from or entry
    if style_entry.id != entry.id:
        _check_same_base(entry, style_entry)
    owner = style_entry.id if part == "style" else entry.id
    stem = f"{owner}-{part}" if style_entry.id == entry.id or part == "style" else f"{entry.id}_{style_entry.id}-both"
    path = output_path(out, fmt, stem, cwd)
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; pass --force to overwrite it")
    from unziplora.activity import phase

    sd = lora_for(entry, part, style_entry)
    rank_error = None
    if rank is not None:  # the one slow part (seconds at full size); reading and writing take well under one
        with phase(f"reducing to rank {rank} (SVD of {len(sd) // 2} modules)"):
            sd, rank_error = combine.reduce_rank_state_dict(sd, rank)
    title = (path.parent.name or stem) if path.name == DIFFUSERS_WEIGHT_NAME else path.stem
    info = _info(entry, style_entry, part, title=title)
    if fmt == "kohya":
        tensors, meta = kohya.to_kohya(sd, dtype=dtype, metadata=info)
    else:
        tensors, meta = peft.to_diffusers(sd, dtype=dtype, metadata=info)
    if style_entry.id != entry.id:
        meta["unziplora.style_entry_id"] = style_entry.id
    if rank_error is not None:
        meta["unziplora.rank_error"] = repr(rank_error)
    created_folder = not path.parent.exists()
    try:
        io.write_safetensors(path, tensors, meta, force=force)
    except ExportError:
        if created_folder:
            _remove_empty(path.parent)
        raise
    match_new_file_mode(path)
    ranks = module_ranks(sd)
    return ExportResult(
        path=path,
        format=fmt,
        part=part,
        rank=max(ranks.values()),
        dtype=dtype,
        bytes=path.stat().st_size,
        modules=len(ranks),
        entry_id=entry.id,
        style_entry_id=style_entry.id if style_entry.id != entry.id else None,
        sshs_model_hash=meta.get("sshs_model_hash"),
        rank_error=rank_error,
    )


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def describe(result: ExportResult) -> str:
    """One line for people: what was written."""
    extra = f", from {result.entry_id} + {result.style_entry_id}" if result.style_entry_id else ""
    return f"{result.format} {result.part} LoRA, rank {result.rank}, {result.dtype}, {result.modules} modules{extra}"
