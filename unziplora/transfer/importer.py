"""``unzip import``: LoRAs made elsewhere become an ordinary registry entry, marked imported.

Why it looks like a trained entry: ``unzip compose``/``restyle``/``export`` read the same three
files whatever made them — ``content.safetensors`` and ``style.safetensors`` (PEFT keys
``unet.<module>.lora_A/B.weight``, scale 1) and ``masks.safetensors`` (the layout of
:func:`unziplora.method.state.merge_state_dict`: ``<module>.merge_<part>`` fp32 and
``<module>.mask_<part>`` bool). An official output brings its merge vectors and (as zero ``up``
rows) its column masks; plain LoRA files get merges and masks of one, so composing them is plain
addition. The record says ``kind: "imported"`` and keeps where the files came from, with hashes.

Everything is read and checked first (:mod:`unziplora.transfer.reading`); the registry is written
only when all of it fits, in one atomic staging step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from unziplora.entry_files import PARTS, prompt_fields, write_payload
from unziplora.errors import ImportFormatError, PromptError
from unziplora.fileio import hash_file
from unziplora.formats.peft import DIFFUSERS_WEIGHT_NAME
from unziplora.settings import DEFAULT_BASE_MODEL
from unziplora.transfer.reading import ReadLoRA, check_fits, file_prompts, read_official, read_pair

Ask = Callable[[str], str]


def _base(base: str) -> tuple[Any, dict[str, str]]:
    from unziplora.base_model import fingerprint, parse_base

    spec = parse_base(base)
    return spec, {"ref": spec.ref, "kind": spec.kind, "fingerprint": fingerprint(spec)}


def resolve_prompts(
    subject: str | None,
    style: str | None,
    headers: Mapping[str, Mapping[str, str]],
    ask: Ask | None = None,
) -> Any:
    """The entry's PromptSet: words from the flags, else from the files' ``unziplora.prompts``,
    else asked for (``ask("subject")``); prompts kept from the files when the words came from them.

    Raises:
        PromptError: words missing and nobody to ask.
    """
    from unziplora.prompts import DEFAULT_TOKEN, PromptSet, build_training_prompts

    pc, ps = file_prompts(headers.get("content")), file_prompts(headers.get("style"))
    words_subject = subject if subject is not None else pc.get("subject") or ps.get("subject")
    words_style = style if style is not None else ps.get("style_words") or pc.get("style_words")
    token = pc.get("token") or ps.get("token") or DEFAULT_TOKEN
    missing = [flag for flag, value in (("--subject", words_subject), ("--style", words_style)) if not value]
    if missing and ask is None:
        what = " and ".join(flag.lstrip("-") for flag in missing)
        raise PromptError(
            f"the files do not say which {what} they hold; pass {' and '.join(missing)} "
            '(e.g. --subject cat --style "pencil sketch")'
        )
    if not words_subject:
        words_subject = ask("subject")  # type: ignore[misc]
    if not words_style:
        words_style = ask("style")  # type: ignore[misc]
    built = build_training_prompts(words_subject, words_style, token)
    if subject is not None or style is not None:
        return built
    combined = pc.get("combined") if pc.get("combined") and pc.get("combined") == ps.get("combined") else None
    return PromptSet(
        combined or built.combined,
        pc.get("content") or built.content,
        ps.get("style") or built.style,
        token,
        built.subject,
        built.style_words,
    )


def _masks(read: ReadLoRA, content_ranks: Mapping[str, int], outs: Mapping[str, int]) -> dict[str, Any]:
    """``masks.safetensors`` tensors: official merges/masks where known, ones elsewhere."""
    import torch

    merges, masks = read.merges or {}, read.masks or {}
    out: dict[str, Any] = {}
    for module in content_ranks:
        for part in PARTS:
            merge = merges.get(f"{module}.merge_{part}")
            mask = masks.get(f"{module}.mask_{part}")
            out[f"{module}.merge_{part}"] = (
                (merge if merge is not None else torch.ones(outs[module])).to(torch.float32).contiguous()
            )
            out[f"{module}.mask_{part}"] = (
                (mask if mask is not None else torch.ones(outs[module])).to(torch.bool).contiguous()
            )
    return out


def _write(
    read: ReadLoRA,
    registry: Any,
    *,
    subject: str | None,
    style: str | None,
    name: str | None,
    base: str,
    ask: Ask | None,
    attention_only: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Any:
    """Check ``read`` against the base, settle the words, and write the entry."""
    from unziplora.formats._keys import split_pairs
    from unziplora.transfer.layout import base_projection_shapes

    spec, base_record = _base(base)
    shapes = base_projection_shapes(spec)
    notes = list(read.notes)
    if attention_only:
        from unziplora.transfer.reading import attention_only as keep_attention

        read.content, c_notes = keep_attention(read.content, shapes, "content LoRA")
        read.style, s_notes = keep_attention(read.style, shapes, "style LoRA")
        notes += c_notes + s_notes
    naming = read.naming or {}
    offer = read.official_stem is None
    content_ranks = check_fits(
        read.content, shapes, "content LoRA", spec.ref, naming.get("content", "diffusers"), offer_flag=offer
    )
    style_ranks = check_fits(
        read.style, shapes, "style LoRA", spec.ref, naming.get("style", "diffusers"), offer_flag=offer
    )
    prompts = resolve_prompts(subject, style, read.headers, ask)
    outs = {m: int(up.shape[0]) for m, (_d, up) in split_pairs(read.content).items()}
    masks = _masks(read, content_ranks, outs)
    rank_c, rank_s = max(content_ranks.values()), max(style_ranks.values())
    sources = []
    for path in read.files:
        digest, size = hash_file(Path(path).resolve())
        sources.append({"path": str(Path(path).resolve()), "sha256": digest, "bytes": size})
    tensors = {"content": read.content, "style": read.style}
    for line in notes if on_note else ():
        on_note(line)  # type: ignore[misc]
    with registry.new_entry(subject=prompts.subject or "", style=prompts.style_words or "", name=name) as staging:
        write_payload(
            staging.dir,
            staging.id,
            tensors,
            masks,
            prompts=prompts,
            ranks={"content": rank_c, "style": rank_s},
            base_ref=spec.ref,
            origin=f"imported from {read.format} files",
        )
        staging.record = {
            "kind": "imported",
            "imported": True,
            **prompt_fields(prompts),
            "sources": [],
            "base": base_record,
            "settings": {
                "rank": max(rank_c, rank_s),
                "rank_content": rank_c,
                "rank_style": rank_s,
                "modules": len(content_ranks),
            },
            "figures": {},
            "provenance": {
                "format": read.format,
                "official_output": str(read.official_stem.resolve()) if read.official_stem else None,
                "files": sources,
            },
        }
    return registry.get(staging.id)


def import_official(
    path: str | os.PathLike[str],
    registry: Any,
    *,
    subject: str | None = None,
    style: str | None = None,
    name: str | None = None,
    base: str = DEFAULT_BASE_MODEL,
    ask: Ask | None = None,
) -> Any:
    """Import an official UnZipLoRA output (``X`` or any of its pieces) as a new entry.

    Args:
        path: ``X``, ``X_content/``, ``X_style/``, either ``pytorch_lora_weights.safetensors`` or a
            ``X_merger_*.pth``.
        registry: the Registry to write into.
        subject / style: the words (official outputs do not record them); else ``ask`` is called.
        base: the base it was trained on (default SDXL base 1.0; the CLI passes the configured one).

    Returns:
        The new Entry. Raises ImportFormatError / PromptError / BaseModelError with the registry unchanged.
    """
    given = Path(os.fspath(path)).expanduser()
    if given.is_file() and given.suffix.lower() == ".safetensors" and given.name != DIFFUSERS_WEIGHT_NAME:
        raise ImportFormatError(
            f"{given} is a single LoRA file; import needs a content and a style LoRA (unzip import CONTENT STYLE) "
            "or an official UnZipLoRA output"
        )
    return _write(read_official(path), registry, subject=subject, style=style, name=name, base=base, ask=ask)


def import_files(
    content_path: str | os.PathLike[str],
    style_path: str | os.PathLike[str],
    registry: Any,
    *,
    subject: str | None = None,
    style: str | None = None,
    name: str | None = None,
    base: str = DEFAULT_BASE_MODEL,
    ask: Ask | None = None,
    skip_text_encoders: bool = False,
    attention_only: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Any:
    """Import a content and a style LoRA file (kohya or diffusers) as a new entry with merges of one.

    Subject/style words default to what our own files record (``unziplora.prompts``).
    ``skip_text_encoders`` drops text-encoder modules instead of refusing the file;
    ``attention_only`` drops UNet modules other than attention projections (kohya's proj_in,
    proj_out, ff) and gives projections the file lacks a zero delta. ``on_note`` gets one line per
    thing dropped or filled, with counts.
    """
    read = read_pair(content_path, style_path, skip_text_encoders=skip_text_encoders)
    return _write(
        read,
        registry,
        subject=subject,
        style=style,
        name=name,
        base=base,
        ask=ask,
        attention_only=attention_only,
        on_note=on_note,
    )
