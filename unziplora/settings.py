"""User settings: ``config.toml``, environment variables and their precedence.

Precedence for every setting is: command-line flag > environment variable > config file >
built-in default. The config file lives in the platformdirs user config dir for ``unziplora``
(``$UNZIPLORA_CONFIG`` overrides its path) and looks like::

    base_model = "stabilityai/stable-diffusion-xl-base-1.0"
    device = "auto"          # auto | cpu | cuda | cuda:1 | mps
    precision = "auto"       # auto | fp32 | fp16 | bf16
    registry = "~/unziplora"  # where entries are stored

    [train]                  # the train options marked config_file in unziplora.train.config
    steps = 600
    rank = 64
    resolution = 1024        # default: the base's native size (1024 for SDXL, 64 for tiny-sdxl)
    faithful = false         # true: unzip train --faithful (the official code's numerics)

This module is light: it imports no torch.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from unziplora.dtypes import PRECISIONS
from unziplora.errors import ConfigError
from unziplora.train.config import defaults, kinds, options, value_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP_NAME = "unziplora"
DEFAULT_BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"

ENV_HOME = "UNZIPLORA_HOME"
ENV_BASE_MODEL = "UNZIPLORA_BASE_MODEL"
ENV_DEVICE = "UNZIPLORA_DEVICE"
ENV_PRECISION = "UNZIPLORA_PRECISION"
ENV_CONFIG = "UNZIPLORA_CONFIG"
ENV_CACHE = "UNZIPLORA_CACHE"
ENV_THREADS = "UNZIPLORA_THREADS"

_TOP_KEYS = {"base_model": str, "device": str, "precision": str, "registry": str}
# The [train] keys, their types and defaults come from the options' one declaration.
_TRAIN_KEYS = {name: kinds()[name] for name, opt in options().items() if opt.config_file}

TrainDefaults = make_dataclass(
    "TrainDefaults",
    [
        (name, kind | None if defaults()[name] is None else kind, field(default=defaults()[name]))
        for name, kind in _TRAIN_KEYS.items()
    ],
    frozen=True,
)
TrainDefaults.__doc__ = """Defaults for ``unzip train`` that a user may change in the config file."""


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``sources`` says where each value came from (flag/env/file/default)."""

    base_model: str = DEFAULT_BASE_MODEL
    device: str = "auto"
    precision: str = "auto"
    registry: Path = field(default_factory=lambda: default_registry_dir())
    train: TrainDefaults = field(default_factory=TrainDefaults)
    config_path: Path = field(default_factory=lambda: config_path())
    sources: dict[str, str] = field(default_factory=dict)


def _platformdirs() -> Any:
    import platformdirs

    return platformdirs


def default_registry_dir() -> Path:
    """The platformdirs user data dir for ``unziplora``."""
    return Path(_platformdirs().user_data_dir(APP_NAME, appauthor=False))


def config_path() -> Path:
    """Path of ``config.toml`` (``$UNZIPLORA_CONFIG`` overrides)."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser().absolute()  # printed (doctor, errors): always absolute
    return Path(_platformdirs().user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def user_cache_dir() -> Path:
    """Where generated artifacts such as the tiny base live (``$UNZIPLORA_CACHE`` overrides)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser().absolute()  # printed (doctor, errors): always absolute
    return Path(_platformdirs().user_cache_dir(APP_NAME, appauthor=False))


def _toml_error_line(path: Path, exc: Exception) -> str:
    # tomllib messages end with "(at line N, column M)"; keep them, name the file first.
    return f"config file {path} is not valid TOML: {exc}. Fix or delete the file."


MAX_CONFIG_BYTES = 1 << 20


def _read_small_file(path: Path) -> bytes:
    """A regular file's bytes; a FIFO or device (``/dev/zero``) or a huge file is refused, never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config file {path} is not a regular file; point {ENV_CONFIG} at a config.toml.")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {st.st_size} bytes, over the 1 MiB limit for a config file.")
        return handle.read(MAX_CONFIG_BYTES + 1)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and validate the config file; a missing file is an empty config."""
    if not path.exists():
        return {}
    try:
        raw = _read_small_file(path).decode("utf-8")
        data = tomllib.loads(raw)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason}). Fix or delete the file.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error_line(path, exc)) from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}.") from exc
    lines = raw.splitlines()

    def where(key: str) -> str:
        for number, text in enumerate(lines, start=1):
            if text.strip().startswith(key):
                return f"line {number}"
        return "a line"

    def check(table: dict[str, Any], allowed: dict[str, type], prefix: str) -> None:
        for key, value in table.items():
            if key == "train" and prefix == "":
                continue
            if key not in allowed:
                known = ", ".join(sorted(prefix + k for k in allowed))
                hint = " (steps, rank and resolution go under [train])" if key in _TRAIN_KEYS else ""
                raise ConfigError(
                    f"config file {path}, {where(key)}: unknown setting '{prefix}{key}'{hint}; known: {known}."
                )
            expected = allowed[key]
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                kind = {str: "a string", bool: "true or false"}.get(expected, "an integer")
                raise ConfigError(f"config file {path}, {where(key)}: '{prefix}{key}' must be {kind}, got {value!r}.")

    check(data, _TOP_KEYS, "")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"config file {path}, {where('train')}: 'train' must be a table ([train]).")
    check(train, _TRAIN_KEYS, "train.")
    for key, value in train.items():
        if not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"config file {path}, {where(key)}: 'train.{key}' must be positive, got {value}.")
        problem = value_problem(key, value)
        if problem:
            raise ConfigError(f"config file {path}, {where(key)}: 'train.{key}' {problem}.")
    precision = data.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(
            f"config file {path}, {where('precision')}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}."
        )
    return data


def load_settings(
    *,
    registry: str | Path | None = None,
    base_model: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Settings:
    """Resolve every setting with flag > env > file > default precedence."""
    path = config_path()
    data = read_config_file(path)
    sources: dict[str, str] = {}

    def pick(name: str, flag: Any, env_name: str | None, file_value: Any, default: Any) -> Any:
        if flag is not None:
            sources[name] = "flag"
            return flag
        if env_name and os.environ.get(env_name):
            sources[name] = f"env {env_name}"
            return os.environ[env_name]
        if file_value is not None:
            sources[name] = f"config {path}"
            return file_value
        sources[name] = "default"
        return default

    base = pick("base_model", base_model, ENV_BASE_MODEL, data.get("base_model"), DEFAULT_BASE_MODEL)
    dev = pick("device", device, ENV_DEVICE, data.get("device"), "auto")
    prec = pick("precision", precision, ENV_PRECISION, data.get("precision"), "auto")
    reg = pick("registry", registry, ENV_HOME, data.get("registry"), None)
    reg_path = Path(reg).expanduser().absolute() if reg is not None else default_registry_dir()
    train = replace(
        TrainDefaults(),
        **{f.name: data.get("train", {}).get(f.name, getattr(TrainDefaults(), f.name)) for f in fields(TrainDefaults)},
    )
    return Settings(
        base_model=str(base),
        device=str(dev),
        precision=str(prec),
        registry=reg_path,
        train=train,
        config_path=path,
        sources=sources,
    )
