"""Writing a finished training run into the registry as one entry.

The files follow DESIGN.md: ``content.safetensors`` and ``style.safetensors`` (PEFT naming,
loadable by ``pipeline.load_lora_weights``, column masks folded into the up rows, in the chosen
save precision, self-describing through safetensors metadata), ``masks.safetensors`` (merge
vectors and binary masks, fp32), ``source.png`` (a thumbnail of the first input) and
``preview.png`` (source | content | style | combined). Everything is written into the registry's
staging directory and lands with one rename, or not at all.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch

from unziplora.entry_files import PREVIEW_FILE, lora_metadata, prompt_fields
from unziplora.prompts import PromptSet
from unziplora.registry.fsutil import chmod_to_umask

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def slug_for(prompts: PromptSet) -> str:
    from unziplora.registry.ids import slug

    return slug(prompts.subject or "", prompts.style_words or "")


def _rounds_per_group(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Columns gained at each SELECT, summed per attention group and branch."""
    rounds = []
    for item in history:
        groups: dict[str, dict[str, int]] = {}
        for name, gained in item.get("gained", {}).items():
            slot = groups.setdefault(name.split(".transformer_blocks")[0], {"content": 0, "style": 0})
            for branch in slot:
                slot[branch] += int(gained.get(branch, 0))
        rounds.append({"step": item.get("step"), "gained_per_group": groups})
    return rounds


def write_entry_payload(
    trainer: Any,
    registry: Any,
    request: Any,
    layers: dict[str, Any],
    columns: Any,
    result: Any,
    run_dir: Any = None,
    *,
    preview: Any = None,
    run_id: str | None = None,
) -> Any:
    """Save the trained layers and the record as a new entry; return the registry's Entry.

    ``preview`` is the sheet the trainer rendered (None: the entry has no preview.png);
    ``run_id`` is recorded in ``figures`` so the run can never be resumed into a second entry.
    """
    from safetensors.torch import save_file

    from unziplora.images import thumbnail
    from unziplora.method.state import lora_state_dict, merge_state_dict

    config, prompts = request.config, request.prompts
    dtype = SAVE_DTYPES[config.save_precision]
    content = {k: v.detach().to("cpu", dtype).contiguous() for k, v in lora_state_dict(layers, "content").items()}
    style = {k: v.detach().to("cpu", dtype).contiguous() for k, v in lora_state_dict(layers, "style").items()}
    masks = {k: v.detach().to("cpu").contiguous() for k, v in merge_state_dict(layers).items()}
    base = {"ref": trainer.spec.ref, "kind": trainer.spec.kind, "fingerprint": trainer.base_fingerprint}
    with registry.new_entry(
        subject=prompts.subject or "", style=prompts.style_words or "", name=request.name
    ) as staging:
        entry_id = staging.id
        save_file(
            content,
            str(staging.dir / "content.safetensors"),
            metadata=lora_metadata("content", entry_id, prompts, config.rank, base["ref"]),
        )
        save_file(
            style,
            str(staging.dir / "style.safetensors"),
            metadata=lora_metadata("style", entry_id, prompts, config.rank, base["ref"]),
        )
        save_file(masks, str(staging.dir / "masks.safetensors"), metadata={"format": "pt", "unziplora.entry": entry_id})
        for payload in ("content.safetensors", "style.safetensors", "masks.safetensors"):
            chmod_to_umask(staging.dir / payload)  # safetensors writes 0600
        thumbnail(request.images[0].image).save(staging.dir / "source.png")
        if preview is not None:
            preview.save(staging.dir / PREVIEW_FILE)
        step_previews = sorted((run_dir / "previews").glob("*.png")) if run_dir is not None else []
        if step_previews:
            (staging.dir / "previews").mkdir()
            for path in step_previews:
                shutil.copyfile(path, staging.dir / "previews" / path.name)
        staging.record = {
            "kind": "trained",
            "imported": False,
            **prompt_fields(prompts),
            "sources": [
                {
                    "name": s["file_name"],
                    "sha256": s["sha256"],
                    "bytes": s["size_bytes"],
                    "width": s["width"],
                    "height": s["height"],
                }
                for s in (im.source_record() for im in request.images)
            ],
            "base": base,
            "settings": config.to_dict(),
            "figures": {
                "steps": result.steps,
                "seconds": round(result.seconds, 3),
                "final_loss": result.final_loss,
                "device": trainer.placement.device,
                "precision": trainer.placement.precision,
                "save_precision": config.save_precision,
                **request.extra,
                **({"run_id": run_id} if run_id else {}),
            },
            "columns": {"mean_per_group": columns.group_counts(), "rounds": _rounds_per_group(columns.history)},
            "command": request.command,
        }
    return registry.get(entry_id)
