"""The training front door: from paths and words to entries, one image or a batch, resumable.

``prepare_requests`` validates every input before anything is written (a broken image or
missing words refuse the whole call); ``train_requests`` loads the base once and trains each
request, sharing them out across processes when launched with ``torchrun`` or
``accelerate launch``; ``request_from_run`` rebuilds a request from an interrupted run.
:func:`train` is the one-call notebook version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from unziplora.train.config import TrainConfig


@dataclass
class Prepared:
    requests: list[Any]  # TrainRequest
    notes: list[str] = field(default_factory=list)


def prepare_requests(
    paths: Sequence[Path],
    *,
    config: TrainConfig,
    each: bool = False,
    subject: str | None = None,
    style: str | None = None,
    token: str | None = None,
    prompt: str | None = None,
    content_prompt: str | None = None,
    style_prompt: str | None = None,
    name: str | None = None,
    command: str = "",
) -> Prepared:
    """Load and check every image and build the prompts; nothing touches the registry."""
    from unziplora.images import collect_inputs, load_image
    from unziplora.prompts import DEFAULT_TOKEN, resolve_training_prompts
    from unziplora.train.trainer import TrainRequest

    if name is not None:
        from unziplora.registry.ids import validate_name

        validate_name(name)  # before any work: the registry would refuse it only after training
    if config.resolution is None:
        raise ValueError("prepare_requests needs a resolution: use config.with_resolution(native_resolution(base))")
    files, notes = collect_inputs([Path(p) for p in paths])
    images = [load_image(f, config.resolution) for f in files]
    for im in images:
        notes.extend(im.warnings)
    words = dict(
        subject=subject,
        style=style,
        token=token or DEFAULT_TOKEN,
        prompt=prompt,
        content_prompt=content_prompt,
        style_prompt=style_prompt,
    )
    if each:
        groups = [([f], [im]) for f, im in zip(files, images)]
    else:
        groups = [(files, images)]
    requests = []
    for group_files, group_images in groups:
        prompts = resolve_training_prompts(group_files, **words)
        requests.append(TrainRequest(images=group_images, prompts=prompts, config=config, name=name, command=command))
    return Prepared(requests, notes)


def request_from_run(run: Any) -> Any:
    """The request an interrupted run was training, rebuilt from its directory."""
    from PIL import Image

    from unziplora.images import LoadedImage
    from unziplora.prompts import PromptSet
    from unziplora.train.trainer import TrainRequest

    record = run.record
    images = []
    for source, name in zip(record["sources"], record["inputs"]):
        with Image.open(run.path / "inputs" / name) as handle:
            picture = handle.convert("RGB")
        images.append(
            LoadedImage(
                image=picture,
                file_name=source["file_name"],
                sha256=source["sha256"],
                size_bytes=source["size_bytes"],
                original_size=(source["width"], source["height"]),
            )
        )
    return TrainRequest(
        images=images,
        prompts=PromptSet.from_dict(record["prompts"]),
        config=TrainConfig.from_dict(record["config"]),
        name=record.get("name"),
        command=record.get("command", ""),
        extra=dict(record.get("extra") or {}),
    )


def distributed(device: str = "auto") -> tuple[int, int]:
    """(process index, number of processes) of a torchrun/accelerate launch, else (0, 1).

    Multi-process launches go through accelerate's ``PartialState``, which sets up the process
    group that gathering the new ids needs. On CPU it must be told ``cpu=True`` to use gloo
    (``accelerate launch --cpu`` starts only one process, so use ``torchrun`` there).
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    # Ranks with fewer images wait in the final gather while others still train (an SDXL run
    # can take longer than the default 10-minute collective timeout).
    state = PartialState(cpu=cpu, timeout=timedelta(hours=12))
    return state.process_index, state.num_processes


def train_requests(
    requests: list[Any],
    *,
    base: str,
    registry: Any,
    device: str = "auto",
    precision: str = "auto",
    on_start: Callable[[Any, int, int], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list[Any]:
    """Train every request of this process's share on one loaded base; return the new entries.

    Under a multi-process launch request ``i`` goes to process ``i % world``; each process trains
    its own share, so every entry lands exactly once. Callers gather the ids on the main process.
    """
    from unziplora.train.trainer import Trainer

    rank, world = distributed(device)
    mine = [r for i, r in enumerate(requests) if i % world == rank]
    if not mine:
        return []
    trainer = Trainer(base, device=device, precision=precision)
    entries = []
    for index, request in enumerate(mine):
        if world > 1:
            request.extra.update(process_index=rank, num_processes=world)
        if on_start is not None:
            on_start(request, index, len(mine))
        entry = trainer.train(request, registry, on_step=on_step, on_note=on_note)
        entries.append(entry)
        if on_done is not None:
            on_done(entry)
    return entries


def train(
    images: Sequence[str | Path],
    *,
    subject: str | None = None,
    style: str | None = None,
    base: str | None = None,
    registry: Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    **settings: Any,
) -> Any:
    """Notebook use: ``entry = train(["cat.jpg"], subject="cat", style="sketch", steps=600)``.

    ``base``, ``registry``, ``device`` and ``precision`` left out come from the environment and the
    config file, as for ``unzip train`` (this is the notebook's front door to the settings).
    """
    from unziplora.base_model import native_resolution, parse_base
    from unziplora.registry import Registry
    from unziplora.settings import load_settings

    resolved = load_settings(registry=registry, base_model=base, device=device, precision=precision)
    config = TrainConfig(**settings).with_resolution(native_resolution(parse_base(resolved.base_model)))
    prepared = prepare_requests([Path(p) for p in images], config=config, subject=subject, style=style)
    return train_requests(
        prepared.requests,
        base=resolved.base_model,
        registry=Registry(resolved.registry),
        device=resolved.device,
        precision=resolved.precision,
    )[0]
