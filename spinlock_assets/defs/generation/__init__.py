"""Generation assets: operator parameters, initial conditions and the base-feature rollout."""

from .assets import build_generation_assets

__all__ = ["build_generation_assets"]
