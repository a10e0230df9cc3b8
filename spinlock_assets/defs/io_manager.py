"""The HDF5 shard IO manager: each (asset, partition) output is one published HDF5 file.

Assets return a :class:`ShardOutput` (arrays plus the fingerprint they were computed under); this IO
manager owns the file: it writes ``<root>/<asset>/<shard>.h5`` atomically through the shard store,
stamps the lineage attributes (spec hash, code version, fingerprint, operator range) and records
path, sha256 and size as materialization metadata. Loading returns the shard's arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from spinlock_assets.core.fingerprint import package_version
from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage.errors import ShardMissingError, StorageError
from spinlock_assets.storage.layout import GENERATION_ASSETS

from .jobs import FEATURES_JOB, GENERATION_JOB
from .resources import DatasetResource

__all__ = ["IO_MANAGER_KEY", "HDF5ShardIOManager", "ShardOutput"]

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


class HDF5ShardIOManager(dg.ConfigurableIOManager):
    """One HDF5 file per (asset, shard) under the dataset's data root."""

    dataset: DatasetResource

    def handle_output(self, context: dg.OutputContext, obj: ShardOutput) -> None:
        spec = self.dataset.spec
        asset = context.asset_key.path[-1]
        shard = parse_shard_key(context.partition_key)
        code_version = context.asset_spec.code_version or ""
        attrs = {
            "asset": asset,
            "shard_key": shard.key,
            "operator_start": shard.start,
            "operator_stop": shard.stop,
            "spec_hash": spec.spec_hash,
            "spec_json": spec.to_json(),
            "code_version": code_version,
            "fingerprint_json": json.dumps(obj.fingerprint, sort_keys=True),
            "package_version": package_version(),
        }
        info = self.dataset.store.write(asset, shard.key, obj.arrays, attrs, overwrite=True)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(info.path)),
                "sha256": info.sha256,
                "bytes": info.n_bytes,
                "operator_range": f"{shard.start}..{shard.stop - 1}",
                "spec_hash": spec.spec_hash,
                "code_version": code_version,
                "fingerprint": dg.MetadataValue.json(obj.fingerprint),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.path[-1]
        contents = {key: self._read(context, asset, key) for key in context.asset_partition_keys}
        return next(iter(contents.values())) if len(contents) == 1 else contents

    def _read(self, context: dg.InputContext, asset: str, shard_key: str) -> Any:
        """One upstream shard; a missing or unreadable file fails the step with what to run first, not a
        stack trace ending in a file path."""
        try:
            return self.dataset.store.read(asset, shard_key, expected_spec_hash=self.dataset.spec.spec_hash)
        except StorageError as error:
            raise upstream_shard_failure(context.op_def.name, asset, shard_key, error) from None


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
