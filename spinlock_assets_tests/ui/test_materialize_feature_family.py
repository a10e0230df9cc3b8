"""Workflow: a derived feature family never materialized is materialized from the UI, shard by shard; its
feature map is read in the metadata panel; the ``rebuild_dataset`` sensor then brings dataset.h5 up to date
by itself (README, "Workflows in the UI")."""

from __future__ import annotations

import h5py
import pytest
from playwright.sync_api import Page, expect

from spinlock_assets.defs.dataset import REBUILD_SENSOR
from spinlock_assets_tests.e2e.dagster_dev import DagsterDev, poll

from .dagster_ui import (
    asset_link,
    doc_screenshot,
    launch_from_dialog,
    materialize_button,
    metadata_row,
    metadata_value,
    open_asset,
    save_screenshot,
    show_markdown,
    wait_for_launched,
)
from .server_setup import current_spec, materialized_partitions, shard_keys

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FAMILY = "spectral"
ASSET = f"{FAMILY}_features"
SENSOR_TIMEOUT_S = 180  # a 30 s sensor interval, then a run on a loaded two-core machine


def _has_family(dev: DagsterDev) -> bool | None:
    path = dev.data_root / "dataset.h5"
    if not path.is_file():
        return None
    with h5py.File(path, "r") as dataset:
        present = dataset.get(f"/features/{FAMILY}/present")
        return True if present is not None and present[()].all() else None


def test_materialize_new_feature_family_from_the_ui(generated_dev: DagsterDev, page: Page) -> None:
    dev = generated_dev
    shards = shard_keys(current_spec(dev))
    assert not materialized_partitions(dev, ASSET), f"{ASSET} must start never materialized"

    # Catalog → spectral_features (the asset's name, not its group) → Materialize… → the dialog opens
    # on Custom with 0 partitions → Missing (every shard) → Launch backfill
    open_asset(page, ASSET)
    expect(page.get_by_text("Never materialized")).to_be_visible()
    materialize_button(page).click()
    launch_from_dialog(page, "Missing", shards, screenshot="ui-launch-missing-partitions")
    # the toast's View → the backfill page, until its status reads Succeeded
    wait_for_launched(page, dev)
    save_screenshot(page, "feature_family_backfill")

    # Partitions tab: every shard materialized, none missing; a shard's metadata says every operator's
    # replay matched its generation run bit for bit, and its feature map names the features it shows
    asset_link(page, ASSET).first.click()
    page.get_by_role("tab", name="Partitions").click()
    expect(page.get_by_text(f"Materialized ({len(shards)})", exact=True)).to_be_visible()
    expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()
    page.get_by_text(shards[0], exact=True).first.click()
    operators = str(current_spec(dev).shard_size)
    expect(metadata_value(page, "operators", operators)).to_be_visible()
    expect(metadata_value(page, "replay_exact", operators)).to_be_visible()
    expect(metadata_value(page, "replay_not_reproduced", "0")).to_be_visible()
    feature_map = show_markdown(page, "feature_map")
    expect(feature_map).to_contain_text(f"{FAMILY} / summary (channel 0, statistic time_mean): operators 0–3")
    expect(feature_map).to_contain_text("column standard deviation")
    doc_screenshot(page, "ui-feature-map")
    feature_map.get_by_role("button", name="Close").click()
    for key in shards:
        assert (dev.data_root / ASSET / f"{key}.h5").is_file(), key

    # no click needed for dataset.h5: the rebuild_dataset sensor rebuilds it once the backfill is done,
    # and the dataset asset's latest materialization lists the family among the shards present
    poll(lambda: _has_family(dev), timeout=SENSOR_TIMEOUT_S, what=f"{REBUILD_SENSOR} to add {ASSET}")
    open_asset(page, "dataset")
    expect(metadata_row(page, "shards_present")).to_contain_text(f'"{ASSET}": {len(shards)}')
    expect(materialize_button(page)).to_be_visible()
    doc_screenshot(page, "ui-dataset-rebuilt")
