"""Reading the output of the official UnZipLoRA trainer (changLiu77/UnZipLoRA).

Why a separate reader: one official run (``--output_dir=X``) leaves four *siblings* of ``X``
(ALGORITHM.md 8): ``X_content/`` and ``X_style/`` with a ``pytorch_lora_weights.safetensors`` each
(keys ``unet.unet.<m>.lora.down/up.weight``, which diffusers 0.42 no longer loads), and
``X_merger_content.pth`` / ``X_merger_style.pth``, pickles of ``nn.Parameter`` merge vectors.
Users will point at any one of these, so we accept each. The ``.pth`` files are pickles: they are
opened only with ``torch.load(weights_only=True)`` and refused unless every value is a 1-D tensor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unziplora.errors import ImportFormatError
from unziplora.formats._keys import split_pairs
from unziplora.formats.io import read_safetensors
from unziplora.formats.peft import DIFFUSERS_WEIGHT_NAME, from_peft

if TYPE_CHECKING:
    import torch

PARTS = ("content", "style")


@dataclass(frozen=True)
class OfficialPaths:
    """The four files of one official output."""

    stem: Path  # X, the --output_dir the run was given
    content: Path
    style: Path
    merger_content: Path
    merger_style: Path


@dataclass(frozen=True)
class OfficialLoRA:
    """An official output read into our formats.

    ``content`` / ``style`` are internal state dicts; ``merges`` maps ``<module>.merge_content`` and
    ``<module>.merge_style`` to 1-D float32 vectors (the keys of our masks.safetensors).
    """

    paths: OfficialPaths
    content: dict[str, torch.Tensor]
    style: dict[str, torch.Tensor]
    merges: dict[str, torch.Tensor]


def _paths_for(stem: Path) -> OfficialPaths:
    base = str(stem)
    return OfficialPaths(
        stem=stem,
        content=Path(f"{base}_content") / DIFFUSERS_WEIGHT_NAME,
        style=Path(f"{base}_style") / DIFFUSERS_WEIGHT_NAME,
        merger_content=Path(f"{base}_merger_content.pth"),
        merger_style=Path(f"{base}_merger_style.pth"),
    )


def _candidate_stems(path: Path) -> list[Path]:
    """Every ``X`` that ``path`` could be or be part of, most literal first."""
    if path.name == DIFFUSERS_WEIGHT_NAME:
        path = path.parent
    stems = [path]
    for suffix in ("_merger_content.pth", "_merger_style.pth", "_content", "_style"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            stems.append(path.with_name(path.name[: -len(suffix)]))
    return stems


def locate_official(path: str | os.PathLike[str]) -> OfficialPaths:
    """Find the four files of an official output from ``X`` or any one of its pieces.

    Accepts ``X``, ``X_content/``, ``X_style/``, ``X_content/pytorch_lora_weights.safetensors``
    (or the style one), ``X_merger_content.pth`` and ``X_merger_style.pth``. ``X`` itself need not
    exist (it only holds logs).

    Raises:
        ImportFormatError: naming the first piece that is missing.
    """
    given = Path(os.fspath(path).rstrip("/\\") or os.fspath(path)).expanduser()
    best: tuple[int, OfficialPaths] | None = None
    for stem in _candidate_stems(given):
        paths = _paths_for(stem)
        files = (paths.content, paths.style, paths.merger_content, paths.merger_style)
        present = sum(f.is_file() for f in files)
        if present == 4:
            return paths
        if best is None or present > best[0]:
            best = (present, paths)
    assert best is not None
    present, paths = best
    if present == 0:
        raise ImportFormatError(
            f"{given} is not an official UnZipLoRA output: expected {paths.content.parent.name}/, "
            f"{paths.style.parent.name}/ and the two {paths.stem.name}_merger_*.pth files next to it."
        )
    for label, f in (
        ("content LoRA", paths.content),
        ("style LoRA", paths.style),
        ("content merge vectors", paths.merger_content),
        ("style merge vectors", paths.merger_style),
    ):
        if not f.is_file():
            raise ImportFormatError(
                f"official UnZipLoRA output {paths.stem} is incomplete: the {label} {f} is missing."
            )
    raise AssertionError("unreachable")


def load_merges(path: str | os.PathLike[str], part: str) -> dict[str, torch.Tensor]:
    """Read ``X_merger_<part>.pth``: ``unet.<m>.lora.merge_<part>`` -> ``<m>.merge_<part>`` (1-D float32).

    Raises:
        ImportFormatError: unreadable file, anything but a dict of 1-D tensors, or foreign keys.
    """
    import pickle

    import torch

    if part not in PARTS:
        raise ValueError(f"part must be content or style, not {part!r}")
    p = Path(path)
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ImportFormatError(f"{p} does not exist.") from None
    except pickle.UnpicklingError as exc:
        if "global" in str(exc):  # weights_only met a class/function it does not allow
            raise ImportFormatError(
                f"refusing {p}: it holds Python objects other than tensors, which are never unpickled for safety."
            ) from None
        raise ImportFormatError(f"{p} is not a readable PyTorch .pth file of merge vectors.") from None
    except (RuntimeError, EOFError, ValueError, AttributeError, ImportError, OSError):
        raise ImportFormatError(f"{p} is not a readable PyTorch .pth file of merge vectors.") from None
    if not isinstance(raw, Mapping):
        raise ImportFormatError(f"refusing {p}: expected a dict of merge vectors, found {type(raw).__name__}.")
    merges: dict[str, torch.Tensor] = {}
    suffix = f".lora.merge_{part}"
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.ndim != 1:
            what = type(value).__name__ if not isinstance(value, torch.Tensor) else f"a {value.ndim}-D tensor"
            raise ImportFormatError(f"refusing {p}: entry {key!r} is {what}, not a 1-D merge vector.")
        if not key.endswith(suffix):
            raise ImportFormatError(f"refusing {p}: key {key!r} is not a {part} merge vector (…{suffix}).")
        module = key[: -len(suffix)]
        module = module.removeprefix("unet.")
        merges[f"{module}.merge_{part}"] = value.detach().to(torch.float32).clone()
    if not merges:
        raise ImportFormatError(f"{p} holds no merge vectors.")
    return merges


def load_official(path: str | os.PathLike[str]) -> OfficialLoRA:
    """Locate and read an official output; check that LoRAs and merges describe the same modules.

    Raises:
        ImportFormatError: missing pieces, wrong formats, or merges that do not fit the LoRAs.
    """
    paths = locate_official(path)
    loras = {}
    merges: dict[str, torch.Tensor] = {}
    for part, lora_path, merge_path in (
        ("content", paths.content, paths.merger_content),
        ("style", paths.style, paths.merger_style),
    ):
        tensors, header = read_safetensors(lora_path)
        loras[part] = from_peft(tensors, header)
        part_merges = load_merges(merge_path, part)
        pairs = split_pairs(loras[part], error=ImportFormatError)
        for module, (_down, up) in pairs.items():
            vec = part_merges.get(f"{module}.merge_{part}")
            if vec is None:
                raise ImportFormatError(f"{merge_path} has no merge vector for {module}.")
            if vec.shape[0] != up.shape[0]:
                raise ImportFormatError(
                    f"{merge_path}: the merge vector of {module} has {vec.shape[0]} entries, its LoRA {up.shape[0]} outputs."
                )
        extra = sorted(k for k in part_merges if k[: -len(f".merge_{part}")] not in pairs)
        if extra:
            raise ImportFormatError(
                f"{merge_path} has merge vectors for modules the {part} LoRA lacks, e.g. {extra[0]}."
            )
        merges.update(part_merges)
    return OfficialLoRA(paths=paths, content=loras["content"], style=loras["style"], merges=merges)


def infer_column_masks(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Binary column masks recovered from an official LoRA: the trainer baked them into ``up`` as zero
    rows (ALGORITHM.md 4.8), so row ``j`` is masked out iff it is all zeros. ``{<m>: bool [out]}``."""
    return {m: (up != 0).any(dim=1) for m, (_d, up) in split_pairs(state_dict).items()}
