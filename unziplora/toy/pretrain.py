"""Pretraining of the ``toy-sdxl`` base on the toy world: first the VAE, then UNet + text encoders.

Phases, each resumable from its last checkpoint in the work dir (``state-<phase>.pt``):

1. ``vae``: ``AutoencoderKL`` as an autoencoder (MSE + L1 + a tiny KL) on world images of every
   style, the held-out one included (a VAE is a general image codec; only the base's *text*
   pretraining never sees the held-out style). Every 500 steps and at the end the log reports
   :func:`round_trip_accuracy`, the shipped classifiers' reading of round-tripped images.
2. ``encode``: the pretraining set (training styles only) is encoded once; the latents'
   std fixes ``scaling_factor``, as SDXL's 0.13025 was fixed.
3. ``decoder`` (its own process, beside 4., only with ``decoder_steps`` > 0): the decoder alone
   goes on training, the encoder frozen. The first design's 4x4 latent needed it; the default
   factor-4 VAE (8x8 latent) does not, so it is off by default.
4. ``unet``: UNet and both CLIP text encoders trained together with SDXL's DDPM noise schedule
   (scaled-linear betas, epsilon prediction, 1000 steps) on the world's captions, with 10% empty
   prompts (zeros, as the pipeline's ``force_zeros_for_empty_prompt``) for classifier-free
   guidance and random rare words inserted so unknown words (``monadikos``) are tolerated.
   Weights are an EMA of the trained ones. The learning rate is constant after warm-up, so a run
   stopped at step N equals a run configured for N steps (``--unet-steps N`` resumes and exports).

Deterministic for its seed on one thread: every step's randomness is derived from (seed, step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unziplora.toy import world
from unziplora.toy.base import RESOLUTION, make_models, make_tokenizers


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 17
    vae_images: int = 4000
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 2e-3
    decoder_steps: int = 0  # 0: no decoder-only phase (the factor-4 VAE needs none)
    unet_images: int = 4000
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 1.5e-3
    warmup: int = 50
    ema: float = 0.995
    empty_prob: float = 0.1
    checkpoint_every: int = 100


_LETTERS = "bcdfghjklmnpqrstvwxyz" + "aeiou"


def sample_caption(rng: np.random.Generator, scene: world.Scene, cfg: PretrainConfig) -> str:
    """One training caption for ``scene``: full / shape-only / style-only / empty, with rare words mixed in."""
    u = rng.random()
    if u < cfg.empty_prob:
        return ""
    v = rng.random()
    if v < 0.6:
        text = world.caption(scene.shape, scene.style)
    elif v < 0.8:
        text = world.caption(scene.shape, None)
    else:
        text = world.caption(None, scene.style)
    words = text.split()
    if rng.random() < 0.4:  # a rare word somewhere, like "monadikos"
        n = int(rng.integers(4, 10))
        rare = "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=n))
        words.insert(int(rng.integers(1, len(words) + 1)), rare)
    if rng.random() < 0.2:  # a trailing context of rare words, like "on a table"
        n = int(rng.integers(3, 7))
        words += ["on", "a", "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=n))]
    return " ".join(words)


def _to_tensor(pixels: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Logger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.wall0 = time.time()
        self.cpu0 = time.process_time()

    def __call__(self, msg: str) -> None:
        line = f"[wall {time.time() - self.wall0:7.1f}s cpu {time.process_time() - self.cpu0:7.1f}s] {msg}"
        print(line, flush=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def round_trip_accuracy(vae: Any, n: int = 216, seed: int = 9999) -> tuple[float, float]:
    """Shape and style accuracy of the shipped classifiers on ``n`` fresh world images (pretraining
    styles, a seed pretraining never uses) after an encode (latent mean) / decode round trip: the
    ceiling the VAE sets on what a UNet can draw."""
    import torch

    from unziplora.toy.classify import classify

    pixels, scenes = world.dataset(n, seed, styles=world.TRAIN_STYLES)
    with torch.no_grad():
        rec = vae.decode(vae.encode(_to_tensor(world.downsample(pixels, RESOLUTION))).latent_dist.mean).sample
    pred = classify(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    shape_acc = float(np.mean([p == s.shape for p, s in zip(pred["shape"], scenes)]))
    style_acc = float(np.mean([p == s.style for p, s in zip(pred["style"], scenes)]))
    return shape_acc, style_acc


def train_vae(models: dict[str, Any], cfg: PretrainConfig, work: Path, log: Logger) -> None:
    import torch

    vae = models["vae"]
    ckpt = work / "state-vae.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        log(f"vae: resumed at step {start}")
    if start >= cfg.vae_steps:
        return
    pixels, _ = world.dataset(cfg.vae_images, cfg.seed + 100, styles=world.STYLES)
    data = _to_tensor(world.downsample(pixels, RESOLUTION))
    vae.train()
    for step in range(start, cfg.vae_steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(data), (cfg.vae_batch,), generator=gen)
        x = data[idx]
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * (rec - x).abs().mean() + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if (step + 1) % 25 == 0:
            log(f"vae step {step + 1}/{cfg.vae_steps} loss {loss.item():.4f} kl {kl.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            _save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ckpt)
        if (step + 1) % 500 == 0 or step + 1 == cfg.vae_steps:
            vae.eval()
            shape_acc, style_acc = round_trip_accuracy(vae)
            log(f"vae step {step + 1}: round trip classified shape {shape_acc:.3f} style {style_acc:.3f}")
            vae.train()
    vae.eval()


def train_decoder(models: dict[str, Any], cfg: PretrainConfig, work: Path, log: Logger) -> None:
    """Phase 2b, beside the UNet phase: the VAE decoder alone, the encoder frozen.

    The UNet learns the frozen encoder's latents, so the decoder can go on learning to draw them
    while the UNet trains (as SD's decoder was fine-tuned after the fact). Constant learning rate,
    so a run stopped at step N equals one configured for N steps.
    """
    import torch

    vae = models["vae"]
    for p in vae.parameters():
        p.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    ckpt = work / "state-decoder.pt"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        log(f"decoder: resumed at step {start}")
    if start >= cfg.decoder_steps:
        return
    pixels, _ = world.dataset(cfg.vae_images, cfg.seed + 300, styles=world.STYLES)
    data = _to_tensor(world.downsample(pixels, RESOLUTION))
    vae.decoder.train()
    for step in range(start, cfg.decoder_steps):
        gen = torch.Generator().manual_seed(cfg.seed * 3_000_017 + step)
        x = data[torch.randint(0, len(data), (cfg.vae_batch,), generator=gen)]
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * (rec - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 25 == 0:
            log(f"decoder step {step + 1}/{cfg.decoder_steps} loss {loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.decoder_steps:
            _save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ckpt)
    vae.eval()


def _decoder_worker(cfg: PretrainConfig, work: Path) -> None:
    """The decoder phase in its own process (spawned by :func:`pretrain` beside the UNet workers)."""
    import torch

    _setup_torch()
    tok, _ = make_tokenizers()
    models = make_models(tok, cfg.seed)
    models["vae"].load_state_dict(torch.load(work / "state-vae.pt", weights_only=True)["model"])
    train_decoder(models, cfg, work, Logger(work / "pretrain.log"))


def encode_set(models: dict[str, Any], cfg: PretrainConfig, work: Path, log: Logger) -> dict[str, Any]:
    import torch

    path = work / "latents.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    vae = models["vae"].eval()
    pixels, scenes = world.dataset(cfg.unet_images, cfg.seed + 200, styles=world.TRAIN_STYLES)
    pixels = world.downsample(pixels, RESOLUTION)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(pixels), 64):
            post = vae.encode(_to_tensor(pixels[i : i + 64])).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    mean = torch.cat(means)
    std = torch.cat(stds)
    scaling = float(1.0 / mean.std().item())
    out = {"mean": mean, "std": std, "scaling": scaling, "scenes": [s.__dict__ for s in scenes]}
    _save(out, path)
    log(f"encode: {len(pixels)} images, latent std {mean.std().item():.4f} -> scaling_factor {scaling:.5f}")
    return out


def _encode_prompts(models: dict[str, Any], tok: Any, prompts: list[str]) -> tuple[Any, Any]:
    """SDXL's prompt encoding (penultimate states of both encoders, pooled of the second); '' -> zeros."""
    import torch

    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out1 = models["text_encoder"](ids, output_hidden_states=True)
    out2 = models["text_encoder_2"](ids, output_hidden_states=True)
    embeds = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    pooled = out2.text_embeds
    keep = torch.tensor([bool(p) for p in prompts], dtype=embeds.dtype)
    return embeds * keep[:, None, None], pooled * keep[:, None]


def _average_grads(params: list[Any], world_size: int) -> None:
    """Data parallelism by hand: the mean of every worker's gradients, in one all-reduce."""
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def train_unet(
    models: dict[str, Any],
    tok: Any,
    cfg: PretrainConfig,
    latents: dict[str, Any],
    work: Path,
    log: Logger,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Train UNet + text encoders; returns the EMA state dicts (name -> state).

    With ``world_size`` > 1 each worker draws its own ``unet_batch`` (seeded by step and rank)
    and gradients are averaged, so the run depends on the worker count but not on timing.
    Only rank 0 logs and checkpoints; every rank resumes from the same checkpoint.
    """
    import torch
    from diffusers import DDPMScheduler

    from unziplora.tiny_sdxl import SDXL_SCHEDULER_CONFIG

    names = ("unet", "text_encoder", "text_encoder_2")
    params = [p for n in names for p in models[n].parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-4)
    ema = {n: {k: v.detach().clone() for k, v in models[n].state_dict().items()} for n in names}
    ckpt = work / "state-unet.pt"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        for n in names:
            models[n].load_state_dict(state["models"][n])
        ema = state["ema"]
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        log(f"unet: resumed at step {start}")
    sched = DDPMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod.float()
    scenes = [world.Scene(**s) for s in latents["scenes"]]
    mean, std, scaling = latents["mean"], latents["std"], latents["scaling"]
    time_ids = torch.tensor([[RESOLUTION, RESOLUTION, 0, 0, RESOLUTION, RESOLUTION]], dtype=torch.float32)
    for n in names:
        models[n].train()
    for step in range(start, cfg.unet_steps):
        rng = np.random.default_rng([cfg.seed, 7, step, rank])
        gen = torch.Generator().manual_seed((cfg.seed * 2_000_003 + step) * 64 + rank)
        idx = rng.integers(0, len(scenes), size=cfg.unet_batch)
        prompts = [sample_caption(rng, scenes[int(i)], cfg) for i in idx]
        it = torch.from_numpy(idx)
        x0 = (mean[it] + std[it] * torch.randn(mean[it].shape, generator=gen)) * scaling
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen)
        a = alphas[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup)  # constant: a run may stop at any checkpoint
        embeds, pooled = _encode_prompts(models, tok, prompts)
        pred = models["unet"](
            xt, t, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.expand(len(idx), -1)}
        ).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            _average_grads(params, world_size)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for n in names:
                for k, v in models[n].state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[n][k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                    else:
                        ema[n][k].copy_(v)
        if rank == 0 and (step + 1) % 10 == 0:
            log(f"unet step {step + 1}/{cfg.unet_steps} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e}")
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.unet_steps):
            state = {"models": {n: models[n].state_dict() for n in names}, "ema": ema, "opt": opt.state_dict()}
            _save({**state, "step": step + 1}, ckpt)
    return ema


def export_weights(models: dict[str, Any], ema: dict[str, Any], scaling: float, out: Path) -> None:
    """Write the fp16 weights file the builtin base is built from."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, model in models.items():
        state = ema.get(name, model.state_dict())
        for key, value in state.items():
            tensors[f"{name}.{key}"] = value.detach().to(torch.float16).contiguous()
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"vae_scaling_factor": f"{scaling:.6f}", "format": "pt"})
    tmp.replace(out)


def _setup_torch() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def _unet_worker(rank: int, cfg: PretrainConfig, work: Path, world_size: int) -> None:
    """One data-parallel worker of the UNet phase (spawned by :func:`pretrain`)."""
    import torch
    import torch.distributed as dist

    _setup_torch()
    dist.init_process_group("gloo", init_method=f"file://{work / 'dist-store'}", rank=rank, world_size=world_size)
    try:
        tok, _ = make_tokenizers()
        models = make_models(tok, cfg.seed)
        latents = torch.load(work / "latents.pt", weights_only=False)
        train_unet(models, tok, cfg, latents, work, Logger(work / "pretrain.log"), rank, world_size)
    finally:
        dist.destroy_process_group()


def pretrain(cfg: PretrainConfig, work: Path, out: Path, workers: int = 1) -> None:
    """VAE and encoding in this process, then the UNet phase on ``workers`` data-parallel processes
    (one thread each: on a shared CPU, more processes get more of it than more threads)."""
    import torch

    _setup_torch()
    torch.manual_seed(cfg.seed)
    work.mkdir(parents=True, exist_ok=True)
    log = Logger(work / "pretrain.log")
    log(f"config {cfg} workers {workers}")
    tok, _ = make_tokenizers()
    models = make_models(tok, cfg.seed)
    train_vae(models, cfg, work, log)
    for p in models["vae"].parameters():
        p.requires_grad_(False)
    latents = encode_set(models, cfg, work, log)
    import torch.multiprocessing as mp

    decoder = None
    if cfg.decoder_steps > 0:
        decoder = mp.get_context("spawn").Process(target=_decoder_worker, args=(cfg, work))
        decoder.start()
    if workers == 1:
        ema = train_unet(models, tok, cfg, latents, work, log)
    else:
        (work / "dist-store").unlink(missing_ok=True)
        mp.spawn(_unet_worker, args=(cfg, work, workers), nprocs=workers, join=True)
        ema = torch.load(work / "state-unet.pt", weights_only=True)["ema"]
    if decoder is not None:
        decoder.join()
        if decoder.exitcode != 0:
            raise RuntimeError(f"the decoder phase failed (exit {decoder.exitcode})")
        models["vae"].load_state_dict(torch.load(work / "state-decoder.pt", weights_only=True)["model"])
    export_weights(models, ema, latents["scaling"], out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); this process: cpu {time.process_time():.0f}s")
