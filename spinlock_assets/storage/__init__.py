"""HDF5 storage: one shard file per (asset, shard), a consolidated dataset.h5 view, and the written layout.

numpy + h5py only (no torch, no dagster), so a reader needs nothing else. ``docs/hdf5-layout.md``
describes the layout; ``validate_dataset_file`` and ``validate_shard_file`` enforce it.
"""

from spinlock_assets.storage.arrays import ArrayInfo, StoredArray
from spinlock_assets.storage.consolidated import (
    Consolidation,
    build_consolidated_dataset,
    update_consolidated_dataset,
)
from spinlock_assets.storage.errors import (
    InconsistentShardsError,
    InitialConditionMismatchError,
    OutputExistsError,
    ShardArrayMissingError,
    ShardChangedError,
    ShardCorruptError,
    ShardExistsError,
    ShardMissingError,
    SpecMismatchError,
    StorageError,
)
from spinlock_assets.storage.layout import (
    BASE_FEATURES_ASSET,
    DATASET_FILE,
    FIXED_ARRAYS,
    FIXED_SOURCES,
    GENERATION_ASSETS,
    INITIAL_CONDITIONS_ASSET,
    PARAMETERS_ASSET,
    SCHEMA_VERSION,
    ConsolidatedSource,
    FixedArray,
    Problem,
    family_source,
)
from spinlock_assets.storage.shard_file import (
    ShardContents,
    ShardFileInfo,
    ShardHeader,
    file_sha256,
    read_shard_file,
    read_shard_header,
    write_shard_file,
)
from spinlock_assets.storage.store import ShardStore
from spinlock_assets.storage.validation import validate_dataset_file, validate_shard_file

__all__ = [
    "ArrayInfo",
    "StoredArray",
    "Consolidation",
    "build_consolidated_dataset",
    "update_consolidated_dataset",
    "InconsistentShardsError",
    "InitialConditionMismatchError",
    "OutputExistsError",
    "ShardArrayMissingError",
    "ShardChangedError",
    "ShardCorruptError",
    "ShardExistsError",
    "ShardMissingError",
    "SpecMismatchError",
    "StorageError",
    "BASE_FEATURES_ASSET",
    "DATASET_FILE",
    "FIXED_ARRAYS",
    "GENERATION_ASSETS",
    "INITIAL_CONDITIONS_ASSET",
    "PARAMETERS_ASSET",
    "FIXED_SOURCES",
    "SCHEMA_VERSION",
    "ConsolidatedSource",
    "FixedArray",
    "Problem",
    "family_source",
    "ShardContents",
    "ShardFileInfo",
    "ShardHeader",
    "file_sha256",
    "read_shard_file",
    "read_shard_header",
    "write_shard_file",
    "ShardStore",
    "validate_dataset_file",
    "validate_shard_file",
]

# The reader builds core records (no torch import); it comes last so the storage modules above load first.
from spinlock_assets.storage.reader import DatasetReader, open_dataset  # noqa: E402

__all__ += ["DatasetReader", "open_dataset"]
