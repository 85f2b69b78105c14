"""Errors the library raises for things a user can fix.

Every class here carries a message written for a person: what went wrong, why, and what to do.
The CLI maps them to one ``error: ...`` line and exit code 1 (see ``unziplora_cli._errors``);
anything that is not an ``UnZipLoRAError`` is a bug and keeps its traceback.
Each class also subclasses the matching builtin so plain ``except ValueError`` callers work.
"""

from __future__ import annotations


class UnZipLoRAError(Exception):
    """Base of every error meant to be shown to a user as one line."""


class ConfigError(UnZipLoRAError, ValueError):
    """A setting (config file, environment variable or option) is invalid."""


class UsageError(ConfigError):
    """A command-line value that can never work (``--steps 0``, an unknown ``--format``): exit code 2.

    Raised before anything heavy happens, so a usage mistake costs no model load and no write.
    """


class DeviceError(UnZipLoRAError, RuntimeError):
    """The requested device or precision cannot be used on this machine."""


class BaseModelError(UnZipLoRAError, OSError):
    """The base model cannot be found or loaded."""


class InputImageError(UnZipLoRAError, ValueError):
    """An input image is unreadable, broken, or of a kind we refuse."""


class PromptError(UnZipLoRAError, ValueError):
    """Prompts cannot be built from what was given."""


class EntryNotFoundError(UnZipLoRAError, LookupError):
    """No registry entry matches an id or prefix."""


class AmbiguousEntryError(UnZipLoRAError, LookupError):
    """An id prefix matches more than one registry entry."""


class InvalidEntryIdError(UnZipLoRAError, ValueError):
    """An id or name is not allowed (it could address a path outside the registry)."""


class DamagedEntryError(UnZipLoRAError, OSError):
    """A registry entry exists but its files are missing, truncated or altered."""


class SchemaVersionError(UnZipLoRAError, ValueError):
    """An entry was written by a newer unziplora with a schema this version cannot read."""


class RegistryError(UnZipLoRAError, OSError):
    """The registry directory cannot be used (not writable, locked, ...)."""


class TrainingError(UnZipLoRAError, RuntimeError):
    """Training stopped (for example on a non-finite loss); no entry was written."""


class IncompatibleEntriesError(UnZipLoRAError, ValueError):
    """Entries cannot be combined (different bases or shapes)."""


class ExportError(UnZipLoRAError, OSError):
    """A LoRA file cannot be written as asked."""


class OutputError(UnZipLoRAError, OSError):
    """An output folder for generated images cannot be created or written."""


class ImportFormatError(UnZipLoRAError, ValueError):
    """A file given to ``unzip import`` is not in a format we can read."""
