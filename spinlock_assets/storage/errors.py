"""Exceptions of the storage layer; each message names the file and says what to do.

Every class also derives from the builtin a generic caller would catch (``FileNotFoundError``,
``ValueError``, ``KeyError``...), so code written against the builtins keeps working.
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "OutputExistsError",
    "ShardExistsError",
    "ShardMissingError",
    "ShardCorruptError",
    "ShardChangedError",
    "ShardArrayMissingError",
    "SpecMismatchError",
    "InconsistentShardsError",
    "InitialConditionMismatchError",
]


class StorageError(Exception):
    """Base class of every error raised by ``spinlock_assets.storage``."""


class OutputExistsError(StorageError, FileExistsError):
    """The file to write already exists and the writer was not told to overwrite it."""


class ShardExistsError(OutputExistsError):
    """A shard file already exists and the writer was not told to overwrite it."""


class ShardMissingError(StorageError, FileNotFoundError):
    """The shard file does not exist."""


class ShardCorruptError(StorageError, OSError):
    """Not a readable shard file of this layout: truncated, not HDF5, failed checksum, attributes missing."""


class ShardChangedError(ShardCorruptError):
    """A shard file's bytes differ from the sha256 recorded when it was materialized or when dataset.h5
    was last built: it was changed outside the pipeline, and recording its new hash would launder it."""


class ShardArrayMissingError(StorageError, KeyError):
    """An array asked for is not in the shard file."""

    def __str__(self) -> str:
        # KeyError's __str__ shows repr(message), quotes and escapes included; show the sentence instead.
        return str(self.args[0]) if self.args else ""


class SpecMismatchError(StorageError, ValueError):
    """A file was written for a different dataset spec than the one asked for."""


class InconsistentShardsError(StorageError, ValueError):
    """Shards of one asset disagree on an array's shape, dtype or definition (version, feature names...)."""


class InitialConditionMismatchError(StorageError, ValueError):
    """An initial condition regenerated from its seed (compact storage) differs from its stored digest."""
