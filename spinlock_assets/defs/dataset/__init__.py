"""The consolidated dataset: one dataset.h5 over every shard file, in the seed document's layout."""

from .assets import build_dataset_asset
from .automation import REBUILD_SENSOR, build_dataset_sensor

__all__ = ["REBUILD_SENSOR", "build_dataset_asset", "build_dataset_sensor"]
