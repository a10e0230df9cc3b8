"""Derived feature families: one asset per family, all produced by one replay step per shard."""

from .assets import build_feature_assets, family_asset_name

__all__ = ["build_feature_assets", "family_asset_name"]
