"""From prepared images and prompts to a registry entry, with the base model loaded once.

:class:`Trainer` holds one loaded SDXL pipeline and trains any number of requests on it
(``unzip train --each`` and multi-process launches call it repeatedly). For each request it

1. opens a run directory (``<registry>/runs/``) holding the prepared images and run settings;
2. encodes the three prompts and the images' latent posterior once, then parks the text
   encoders and the VAE on disk (:mod:`unziplora.offload`): during the loop they hold neither
   device memory nor RAM (3.6 GB in fp32 at full size); the preview and the next ``--each``
   entry load them back;
3. injects the UnZipLoRA layers, builds AdamW's three parameter groups and the column-separation
   scheduler, and restores a checkpoint when resuming;
4. runs :func:`unziplora.train.loop.train_loop`, checkpointing on request and on Ctrl-C, and
   once more right after the last step, so a finished training is never lost;
5. renders the preview (Ctrl-C there skips only the preview) and writes the entry (LoRAs, merges and masks, thumbnail, preview sheet, record) through the
   registry's atomic staging, removes the run directory, and takes the layers out again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unziplora.activity import phase
from unziplora.base_model import BaseSpec, fingerprint, load_pipeline, parse_base
from unziplora.device import Placement, resolve_placement
from unziplora.errors import TrainingError
from unziplora.offload import FrozenParts
from unziplora.prompts import PromptSet
from unziplora.train.config import TrainConfig
from unziplora.train.loop import StepReport, TrainingStopped, train_loop
from unziplora.train.payload import write_entry_payload
from unziplora.train.run import Run, create_run

__all__ = ["TrainRequest", "Trainer", "TrainingStopped", "prepare_unet"]


@dataclass
class TrainRequest:
    """One entry to train: prepared images (square PIL images at the resolution) and prompts."""

    images: list[Any]  # unziplora.images.LoadedImage
    prompts: PromptSet
    config: TrainConfig
    name: str | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # recorded as is (e.g. process index)


@contextmanager
def sigint_requests_stop() -> Iterator[Callable[[], bool]]:
    """While active, Ctrl-C sets a flag the loop reads between steps (a second Ctrl-C aborts)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


HOOK_ENV = "UNZIPLORA_TEST_TRAIN_HOOK"


def hook(point: str) -> None:
    """Test hook: with ``UNZIPLORA_TEST_TRAIN_HOOK=<point>`` raise KeyboardInterrupt there, as a Ctrl-C would.

    Points: ``trained`` (right after the last step's checkpoint), ``preview`` (in the final
    preview), ``saving`` (writing the entry). A real signal at those moments is too racy to test.
    """
    import os

    if os.environ.get(HOOK_ENV) == point:
        raise KeyboardInterrupt


class Trainer:
    """A loaded base model plus the logic to train entries on it."""

    def __init__(self, base: str, *, device: str = "auto", precision: str = "auto") -> None:
        self.spec: BaseSpec = parse_base(base)
        self.placement: Placement = resolve_placement(device, precision)
        # Frozen weights in the compute dtype; LoRA masters stay fp32 (ALGORITHM.md 6.3).
        with phase(f"loading the base model {self.spec.ref}"):
            self.pipe = load_pipeline(self.spec, dtype=self.placement.dtype)
        self.base_fingerprint = fingerprint(self.spec)
        self.base_record = {"ref": self.spec.ref, "kind": self.spec.kind, "fingerprint": self.base_fingerprint}
        self.frozen = FrozenParts(self.pipe, self.placement.device)  # parked on disk while the loop runs

    # -- the pieces -------------------------------------------------------------------------
    def _encode(self, request: TrainRequest) -> tuple[Any, Any]:
        from unziplora.images import to_tensor
        from unziplora.sdxl import encode_latent_posterior, encode_prompts, time_ids
        from unziplora.train.loop import Conditioning

        device, dtype, pipe = self.placement.device, self.placement.dtype, self.pipe
        p = request.prompts
        with phase("encoding the prompts"):
            self.frozen.unpark("text_encoder", "text_encoder_2")
            emb = encode_prompts(pipe, [p.combined, p.content, p.style], device=device)
            self.frozen.park("text_encoder", "text_encoder_2")
        with phase(f"caching the latents of {len(request.images)} image(s)"):
            self.frozen.unpark("vae")
            images = torch.stack([to_tensor(im.image) for im in request.images])
            posterior = encode_latent_posterior(pipe.vae, images, device=device)
            self.frozen.park("vae")
        res = request.config.resolution
        cond = Conditioning(
            combined=emb.embeds[0:1].to(device, dtype),
            content=emb.embeds[1:2].to(device, dtype),
            style=emb.embeds[2:3].to(device, dtype),
            pooled=emb.pooled[0:1].to(device, dtype),
            time_ids=time_ids(res, 1, dtype, device),
        )
        return cond, posterior

    def _release_unet(self) -> None:
        from unziplora.method import remove_unziplora

        remove_unziplora(self.pipe.unet)
        self.pipe.unet.eval()
        self.pipe.unet.disable_gradient_checkpointing()

    # -- the whole thing --------------------------------------------------------------------
    def train(
        self,
        request: TrainRequest,
        registry: Any,
        *,
        run: Run | None = None,
        on_step: Callable[[StepReport], None] | None = None,
        on_preview: Callable[[int, Path], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> Any:
        """Train ``request`` to a new registry entry and return it (``registry.get(id)``)."""
        from unziplora.prompts import fit_prompts
        from unziplora.train import checkpoint as ckpt

        config = request.config
        prompts, notes = fit_prompts(request.prompts, self.pipe.tokenizer)  # record what the encoders see
        if notes:
            request.prompts = prompts
            for line in notes:
                if on_note is not None:
                    on_note(line)
        if run is None:
            run = self._open_run(request, registry)
        elif run.lock is None and not run.acquire():
            raise TrainingError(f"run {run.id} is in use by another unzip process; wait for it to finish")
        try:
            cond, posterior = self._encode(request)
            unet = self.pipe.unet
            device = self.placement.device
            layers, columns, optimizer = prepare_unet(
                unet, config, len(request.images), device=device, is_gpu=self.placement.is_gpu
            )
            generator = torch.Generator().manual_seed(config.seed + 1)
            # fp16 needs loss scaling; its scale is part of the state a resume must restore.
            scaler = torch.amp.GradScaler(device.split(":")[0], enabled=self.placement.precision == "fp16")
            start = 0
            if ckpt.has_checkpoint(run.path):
                state = ckpt.load_checkpoint(run.path)
                _restore(layers, columns, optimizer, generator, scaler, state)
                start = int(state["step"])

            def save(step: int) -> None:
                snapshot = _snapshot(layers, columns, optimizer, generator, scaler, step)
                if step >= config.steps:  # no step is left: Adam's moments (2x the LoRAs) are not needed
                    snapshot["optimizer"] = None
                ckpt.save_checkpoint(run.path, snapshot)
                run.update(checkpoint_step=step)

            def step_hook(report: StepReport) -> None:
                if on_step is not None:
                    on_step(report)
                if config.preview_every and report.step % config.preview_every == 0 and report.step < report.total:
                    from unziplora.train.previews import write_step_previews

                    path = write_step_previews(self.pipe, self.frozen, run.path, layers, request, report.step)
                    if on_preview is not None:
                        on_preview(report.step, path)

            with sigint_requests_stop() as stop:
                try:
                    result = train_loop(
                        unet=unet,
                        layers=layers,
                        columns=columns,
                        optimizer=optimizer,
                        noise_scheduler=self.noise_scheduler,
                        cond=cond,
                        posterior=posterior,
                        config=config,
                        generator=generator,
                        device=device,
                        dtype=self.placement.dtype,
                        scaler=scaler,
                        start_step=start,
                        on_step=step_hook,
                        on_checkpoint=save,
                        stop_requested=stop,
                    )
                except TrainingStopped as stopped:
                    save(stopped.step)
                    stopped.run = run
                    raise
                # The last step is done: keep the trained layers before anything else can fail or be
                # interrupted (a resume of this checkpoint only previews and saves).
                if start < config.steps:
                    save(config.steps)
                    run.update(final_loss=result.final_loss, train_seconds=round(result.seconds, 3))
                else:  # resumed after the last step: the loop ran nothing, its figures are the run's
                    result.final_loss = float(run.record.get("final_loss", result.final_loss))
                    result.seconds = float(run.record.get("train_seconds", 0.0))
                stop_seen = stop()
            try:
                hook("trained")
                preview = self._final_preview(layers, request, skip=stop_seen, on_note=on_note)
                hook("saving")
                with phase("saving the entry"):
                    entry = write_entry_payload(
                        registry,
                        request,
                        layers,
                        columns,
                        result,
                        run.path,
                        base=self.base_record,
                        placement=self.placement,
                        preview=preview,
                        run_id=run.id,
                    )
            except KeyboardInterrupt:  # the trained layers are in the final checkpoint: resumable
                raise TrainingStopped(config.steps, config.steps, run) from None
        except TrainingStopped:
            run.release()
            raise
        except BaseException:  # a non-finite loss, a crash, a second Ctrl-C
            if not ckpt.has_checkpoint(run.path):  # a checkpointed run stays resumable
                run.remove()
            run.release()
            raise
        finally:
            self._release_unet()
        run.remove()
        return entry

    def _final_preview(
        self, layers: dict[str, Any], request: TrainRequest, *, skip: bool, on_note: Callable[[str], None] | None
    ) -> Any:
        """The entry's preview sheet; None (and a note) when Ctrl-C came during the last step or the preview."""
        from unziplora.train.previews import entry_preview

        say = on_note or (lambda line: None)
        if skip:
            say("Ctrl-C during the last step: saving the entry without a preview.")
            return None
        try:
            with phase(f"rendering the preview (3 samples of {request.config.preview_steps} steps)"):
                hook("preview")
                return entry_preview(self.pipe, self.frozen, layers, request)
        except KeyboardInterrupt:
            say("Ctrl-C during the preview: preview stopped; saving the entry without it.")
            return None

    @property
    def noise_scheduler(self) -> Any:
        from diffusers import DDPMScheduler

        if not hasattr(self, "_noise_scheduler"):
            self._noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return self._noise_scheduler

    def _open_run(self, request: TrainRequest, registry: Any) -> Run:
        from unziplora.train.payload import slug_for

        record = {
            "kind": "train-run",
            "name": request.name,
            "prompts": request.prompts.to_dict(),
            "config": request.config.to_dict(),
            "base": self.base_record,
            "device": self.placement.device,
            "precision": self.placement.precision,
            "command": request.command,
            "extra": request.extra,
            "sources": [im.source_record() for im in request.images],
            "inputs": [],
        }
        run = create_run(registry.root, slug_for(request.prompts), record)
        inputs = run.path / "inputs"
        inputs.mkdir()
        names = []
        for index, im in enumerate(request.images):
            name = f"{index:03d}.png"
            im.image.save(inputs / name)
            names.append(name)
        run.update(inputs=names)
        return run


def prepare_unet(
    unet: Any, config: TrainConfig, image_count: int, *, device: str, is_gpu: bool
) -> tuple[dict[str, Any], Any, torch.optim.Optimizer]:
    """Put ``unet`` in training shape with UnZipLoRA layers; return the layers, the column scheduler, AdamW."""
    from unziplora.method import ColumnSeparation, inject_unziplora, param_groups
    from unziplora.method.layer import init_generator

    unet.to(device)
    unet.requires_grad_(False)
    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else is_gpu
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    unet.train()
    layers = inject_unziplora(
        unet,
        config.rank,
        init=config.init,
        prompt_separation=config.prompt_separation,
        generator=init_generator(config.seed),  # lora_movement redraws this init at save time
    )
    columns = ColumnSeparation(
        layers,
        steps=config.steps,
        sample_times=config.sample_times,
        column_ratio=config.column_ratio,
        similarity_lambda=config.similarity_lambda,
        steps_per_epoch=image_count,  # batch size 1: one optimizer step per image
        enabled=config.column_separation,
        block_separation=config.block_separation,
        faithful=config.faithful,
    )
    groups = param_groups(layers, config.content_lr, config.style_lr, config.merge_lr, config.weight_decay)
    return layers, columns, _make_optimizer(config, groups)


def _make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    kwargs = dict(
        betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon, weight_decay=config.weight_decay
    )
    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise TrainingError(
                "--optimizer adamw8bit needs bitsandbytes: pip install 'unziplora[8bit]' (or use --optimizer adamw)."
            ) from exc
        return bnb.optim.AdamW8bit(groups, **kwargs)
    # One fused kernel over all ~1,000 LoRA tensors instead of a Python loop per tensor
    # (65 ms -> 18 ms per step on the medium benchmark UNet on CPU); same update rule.
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # device or dtype without a fused kernel
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def _snapshot(
    layers: dict[str, Any], columns: Any, optimizer: Any, generator: torch.Generator, scaler: Any, step: int
) -> dict[str, Any]:
    return {
        "step": step,
        "layers": {name: _strip_base(layer.state_dict()) for name, layer in layers.items()},
        "optimizer": optimizer.state_dict(),
        "columns": columns.state_dict(),
        "generator": generator.get_state(),
        "scaler": scaler.state_dict(),  # {} for a disabled scaler (not fp16)
    }


def _strip_base(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not k.startswith("base_layer.")}


def _restore(
    layers: dict[str, Any],
    columns: Any,
    optimizer: Any,
    generator: torch.Generator,
    scaler: Any,
    state: dict[str, Any],
) -> None:
    for name, layer in layers.items():
        layer.load_state_dict(state["layers"][name], strict=False)
    if state.get("optimizer") is not None:  # None in the checkpoint written after the last step
        optimizer.load_state_dict(state["optimizer"])
    columns.load_state_dict(state["columns"])
    generator.set_state(state["generator"])
    if state.get("scaler"):  # empty, or None in checkpoints of older versions, when not fp16
        scaler.load_state_dict(state["scaler"])
