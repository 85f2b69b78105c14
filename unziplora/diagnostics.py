"""What ``unzip doctor`` checks: packages, device, config, registry, base model, evaluation models.

Each check is a :class:`Check` with a status of ``ok``, ``warn`` or ``fail``; ``fail`` means
something required is missing and the command exits 1.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from unziplora import __version__
from unziplora.errors import UnZipLoRAError
from unziplora.settings import Settings

REQUIRED_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "typer",
    "rich",
    "platformdirs",
    "pillow",
    "numpy",
)
OPTIONAL_PACKAGES = ("bitsandbytes",)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def package_checks() -> list[Check]:
    checks = [
        Check("python", "ok", f"{platform.python_version()} ({sys.executable})"),
        Check("unziplora", "ok", __version__),
    ]
    for name in REQUIRED_PACKAGES:
        try:
            checks.append(Check(name, "ok", metadata.version(name)))
        except metadata.PackageNotFoundError:
            checks.append(Check(name, "fail", f"not installed; run: pip install {name}"))
    for name in OPTIONAL_PACKAGES:
        try:
            checks.append(Check(name, "ok", metadata.version(name)))
        except metadata.PackageNotFoundError:
            checks.append(
                Check(name, "ok", "not installed (optional: pip install 'unziplora[8bit]' for --optimizer adamw8bit)")
            )
    return checks


def device_check(settings: Settings) -> Check:
    try:
        from unziplora.device import resolve_placement

        placement = resolve_placement(settings.device, settings.precision)
        sampling = resolve_placement(settings.device, settings.precision, purpose="generate")
    except UnZipLoRAError as exc:
        return Check("device", "fail", str(exc))
    except ImportError as exc:
        return Check("device", "fail", f"torch cannot be imported: {exc}")
    precision = (
        placement.precision
        if sampling.precision == placement.precision
        else (f"{placement.precision} for training, {sampling.precision} for generation")
    )
    return Check("device", "ok", f"{placement.device}, {precision} (requested {settings.device}/{settings.precision})")


def registry_check(registry: Path) -> Check:
    probe_dir = registry
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".unziplora-probe-"):
            pass
    except OSError as exc:
        return Check(
            "registry", "fail", f"{registry} is not writable ({exc.strerror}); pass --registry or set UNZIPLORA_HOME"
        )
    state = "exists" if registry.exists() else "will be created"
    return Check("registry", "ok", f"{registry} (writable, {state})")


def entries_check(registry: Path) -> Check:
    """One ``entries`` line: how many entries, or which ones are damaged (status fail)."""
    from unziplora.registry.store import Registry

    try:
        entries = Registry(registry).list()
    except (UnZipLoRAError, OSError) as exc:
        return Check("entries", "fail", f"cannot list {registry}: {exc}")
    damaged = [e for e in entries if e.damaged]
    if not damaged:
        return Check("entries", "ok", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, none damaged")
    shown = "; ".join(f"{e.id} ({e.damaged})" for e in damaged[:10])
    more = f"; and {len(damaged) - 10} more" if len(damaged) > 10 else ""
    return Check(
        "entries",
        "fail",
        f"{len(damaged)} of {len(entries)} damaged: {shown}{more}. "
        "Inspect with 'unzip show ID --verify'; remove with 'unzip rm ID'",
    )


def base_check(settings: Settings, *, reachable: Callable[[], bool] | None = None) -> Check:
    """The base model: loadable as it is (ok), fetched by the first train (warn), or not usable (fail).

    A hub base missing from the cache fails only when the hub cannot be reached (HF_HUB_OFFLINE, or
    no connection): otherwise ``train`` downloads it, which is worth a warning, not a failure.
    """
    from unziplora.base_model import availability, parse_base
    from unziplora.hf_cache import hub_reachable, offline

    try:
        spec = parse_base(settings.base_model)
    except UnZipLoRAError as exc:
        return Check("base model", "fail", str(exc))
    ok, detail = availability(spec)
    if ok:
        return Check("base model", "ok", f"{spec.ref}: {detail}")
    if spec.kind == "hub" and not offline() and (reachable or hub_reachable)():
        return Check("base model", "warn", f"{spec.ref}: will download on first use (the hub is reachable); {detail}")
    return Check("base model", "fail", detail if detail.startswith("base model") else f"{spec.ref}: {detail}")


def eval_model_checks() -> list[Check]:
    """The default evaluation models of ``unzip eval``: optional, so absent is not a failure."""
    from unziplora.base_model import _hub_snapshot
    from unziplora.eval.models import DEFAULT_CLIP, DEFAULT_DINO

    checks = []
    for name, ref in (("eval CLIP", DEFAULT_CLIP), ("eval DINOv2", DEFAULT_DINO)):
        snap = _hub_snapshot(ref)
        detail = (
            f"{ref}: cached at {snap}"
            if snap is not None
            else (f"{ref}: not in the Hugging Face cache (optional, only unzip eval needs it: `hf download {ref}`)")
        )
        checks.append(Check(name, "ok", detail))
    return checks


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in display order."""
    checks = package_checks()
    checks.append(device_check(settings))
    config_state = "exists" if settings.config_path.exists() else "not present (defaults in use)"
    checks.append(Check("config", "ok", f"{settings.config_path} ({config_state})"))
    checks.append(registry_check(settings.registry))
    checks.append(entries_check(settings.registry))
    checks.append(base_check(settings))
    checks.extend(eval_model_checks())
    if os.environ.get("HF_HUB_OFFLINE"):
        checks.append(Check("network", "ok", "HF_HUB_OFFLINE is set: models load only from the local cache"))
    return checks
