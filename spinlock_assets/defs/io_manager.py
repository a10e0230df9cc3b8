"""The HDF5 shard IO manager: each (asset, partition) output is one published HDF5 file.

Assets return a :class:`ShardOutput` (arrays plus the fingerprint they were computed under); this module
owns the file: :func:`publish_shard` writes ``<root>/<asset>/<shard>.h5`` atomically through the shard
store, stamps the lineage attributes (spec hash, code version, fingerprint, operator range) and returns
path, sha256 and size as materialization metadata. The IO manager calls it for a one-shard output; a step
over a range of shards calls it per shard and outputs a :class:`PublishedRange` (``defs/ranges.py``).
Loading returns the shard's arrays, or over a range a mapping that reads each shard when it is used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from spinlock_assets.core.fingerprint import package_version
from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage.errors import ShardMissingError, StorageError
from spinlock_assets.storage.layout import GENERATION_ASSETS

from .jobs import FEATURES_JOB, GENERATION_JOB
from .resources import DatasetResource

__all__ = ["IO_MANAGER_KEY", "HDF5ShardIOManager", "PublishedRange", "ShardOutput", "publish_shard"]

IO_MANAGER_KEY = "shard_io_manager"  # the key every shard asset names its IO manager by


@dataclass
class ShardOutput:
    """What a shard asset returns: its arrays (``dict[str, StoredArray]``) and execution fingerprint."""

    arrays: dict[str, Any]
    fingerprint: dict[str, str] = field(default_factory=dict)

    @property
    def content_version(self) -> str:
        """SHA-256 over names, dtypes, shapes and bytes of the arrays: equal content, equal version, so a
        bit-identical re-materialization leaves downstream assets fresh."""
        digest = hashlib.sha256()
        for name in sorted(self.arrays):
            data = self.arrays[name].data
            digest.update(f"{name}|{data.dtype.str}|{data.shape}".encode())
            digest.update(data.tobytes())
        return digest.hexdigest()[:32]


@dataclass(frozen=True)
class PublishedRange:
    """The output of a step over several shards: each shard's file is already published."""

    shard_keys: tuple[str, ...]


def publish_shard(
    dataset: DatasetResource, asset: str, shard_key: str, output: ShardOutput, code_version: str
) -> dict[str, Any]:
    """Write the shard's file atomically with its lineage attributes; its materialization metadata."""
    spec = dataset.spec
    shard = parse_shard_key(shard_key)
    attrs = {
        "asset": asset,
        "shard_key": shard.key,
        "operator_start": shard.start,
        "operator_stop": shard.stop,
        "spec_hash": spec.spec_hash,
        "spec_json": spec.to_json(),
        "code_version": code_version,
        "fingerprint_json": json.dumps(output.fingerprint, sort_keys=True),
        "package_version": package_version(),
    }
    info = dataset.store.write(asset, shard.key, output.arrays, attrs, overwrite=True)
    return {
        "path": dg.MetadataValue.path(str(info.path)),
        "sha256": info.sha256,
        "bytes": info.n_bytes,
        "operator_range": f"{shard.start}..{shard.stop - 1}",
        "spec_hash": spec.spec_hash,
        "code_version": code_version,
        "fingerprint": dg.MetadataValue.json(output.fingerprint),
    }


class HDF5ShardIOManager(dg.ConfigurableIOManager):
    """One HDF5 file per (asset, shard) under the dataset's data root."""

    dataset: DatasetResource

    def handle_output(self, context: dg.OutputContext, obj: ShardOutput | PublishedRange) -> None:
        if isinstance(obj, PublishedRange):
            return  # written shard by shard by the step, each with its own materialization
        code_version = context.asset_spec.code_version or ""
        asset = context.asset_key.path[-1]
        # A backfill's run of one shard is a range of one (range tags, no partition key of its own).
        [shard_key] = context.asset_partition_keys
        context.add_output_metadata(publish_shard(self.dataset, asset, shard_key, obj, code_version))

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.path[-1]
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return self._read(context, asset, keys[0])
        return _LazyShards(keys, lambda key: self._read(context, asset, key))

    def _read(self, context: dg.InputContext, asset: str, shard_key: str) -> Any:
        """One upstream shard; a missing or unreadable file fails the step with what to run first, not a
        stack trace ending in a file path."""
        try:
            return self.dataset.store.read(asset, shard_key, expected_spec_hash=self.dataset.spec.spec_hash)
        except StorageError as error:
            raise upstream_shard_failure(context.op_def.name, asset, shard_key, error) from None


class _LazyShards(Mapping):
    """An upstream input over several shards: each shard is read when it is used, so a run over a range
    holds one shard's arrays at a time, not the range's."""

    def __init__(self, keys: list[str], read: Callable[[str], Any]) -> None:
        self._keys, self._read = list(keys), read

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def upstream_shard_failure(consumer: str, asset: str, shard_key: str, error: StorageError) -> dg.Failure:
    """The step failure shown in the UI when ``consumer`` cannot read ``asset``'s shard ``shard_key``."""
    job = GENERATION_JOB if asset in GENERATION_ASSETS else FEATURES_JOB
    if isinstance(error, ShardMissingError):
        problem = f"{asset} has not been materialized for partition {shard_key}"
    else:
        problem = f"the {asset} file of partition {shard_key} cannot be used ({type(error).__name__})"
    return dg.Failure(
        description=(
            f"{consumer} cannot read its input: {problem}. Run {job} for partition {shard_key} first "
            f"(or materialize {asset} for {shard_key} from its asset page), then re-run this partition."
        ),
        metadata={
            "input_asset": asset,
            "partition": shard_key,
            "run_first": job,
            "error": f"{type(error).__name__}: {error}",
        },
        allow_retries=False,  # a retry would read the same file
    )
