"""Workflow: inspecting where a shard of base features comes from, what depends on it, which spec, code
and machine produced the file on disk, its numbers across shards (Plots) and its energy curves, from the
``base_features`` asset page (README, "Workflows in the UI")."""

from __future__ import annotations

import json
import re

import h5py
import pytest
from playwright.sync_api import Page, expect

from spinlock_assets.core.features.registry import derived_families
from spinlock_assets.defs.features.assets import family_asset_name
from spinlock_assets.defs.generation.assets import BASE_CODE_VERSION
from spinlock_assets_tests.e2e.dagster_dev import DagsterDev

from .dagster_ui import (
    asset_link,
    doc_screenshot,
    metadata_row,
    metadata_value,
    open_asset,
    save_screenshot,
    show_markdown,
)
from .server_setup import current_spec, sha256_of, shard_keys

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ASSET = "base_features"


def _lineage_column(page: Page, heading: str):
    """The "Upstream assets" or "Downstream assets" column of the Overview tab's Lineage section."""
    return page.get_by_text(heading, exact=True).locator("xpath=ancestor::div[1]")


def _asset_names(column) -> set[str]:
    return {
        href.rsplit("/", 1)[-1] for href in column.get_by_role("link").evaluate_all("a => a.map(e => e.href)")
    }


def test_lineage_and_provenance_of_base_features_from_the_ui(generated_dev: DagsterDev, page: Page) -> None:
    dev = generated_dev
    spec = current_spec(dev)

    # Catalog → base_features: the Lineage section names its inputs and everything built from it
    open_asset(page, ASSET)
    upstream = _lineage_column(page, "Upstream assets")
    downstream = _lineage_column(page, "Downstream assets")
    expect(asset_link(upstream, "operator_parameters")).to_be_visible()
    expect(asset_link(upstream, "initial_conditions")).to_be_visible()
    expect(asset_link(downstream, "dataset")).to_be_visible()
    assert _asset_names(upstream) == {"operator_parameters", "initial_conditions"}
    families = {family_asset_name(family.name) for family in derived_families(spec.channels)}
    assert _asset_names(downstream) == families | {"dataset"}

    # Metadata → Plots: the numeric metadata of every partition charted, e.g. the mean final energy
    page.get_by_role("button", name=re.compile("Plots$")).click()
    expect(page.get_by_text("mean_final_energy", exact=True)).to_be_visible()
    expect(page.get_by_text("seconds_per_operator", exact=True)).to_be_visible()
    page.get_by_text("mean_final_energy", exact=True).scroll_into_view_if_needed()
    doc_screenshot(page, "ui-base-features-plots")

    # Partitions tab: one materialization per shard, each with the provenance of its own file
    page.get_by_role("tab", name="Partitions").click()
    shards = shard_keys(spec)
    expect(page.get_by_text(f"Materialized ({len(shards)})", exact=True)).to_be_visible()
    for key in shards:
        page.get_by_text(key, exact=True).first.click()
        detail = page.get_by_role("table").filter(has=page.get_by_role("cell", name="sha256", exact=True))
        path = dev.data_root / ASSET / f"{key}.h5"
        with h5py.File(path, "r") as shard:
            fingerprint = json.loads(shard.attrs["fingerprint_json"])
        # sha256 first: it differs between shards, so it also waits for this shard's details
        expect(metadata_value(detail, "sha256", sha256_of(path))).to_be_visible()
        expect(metadata_value(detail, "spec_hash", spec.spec_hash)).to_be_visible()
        expect(metadata_value(detail, "code_version", BASE_CODE_VERSION)).to_be_visible()
        start, stop = (int(part) for part in key.split("-")[1:])
        expect(metadata_value(detail, "operator_range", f"{start}..{stop}")).to_be_visible()
        for field, value in fingerprint.items():
            expect(metadata_row(detail, "fingerprint")).to_contain_text(f'"{field}": {json.dumps(value)}')
    doc_screenshot(page, "ui-base-features-provenance")

    # energy_over_time → [Show Markdown]: the last shard's energy curves, captioned
    energy = show_markdown(detail, "energy_over_time")
    expect(energy).to_contain_text(f"for operators {start}–{stop}")
    expect(energy).to_contain_text("logarithmic y axis")
    doc_screenshot(page, "ui-base-features-energy")
    energy.get_by_role("button", name="Close").click()
    save_screenshot(page, "test_lineage_and_provenance_of_base_features_from_the_ui")
