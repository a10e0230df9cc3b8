"""Names shared by the Dagster layer: asset groups, environment variables, defaults."""

from __future__ import annotations

# Asset groups (each a subpackage of the Dagster layer).
INPUTS_GROUP = "inputs"
GENERATION_GROUP = "generation"
FEATURES_GROUP = "features"
DATASET_GROUP = "dataset"

# Where the dataset spec and the HDF5 folder come from (read once, by definitions.py).
SPEC_ENV_VAR = "SPINLOCK_SPEC"
DATA_ROOT_ENV_VAR = "SPINLOCK_DATA_ROOT"
PLUGINS_ENV_VAR = "SPINLOCK_PLUGINS"  # modules that register extra feature families
DEVICE_ENV_VAR = "SPINLOCK_DEVICE"  # torch device of the rollouts (a Celery worker's device kind)
RUN_SECONDS_ENV_VAR = "SPINLOCK_RUN_SECONDS"  # estimated work per backfill run (0: one shard per run)
DEFAULT_DATA_ROOT = "data"

OWNERS = ["team:operator-datasets"]

# The concurrency pool of steps that roll out on a GPU: its limit is the number of GPUs.
GPU_POOL = "gpu"

# Scheduled verification: daily at 03:00, one run replaying this many operators (spread over all shards)
# and checking this many shard files, whatever the dataset size (defs/verification/verify_now.py).
VERIFY_CRON = "0 3 * * *"
VERIFY_OPERATOR_BUDGET = 256
VERIFY_FILE_BUDGET = 96
