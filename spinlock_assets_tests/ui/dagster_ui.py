"""Playwright helpers for the Dagster 1.13 web UI, shared by the browser tests.

Locators use roles and visible texts. Material icons give buttons and links an icon-name prefix in
their accessible name ("materialization Materialize…"), so names are matched with anchored regular
expressions on their ending. Waits poll the page (the run page is live, the backfill and run list
pages refresh themselves) rather than sleeping.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from spinlock_assets_tests.e2e.dagster_dev import REPO_ROOT, DagsterDev

__all__ = [
    "ARTIFACTS",
    "DOC_IMAGES",
    "LaunchedTarget",
    "asset_link",
    "confirm_if_asked",
    "doc_screenshot",
    "eventually",
    "launch_from_dialog",
    "materialize_button",
    "metadata_row",
    "metadata_value",
    "nav_link",
    "open_asset",
    "run_ids_in_url",
    "save_screenshot",
    "settled",
    "show_markdown",
    "tick_in_catalog",
    "wait_for_backfill",
    "wait_for_launched",
    "wait_for_run",
]

ARTIFACTS = REPO_ROOT / "artifacts" / "ui"
# The screenshots the README shows: refreshed by the tests when SPINLOCK_UPDATE_DOC_IMAGES=1, otherwise
# written beside the other artifacts, so a test run leaves the checkout as it was.
DOC_IMAGES = REPO_ROOT / "docs" / "images"
RUN_TIMEOUT_S = 300
LAUNCH_TIMEOUT_MS = 60_000
BACKFILL_TIMEOUT_S = 420

# The tags the run page and the backfill page show for a finished run or backfill.
_RUN_DONE = re.compile(r"^(Success|Failure|Canceled)$")
_RUN_STATUS = re.compile(r"^(Queued|Not started|Starting|Started|Success|Failure|Canceling|Canceled)$")
_BACKFILL_DONE = re.compile(r"^(Succeeded|Completed|Failed|Canceled)$")


def save_screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot at ``artifacts/ui/<name>.png`` (the folder is git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def doc_screenshot(page: Page, name: str) -> Path:
    """What the browser window shows (1400x900, not the full page) at ``docs/images/<name>.png`` (with
    ``SPINLOCK_UPDATE_DOC_IMAGES=1``; else ``artifacts/ui/docs/<name>.png``)."""
    folder = DOC_IMAGES if os.environ.get("SPINLOCK_UPDATE_DOC_IMAGES") == "1" else ARTIFACTS / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    settled(page)
    page.screenshot(path=str(path))
    return path


def nav_link(page: Page, label: str) -> Locator:
    """A link of the left navigation ("Runs", "Catalog", "Automation", "Lineage", "Deployment")."""
    return page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"{re.escape(label)}$"))


def asset_link(scope: Page | Locator, asset: str) -> Locator:
    """A link to an asset's page. Its accessible name holds the name twice (a middle-truncated label
    and the full one), after a status icon's name where the link shows one."""
    name = re.escape(asset)
    return scope.get_by_role("link", name=re.compile(rf"(^|\s){name}(\s{name})?$"))


def open_asset(page: Page, asset: str) -> None:
    """Catalog (left navigation) → the asset's row → its page, on the Overview tab."""
    nav_link(page, "Catalog").click()
    asset_link(page, asset).first.click()
    expect(page.get_by_role("tab", name="Overview")).to_be_visible()
    expect(materialize_button(page)).to_be_visible()


def tick_in_catalog(page: Page, assets: list[str]) -> None:
    """Catalog (left navigation, a page titled "Assets") → tick each asset's row; the checkbox input is
    hidden behind its styled box (its parent label), which takes the click."""
    nav_link(page, "Catalog").click()
    for asset in assets:
        page.get_by_test_id(f"checkbox-{asset}").locator("xpath=..").click()
        expect(page.get_by_test_id(f"checkbox-{asset}")).to_be_checked()


def materialize_button(page: Page) -> Locator:
    """The page's Materialize button: "Materialize…" (partitioned: opens the launch dialog),
    "Materialize" (unpartitioned: launches at once), "Materialize all…" (asset graph) or
    "Materialize selected (n)…" (Catalog, with n assets ticked)."""
    return page.get_by_role("button", name=re.compile(r"Materialize( all| selected \(\d+\))?…?$"))


def confirm_if_asked(page: Page) -> bool:
    """Click Confirm in the "Are you sure?" dialog Dagster shows when upstream assets were never
    materialized; whether it was shown."""
    dialog = page.get_by_role("dialog").filter(has_text="Are you sure?")
    try:
        dialog.wait_for(timeout=5_000)
    except PlaywrightTimeoutError:
        return False
    dialog.get_by_role("button", name="Confirm").click()
    return True


def launch_from_dialog(
    page: Page, selection: str, expected_partitions: list[str], screenshot: str | None = None
) -> None:
    """In the open launch dialog, pick the partition ``selection`` ("All", "Missing", ...), check the
    dialog lists exactly ``expected_partitions`` and launch ("Launch backfill" or "Launch 1 run"), after
    a ``doc_screenshot`` named ``screenshot`` if given."""
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    # Dagster 1.13 opens the dialog on "Custom" with nothing selected: launching at once would do nothing.
    expect(dialog.get_by_role("button", name="Custom", exact=True)).to_be_visible()
    expect(dialog).to_contain_text("0 partitions")
    dialog.get_by_role("button", name=selection, exact=True).click()
    count = len(expected_partitions)
    expect(dialog).to_contain_text(f"{count} partition{'s' if count != 1 else ''}")
    for key in expected_partitions:  # the chips show a shortened label and the full key
        expect(dialog.get_by_text(key, exact=True)).to_be_attached()
    if screenshot:
        doc_screenshot(page, screenshot)
    dialog.get_by_role("button", name=re.compile(r"^Launch (backfill|\d+ runs?)$")).click()
    expect(dialog).to_be_hidden(timeout=LAUNCH_TIMEOUT_MS)  # "Launching…" takes seconds on two busy cores


class LaunchedTarget:
    """What a launch toast's "View" link points at: a run (``/runs/<id>``) or a backfill
    (``/runs/b/<id>``)."""

    def __init__(self, href: str) -> None:
        self.href = href
        match = re.fullmatch(r"/runs/(b/)?([\w-]+)", href.split("?")[0])
        if match is None:
            raise AssertionError(f"unexpected launch link {href!r}")
        self.is_backfill = bool(match.group(1))
        self.id = match.group(2)


def _toast_view_link(page: Page) -> Locator:
    toasts = page.get_by_role("region", name=re.compile("Notifications")).get_by_role("listitem")
    toast = toasts.filter(has_text=re.compile(r"Launched run|Created backfill")).last
    return toast.get_by_role("link", name="View")


def wait_for_launched(page: Page, dev: DagsterDev) -> LaunchedTarget:
    """Follow the launch toast ("Launched run …" or "Created backfill …", "View") to the run or
    backfill page (through the Runs list if the toast is gone already) and wait there until it
    succeeds; a failure is explained through GraphQL."""
    view = _toast_view_link(page)
    expect(view).to_be_visible(timeout=60_000)
    target = LaunchedTarget(view.get_attribute("href") or "")
    try:
        view.click(timeout=5_000)
    except PlaywrightTimeoutError:  # toasts close by themselves
        nav_link(page, "Runs").click()
        page.get_by_role("link", name=re.compile(rf"{target.id[:8]}$")).first.click()
    if target.is_backfill:
        wait_for_backfill(page, lambda: dev.describe_backfill(target.id))
    else:
        wait_for_run(page, lambda: dev.describe_run(target.id))
    return target


def eventually(
    page: Page, check: Callable[[float], None], timeout_s: float, reload_every_s: float = 30
) -> None:
    """Run ``check(timeout_ms)`` (an ``expect`` with that timeout) until it passes, reloading the page
    every ``reload_every_s`` in case what it waits for only shows after a fresh fetch."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check(reload_every_s * 1000)
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            page.reload()


def _wait_for_text(locator: Locator, done: re.Pattern[str], timeout_s: float, page: Page) -> str:
    """Poll ``locator``'s text until it matches ``done`` (the page refreshes itself; reloaded too)."""
    eventually(page, lambda timeout_ms: expect(locator).to_have_text(done, timeout=timeout_ms), timeout_s)
    return locator.inner_text().strip()


def wait_for_run(page: Page, describe: Callable[[], str], timeout_s: float = RUN_TIMEOUT_S) -> None:
    """On a run page, wait for the status tag next to the run id to read Success."""
    header = page.get_by_role("link", name="Runs", exact=True).locator("xpath=ancestor::div[1]")
    status = header.get_by_text(_RUN_STATUS)
    final = _wait_for_text(status, _RUN_DONE, timeout_s, page)
    assert final == "Success", f"run ended {final}\n{describe()}"


def wait_for_backfill(page: Page, describe: Callable[[], str], timeout_s: float = BACKFILL_TIMEOUT_S) -> None:
    """On a backfill page, wait for its Status to read Succeeded."""
    status = page.get_by_text("Status", exact=True).locator("xpath=following-sibling::*[1]")
    final = _wait_for_text(status, _BACKFILL_DONE, timeout_s, page)
    assert final == "Succeeded", f"backfill ended {final}\n{describe()}"


def metadata_row(scope: Page | Locator, label: str) -> Locator:
    """The row of a metadata table whose key cell is ``label``."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True))


def metadata_value(scope: Page | Locator, label: str, value: str) -> Locator:
    """The cell showing exactly ``value`` in the metadata row ``label`` (assert it is visible)."""
    return metadata_row(scope, label).get_by_role("cell", name=value, exact=True)


def show_markdown(scope: Page | Locator, label: str) -> Locator:
    """Open a markdown metadata entry ("[Show Markdown]" in the row ``label``); its dialog."""
    page = scope if isinstance(scope, Page) else scope.page
    metadata_row(scope, label).get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text=label)
    expect(dialog.locator("img")).to_be_visible()  # the figure (icons are divs with role img)
    settled(page)
    return dialog


def settled(page: Page) -> None:
    """Wait for the page's finite CSS animations (a dialog fading in; not endless spinners) to finish, so
    that a screenshot shows what a person sees once it has opened."""
    page.evaluate(
        """() => Promise.all(document.getAnimations()
            .filter(animation => animation.effect?.getComputedTiming().endTime !== Infinity)
            .map(animation => animation.finished.catch(() => null)))"""
    )


def run_ids_in_url(url: str) -> list[str]:
    """The run ids of a runs list filtered by id (``/runs?q[]=id:<id>&...``)."""
    filters = parse_qs(urlparse(url).query).get("q[]", [])
    return [value.removeprefix("id:") for value in filters if value.startswith("id:")]
