"""The consolidated dataset: one dataset.h5 over every shard file, in the seed document's layout."""

from .assets import build_dataset_asset

__all__ = ["build_dataset_asset"]
